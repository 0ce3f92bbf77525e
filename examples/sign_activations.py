#!/usr/bin/env python
"""A network with sign activations: RSO against SGD and a straight-through estimator.

Network (MNIST, standardized pixels): Flatten -> Dense(--units, no bias)
-> BatchNormalization -> sign -> Dense(10 logits). The sign is a hard
threshold: its gradient is zero wherever it is defined, so backpropagation
gives the hidden layer (and the BatchNormalization before the sign) no
signal at all.

--method rso: RSO searches every weight, hidden ones included; the fast
path treats the sign as the element-wise function it is.
--method sgd: SGD with momentum on the true gradient. Only the output layer
learns; the hidden kernel ends exactly where it started (reported as
`hidden_kernel_max_change`).
--method ste: the usual workaround, a straight-through estimator: forward
sign, backward the gradient of hard_tanh (1 inside [-1, 1], else 0),
written in plain Keras below (`STESign`), trained with SGD.

Example:
    python examples/sign_activations.py --method rso --cycles 3 \\
        --results docs/results/sign_mnist_rso_seed0.json
    python examples/sign_activations.py --method sgd --epochs 5 --batch-size 128 \\
        --results docs/results/sign_mnist_sgd_seed0.json
"""

import argparse
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF start-up logs

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from keras_rso import datasets  # noqa: E402
from experiment import (add_gradient_flags, add_rso_flags, parse_rso_args, run_gradient,  # noqa: E402
                        run_rso, write_json)


@keras.saving.register_keras_serializable(package="sign_activations")
class STESign(layers.Layer):
    """sign(x) forward; the gradient of hard_tanh(x) backward."""

    def call(self, x):
        clipped = ops.clip(x, -1.0, 1.0)
        return clipped + ops.stop_gradient(ops.sign(x) - clipped)


def sign_net(units: int, straight_through: bool, built: list) -> keras.Model:
    """The network; appends `(model, initial hidden kernel)` to `built`."""
    activation = STESign(name="sign") if straight_through else layers.Activation(
        ops.sign, name="sign")
    model = keras.Sequential([
        keras.Input((28, 28, 1)), layers.Flatten(),
        layers.Dense(units, use_bias=False, name="hidden"),
        layers.BatchNormalization(name="bn"), activation,
        layers.Dense(10, name="classifier")], name="sign_mnist_net")
    built.append((model, model.get_layer("hidden").kernel.numpy().copy()))
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["rso", "sgd", "ste"], default="rso")
    parser.add_argument("--units", type=int, default=64, help="hidden units")
    add_rso_flags(parser, cycles=3, batch_size=1024, weights_per_batch=64)
    add_gradient_flags(parser, "sgd/ste", "SGD (momentum 0.9)", learning_rate=0.05)
    args = parse_rso_args(parser, argv)
    data = datasets.load_mnist()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    built = []
    build = functools.partial(sign_net, args.units, args.method == "ste", built)
    if args.method == "rso":
        results = run_rso(build, data, args, loss=loss)
    else:
        args.optimizer = "sgd"
        results = run_gradient(build, data, args, loss=loss)
    model, initial = built[-1]
    change = float(np.max(np.abs(model.get_layer("hidden").kernel.numpy() - initial)))
    results["hidden_kernel_max_change"] = change
    print(f"Largest change of a hidden weight: {change:.6g}")
    write_json(results, args.results, announce=False)  # with the field above
    return results


if __name__ == "__main__":
    main()
