"""The networks of the paper, as plain Keras models (no keras_rso inside).

`paper_mnist_net` and `paper_cifar10_net` are the authors' networks exactly,
taking raw pixels; `mnist_paper_net` and `cifar10_net` are keras_rso's
earlier variants (standardized inputs, ReLU after every BatchNormalization,
a softmax classifier), kept for the runs recorded with them.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import keras
import numpy as np
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
                    pool_after: Sequence[int] = (2, 4),
                    name: str = "rso_mnist_net") -> keras.Sequential:
    """The paper's MNIST network.

    Six 3x3 convolutions with `filters` channels, each followed by
    BatchNormalization and ReLU; 2x2 average pooling after convolutions 2
    and 4 (`pool_after`); global average pooling; Dense(`num_classes`) with
    softmax.
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
        pool_after: The convolutions (numbered 1 to 6) followed by 2x2
            average pooling. Pooling earlier keeps the same weights but
            makes every layer after the pool cheaper to run, which is most
            of an RSO trial's cost (a trial reruns the net from the
            perturbed layer on); `(1, 3)` runs convolutions 2-3 at half and
            4-6 at a quarter of the input's resolution.
        name: Model name.

    Returns:
        An uncompiled `keras.Sequential`.

    Raises:
        ValueError: If `pool_after` names a convolution outside 1-6 or the
            same one twice, or pools the image below one pixel.
    """
    pools = _pool_positions(pool_after, input_shape)
    stack = [keras.Input(input_shape), *preprocessing]
    for i in range(6):
        stack += _conv_bn_relu(filters, f"block{i + 1}", synchronized_bn)
        if i + 1 in pools:
            stack.append(layers.AveragePooling2D(2, name=f"pool{i + 1}"))
    stack += [
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(num_classes, activation="softmax",
                     kernel_initializer="he_normal", name="classifier"),
    ]
    return keras.Sequential(stack, name=name)


def _pool_positions(pool_after: Sequence[int], input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    pools = tuple(pool_after)
    bad = [p for p in pools if isinstance(p, bool) or not isinstance(p, (int, np.integer))
           or not 1 <= p <= 6]
    if bad:
        raise ValueError(f"pool_after names convolutions 1 to 6; got {bad} in {pools}")
    if len(set(pools)) != len(pools):
        raise ValueError(f"pool_after names a convolution twice: {pools}")
    if min(input_shape[:2]) >> len(pools) < 1:
        raise ValueError(f"pool_after={pools}: {len(pools)} 2x2 poolings shrink a "
                         f"{input_shape[0]}x{input_shape[1]} image below one pixel")
    return pools


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


# The authors' code (rohun-tripathi/RSO-gradient-free, train.py) initialises
# every kernel from an untruncated normal with the He std sqrt(2 / fan_in);
# Keras' "he_normal" truncates it.
def _he(fan_in: int):
    return keras.initializers.RandomNormal(stddev=(2.0 / fan_in) ** 0.5)


def _pixels(mean, name: str = "pixels"):
    """Raw pixels (0-255) to pixels / 255 minus the training mean."""
    mean = np.atleast_1d(np.asarray(mean, dtype="float64"))
    return layers.Normalization(mean=255.0 * mean, variance=np.full_like(mean, 255.0 ** 2),
                                name=name)


def _paper_conv(filters: int, fan_in_channels: int, name: str, kernel: int = 3,
                constraint=None):
    return layers.Conv2D(filters, kernel, padding="same", use_bias=False,
                         kernel_initializer=_he(fan_in_channels * kernel * kernel),
                         kernel_constraint=constraint, name=name)


# Training-set pixel means / 255: MNIST's 60,000 training images, and the
# published per-channel means of CIFAR-10's 50,000 (the JPEG-decoded offline
# copy in ../shared differs from them by less than 0.0002).
MNIST_MEAN = 0.1306604762738429
CIFAR10_MEAN = (0.4913996, 0.4821584, 0.4465309)


def paper_mnist_net(mean: float = MNIST_MEAN, num_classes: int = 10,
                    input_shape: Tuple[int, int, int] = (28, 28, 1),
                    kernel_constraint=None,
                    name: str = "paper_mnist_net") -> keras.Sequential:
    """The authors' MNIST network, exactly (12,016 searched weights).

    As in their code: six 3x3 convolutions with 16 channels and no bias;
    each is followed by 2x2 average pooling (after convolutions 2 and 4
    only) and BatchNormalization; the ReLU sits at the *input* of the next
    convolution, so none follows the last BatchNormalization; global
    average pooling; a Dense layer to `num_classes` logits, without bias
    and without softmax (train with `from_logits=True`). Kernels are drawn
    from an untruncated normal with std sqrt(2 / fan_in).

    The model takes raw pixels (0-255, as `keras.datasets` returns them):
    its first layer computes pixels / 255 minus `mean`, without dividing
    by a std, as the authors did. `keras_rso.models.mnist_paper_net` is
    keras_rso's earlier variant (ReLU after every BatchNormalization,
    pooling after it, a softmax classifier with bias, standardized inputs).

    Args:
        mean: Mean of the training pixels / 255 (default: MNIST's 60,000
            training images).
        num_classes: Number of classes.
        input_shape: Image shape (H, W, C).
        kernel_constraint: A constraint for every convolution and dense
            kernel, e.g. `keras_rso.constraints.Discrete.binary()` for a
            binary-weight network (BatchNormalization then gives each
            channel its scale; its gamma and beta stay real).
        name: Model name.

    Returns:
        An uncompiled `keras.Sequential` that outputs logits.

    Example:

    ```python
    model = keras_rso.models.paper_mnist_net()
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```
    """
    stack = [keras.Input(input_shape), _pixels(mean)]
    channels = input_shape[-1]
    for i in range(6):
        if i:
            stack.append(layers.ReLU(name=f"relu{i + 1}"))
        stack.append(_paper_conv(16, channels, f"conv{i + 1}", constraint=kernel_constraint))
        if i in (1, 3):
            stack.append(layers.AveragePooling2D(2, name=f"pool{i + 1}"))
        stack.append(layers.BatchNormalization(name=f"bn{i + 1}"))
        channels = 16
    stack += [layers.GlobalAveragePooling2D(name="gap"),
              layers.Dense(num_classes, use_bias=False, kernel_initializer=_he(16),
                           kernel_constraint=kernel_constraint, name="classifier")]
    return keras.Sequential(stack, name=name)


def paper_cifar10_net(mean: Sequence[float] = CIFAR10_MEAN, num_classes: int = 10,
                      input_shape: Tuple[int, int, int] = (32, 32, 3),
                      kernel_constraint=None,
                      name: str = "paper_cifar10_net") -> keras.Model:
    """The authors' residual CIFAR-10 network, exactly (57,104 searched weights).

    Nine 3x3 convolutions without bias, with 16, 16, 16, 32, 32, 32, 32, 32
    and 32 channels, each followed by [2x2 average pooling, after
    convolutions 3 and 5] and BatchNormalization, with the ReLU at the
    input of the next convolution. Convolutions 3, 5, 7 and 9 add the
    BatchNormalization output of convolutions 1, 3, 5 and 7 to their own
    output before the pooling; where the channels grow (at convolution 5)
    that skip passes a 1x1 convolution and a BatchNormalization. Global
    average pooling; Dense to `num_classes` logits without bias.

    Takes raw pixels (0-255): the first layer computes pixels / 255 minus
    the per-channel `mean`. `keras_rso.models.cifar10_net` is keras_rso's
    earlier 10-layer chain without skips.

    Args:
        mean: Per-channel mean of the training pixels / 255 (default:
            `keras.datasets.cifar10`'s training images).
        num_classes: Number of classes.
        input_shape: Image shape (H, W, C).
        kernel_constraint: A constraint for every convolution (shortcut
            included) and dense kernel, as in `paper_mnist_net`.
        name: Model name.

    Returns:
        An uncompiled functional `keras.Model` that outputs logits.
    """
    widths = (16, 16, 16, 32, 32, 32, 32, 32, 32)
    skip_from = {2: 0, 4: 2, 6: 4, 8: 6}  # 0-based: conv i adds BN output of conv j
    pool_after = (2, 4)
    inputs = keras.Input(input_shape)
    h = _pixels(mean)(inputs)
    bn_out, channels = [], input_shape[-1]
    for i, width in enumerate(widths):
        x = layers.ReLU(name=f"relu{i + 1}")(h) if i else h
        out = _paper_conv(width, channels, f"conv{i + 1}", constraint=kernel_constraint)(x)
        if i in skip_from:
            skip = bn_out[skip_from[i]]
            if skip.shape[-1] != width:
                # The authors' code draws this kernel with std sqrt(2 / C),
                # C the input channels of the 3x3 convolution it joins (not
                # its own fan-in), and searches it with that convolution's
                # sigma (`paper_sigmas`).
                skip = layers.Conv2D(width, 1, use_bias=False,
                                     kernel_initializer=_he(channels),
                                     kernel_constraint=kernel_constraint,
                                     name=f"conv{i + 1}_shortcut")(skip)
                skip = layers.BatchNormalization(name=f"bn{i + 1}_shortcut")(skip)
            out = layers.Add(name=f"add{i + 1}")([out, skip])
        if i in pool_after:
            out = layers.AveragePooling2D(2, name=f"pool{i + 1}")(out)
        h = layers.BatchNormalization(name=f"bn{i + 1}")(out)
        bn_out.append(h)
        channels = width
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = layers.Dense(num_classes, use_bias=False, kernel_initializer=_he(widths[-1]),
                           kernel_constraint=kernel_constraint, name="classifier")(h)
    return keras.Model(inputs, outputs, name=name)


def paper_sigmas(model: keras.Model) -> Dict[str, float]:
    """The sigmas in which the authors' code departs from the He rule, for
    `RSO(sigma_overrides=...)`.

    Their CIFAR-10 code searches the 1x1 shortcut kernel of a residual
    block (`conv<i>_shortcut` in `paper_cifar10_net`) with the sigma of
    the block's 3x3 convolution `conv<i>`, sqrt(2 / (9 C)), not with its
    own He std; `RSO.paper()`'s `sigma_rule="he"` gives every other
    variable of both paper networks their sigma already.

    Args:
        model: `paper_cifar10_net()` (or `paper_mnist_net()`, which has no
            shortcut: the result is then empty).

    Returns:
        `{shortcut kernel path: sigma}`.

    Example:

    ```python
    model = keras_rso.models.paper_cifar10_net()
    optimizer = keras_rso.RSO.paper(sigma_overrides=keras_rso.models.paper_sigmas(model))
    ```
    """
    sigmas = {}
    for layer in model.layers:
        if layer.name.endswith("_shortcut") and isinstance(layer, layers.Conv2D):
            block = model.get_layer(layer.name[:-len("_shortcut")])
            fan_in = int(np.prod(block.kernel.shape[:-1]))
            sigmas[layer.kernel.path] = float(np.sqrt(2.0 / fan_in))
    return sigmas


def paper_loss() -> keras.losses.Loss:
    """The authors' loss: softmax cross-entropy of logits, summed over the
    batch in float64 (for `paper_mnist_net` and `paper_cifar10_net`).

    A sum instead of a mean does not change which candidate is lowest;
    float64 keeps a small loss difference from drowning in the rounding of
    a sum over thousands of images.
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="sum", dtype="float64", name="paper_loss")
