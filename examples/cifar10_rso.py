#!/usr/bin/env python
"""Train a 10-layer CIFAR-10 network with RSO (no gradients).

Network (`keras_rso.models.cifar10_net`): three stages of three 3x3 conv +
BatchNorm + ReLU (16 channels by default, `--filters` to widen), 2x2 average
pooling between stages, global average pooling, Dense 10: 9 conv + 1 dense
weight layers. Inputs are standardized per channel.

Offline note: with KERAS_HOME pointing at a Keras cache that holds the
extracted CIFAR-10 batches, the loader falls back to them when the download
fails.

Example:
    python examples/cifar10_rso.py --cycles 3 --results docs/results/cifar10.json
"""

import argparse
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF start-up logs

from keras_rso import datasets, models
from keras_rso.experiment import add_rso_flags, run_rso


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_rso_flags(parser, cycles=3, batch_size=256, weights_per_batch=16,
                  validation_size=5000)
    parser.add_argument("--filters", default="16,16,16",
                        help="channels of the three stages, comma separated")
    args = parser.parse_args(argv)
    filters = tuple(int(f) for f in args.filters.split(","))
    data = datasets.load_cifar10()
    return run_rso(functools.partial(models.cifar10_net, filters=filters), data, args)


if __name__ == "__main__":
    main()
