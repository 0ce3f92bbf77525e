#!/usr/bin/env python
"""Seconds per cycle of the residual fast path against the full forward path.

One run, one machine: `keras_rso.models.paper_cifar10_net` (the authors'
residual CIFAR-10 net, 57,104 searched weights) trained by `RSOModel` with
`RSO.paper(weights_per_batch=K)` and the paper's float64 summed loss, on
raw CIFAR-10 training images, both ways:

* `fast`: `RSOModel(fast_path=True)`, which picks `GraphEvaluator`: a trial
  recomputes only the nodes downstream of its weight;
* `full`: `RSOModel(fast_path=False)`: every candidate runs the whole net.

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
import math
import time

import keras
import numpy as np

import keras_rso
from keras_rso import datasets
from examples.experiment import provenance, write_json
from benchmarks.pool_speed import _BatchTimes


def time_path(x, y, fast: bool, k: int, batch: int, steps: int):
    """Seconds per step at every searched variable, the evaluator's name,
    and the seconds the first (tracing) step took."""
    keras.utils.set_random_seed(0)
    model = keras_rso.models.paper_cifar10_net()
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
    return per_step, type(evaluator).__name__, first


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--weights-per-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variable")
    parser.add_argument("--paths", default="fast,full",
                        help="which paths to time (a speed-up needs both)")
    parser.add_argument("--results", default=None, help="write a results JSON here")
    args = parser.parse_args(argv)

    (x, y), _ = datasets.load_cifar10(limit=20 * args.batch_size, raw=True)
    rows = {}
    for name in args.paths.split(","):
        fast = {"fast": True, "full": False}[name]
        per_step, evaluator, first = time_path(x, y, fast, args.weights_per_batch,
                                               args.batch_size, args.steps)
        cycle = sum(r["steps_per_cycle"] * r["seconds_per_step"] for r in per_step.values())
        rows[name] = {"evaluator": evaluator, "first_step_seconds": first,
                      "seconds_per_cycle": cycle, "per_variable": per_step}
        print(f"{name} ({evaluator}): {cycle:.0f} s/cycle; first step {first:.1f} s",
              flush=True)
    speedup = None
    if len(rows) == 2:
        speedup = rows["full"]["seconds_per_cycle"] / rows["fast"]["seconds_per_cycle"]
        print(f"fast path speed-up: {speedup:.2f}x", flush=True)
    if args.results:
        write_json({"benchmark": "graph_speed", "provenance": provenance(args),
                    "paths": rows, "speedup": speedup}, args.results)


if __name__ == "__main__":
    main()
