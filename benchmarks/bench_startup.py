#!/usr/bin/env python
"""Start-up cost of an RSO fit: tracing and compiling the search step.

An RSO train step unrolls a trial loop with one branch per searched
variable (the fast chain path adds per-layer code), so its graph is large
and the first step of a fit, which traces and compiles it, can cost more
than the steps of a short run together. This times the first train step
and two steady-state steps of `keras_rso.models.mnist_paper_net`,
`cifar10_net`, or the paper's own nets (`paper_mnist_net`,
`paper_cifar10_net`) on random data, counts how often the search step was traced
(it should be once per fit) and the nodes of the traced graph, a measure of
its size that does not depend on the machine's load, the branches of its
switch over the searched variables, and the first step's
CPU seconds, which a loaded machine changes much less than its wall-clock
seconds.

Example:
    python -m benchmarks.bench_startup --net cifar10 --filters 4 --output docs/results/bench_startup_cifar10_f4.json
"""

import argparse
import json
import os
import resource
import subprocess
import time

import keras
import numpy as np
import tensorflow as tf

import keras_rso
from examples.experiment import provenance, write_json


def _cpu_seconds() -> float:
    """User plus system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _StepTimes(keras.callbacks.Callback):
    """Wall-clock and CPU seconds of each train step.

    Tracing runs on one thread, so on a loaded machine its CPU seconds
    vary much less than its wall-clock seconds.
    """

    def __init__(self):
        super().__init__()
        self.seconds, self.cpu_seconds = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self._t0, self._c0 = time.perf_counter(), _cpu_seconds()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._t0)
        self.cpu_seconds.append(_cpu_seconds() - self._c0)


def graph_nodes(graph) -> int:
    """Nodes of a traced train function, its nested functions included.

    Unlike seconds, this does not depend on what else the machine runs.
    """
    graph_def = graph.as_graph_def()
    return len(graph_def.node) + sum(len(f.node_def) for f in graph_def.library.function)


def measure(net: str, filters: int, k: int, batch: int) -> dict:
    """First-step and steady-state seconds, and the number of traces."""
    keras.utils.set_random_seed(0)
    if net == "mnist":
        model, shape = keras_rso.models.mnist_paper_net(filters=filters), (28, 28, 1)
    elif net == "cifar10":
        model, shape = keras_rso.models.cifar10_net(filters=(filters,) * 3), (32, 32, 3)
    elif net == "paper_mnist":
        model, shape = keras_rso.models.paper_mnist_net(), (28, 28, 1)
    else:
        model, shape = keras_rso.models.paper_cifar10_net(), (32, 32, 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * batch, *shape)).astype("float32")
    y = rng.integers(0, 10, size=4 * batch).astype("int32")

    traces = []  # the graph each trace of the search step was built in
    branches = []  # its switch's branches (one per variable before trial groups)
    original = keras_rso.search.TrialLoop.__call__

    def counting(self, *args, **kwargs):
        traces.append(tf.compat.v1.get_default_graph())
        branches.append(len(getattr(self, "groups", self.visit)))
        return original(self, *args, **kwargs)

    keras_rso.search.TrialLoop.__call__ = counting
    try:
        trainer = keras_rso.RSOModel(model)
        # The paper's own nets end in logits; the others in a softmax.
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=net.startswith("paper"))
        trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=k, seed=0),
                        loss=loss, metrics=["accuracy"])
        timer = _StepTimes()
        start = time.perf_counter()
        trainer.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=3,
                    verbose=0, callbacks=[timer])
        fit_seconds = time.perf_counter() - start
    finally:
        keras_rso.search.TrialLoop.__call__ = original
    return {
        "net": net, "filters": filters, "weights_per_batch": k, "batch_size": batch,
        "searched_weights": trainer.trials_per_cycle,
        "search_step_traces": len(traces),
        "graph_nodes": graph_nodes(traces[0]),
        "trial_branches": branches[0],
        "first_step_seconds": round(timer.seconds[0], 2),
        "first_step_cpu_seconds": round(timer.cpu_seconds[0], 2),
        "later_step_seconds": [round(s, 3) for s in timer.seconds[1:]],
        "fit_seconds": round(fit_seconds, 2),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=["mnist", "cifar10", "paper_mnist", "paper_cifar10"],
                        default="cifar10")
    parser.add_argument("--filters", type=int, default=16,
                        help="channels of every conv layer (mnist, cifar10)")
    parser.add_argument("--weights-per-batch", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", default=None, help="write the result JSON here")
    args = parser.parse_args(argv)
    result = provenance(args)
    # The commit matters here: the same command is run before and after a
    # change. It is the commit of the keras_rso being measured, which may be
    # another checkout's (PYTHONPATH=<worktree>).
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=os.path.dirname(os.path.abspath(keras_rso.__file__)))
    result["commit"] = commit.stdout.strip() or None
    result.update(measure(args.net, args.filters, args.weights_per_batch, args.batch_size))
    print(json.dumps(result, indent=1))
    write_json(result, args.output)


if __name__ == "__main__":
    main()
