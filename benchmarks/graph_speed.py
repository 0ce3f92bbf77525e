#!/usr/bin/env python
"""Seconds per cycle of the residual fast path against the full forward path.

One run, one machine: `keras_rso.models.paper_cifar10_net` (the authors'
residual CIFAR-10 net, 57,104 searched weights) trained by `RSOModel` with
`RSO.paper(weights_per_batch=K)` and the paper's float64 summed loss, on
raw CIFAR-10 training images, both ways:

* `fast`: `RSOModel(fast_path=True)`, which picks `GraphEvaluator`: a trial
  recomputes only the nodes downstream of its weight;
* `full`: `RSOModel(fast_path=False)`: every candidate runs the whole net.

With `--binary` every kernel is in {-1, +1} (`Discrete.binary()`), and the
path `pair` is the fast path with a binary trial evaluating the stacked
pair (the flip and `w` itself) instead of the flip alone, as before
session 51: `--paths fast,pair --binary` measures the flip alone on the
residual fast path.

For every searched variable, `--steps` train steps (of K trials each) are
timed, starting at its first scalar (train-step time only, after a first
step that traces the function); a cycle is estimated as the sum over
variables of its steps (ceil(scalars / K)) times the seconds per step
measured there.

Example:
    python -m benchmarks.graph_speed --batch-size 512 --steps 1 \\
        --results docs/results/graph_speed_cifar10_k64_b512.json
"""

import argparse
import contextlib
import math
import time
from unittest import mock

import keras
import numpy as np

import keras_rso
from keras_rso import datasets
from examples.experiment import provenance, write_json
from benchmarks.pool_speed import _BatchTimes


def time_path(x, y, fast: bool, k: int, batch: int, steps: int, binary: bool = False):
    """Seconds per step at every searched variable, the evaluator's name,
    the seconds the first (tracing) step took, and the final weights."""
    keras.utils.set_random_seed(0)
    model = keras_rso.models.paper_cifar10_net(
        kernel_constraint=keras_rso.constraints.Discrete.binary() if binary else None)
    trainer = keras_rso.RSOModel(model, fast_path=fast)
    trainer.compile(optimizer=keras_rso.RSO.paper(weights_per_batch=k, seed=0),
                    loss=keras_rso.models.paper_loss())
    t0 = time.perf_counter()
    trainer.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=1, verbose=0)
    first = time.perf_counter() - t0
    opt = trainer.optimizer
    evaluator, plan = trainer._plan()
    visit = plan.visit
    sizes = [int(np.prod(evaluator.variables[v].shape)) for v in visit]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    per_step = {}
    for v, start, size in zip(visit, starts, sizes):
        opt.seek(int(start))
        timer = _BatchTimes()
        n = min(steps, math.ceil(size / k))
        trainer.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=n, verbose=0,
                    callbacks=[timer])
        per_step[evaluator.variables[v].path] = {
            "scalars": size, "steps_per_cycle": math.ceil(size / k),
            "seconds_per_step": float(np.mean(timer.times))}
        print(f"{'fast' if fast else 'full'} {evaluator.variables[v].path}: "
              f"{per_step[evaluator.variables[v].path]['seconds_per_step']:.3f} s/step",
              flush=True)
    return per_step, type(evaluator).__name__, first, model.get_weights()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--weights-per-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variable")
    parser.add_argument("--paths", default="fast,full",
                        help="which paths to time, of fast, full and pair (a speed-up "
                             "needs two)")
    parser.add_argument("--binary", action="store_true",
                        help="every kernel in {-1, +1}; the path pair then evaluates a "
                             "binary trial as the stacked pair")
    parser.add_argument("--results", default=None, help="write a results JSON here")
    args = parser.parse_args(argv)

    names = args.paths.split(",")
    unknown = set(names) - {"fast", "full", "pair"}
    if unknown or ("pair" in names and not args.binary):
        parser.error(f"--paths takes fast, full and pair (pair with --binary); got {args.paths}")
    (x, y), _ = datasets.load_cifar10(limit=20 * args.batch_size, raw=True)
    rows, weights = {}, {}
    for name in names:
        fast = name != "full"
        # The pair path: the flip alone switched off, the trial as it was.
        off = (mock.patch.object(keras_rso.evaluators.GraphEvaluator, "single_candidate",
                                 lambda self, v: False)
               if name == "pair" else contextlib.nullcontext())
        with off:
            per_step, evaluator, first, weights[name] = time_path(
                x, y, fast, args.weights_per_batch, args.batch_size, args.steps, args.binary)
        cycle = sum(r["steps_per_cycle"] * r["seconds_per_step"] for r in per_step.values())
        rows[name] = {"evaluator": evaluator, "first_step_seconds": first,
                      "seconds_per_cycle": cycle, "per_variable": per_step}
        print(f"{name} ({evaluator}): {cycle:.0f} s/cycle; first step {first:.1f} s",
              flush=True)
    speedup = same = None
    if len(rows) == 2:
        slow, quick = (n for n in ("full", "pair", "fast") if n in rows)
        speedup = rows[slow]["seconds_per_cycle"] / rows[quick]["seconds_per_cycle"]
        same = all(np.array_equal(a, b) for a, b in zip(weights[slow], weights[quick]))
        print(f"{quick} against {slow}: {speedup:.2f}x; final weights bit-identical: {same}",
              flush=True)
    if args.results:
        write_json({"benchmark": "graph_speed", "provenance": provenance(args),
                    "paths": rows, "speedup": speedup, "bit_identical": same},
                   args.results)


if __name__ == "__main__":
    main()
