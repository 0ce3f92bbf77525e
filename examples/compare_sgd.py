#!/usr/bin/env python
"""Train the same network with a gradient optimizer, for comparison with RSO.

Writes the same results format as the RSO examples (accuracy per epoch,
wall-clock, and weight updates counted as parameters x steps, the paper's
count for SGD), so `benchmarks/plot_results.py` can draw both.

Example:
    python examples/compare_sgd.py --dataset mnist --epochs 5 \
        --results docs/results/mnist_sgd.json
"""

import argparse
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF start-up logs

from keras_rso import datasets, models
from experiment import add_common_flags, run_gradient


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["mnist", "cifar10"], default="mnist")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--decay", choices=["none", "cosine"], default="none",
                        help="learning-rate schedule: constant, or cosine decay to 0 "
                             "over the run")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--filters", default="16,16,16", help="CIFAR-10 stage widths")
    # The validation split depends on the data set: 10,000 MNIST or 5,000
    # CIFAR-10 training images unless --validation-size says otherwise.
    add_common_flags(parser, validation_size=None)
    args = parser.parse_args(argv)
    if args.validation_size is None:
        args.validation_size = 10000 if args.dataset == "mnist" else 5000
    if args.dataset == "mnist":
        data, build = datasets.load_mnist(), models.mnist_paper_net
    else:
        filters = tuple(int(f) for f in args.filters.split(","))
        data = datasets.load_cifar10()
        build = functools.partial(models.cifar10_net, filters=filters)
    return run_gradient(build, data, args)


if __name__ == "__main__":
    main()
