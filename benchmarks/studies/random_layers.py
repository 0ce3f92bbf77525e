#!/usr/bin/env python
"""Common random numbers for random layers: decisions and accuracy, measured.

A model with Dropout draws a fresh mask at every call. If each candidate of
a trial is evaluated under its own mask, the trial compares noise as much as
weights; keras_rso evaluates the base pass and every candidate of a batch
under one mask (common random numbers, CRN).

Two measurements on an MLP with Dropout on MNIST (validation split: the last
10,000 training images; the test set is not read):

1. `decisions`: after a short RSO run, random trials (a weight, a dw drawn
   with that variable's std) are decided on a batch of `--batch-size`
   images with one mask for the three candidates (CRN) and with a fresh
   mask for each (independent). Each is compared with the decision on
   `--reference-size` validation images averaged over `--reference-masks`
   masks (shared by the three candidates).
   Plain Keras calls only: the masks are set through each Dropout layer's
   seed generator.
2. `training`: validation accuracy per cycle of `RSOModel.fit` with the
   installed keras_rso. Run it once with the code before CRN (for example
   from a `git worktree` on `PYTHONPATH`) and once after.

Example:
    python -m benchmarks.random_layers decisions --results docs/results/crn_decisions.json
    python -m benchmarks.random_layers training --cycles 3 --results docs/results/crn_training.json
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_rso
from keras_rso import datasets
from examples.experiment import provenance, write_json


def dropout_mlp(seed: int, rate: float) -> keras.Model:
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)), L.Flatten(),
        L.Dense(32, activation="relu", kernel_initializer="he_normal"),
        L.Dropout(rate),
        L.Dense(10, activation="softmax", kernel_initializer="he_normal"),
    ], name="dropout_mlp")


def _data(limit: int):
    (x, y), _ = datasets.load_mnist()
    n = len(x) - 10000
    return (x[:min(limit, n)], y[:min(limit, n)]), (x[n:], y[n:])


def _train(model, train, validation, args):
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=args.weights_per_batch,
                                            seed=args.seed),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = trainer.fit(*train, batch_size=args.batch_size, epochs=args.cycles,
                          validation_data=validation, verbose=0,
                          callbacks=[keras_rso.callbacks.SigmaAnnealing(final_fraction=0.1)])
    return history.history, time.perf_counter() - start


def _loss(model, x, y, mask_seed: int) -> float:
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.seed_generator.state.assign(np.array([mask_seed, 0], "int64"))
    y_pred = model(x, training=True)
    return float(np.mean(keras.losses.sparse_categorical_crossentropy(y, y_pred)))


def _decide(losses) -> int:
    """0 keeps w; 1 takes w + dw; 2 takes w - dw (ties keep w)."""
    best = 0
    for i in (1, 2):
        if losses[i] < losses[best]:
            best = i
    return best


def decisions(args) -> dict:
    train, validation = _data(args.limit)
    model = dropout_mlp(args.seed, args.rate)
    _train(model, train, validation, args)
    rng = np.random.default_rng(args.seed)
    variables = model.trainable_variables
    sizes = np.array([int(np.prod(v.shape)) for v in variables])
    stds = [float(np.std(v.numpy())) or 0.05 for v in variables]
    x_all, y_all = train
    # The reference: the validation images, which the batches never hold.
    ref_x, ref_y = (t[:args.reference_size] for t in validation)
    agree = {"crn": 0, "independent": 0}
    for t in range(args.trials):
        v = int(rng.choice(len(variables), p=sizes / sizes.sum()))
        var, j = variables[v], int(rng.integers(sizes[v]))
        w = var.numpy()
        dw = float(rng.normal()) * stds[v] * args.sigma_scale
        candidates = []
        for delta in (0.0, dw, -dw):
            c = w.copy().reshape(-1)
            c[j] += delta
            candidates.append(c.reshape(w.shape))
        pick = rng.choice(len(x_all), args.batch_size, replace=False)
        xb, yb = x_all[pick], y_all[pick]
        seeds = rng.integers(1, 2**31, size=3 + args.reference_masks)

        def losses(x, y, mask_seeds):
            out = []
            for c, seed_list in zip(candidates, mask_seeds):
                var.assign(c)
                out.append(np.mean([_loss(model, x, y, int(s)) for s in seed_list]))
            var.assign(w)
            return out

        shared = [seeds[3:]] * 3
        reference = _decide(losses(ref_x, ref_y, shared))
        agree["crn"] += _decide(losses(xb, yb, [[seeds[0]]] * 3)) == reference
        agree["independent"] += _decide(losses(xb, yb, [[s] for s in seeds[:3]])) == reference
    return {"trials": args.trials,
            "agreement_with_reference": {k: v / args.trials for k, v in agree.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["decisions", "training"])
    parser.add_argument("--rate", type=float, default=0.3, help="Dropout rate")
    parser.add_argument("--limit", type=int, default=10000, help="training images")
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--weights-per-batch", type=int, default=16)
    parser.add_argument("--trials", type=int, default=300, help="(decisions)")
    parser.add_argument("--sigma-scale", type=float, default=0.5,
                        help="dw as a multiple of the variable's std (decisions)")
    parser.add_argument("--reference-size", type=int, default=8000)
    parser.add_argument("--reference-masks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=None)
    args = parser.parse_args(argv)
    results = provenance(args)
    if args.what == "decisions":
        results.update(decisions(args))
    else:
        train, validation = _data(args.limit)
        history, seconds = _train(dropout_mlp(args.seed, args.rate), train, validation, args)
        results.update({"keras_rso": os.path.dirname(keras_rso.__file__),
                        "val_accuracy_per_cycle": history["val_accuracy"],
                        "seconds": seconds})
    print({k: v for k, v in results.items() if k not in ("args", "machine")})
    write_json(results, args.results)
    return results


if __name__ == "__main__":
    main()
