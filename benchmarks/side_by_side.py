#!/usr/bin/env python
"""Seconds per cycle of every way keras_rso runs the paper's nets, in one run.

One process, one machine, so every ratio printed compares numbers measured
side by side:

* MNIST, `keras_rso.models.paper_mnist_net` under `RSO.paper()` (12,016
  searched weights, the float64 summed loss), on the first 50,000 raw
  MNIST training images:
  - `naive`: three full forward passes per trial (the current weight and
    both candidates), K=1, batch 5,000 (`benchmarks.naive_reference`);
  - `k1_b5000`: keras_rso at the authors' setting, K=1 and batch 5,000,
    without a pool (a base pass of the whole net per trial);
  - `k1_b5000_pool`: the same with the layer-input pool of the whole
    training split (`RSO(pool_size=50000)`, what `--preset paper` runs);
  - `k64_b2048`: K=64 and batch 2,048, the setting of the validated runs
    (same net and loss, so only K and the batch differ).
* CIFAR-10, `keras_rso.models.paper_cifar10_net` (57,104 searched weights)
  under `RSO.paper(weights_per_batch=64)` at batch `--cifar-batch-size`:
  the residual fast path (`GraphEvaluator`) and `fast_path=False`.

Each MNIST row times `--steps` steps at the first scalar of every variable
(`benchmarks.pool_speed`); each CIFAR-10 row `--cifar-steps` steps
(`benchmarks.graph_speed`). A cycle is the sum over variables of its steps
times the seconds per step there (plus the pool's fill steps). The
sequential decision rule has no row: it was measured and not built
(docs/results.md, "Decisions that spend only the images they need").

Example:
    python -m benchmarks.side_by_side --results docs/results/side_by_side.json
"""

import argparse
import math

import numpy as np
import tensorflow as tf

import keras_rso
from examples.experiment import provenance, write_json
from keras_rso import datasets
from benchmarks.graph_speed import time_path
from benchmarks.pool_speed import paper_trainer, time_keras_rso, time_naive


def _mnist_stream(x, y, batch: int):
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(
        batch).repeat().prefetch(2)


def _cycle(per_step: dict, scalars: dict, k: int) -> float:
    return sum(math.ceil(n / k) * per_step[path] for path, n in scalars.items())


def mnist_rows(steps: int, pool_size: int) -> dict:
    """Seconds per cycle of the four MNIST settings."""
    (x, y), _ = datasets.load_mnist(raw=True)
    x, y = x[:50000], y[:50000]
    b5000, b2048 = _mnist_stream(x, y, 5000), _mnist_stream(x, y, 2048)
    scalars = {v.path: int(np.prod(v.shape))
               for v in keras_rso.models.paper_mnist_net().trainable_variables}
    rows = {}
    naive = time_naive(b5000, steps)
    rows["naive"] = {"k": 1, "batch": 5000, "per_step": naive}
    plain = time_keras_rso(b5000, steps, None)
    rows["k1_b5000"] = {"k": 1, "batch": 5000, "per_step": plain.per_step}
    pooled = time_keras_rso(b5000, steps, pool_size)
    rows["k1_b5000_pool"] = {"k": 1, "batch": 5000, "per_step": pooled.per_step,
                             "fill_seconds": pooled.fill_seconds}
    wide = time_keras_rso(b2048, steps, None, trainer=paper_trainer(weights_per_batch=64))
    rows["k64_b2048"] = {"k": 64, "batch": 2048, "per_step": wide.per_step}
    for name, row in rows.items():
        row["seconds_per_cycle"] = (_cycle(row["per_step"], scalars, row["k"])
                                    + row.get("fill_seconds", 0.0))
        row["per_step"] = {p: round(s, 4) for p, s in row["per_step"].items()}
    return rows


def cifar_rows(steps: int, batch: int) -> dict:
    """Seconds per cycle of the residual net, fast path and full path."""
    (x, y), _ = datasets.load_cifar10(limit=20 * batch, raw=True)
    rows = {}
    for name, fast in (("fast", True), ("full", False)):
        per_step, evaluator, first = time_path(x, y, fast, 64, batch, steps)
        rows[name] = {"evaluator": evaluator, "k": 64, "batch": batch,
                      "first_step_seconds": round(first, 1),
                      "seconds_per_cycle": sum(r["steps_per_cycle"] * r["seconds_per_step"]
                                               for r in per_step.values()),
                      "per_variable": per_step}
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed MNIST steps per variable")
    parser.add_argument("--pool-size", type=int, default=50000)
    parser.add_argument("--cifar-batch-size", type=int, default=256)
    parser.add_argument("--cifar-steps", type=int, default=1,
                        help="timed CIFAR-10 steps per variable")
    parser.add_argument("--skip", choices=["mnist", "cifar10"], default=None,
                        help="leave one net out (then its ratios are missing)")
    parser.add_argument("--results", default=None, help="write a results JSON here")
    args = parser.parse_args(argv)

    results = provenance(args)
    if args.skip != "mnist":
        mnist = mnist_rows(args.steps, args.pool_size)
        naive = mnist["naive"]["seconds_per_cycle"]
        for name, row in mnist.items():
            row["vs_naive"] = naive / row["seconds_per_cycle"]
            print(f"MNIST {name:14s} K={row['k']:<3d} batch {row['batch']:5d}: "
                  f"{row['seconds_per_cycle']:8.0f} s/cycle ({row['seconds_per_cycle'] / 3600:.2f} h), "
                  f"{row['vs_naive']:.2f}x the naive reference", flush=True)
        results["mnist"] = mnist
        write_json(results, args.results, announce=False)  # kept if CIFAR-10 is cut short
    if args.skip != "cifar10":
        cifar = cifar_rows(args.cifar_steps, args.cifar_batch_size)
        speedup = cifar["full"]["seconds_per_cycle"] / cifar["fast"]["seconds_per_cycle"]
        for name, row in cifar.items():
            print(f"CIFAR-10 {name} ({row['evaluator']}): {row['seconds_per_cycle']:.0f} s/cycle "
                  f"({row['seconds_per_cycle'] / 3600:.2f} h)", flush=True)
        print(f"CIFAR-10 fast path: {speedup:.2f}x the full forward path", flush=True)
        results["cifar10"] = cifar
        results["cifar10_fast_speedup"] = speedup
    write_json(results, args.results)
    return results


if __name__ == "__main__":
    main()
