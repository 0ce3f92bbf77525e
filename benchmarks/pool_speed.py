#!/usr/bin/env python
"""Seconds per cycle of the paper's setting, with and without the layer-input pool.

One run, one machine, three ways to run the authors' per-weight trial on
`keras_rso.models.paper_mnist_net` (`--net cifar10`: the residual
`paper_cifar10_net`, on `GraphEvaluator`) (one weight per batch of
`--batch-size` raw training images, `RSO.paper()`, the float64 summed loss):

* `naive`: `naive_reference.NaiveRSO`, three full forward passes per trial
  (the current weight and both candidates) in one `tf.function`;
* `keras_rso`: `RSOModel` at K=1 without a pool (a base pass of the whole
  net per trial, then the fast path from the weight's layer on);
* `pool`: `RSOModel` with `RSO(pool_size=--pool-size)`: the base pass and
  the candidates run from the weight's anchor layer on, on a batch drawn
  from that layer's cached input.

For every searched variable, `--steps` steps (trials) are timed, starting
at its first scalar (train-step time only, after a traced first step, and
after one untimed warm-up trial there: the first run of a branch of the
step pays one-off costs of 0.3-1.3 s on `paper_cifar10_net` at batch 256,
which a handful of timed trials would otherwise average in); a
cycle is estimated as the sum over variables of scalars x seconds per
trial there, plus, for the pool, the steps that fill it (timed in the same
run, once per segment). Training data: the first 50,000 MNIST training
images, or 45,000 CIFAR-10 images (the examples' default validation splits
keep the last 10,000 / 5,000 out). `--skip-naive` leaves the naive
reference out.

Example:
    python -m benchmarks.pool_speed --steps 3 --results docs/results/pool_speed.json
    python -m benchmarks.pool_speed --net cifar10 --pool-size 45000 --steps 2
"""

import argparse
import time
from typing import Dict, List, NamedTuple

import keras
import numpy as np
import tensorflow as tf

import keras_rso
from examples.experiment import provenance, write_json
from keras_rso.pool import segments
from benchmarks.naive_reference import NaiveRSO


