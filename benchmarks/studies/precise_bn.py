#!/usr/bin/env python
"""Does test accuracy improve with BN statistics over the whole training set?

RSO's cycle-end refresh (`RSO(bn_refresh=True)`) sets every BatchNorm
layer's moving mean and variance to the statistics of one batch. This
evaluates saved MNIST models as saved, then with each BN layer's statistics
replaced by the mean over all 60,000 training images (layer by layer, the
earlier layers already using their new statistics), to show how much that
one-batch estimate costs.

Example:
    python -m benchmarks.precise_bn mnist.keras --output docs/results/precise_bn_mnist.json
"""

import argparse
import os

import keras
import numpy as np

import keras_rso  # noqa: F401  (registers the saved classes)
from keras_rso import datasets
from examples.experiment import provenance, write_json


def accuracy(model, x, y) -> float:
    pred = model.predict(x, batch_size=2000, verbose=0)
    return float((pred.argmax(-1) == y).mean())


def set_population_statistics(model, x, batch_size: int = 10000):
    """Sets each BN layer's moving statistics to its input's mean/variance
    over `x` (averaged over batches), from the first BN layer to the last."""
    for bn in [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]:
        upstream = keras.Model(model.inputs, bn.input)
        means, variances = [], []
        for start in range(0, len(x), batch_size):
            h = keras.ops.convert_to_numpy(upstream(x[start:start + batch_size], training=False))
            axes = tuple(range(h.ndim - 1))
            means.append(h.mean(axes))
            variances.append(h.var(axes))
        bn.moving_mean.assign(np.mean(means, axis=0))
        bn.moving_variance.assign(np.mean(variances, axis=0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help=".keras files of MNIST models")
    parser.add_argument("--output", default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    (x_train, _), (x_test, y_test) = datasets.load_mnist()
    rows = {}
    for path in args.models:
        model = keras.saving.load_model(path)
        saved = accuracy(model, x_test, y_test)
        set_population_statistics(model, x_train)
        rows[os.path.basename(path)] = {"as_saved": saved,
                                        "population_bn": accuracy(model, x_test, y_test)}
        print(f"{os.path.basename(path)}: test accuracy {saved:.4f} as saved, "
              f"{rows[os.path.basename(path)]['population_bn']:.4f} with BN statistics "
              "over the whole training set")
    write_json({**provenance(args), "test_accuracy": rows}, args.output)


if __name__ == "__main__":
    main()
