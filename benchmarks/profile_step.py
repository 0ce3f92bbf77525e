"""Where a search step's time goes, by TensorFlow op, in the paper's MNIST net.

Traces the search step, runs one step from the first scalar of `--variable`
to warm up, then profiles `--steps` steps from the same place with
`tf.profiler` and prints the ops that took the most time (self time,
summed over calls, inside the searched variable's branch). This is how
the one-channel ops that the fast path used to spend most of its time on
were found (docs/results.md, "Faster one-channel work in the fast path").
The raw profile stays in `--logdir` for TensorBoard's profile plugin.

Example:
    python -m benchmarks.profile_step --batch-size 512 --variable block2_conv/kernel
    python -m benchmarks.profile_step --batch-size 2048 --pool-after 1 3 --step-rule parabolic
"""

import argparse
import glob
import json
import os
import tempfile

import tensorflow as tf
# TensorFlow's own converter from a raw profile to the op-statistics table
# that TensorBoard's profile plugin shows; TensorFlow has no public API for
# it, and the plugin is not among this project's packages.
from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

from benchmarks.bench_speed import start_at, traced_search
from keras_rso import datasets
from keras_rso.optimizer import STEP_RULES


def op_table(logdir: str) -> list:
    """Rows of TensorFlow's framework op statistics for the profile in `logdir`."""
    planes = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    data, ok = _pywrap_profiler_plugin.xspace_to_tools_data(planes, "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"could not read the profile in {logdir}")
    table = json.loads(data)[0]
    cols = [c["id"] for c in table["cols"]]
    return [dict(zip(cols, [c.get("v") if c else None for c in row["c"]]))
            for row in table["rows"]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--weights-per-batch", type=int, default=64)
    parser.add_argument("--variable", default="block2_conv/kernel",
                        help="the profiled steps start at this variable's first scalar")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps")
    parser.add_argument("--pool-after", type=int, nargs=2, default=[2, 4],
                        help="convolutions followed by pooling (paper: 2 4; --preset fastest: 1 3)")
    parser.add_argument("--step-rule", default="argmin", choices=list(STEP_RULES),
                        help="RSO step rule (--preset fastest: parabolic)")
    parser.add_argument("--top", type=int, default=20, help="ops to print")
    parser.add_argument("--logdir", default=None, help="where the profile is kept")
    args = parser.parse_args(argv)

    (x, y), _ = datasets.load_mnist(limit=10 * args.batch_size)
    model, trainer, ds, start = traced_search(args.weights_per_batch, x, y, args.batch_size,
                                              args.step_rule, pool_after=tuple(args.pool_after))
    start_at(model, trainer, start, args.variable)
    trainer.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)  # warm-up, not profiled
    path = start_at(model, trainer, start, args.variable)
    logdir = args.logdir or tempfile.mkdtemp(prefix="rso_profile_")
    tf.profiler.experimental.start(logdir)
    trainer.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
    tf.profiler.experimental.stop()

    # Ops inside a switch branch run in trials; the rest is the step's set-up.
    rows = [r for r in op_table(logdir) if "branch" in r["operation"]]
    total = sum(r["total_self_time"] for r in rows)
    print(f"{args.steps} steps of {args.weights_per_batch} trials from {path}, batch "
          f"{args.batch_size}: {total / 1e6:.2f} s of op time in trials")
    for r in sorted(rows, key=lambda r: -r["total_self_time"])[:args.top]:
        name = r["operation"].rsplit("indexed_case/", 1)[-1]
        print(f"{r['type']:20s} {r['total_self_time'] / 1e3:9.1f} ms "
              f"{100 * r['total_self_time'] / total:5.1f}%  {int(r['occurrences']):5d} calls  {name}")
    print(f"profile kept in {logdir}")


if __name__ == "__main__":
    main()
