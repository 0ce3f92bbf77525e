#!/usr/bin/env python
"""Re-save models trained on standardized arrays so that they take raw pixels.

Models that `examples/mnist_rso.py` and `examples/cifar10_rso.py` saved
before those scripts did it themselves take the standardized arrays of
`keras_rso.datasets.load_mnist()`/`load_cifar10()`. This puts the same
standardization (`keras_rso.datasets.standardization_layer`) in front of
each, checks the result on the raw test images against the accuracy its
results file recorded, then overwrites the model and adds to the results
file what the saved model takes and gives (`saved_model_inputs`,
`saved_model_test_accuracy`).

Example:
    python benchmarks/raw_pixel_models.py --dataset mnist \\
        docs/results/models/mnist_val10k_b2048_k64_balanced_random_seed0.keras \\
        docs/results/mnist_val10k_b2048_k64_c5_s3_ff033_balanced_random_seed0.json
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples"))

import keras  # noqa: E402

from keras_rso import datasets  # noqa: E402
from experiment import accuracy, raw_pixel_model, write_json  # noqa: E402

LOADERS = {"mnist": lambda: datasets.load_mnist(raw=True),
           "fashion_mnist": lambda: datasets.load_mnist(fashion=True, raw=True),
           "cifar10": lambda: datasets.load_cifar10(raw=True)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .keras model that takes standardized arrays")
    parser.add_argument("results", help="its results JSON (test_accuracy recorded there)")
    parser.add_argument("--dataset", choices=sorted(LOADERS), required=True)
    parser.add_argument("--tolerance", type=float, default=3e-4,
                        help="largest accepted difference from the recorded test accuracy "
                             "(float32 rounding can swap a near-tie's top two scores)")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    if results.get("saved_model_inputs") == "raw pixels":
        parser.error(f"{args.results} says its model already takes raw pixels")
    model = keras.models.load_model(args.model)
    _, (x_raw, y_raw) = LOADERS[args.dataset]()
    if tuple(model.input_shape[1:]) != x_raw.shape[1:]:
        parser.error(f"{args.model} takes {model.input_shape[1:]}, "
                     f"not {args.dataset} images {x_raw.shape[1:]}")
    exported = raw_pixel_model(model, datasets.standardization_layer(args.dataset),
                               x_raw.shape[1:])
    raw_accuracy = accuracy(exported, x_raw, y_raw)
    recorded = results["test_accuracy"]
    print(f"{args.model}: raw pixels {raw_accuracy:.4f}, recorded (standardized) {recorded:.4f}")
    if abs(raw_accuracy - recorded) > args.tolerance:
        sys.exit(f"Not saved: the accuracies differ by more than {args.tolerance}")
    exported.save(args.model)
    results.update({"saved_model_inputs": "raw pixels",
                    "saved_model_test_accuracy": raw_accuracy})
    write_json(results, args.results)


if __name__ == "__main__":
    main()
