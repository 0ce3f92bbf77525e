#!/usr/bin/env python
"""Optimise a non-differentiable objective directly: balanced error on a 1:9 task.

Task: one Fashion-MNIST class (--positive, default 6 "shirt", the hardest)
against the other nine, so positives are 10% of the data. Network:
Flatten -> Dense(--units, no bias) -> BatchNormalization -> ReLU -> Dense(2 logits).
The quality measure is the balanced error rate (the mean of the two
classes' error rates; always answering "rest" scores 50%) and the positive
class's F1.

--method rso: RSO minimises `keras_rso.losses.ErrorRate(balanced=True,
smoothing=--smoothing)` itself: the balanced error of the batch, a count,
flat almost everywhere, plus `--smoothing` times cross-entropy to break its
ties (or --ties move to walk across them). The prediction is the arg-max.
--method adam: the usual route: Adam on cross-entropy (a surrogate), then
the decision threshold on P(positive) chosen on the validation split to
minimise the balanced error.

Both report, on validation and test, the balanced error and F1 of the final
model (`objective` in the results file).

Example:
    python examples/imbalanced_objective.py --method rso --cycles 3 --smoothing 0.001 \\
        --results docs/results/fmnist_shirt_rso_smooth_seed0.json
    python examples/imbalanced_objective.py --method adam --epochs 5 --batch-size 128 \\
        --results docs/results/fmnist_shirt_adam_seed0.json
"""

import argparse
import functools
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF start-up logs

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from keras_rso import datasets, losses  # noqa: E402
from experiment import (add_gradient_flags, add_rso_flags, parse_rso_args, run_gradient,  # noqa: E402
                        run_rso, split_validation, write_json)


def net(units: int, built: list) -> keras.Model:
    model = keras.Sequential([
        # No bias before BatchNormalization: the batch mean cancels it, and
        # RSO would spend `units` trials a cycle on a weight the loss ignores.
        keras.Input((28, 28, 1)), layers.Flatten(),
        layers.Dense(units, use_bias=False, name="hidden"),
        layers.BatchNormalization(name="bn"), layers.ReLU(),
        layers.Dense(2, name="classifier")], name="one_vs_rest_net")
    built.append(model)
    return model


def scores(y, positive_pred) -> dict:
    """Balanced error rate and the positive class's F1."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(positive_pred).astype(bool)
    fn, fp = np.sum(y & ~p), np.sum(~y & p)
    tp = np.sum(y & p)
    balanced = 0.5 * (fn / max(y.sum(), 1) + fp / max((~y).sum(), 1))
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    return {"balanced_error": float(balanced), "f1": float(f1)}


def best_threshold(y, probability) -> float:
    """The threshold on P(positive) with the lowest balanced error."""
    candidates = np.unique(np.quantile(probability, np.linspace(0.0, 1.0, 1001)))
    errors = [scores(y, probability >= t)["balanced_error"] for t in candidates]
    return float(candidates[int(np.argmin(errors))])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["rso", "adam"], default="rso")
    parser.add_argument("--positive", type=int, default=6, help="the positive class (0-9)")
    parser.add_argument("--units", type=int, default=32, help="hidden units")
    parser.add_argument("--smoothing", type=float, default=0.0,
                        help="--method rso: weight of cross-entropy added to the balanced "
                             "error (breaks its ties)")
    add_rso_flags(parser, cycles=3, batch_size=2048, weights_per_batch=64)
    add_gradient_flags(parser, "adam", "Adam", learning_rate=0.001)
    args = parse_rso_args(parser, argv)
    if not 0 <= args.positive <= 9:
        parser.error(f"--positive must be a class in 0-9; got {args.positive}")
    (x, y), (xt, yt) = datasets.load_mnist(fashion=True)
    data = ((x, (y == args.positive).astype("int32")), (xt, (yt == args.positive).astype("int32")))
    built = []
    build = functools.partial(net, args.units, built)
    if args.method == "rso":
        loss = losses.ErrorRate(balanced=True, smoothing=args.smoothing)
        results = run_rso(build, data, args, loss=loss)
    else:
        args.optimizer = "adam"
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        results = run_gradient(build, data, args, loss=loss)
    model = built[-1]
    _, validation, test = split_validation(data, args.validation_size, args.limit,
                                          args.test_limit)

    def positive_probability(split):
        logits = model.predict(split[0], batch_size=2048, verbose=0)
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits))[:, 1]

    objective = {}
    threshold = 0.5  # the arg-max of two logits
    if args.method == "adam" and validation is not None:
        threshold = best_threshold(validation[1], positive_probability(validation))
    objective["threshold"] = threshold
    for name, split in (("validation", validation), ("test", test)):
        if split is not None:
            objective[name] = scores(split[1], positive_probability(split) >= threshold)
            if args.method == "adam":
                objective[name + "_argmax"] = scores(split[1],
                                                     positive_probability(split) >= 0.5)
    results["objective"] = objective
    print(json.dumps(objective, indent=1))
    write_json(results, args.results, announce=False)  # with the field above
    return results


if __name__ == "__main__":
    main()
