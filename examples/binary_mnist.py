#!/usr/bin/env python
"""Binary weights on the paper's MNIST net: RSO against a straight-through estimator.

Every convolution and dense kernel of `keras_rso.models.paper_mnist_net`
holds only -1 or +1; the BatchNormalization after each convolution gives
each channel its scale, and its gamma and beta stay real.

--method rso (default): the kernels carry `keras_rso.constraints.Discrete.binary()`
and RSO searches them directly: a trial of a kernel weight is its flip,
kept if the batch's loss falls. Gamma and beta are searched as real
numbers (`--sigma-rule he`, the default here: sigma 0.167, the authors').
The saved model holds only -1 and +1 in its kernels.

--method ste: the usual gradient recipe for binary weights (BinaryConnect):
real "latent" kernels, clipped to [-1, 1], whose sign is used in the
forward pass, trained with Adam; the gradient passes through the sign as
if it were the identity (a straight-through estimator: the sign's true
gradient is zero). Written in plain Keras below (`STEConv2D`, `STEDense`).

Both hold out the last --validation-size training images; settings are
chosen on validation accuracy and the test set is read for the final model.

Example (the README's binary result, chosen on validation: 14 cycles, the
last 4 on batches of 8,192, then 10 passes over gamma and beta alone, the
binary kernels frozen):
    python examples/binary_mnist.py --method rso --batch-schedule 4096:10,8192:4 \\
        --schedule-cycles 10 --weights-per-batch 64 --order random \\
        --results docs/results/binary_mnist_rso_seed0.json --save binary_c14.keras
    python examples/binary_mnist.py --method rso --initial-weights binary_c14.keras \\
        --initial-cycle 14 --cycles 24 --freeze-discrete --batch-size 8192 \\
        --weights-per-batch 16 --order random --step-rule parabolic --schedule-cycles 10 \\
        --results docs/results/binary_mnist_rso_polished_seed0.json
    python examples/binary_mnist.py --method ste --epochs 5 --learning-rate 0.01 \\
        --results docs/results/binary_mnist_ste_seed0.json
"""

import argparse
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF start-up logs

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from keras_rso import constraints, datasets, models  # noqa: E402
from experiment import (add_gradient_flags, add_rso_flags, parse_rso_args, run_gradient,  # noqa: E402
                        run_rso, train_mean)


def binarize(kernel):
    """Forward: the sign of `kernel` (0 counts as +1). Backward: the identity."""
    binary = ops.where(kernel >= 0, ops.ones_like(kernel), -ops.ones_like(kernel))
    return kernel + ops.stop_gradient(binary - kernel)


@keras.saving.register_keras_serializable(package="binary_mnist")
class ClipToUnit(keras.constraints.Constraint):
    """Keeps a latent kernel in [-1, 1] (BinaryConnect)."""

    def __call__(self, w):
        return ops.clip(w, -1.0, 1.0)


@keras.saving.register_keras_serializable(package="binary_mnist")
class STEConv2D(layers.Conv2D):
    """Conv2D that convolves with the sign of its kernel (straight-through)."""

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, binarize(kernel))


@keras.saving.register_keras_serializable(package="binary_mnist")
class STEDense(layers.Dense):
    """Bias-free, linear Dense that multiplies by the sign of its kernel."""

    def call(self, inputs, training=None):
        return ops.matmul(inputs, binarize(self.kernel))


def ste_net(mean: float) -> keras.Model:
    """`paper_mnist_net` with straight-through binary kernels."""

    def swap(layer):
        config = layer.get_config()
        if type(layer) is layers.Conv2D:
            return STEConv2D(**{**config, "kernel_constraint": ClipToUnit()})
        if type(layer) is layers.Dense:
            return STEDense(**{**config, "kernel_constraint": ClipToUnit()})
        return layer.__class__.from_config(config)

    return keras.models.clone_model(models.paper_mnist_net(mean=mean), clone_function=swap)


def rso_net(mean: float) -> keras.Model:
    """`paper_mnist_net` with every kernel in {-1, +1}, as --method rso trains it."""
    return models.paper_mnist_net(mean=mean, kernel_constraint=constraints.Discrete.binary(),
                                  name="binary_paper_mnist_net")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["rso", "ste"], default="rso")
    add_rso_flags(parser, cycles=5, batch_size=2048, weights_per_batch=64)
    parser.set_defaults(sigma_rule="he")
    add_gradient_flags(parser, "ste", "Adam", learning_rate=0.01)
    args = parse_rso_args(parser, argv)
    data = datasets.load_mnist(raw=True)
    mean = float(train_mean(data, args, per_channel=False))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if args.method == "ste":
        args.optimizer = "adam"
        return run_gradient(functools.partial(ste_net, mean), data, args, loss=loss)
    return run_rso(functools.partial(rso_net, mean), data, args, loss=loss)


if __name__ == "__main__":
    main()