class _BatchTimes(keras.callbacks.Callback):
    """Wall-clock seconds of every train step."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._t0)


NETS = {"mnist": keras_rso.models.paper_mnist_net,
        "cifar10": keras_rso.models.paper_cifar10_net}


def paper_trainer(pool_size=None, weights_per_batch=1, net="mnist"):
    """The paper's `net` compiled as the authors' code (`RSO.paper()`)."""
    keras.utils.set_random_seed(0)
    model = NETS[net]()
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO.paper(seed=0, pool_size=pool_size,
                                                  weights_per_batch=weights_per_batch),
                    loss=keras_rso.models.paper_loss())
    return trainer


class StepTimes(NamedTuple):
    """What `time_keras_rso` measured.

    Attributes:
        per_step: Mean seconds per step (of K trials) for each searched
            variable, by path.
        fill_step: Mean seconds of a step that fills the pool (0 without one).
        fills: Fill steps per pool segment (0 without a pool).
        segments: Pool segments per cycle (0 without a pool).
        warm: The untimed warm-up steps' seconds, by path.
    """

    per_step: Dict[str, float]
    fill_step: float
    fills: int
    segments: int
    warm: Dict[str, List[float]]

    @property
    def fill_seconds(self) -> float:
        """Seconds per cycle spent filling the pool."""
        return self.fill_step * self.fills * self.segments


def time_keras_rso(ds, steps, pool_size, trainer=None, net="mnist", warmup=1) -> StepTimes:
    """Times the train step at every searched variable (and the pool's fill
    steps); `trainer` defaults to `paper_trainer(pool_size, net=net)`.
    The first `warmup` trial steps at each variable are run but kept out
    of the mean (their seconds are returned apart, in `warm`)."""
    trainer = trainer if trainer is not None else paper_trainer(pool_size, net=net)
    trainer.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)  # traces the step
    opt = trainer.optimizer
    evaluator, plan = trainer._plan()
    visit = plan.visit
    sizes = [int(np.prod(evaluator.variables[v].shape)) for v in visit]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    fills = trainer._pool.fill_steps if pool_size else 0
    per_trial, fill_times, warm = {}, [], {}
    k = int(opt.weights_per_batch)
    for v, start, size in zip(visit, starts, sizes):
        opt.seek(int(start))
        opt.pool_fills.assign(0)  # the pool is filled again for this variable
        timer = _BatchTimes()
        n = min(steps, -(-size // k))
        w = min(warmup, -(-size // k) - n)  # never past the variable's last scalar
        trainer.fit(ds, epochs=1, steps_per_epoch=fills + w + n, verbose=0, callbacks=[timer])
        fill_times += timer.times[:fills]
        warm[evaluator.variables[v].path] = [round(t, 4) for t in timer.times[fills:fills + w]]
        per_trial[evaluator.variables[v].path] = float(np.mean(timer.times[fills + w:]))
    n_segments = len(segments(evaluator, visit)) if pool_size else 0
    fill = float(np.mean(fill_times)) if fill_times else 0.0
    return StepTimes(per_trial, fill, fills, n_segments, warm)


def time_naive(ds, steps, net="mnist"):
    keras.utils.set_random_seed(0)
    model = NETS[net]()
    loss = keras_rso.models.paper_loss()
    batches = iter(ds)
    per_trial = {}
    for var in model.trainable_variables:
        trial = NaiveRSO(model, loss).make_trial(var, 0.05)
        xb, yb = next(batches)
        trial(xb, yb, tf.constant(0)).numpy()  # trace
        n = min(steps, int(np.prod(var.shape)))
        t0 = time.perf_counter()
        for j in range(n):
            xb, yb = next(batches)
            trial(xb, yb, tf.constant(j)).numpy()
        per_trial[var.path] = (time.perf_counter() - t0) / n
    return per_trial


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--pool-size", type=int, default=50000)
    parser.add_argument("--steps", type=int, default=3, help="timed trials per variable")
    parser.add_argument("--net", choices=sorted(NETS), default="mnist")
    parser.add_argument("--skip-naive", action="store_true",
                        help="leave out the naive reference (three full passes per trial)")
    parser.add_argument("--results", default=None)
    args = parser.parse_args(argv)
    if args.net == "mnist":
        (x, y), _ = keras_rso.datasets.load_mnist(raw=True)
        x, y = x[:50000], y[:50000]
    else:
        (x, y), _ = keras_rso.datasets.load_cifar10(raw=True)
        x, y = x[:45000], y[:45000]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(
        args.batch_size).repeat().prefetch(2)
    scalars = {v.path: int(np.prod(v.shape)) for v in NETS[args.net]().trainable_variables}
    ways = {} if args.skip_naive else {"naive": time_naive(ds, args.steps, args.net)}
    plain = time_keras_rso(ds, args.steps, None, net=args.net)
    pooled = time_keras_rso(ds, args.steps, args.pool_size, net=args.net)
    ways["keras_rso"], ways["pool"] = plain.per_step, pooled.per_step
    base = "naive" if "naive" in ways else "keras_rso"
    rows = {path: {"scalars": n, **{f"{w}_s": round(t[path], 4) for w, t in ways.items()}}
            for path, n in scalars.items()}
    cycle = {w: sum(n * t[path] for path, n in scalars.items()) for w, t in ways.items()}
    cycle["pool"] += pooled.fill_seconds
    results = provenance(args)
    results.update({
        "seconds_per_trial": rows, "fill_step_seconds": round(pooled.fill_step, 3),
        "warmup_seconds": {"keras_rso": plain.warm, "pool": pooled.warm},
        "fill_steps_per_cycle": pooled.fills * pooled.segments,
        "seconds_per_cycle": {k: round(v, 1) for k, v in cycle.items()},
        f"speedup_vs_{base}": {k: round(cycle[base] / v, 2) for k, v in cycle.items()},
    })
    print(f"{'variable':34s} {'scalars':>7s} " + " ".join(f"{w:>9s}" for w in ways)
          + "  (s/trial)")
    for path, r in rows.items():
        print(f"{path:34s} {r['scalars']:7d} " + " ".join(f"{r[w + '_s']:9.3f}" for w in ways))
    for k, v in cycle.items():
        print(f"cycle, {k:9s}: {v:8.0f} s ({v / 3600:.2f} h), "
              f"{cycle[base] / v:.2f}x {base}")
    write_json(results, args.results)
    return results


if __name__ == "__main__":
    main()
