"""Standardized image data sets from `keras.datasets`.

The paper standardizes inputs; these loaders return float32 images with
zero mean and unit variance (statistics of the training set) and integer
labels. They use the normal `keras.datasets` download, and the local Keras
cache (`KERAS_HOME`) when it already holds the files.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple
from unittest import mock

import keras
import numpy as np

Split = Tuple[np.ndarray, np.ndarray]


def _standardize(x_train: np.ndarray, x_test: np.ndarray, per_channel: bool):
    x_train = x_train.astype("float32") / 255.0
    x_test = x_test.astype("float32") / 255.0
    axes = tuple(range(x_train.ndim - 1)) if per_channel else None
    mean = x_train.mean(axis=axes, keepdims=per_channel)
    std = x_train.std(axis=axes, keepdims=per_channel)
    return (x_train - mean) / std, (x_test - mean) / std


def _limit(split: Split, limit: Optional[int]) -> Split:
    return split if limit is None else (split[0][:limit], split[1][:limit])


def load_mnist(limit: Optional[int] = None, fashion: bool = False
               ) -> Tuple[Split, Split]:
    """MNIST (or Fashion-MNIST) as standardized `(N, 28, 28, 1)` float32.

    Args:
        limit: Keep only the first `limit` training images (the test set is
            always complete).
        fashion: Load Fashion-MNIST instead of MNIST.

    Returns:
        `((x_train, y_train), (x_test, y_test))`.
    """
    source = keras.datasets.fashion_mnist if fashion else keras.datasets.mnist
    (x_train, y_train), (x_test, y_test) = source.load_data()
    x_train, x_test = _standardize(x_train[..., None], x_test[..., None], False)
    return _limit((x_train, y_train.astype("int32")), limit), (x_test, y_test.astype("int32"))


def _cifar10_raw():
    try:
        return keras.datasets.cifar10.load_data()
    except Exception:
        # Offline fallback: a Keras cache that holds the extracted batches
        # but not the original archive (see the shared data README). Only
        # used when the normal download path failed.
        home = os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
        folder = os.path.join(home, "datasets", "cifar-10-batches-py-target")
        if not os.path.isdir(os.path.join(folder, "cifar-10-batches-py")):
            raise
        with mock.patch("keras.src.datasets.cifar10.get_file",
                        lambda *a, **k: folder):
            return keras.datasets.cifar10.load_data()


def load_cifar10(limit: Optional[int] = None) -> Tuple[Split, Split]:
    """CIFAR-10 as per-channel standardized `(N, 32, 32, 3)` float32.

    Args:
        limit: Keep only the first `limit` training images.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, labels as int32 vectors.
    """
    (x_train, y_train), (x_test, y_test) = _cifar10_raw()
    x_train, x_test = _standardize(x_train, x_test, True)
    return (_limit((x_train, y_train.reshape(-1).astype("int32")), limit),
            (x_test, y_test.reshape(-1).astype("int32")))
