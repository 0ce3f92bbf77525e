#!/usr/bin/env python
"""Train the same network with a gradient optimizer, for comparison with RSO.

Writes the same results format as the RSO examples (accuracy per epoch,
wall-clock, and weight updates counted as parameters x steps, the paper's
count for SGD), so `benchmarks/plot_results.py` can draw both.

Example:
    python examples/compare_sgd.py --dataset mnist --epochs 5 \
        --results docs/results/mnist_sgd.json
    python examples/compare_sgd.py --dataset cifar10 --net paper --optimizer adam \
        --learning-rate 0.001 --decay cosine --epochs 20
"""

import argparse
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF start-up logs

import keras
from keras_rso import datasets, models
from experiment import add_common_flags, run_gradient, train_mean


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
    parser.add_argument("--net", choices=["default", "paper"], default="default",
                        help="default: models.mnist_paper_net / models.cifar10_net (the RSO "
                             "examples' nets); paper: the authors' exact nets "
                             "(models.paper_mnist_net / paper_cifar10_net: raw pixels in, "
                             "logits out)")
    # The validation split depends on the data set: 10,000 MNIST or 5,000
    # CIFAR-10 training images unless --validation-size says otherwise.
    add_common_flags(parser, validation_size=None)
    args = parser.parse_args(argv)
    if args.validation_size is None:
        args.validation_size = 10000 if args.dataset == "mnist" else 5000
    if args.net == "paper":
        if args.filters != parser.get_default("filters"):
            parser.error("--net paper has the paper's channels; drop --filters")
        mnist = args.dataset == "mnist"
        data = datasets.load_mnist(raw=True) if mnist else datasets.load_cifar10(raw=True)
        mean = train_mean(data, args, per_channel=not mnist)
        build = (functools.partial(models.paper_mnist_net, mean=float(mean)) if mnist
                 else functools.partial(models.paper_cifar10_net, mean=mean))
        # The paper's nets end in logits; a gradient step wants the mean
        # over the batch (the RSO preset's sum would scale the learning rate).
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return run_gradient(build, data, args, loss=loss)
    if args.dataset == "mnist":
        data, build = datasets.load_mnist(), models.mnist_paper_net
    else:
        filters = tuple(int(f) for f in args.filters.split(","))
        data = datasets.load_cifar10()
        build = functools.partial(models.cifar10_net, filters=filters)
    return run_gradient(build, data, args)


if __name__ == "__main__":
    main()
