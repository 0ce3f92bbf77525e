#!/usr/bin/env python
"""Train the paper's MNIST network with RSO (no gradients).

Network: 6 conv 3x3x16 + BatchNorm + ReLU, average pooling after convs 2 and
4, global average pooling, Dense 10; He-normal init; standardized inputs.

Defaults: batch 1024, 64 weights per batch, the paper's sigma schedule of
1x down to 0.1x at the last cycle, the paper's visiting order. The flags
change each of these (--batch-size, --weights-per-batch, --sigma-scale,
--final-fraction, --balance-sigma, --order, --step-rule, --output-passes);
--batch-schedule 512:2,2048:3 changes the batch size from one cycle to the
next (one fit per batch size, resumable across them);
docs/results.md records what each setting measured, with its command.
--net paper trains the authors' network instead (keras_rso.models.paper_mnist_net:
raw pixels in, logits out, their float64 summed loss) under the search
settings the flags give; --preset paper runs the authors' code (their
network, batch 5000, one weight per batch, RSO.paper(), the first --cycles
of their 50-cycle sigma schedule); --preset fastest runs the fastest
configuration to 98% measured here: pooling after convolutions 1 and 3,
batches of 1024 drawn by loss (--sampling loss), 4 cycles (chosen on
validation accuracy; docs/results.md, "Validated runs", "Pooling earlier"
and "Training on loss-drawn batches").
Add --backup-dir to make a long run resumable. --dataset tfds:NAME trains
the same network on any TFDS image-classification data set (its shape and
classes), streamed through tf.data, with the standardization inside the
model. Every saved model takes raw pixels (0-255), as keras.datasets returns
them: a model trained on standardized arrays is saved behind the same
standardization.

Example:
    python examples/mnist_rso.py --cycles 5 --save mnist.keras --logdir logs/mnist
"""

import argparse
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF start-up logs

from keras_rso import datasets, models
from experiment import (RawPixels, add_net_flag, add_rso_flags, load_data, parse_rso_args,
                        resolve_net, run_rso, train_mean)


def _convolutions(text: str):
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected convolution numbers separated by commas, e.g. 1,3; got {text!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_rso_flags(parser, cycles=5, batch_size=1024, weights_per_batch=64,
                  presets=("paper", "fastest"))
    parser.add_argument("--filters", type=int, default=16,
                        help="channels of every conv layer (paper: 16)")
    parser.add_argument("--pool-after", type=_convolutions, default=(2, 4),
                        help="convolutions (1-6) followed by 2x2 average pooling, as N,N "
                             "(paper: 2,4; --preset fastest: 1,3, the same weights and "
                             "cheaper trials; mnist_paper_net only)")
    add_net_flag(parser, "mnist_paper_net", "keras_rso.models.mnist_paper_net: ReLU after "
                 "BatchNorm, a bias in the classifier, standardized inputs; the authors' is "
                 "models.paper_mnist_net")
    parser.add_argument("--dataset", default="mnist",
                        help="mnist, fashion_mnist (keras.datasets), or tfds:NAME for any "
                             "TFDS image-classification data set, streamed through tf.data "
                             "with the standardization inside the model")
    parser.add_argument("--fashion", action="store_true",
                        help="use Fashion-MNIST instead of MNIST (= --dataset fashion_mnist)")
    args = parse_rso_args(parser, argv)
    if args.fashion:
        args.dataset = "fashion_mnist"
    if args.dataset not in ("mnist", "fashion_mnist") and not args.dataset.startswith("tfds:"):
        parser.error(f"--dataset must be mnist, fashion_mnist or tfds:NAME; got {args.dataset!r}")
    paper = resolve_net(parser, args, "mnist_paper_net")
    try:  # fail before loading data, with the model's own message
        models.mnist_paper_net(filters=1, pool_after=args.pool_after)
    except ValueError as error:
        parser.error(f"--pool-after: {error}")
    data = load_data(args, lambda: datasets.load_mnist(
        fashion=args.dataset == "fashion_mnist", raw=paper))
    build = functools.partial(models.mnist_paper_net, filters=args.filters,
                              pool_after=args.pool_after)
    raw_pixels, loss = None, "sparse_categorical_crossentropy"
    if paper:
        build = functools.partial(models.paper_mnist_net,
                                  mean=float(train_mean(data, args, per_channel=False)))
        loss = models.paper_loss()
    elif isinstance(data, datasets.TFDSData):
        build = functools.partial(
            build, data.image_shape, data.num_classes,
            preprocessing=data.preprocessing_layers())
    else:
        # Trained on standardized arrays; saved behind the same
        # standardization, so that the saved model takes raw pixels.
        raw_pixels = RawPixels(datasets.standardization_layer(args.dataset), datasets.load_mnist(
            fashion=args.dataset == "fashion_mnist", raw=True)[1])
    return run_rso(build, data, args, loss=loss, raw_pixels=raw_pixels)


if __name__ == "__main__":
    main()
