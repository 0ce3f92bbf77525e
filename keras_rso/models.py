"""The networks of the paper, as plain Keras models (no keras_rso inside)."""

from __future__ import annotations

from typing import Sequence, Tuple

import keras
from keras import layers


def _conv_bn_relu(filters: int, name: str, synchronized_bn: bool = False):
    # The convolution has no bias: BatchNormalization right after it
    # subtracts the batch mean, which cancels any bias exactly, so RSO
    # trials spent on it would be wasted.
    return [
        layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv"),
        layers.BatchNormalization(synchronized=synchronized_bn, name=f"{name}_bn"),
        layers.ReLU(name=f"{name}_relu"),
    ]


def mnist_paper_net(input_shape: Tuple[int, int, int] = (28, 28, 1),
                    num_classes: int = 10, filters: int = 16,
                    synchronized_bn: bool = False,
                    preprocessing: Sequence[keras.layers.Layer] = (),
                    name: str = "rso_mnist_net") -> keras.Sequential:
    """The paper's MNIST network.

    Six 3x3 convolutions with `filters` channels, each followed by
    BatchNormalization and ReLU; 2x2 average pooling after convolutions 2
    and 4; global average pooling; Dense(`num_classes`) with softmax.
    He-normal initialisation. With the defaults it has 12,026 trainable
    weights (11,664 conv, 192 BatchNorm gamma/beta, 170 dense), which is
    what one RSO cycle tries.

    Args:
        input_shape: Image shape (H, W, C).
        num_classes: Number of classes.
        filters: Channels of every convolution.
        synchronized_bn: BatchNormalization over the global batch under a
            multi-replica `tf.distribute` strategy (TensorFlow backend).
        preprocessing: Layers without weights to search, put between the
            input and the first convolution (e.g. the standardization of
            `keras_rso.datasets.TFDSData.preprocessing_layers`), so that the
            model takes raw pixels.
        name: Model name.

    Returns:
        An uncompiled `keras.Sequential`.
    """
    stack = [keras.Input(input_shape), *preprocessing]
    for i in range(6):
        stack += _conv_bn_relu(filters, f"block{i + 1}", synchronized_bn)
        if i in (1, 3):
            stack.append(layers.AveragePooling2D(2, name=f"pool{i + 1}"))
    stack += [
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(num_classes, activation="softmax",
                     kernel_initializer="he_normal", name="classifier"),
    ]
    return keras.Sequential(stack, name=name)


def cifar10_net(input_shape: Tuple[int, int, int] = (32, 32, 3),
                num_classes: int = 10,
                filters: Sequence[int] = (16, 16, 16),
                preprocessing: Sequence[keras.layers.Layer] = (),
                name: str = "rso_cifar10_net") -> keras.Sequential:
    """A 10-layer CIFAR-10 network in the spirit of the paper.

    Three stages of three 3x3 convolutions (each + BatchNormalization +
    ReLU) with `filters[k]` channels, 2x2 average pooling between stages,
    global average pooling and a Dense classifier: 9 convolutions + 1 dense
    = 10 weight layers. The paper does not list its CIFAR-10 layers; this
    keeps the MNIST net's building blocks. The default width (16 channels
    in every stage, 19,322 searched weights) keeps a cycle affordable on a
    CPU, since one RSO cycle tries every weight once; `filters` widens it.

    Args:
        input_shape: Image shape (H, W, C).
        num_classes: Number of classes.
        filters: Channels of the three stages.
        preprocessing: Layers put between the input and the first
            convolution (see `mnist_paper_net`).
        name: Model name.

    Returns:
        An uncompiled `keras.Sequential`.
    """
    stack = [keras.Input(input_shape), *preprocessing]
    for stage, width in enumerate(filters):
        if stage:
            stack.append(layers.AveragePooling2D(2, name=f"pool{stage}"))
        for i in range(3):
            stack += _conv_bn_relu(width, f"stage{stage + 1}_block{i + 1}")
    stack += [
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(num_classes, activation="softmax",
                     kernel_initializer="he_normal", name="classifier"),
    ]
    return keras.Sequential(stack, name=name)
