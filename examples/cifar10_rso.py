#!/usr/bin/env python
"""Train a 10-layer CIFAR-10 network with RSO (no gradients).

Network (`keras_rso.models.cifar10_net`): three stages of three 3x3 conv +
BatchNorm + ReLU (16 channels by default, `--filters` to widen), 2x2 average
pooling between stages, global average pooling, Dense 10: 9 conv + 1 dense
weight layers. Inputs are standardized per channel; the saved model (--save)
takes raw pixels, with that standardization as its first layer.

--net paper trains the authors' residual network instead
(keras_rso.models.paper_cifar10_net, 57,104 weights, raw pixels in, logits
out, trained on their float64 summed cross-entropy) with the search settings
the flags give; --preset paper also takes every setting from their code:
batch 5000, one weight per batch, RSO.paper(), their schedule.

Offline note: with KERAS_HOME pointing at a Keras cache that holds the
extracted CIFAR-10 batches, the loader falls back to them when the download
fails.

Example:
    python examples/cifar10_rso.py --cycles 3 --results docs/results/cifar10.json
    python examples/cifar10_rso.py --net paper --batch-size 256 --weights-per-batch 64
"""

import argparse
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF start-up logs

from keras_rso import datasets, models
from experiment import (RawPixels, add_net_flag, add_rso_flags, load_data, parse_rso_args,
                        resolve_net, run_rso, train_mean)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_rso_flags(parser, cycles=3, batch_size=256, weights_per_batch=16,
                  validation_size=5000)
    parser.add_argument("--filters", default="16,16,16",
                        help="channels of the three stages, comma separated")
    add_net_flag(parser, "cifar10_net", "keras_rso.models.cifar10_net; the authors' is "
                 "the residual models.paper_cifar10_net")
    parser.add_argument("--dataset", default="cifar10",
                        help="cifar10 (keras.datasets) or tfds:NAME for any TFDS "
                             "image-classification data set, streamed through tf.data "
                             "with the standardization inside the model")
    args = parse_rso_args(parser, argv)
    if args.dataset != "cifar10" and not args.dataset.startswith("tfds:"):
        parser.error(f"--dataset must be cifar10 or tfds:NAME; got {args.dataset!r}")
    filters = tuple(int(f) for f in args.filters.split(","))
    paper = resolve_net(parser, args, "cifar10_net")
    data = load_data(args, lambda: datasets.load_cifar10(raw=paper))
    build = functools.partial(models.cifar10_net, filters=filters)
    raw_pixels, loss = None, "sparse_categorical_crossentropy"
    if paper:
        build = functools.partial(models.paper_cifar10_net,
                                  mean=train_mean(data, args, per_channel=True))
        loss = models.paper_loss()
    elif isinstance(data, datasets.TFDSData):
        build = functools.partial(build, data.image_shape, data.num_classes,
                                  preprocessing=data.preprocessing_layers())
    else:
        # Saved behind the standardization it was trained after (see mnist_rso).
        raw_pixels = RawPixels(datasets.standardization_layer("cifar10"),
                               datasets.load_cifar10(raw=True)[1])
    return run_rso(build, data, args, loss=loss, raw_pixels=raw_pixels)


if __name__ == "__main__":
    main()
