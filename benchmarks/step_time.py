"""Seconds per search step in chosen layers of the paper's MNIST network.

Times `--steps` steps of K trials starting at the first scalar of each
variable in `--variables`, after a step that traces the search function,
and prints for each the wall-clock seconds per step, the process's user
and system CPU seconds per step, and the minor page faults per step.
Made to compare CPUs and TensorFlow settings that are read from the
environment before TensorFlow starts, for example
`TF_CPU_ALLOCATOR_USE_BFC=true` (TensorFlow's pooling allocator on the CPU)
or `TF_ENABLE_ONEDNN_OPTS=0` (Eigen kernels instead of oneDNN).

With `--replicas N` the step runs under `tf.distribute.MirroredStrategy`
on N logical CPUs (synchronized BatchNormalization: the same decisions as
one device), each replica evaluating 1/N of every batch; with one
TensorFlow intra-op thread and N inter-op threads, each replica's
operations run on their own thread.

Example:
    TF_CPU_ALLOCATOR_USE_BFC=true python -m benchmarks.step_time --batch-size 2048
"""

import argparse
import resource
import time

import tensorflow as tf

from benchmarks.bench_speed import start_at, traced_search
from keras_rso.optimizer import STEP_RULES
from keras_rso import datasets
from keras_rso.evaluators.chain import ChainEvaluator


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say which steps to time: batch, K, steps, variables, step
    rule and the network's pooling layout."""
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--weights-per-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variable")
    parser.add_argument("--variables", nargs="+",
                        default=["block2_conv/kernel", "block4_conv/kernel"],
                        help="variables whose first scalars the timed steps try")
    parser.add_argument("--step-rule", default="argmin", choices=list(STEP_RULES))
    parser.add_argument("--pool-after", type=int, nargs=2, default=[2, 4],
                        help="mnist_paper_net(pool_after=...) (paper: 2 4)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser)
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile the whole train step with XLA (`compile(jit_compile=True)`; "
                             "it fails: the trials of a step are a dynamic range)")
    parser.add_argument("--jit-tails", action="store_true",
                        help="compile only the shared tail functions with XLA "
                             "(`ChainEvaluator.jit_tails`)")
    parser.add_argument("--replicas", type=int, default=1,
                        help="run under MirroredStrategy on this many logical CPUs")
    args = parser.parse_args(argv)

    strategy = None
    if args.replicas > 1:
        # Logical devices must be set before TensorFlow runs any operation.
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * args.replicas)
        strategy = tf.distribute.MirroredStrategy(
            [f"/cpu:{i}" for i in range(args.replicas)])
    ChainEvaluator.jit_tails = args.jit_tails
    (x, y), _ = datasets.load_mnist(limit=10 * args.batch_size)
    model, trainer, ds, start = traced_search(args.weights_per_batch, x, y, args.batch_size,
                                               step_rule=args.step_rule,
                                               jit_compile=args.jit_compile,
                                               pool_after=tuple(args.pool_after),
                                               strategy=strategy)
    for name in args.variables:
        start_at(model, trainer, start, name)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        trainer.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        n = args.steps
        print(f"{name}: {(t1 - t0) / n:.2f} s/step, user {(r1.ru_utime - r0.ru_utime) / n:.2f} s, "
              f"system {(r1.ru_stime - r0.ru_stime) / n:.2f} s, "
              f"{(r1.ru_minflt - r0.ru_minflt) // n} minor page faults per step", flush=True)


if __name__ == "__main__":
    main()
