#!/usr/bin/env python
"""Per-variable standard deviation of saved models, against a fresh one.

RSO draws `dw ~ N(0, sigma_d)` with sigma_d fixed at the start (the std of
the layer's initial weights). A convolution followed by BatchNormalization
computes the same function at any scale of its kernel, so when accepted
steps make a kernel grow, the same sigma becomes a smaller step relative to
it. This prints each variable's std in the saved models next to the std of
a freshly initialised copy (same builder, same seed), to show that growth.
With --per-channel it prints instead, for each convolution kernel, the
spread of its output channels' stds (max / min): each output channel feeds
its own BatchNormalization channel, so a layer-wide sigma is a different
relative step in each of them.

Example:
    python -m benchmarks.weight_stats mnist.keras --output docs/results/weight_stats.json
"""

import argparse
import os

import keras

import keras_rso  # noqa: F401  (registers the saved classes)
from keras_rso import models
from examples.experiment import provenance, write_json


def name(variable) -> str:
    """`layer/variable`, the key both tables use."""
    return "/".join(variable.path.split("/")[-2:])


def stds(model: keras.Model) -> dict:
    return {name(v): float(keras.ops.std(v.value)) for v in model.trainable_variables}


def channel_spreads(model: keras.Model) -> dict:
    """Max / min over output channels of each convolution kernel's std."""
    spreads = {}
    for v in model.trainable_variables:
        if len(v.shape) == 4:
            w = keras.ops.convert_to_numpy(v.value)
            per_channel = w.reshape(-1, w.shape[-1]).std(axis=0)
            spreads[name(v)] = float(per_channel.max() / per_channel.min())
    return spreads


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help=".keras files of the paper's MNIST net")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh reference")
    parser.add_argument("--per-channel", action="store_true",
                        help="print each kernel's spread of output-channel stds instead")
    parser.add_argument("--output", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    measure = channel_spreads if args.per_channel else stds
    table = {"initial (fresh, seed %d)" % args.seed: measure(models.mnist_paper_net())}
    for path in args.models:
        table[os.path.basename(path)] = measure(keras.saving.load_model(path))
    names = list(table)
    print("| variable | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for var in table[names[0]]:
        print(f"| `{var}` | " + " | ".join(f"{table[n].get(var, float('nan')):.3f}"
                                           for n in names) + " |")
    write_json({**provenance(args),
                "channel_std_spread" if args.per_channel else "std": table}, args.output)


if __name__ == "__main__":
    main()
