#!/usr/bin/env python
"""Speed of RSO on the paper's MNIST network: keras_rso vs a naive reference.

For every searched variable (layer) of `keras_rso.models.mnist_paper_net`,
at batch size 256, this times weight trials per second of

* keras_rso (`RSOModel`, fast chain path) at K = weights_per_batch in --ks,
  for each step rule in --step-rule (one run, so their ratios are measured),
* the naive reference (`naive_reference.py`: 3 full forward passes per trial
  in a tf.function, fresh batch each trial),

after a warm-up that traces the functions (one traced train function per K;
only train-step time is counted). Seconds per cycle are the sum over
variables of (scalars / measured trials-per-second). Each variable is timed
on `--trials` of its scalars (at least one step of K; all of them when the
variable is smaller).

Example:
    python -m benchmarks.bench_speed --output docs/results/bench_speed.json
    python -m benchmarks.bench_speed --ks 64 --batch-size 2048 --no-naive \
        --pool-after 1 3 --step-rule parabolic vertex
"""

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf

import keras_rso
from examples.experiment import provenance, write_json
from keras_rso.optimizer import STEP_RULES
from benchmarks.naive_reference import NaiveRSO


class _StepTimer(keras.callbacks.Callback):
    """Sums the wall-clock time of the train steps only."""

    def __init__(self):
        super().__init__()
        self.total = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.total += time.perf_counter() - self._t0


def traced_search(k, x, y, batch, step_rule="argmin", jit_compile=False, pool_after=(2, 4),
                  strategy=None):
    """The paper's MNIST net in an `RSOModel` whose search step is traced
    (under `strategy` if given: its replicas synchronize the BatchNormalization
    statistics, so they search as one device would).

    Returns `(model, trainer, ds, start)`: `ds` repeats `(x, y)` in batches,
    and `start[path]` is the position in the cycle of the variable's first
    scalar, where a timed step can be made to begin
    (`trainer.optimizer.seek(start[path])`).
    """
    keras.utils.set_random_seed(0)
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = keras_rso.models.mnist_paper_net(
            pool_after=pool_after, synchronized_bn=strategy.num_replicas_in_sync > 1)
        trainer = keras_rso.RSOModel(model)
        trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=k, seed=0, step_rule=step_rule),
                        loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat().prefetch(4)
    trainer.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)  # trace
    start = {}
    for t, (path, _) in enumerate(trainer.visit_schedule()):
        start.setdefault(path, t)
    return model, trainer, ds, start


def start_at(model, trainer, start, name):
    """Moves the search to the first scalar of the first trainable variable
    whose path ends with `name` (`start` from `traced_search`); returns its path."""
    path = next(v.path for v in model.trainable_variables if v.path.endswith(name))
    trainer.optimizer.seek(start[path])
    return path


def time_keras_rso(k, trials, x, y, batch, step_rule="argmin", pool_after=(2, 4)):
    """Trials per second of every variable, for one K and step rule (one
    traced function)."""
    model, trainer, ds, start = traced_search(k, x, y, batch, step_rule,
                                              pool_after=pool_after)
    rates = {}
    for v in model.trainable_variables:
        size = int(np.prod(v.shape))
        steps = max(1, min(size, max(trials, k)) // k)
        # Start the step at this variable's first scalar; stay inside it.
        trainer.optimizer.seek(start[v.path])
        timer = _StepTimer()
        trainer.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
        # Every step makes K trials. For a variable smaller than K the step
        # runs on into the next variables, so this is the rate of the
        # trials starting at this variable.
        rates[v.path] = steps * k / timer.total
    return rates


def time_naive(var_index, trials, x, y, batch, pool_after=(2, 4)):
    keras.utils.set_random_seed(0)
    model = keras_rso.models.mnist_paper_net(pool_after=pool_after)
    var = model.trainable_variables[var_index]
    loss = keras.losses.SparseCategoricalCrossentropy()
    trial = NaiveRSO(model, loss).make_trial(var, float(np.std(var.numpy())) or 0.05)
    n = min(trials, int(np.prod(var.shape)))
    batches = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat().prefetch(4))
    xb, yb = next(batches)
    trial(xb, yb, tf.constant(0)).numpy()  # trace
    t0 = time.perf_counter()
    for j in range(n):
        xb, yb = next(batches)
        trial(xb, yb, tf.constant(j)).numpy()
    return n / (time.perf_counter() - t0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,16,256", help="weights_per_batch values")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--trials", type=int, default=128,
                        help="scalars timed per variable and setting")
    parser.add_argument("--step-rule", nargs="+", default=["argmin"], choices=list(STEP_RULES),
                        help="keras_rso's RSO(step_rule=...), one or several (each timed "
                             "in this run); the naive reference is argmin")
    parser.add_argument("--pool-after", type=int, nargs=2, default=[2, 4],
                        help="mnist_paper_net(pool_after=...): the convolutions the two "
                             "poolings follow (paper: 2 4)")
    parser.add_argument("--no-naive", action="store_true",
                        help="time keras_rso only (no reference, no speed-up)")
    parser.add_argument("--output", default=None, help="write results JSON here")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]

    (x, y), _ = keras_rso.datasets.load_mnist(limit=4096)
    pool_after = tuple(args.pool_after)
    model = keras_rso.models.mnist_paper_net(pool_after=pool_after)
    variables = [(i, v.path, int(np.prod(v.shape))) for i, v in enumerate(model.trainable_variables)]
    # One setting per K and rule, named k{K} (one rule, as before) or
    # k{K}_{rule}.
    settings = {(f"k{k}" if len(args.step_rule) == 1 else f"k{k}_{rule}"): (k, rule)
                for rule in args.step_rule for k in ks}
    rso = {name: time_keras_rso(k, args.trials, x, y, args.batch_size, rule, pool_after)
           for name, (k, rule) in settings.items()}
    rows = []
    for i, path, size in variables:
        row = {"variable": path, "scalars": size}
        if not args.no_naive:
            row["naive_trials_per_s"] = time_naive(i, args.trials, x, y, args.batch_size,
                                                   pool_after)
        for name in settings:
            row[f"{name}_trials_per_s"] = rso[name][path]
        rows.append(row)
        print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    cycle = {} if args.no_naive else {
        "naive": sum(r["scalars"] / r["naive_trials_per_s"] for r in rows)}
    for name in settings:
        cycle[name] = sum(r["scalars"] / r[f"{name}_trials_per_s"] for r in rows)
    speedup = {} if args.no_naive else {
        name: cycle["naive"] / s for name, s in cycle.items() if name != "naive"}
    print("seconds per cycle:", {k: round(v, 1) for k, v in cycle.items()})
    print("speed-up over naive:", {k: round(v, 2) for k, v in speedup.items()})
    rules = args.step_rule[0] if len(args.step_rule) == 1 else args.step_rule
    write_json({**provenance(args), "batch_size": args.batch_size, "step_rule": rules,
                "pool_after": list(pool_after),
                "per_variable": rows, "seconds_per_cycle": cycle,
                "speedup_over_naive": speedup}, args.output)


if __name__ == "__main__":
    main()
