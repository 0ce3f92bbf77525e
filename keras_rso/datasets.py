"""Image data sets: `keras.datasets` arrays and TFDS streams.

The paper standardizes inputs; these loaders return float32 images with
zero mean and unit variance (statistics of the training set) and integer
labels. They use the normal `keras.datasets` download, and the local Keras
cache (`KERAS_HOME`) when it already holds the files. `load_tfds` streams
any TFDS image-classification data set through `tf.data`, raw pixels in,
with the standardization as layers for the model.
"""


import functools
import os
import pickle
from typing import NamedTuple, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

Split = Tuple[np.ndarray, np.ndarray]

# Per-channel statistics for colour images, one mean and std for grey ones.
_PER_CHANNEL = {"mnist": False, "fashion_mnist": False, "cifar10": True}


def _scaled(x: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1], in `x`'s memory layout (the statistics'
    float32 sums run in that order, so it decides their last bits)."""
    scaled = x.astype("float32")
    # In place: no second array of the whole training set (allocating one
    # costs as much as the division itself).
    scaled /= 255.0
    return scaled


@functools.lru_cache(maxsize=None)
def _train_statistics(dataset: str) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and std of `dataset`'s training pixels scaled to [0, 1] (float32):
    per channel for colour images, one of each for grey ones. Computed once
    per process: the loaders and `standardization_layer` share them."""
    (x_train, _), _ = _raw_images(dataset)
    x = _scaled(x_train)
    axes = tuple(range(x.ndim - 1)) if _PER_CHANNEL[dataset] else None
    keepdims = _PER_CHANNEL[dataset]
    mean = np.asarray(x.mean(axis=axes, keepdims=keepdims))
    std = np.asarray(x.std(axis=axes, keepdims=keepdims))
    for array in (mean, std):
        array.flags.writeable = False
    return mean, std


def _standardized(x: np.ndarray, dataset: str) -> np.ndarray:
    """`x` (raw pixels) standardized with the training statistics."""
    mean, std = _train_statistics(dataset)
    x = _scaled(x)
    x -= mean
    x /= std
    return x


@functools.lru_cache(maxsize=None)
def _raw_images(dataset: str) -> Tuple[Split, Split]:
    """`((x_train, y_train), (x_test, y_test))` of `dataset` as stored:
    uint8 images `(N, H, W, C)`, int32 label vectors. Read once per process
    (an example reads its data, then the raw test images and the statistics
    of `standardization_layer`); the arrays are read-only."""
    if dataset == "cifar10":
        (x_train, y_train), (x_test, y_test) = _cifar10_raw()
    else:
        source = keras.datasets.fashion_mnist if dataset == "fashion_mnist" else keras.datasets.mnist
        (x_train, y_train), (x_test, y_test) = source.load_data()
        x_train, x_test = x_train[..., None], x_test[..., None]
    splits = ((x_train, y_train.reshape(-1).astype("int32")),
              (x_test, y_test.reshape(-1).astype("int32")))
    for array in (a for split in splits for a in split):
        array.flags.writeable = False
    return splits


def standardization_layer(dataset: str, name: str = "standardize") -> keras.layers.Layer:
    """The standardization `load_mnist`/`load_cifar10` apply, as a layer.

    A model trained on the standardized arrays, with this layer in front,
    takes raw pixels (0-255) as `keras.datasets` returns them, which is
    what a saved model should take. Its output agrees with the loaders'
    arrays to float32 rounding (it computes `(x - 255 m) / (255 s)`, the
    loaders `(x / 255 - m) / s`).

    Args:
        dataset: `"mnist"`, `"fashion_mnist"` or `"cifar10"`.
        name: The layer's name.

    Returns:
        A `keras.layers.Normalization` holding the training-set statistics.
    """
    if dataset not in _PER_CHANNEL:
        raise ValueError(f"`dataset` must be one of {sorted(_PER_CHANNEL)}; received {dataset!r}.")
    mean, std = _train_statistics(dataset)
    mean = np.reshape(mean, -1).astype("float64")
    std = np.reshape(std, -1).astype("float64")
    return keras.layers.Normalization(mean=255.0 * mean, variance=(255.0 * std) ** 2, name=name)


def _load(dataset: str, limit: Optional[int], raw: bool) -> Tuple[Split, Split]:
    """The loaders' arrays: the first `limit` training images and the whole
    test set, as float32 raw pixels or standardized; labels copied (the
    cached ones are read-only)."""
    (x_train, y_train), (x_test, y_test) = _raw_images(dataset)
    if limit is not None:
        # Before any conversion, which then touches only the kept images
        # (the statistics still come from the whole training set).
        x_train, y_train = x_train[:limit], y_train[:limit]
    convert = (lambda x: x.astype("float32")) if raw else (lambda x: _standardized(x, dataset))
    return (convert(x_train), y_train.copy()), (convert(x_test), y_test.copy())


def load_mnist(limit: Optional[int] = None, fashion: bool = False, raw: bool = False
               ) -> Tuple[Split, Split]:
    """MNIST (or Fashion-MNIST) as standardized `(N, 28, 28, 1)` float32.

    Args:
        limit: Keep only the first `limit` training images (the test set is
            always complete).
        fashion: Load Fashion-MNIST instead of MNIST.
        raw: Return raw pixels (0-255 as float32) instead, for models that
            standardize inside (`keras_rso.models.paper_mnist_net`).

    Returns:
        `((x_train, y_train), (x_test, y_test))`.
    """
    return _load("fashion_mnist" if fashion else "mnist", limit, raw)


def _cifar10_raw():
    try:
        return keras.datasets.cifar10.load_data()
    except Exception:
        # A Keras cache that holds the extracted batches but not the
        # original archive (see the shared data README): read the batches
        # (CIFAR-10's documented pickle format) where Keras extracts them.
        # Only used when the normal download path failed.
        home = os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
        folder = os.path.join(home, "datasets", "cifar-10-batches-py-target",
                              "cifar-10-batches-py")
        if not os.path.isdir(folder):
            raise
        train = [_cifar10_batch(os.path.join(folder, f"data_batch_{i}")) for i in range(1, 6)]
        x_train = np.concatenate([x for x, _ in train])
        y_train = np.concatenate([y for _, y in train])
        return (x_train, y_train), _cifar10_batch(os.path.join(folder, "test_batch"))


def _cifar10_batch(path: str) -> Split:
    """One CIFAR-10 batch file: uint8 images `(N, 32, 32, 3)`, labels `(N, 1)`."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    y = np.asarray(batch[b"labels"], np.uint8).reshape(-1, 1)
    return x, y


def load_cifar10(limit: Optional[int] = None, raw: bool = False) -> Tuple[Split, Split]:
    """CIFAR-10 as per-channel standardized `(N, 32, 32, 3)` float32.

    Args:
        limit: Keep only the first `limit` training images.
        raw: Return raw pixels (0-255 as float32) instead, for models that
            standardize inside (`keras_rso.models.paper_cifar10_net`).

    Returns:
        `((x_train, y_train), (x_test, y_test))`, labels as int32 vectors.
    """
    return _load("cifar10", limit, raw)


class TFDSData(NamedTuple):
    """A TFDS image-classification data set, streamed as `tf.data`.

    `train`, `validation` and `test` yield `(images, labels)` batches of raw
    pixels (float32, 0-255) and int32 labels: the preprocessing belongs in
    the model (`preprocessing_layers`), so that a saved model takes images
    as the data set stores them. `validation` is `None` when no validation
    split was asked for.
    """

    train: tf.data.Dataset
    validation: Optional[tf.data.Dataset]
    test: tf.data.Dataset
    image_shape: Tuple[int, ...]
    num_classes: int
    mean: np.ndarray      # per-channel mean of the training pixels / 255
    variance: np.ndarray  # per-channel variance of the training pixels / 255

    def preprocessing_layers(self) -> list:
        """Layers that standardize raw pixels with the training statistics."""
        return [keras.layers.Rescaling(1.0 / 255, name="rescale"),
                keras.layers.Normalization(mean=self.mean, variance=self.variance,
                                           name="standardize")]


def load_tfds(name: str, batch_size: int, validation_size: int = 0,
              seed: int = 0, data_dir: Optional[str] = None,
              statistics_size: int = 10000) -> TFDSData:
    """Any TFDS image-classification data set, as `tf.data` streams.

    The data set must have an `image` and a `label` feature (it is loaded
    with `as_supervised=True`) and `train` and `test` splits. The
    validation split is the last `validation_size` examples of `train`
    (TFDS split slicing), so that settings are chosen without reading the
    test set.

    Args:
        name: TFDS name, e.g. `"mnist"`, `"fashion_mnist"`, `"cifar10"`.
        batch_size: Examples per batch of every stream.
        validation_size: Training examples held out for validation (0: none).
        seed: Seed of the training stream's shuffle (reshuffled each pass).
        data_dir: TFDS data directory (`None`: TFDS' default).
        statistics_size: Training examples the pixel statistics are
            measured on.

    Returns:
        A `TFDSData`.

    Example:

    ```python
    data = keras_rso.datasets.load_tfds("fashion_mnist", batch_size=1024,
                                        validation_size=10000)
    model = keras_rso.models.mnist_paper_net(
        data.image_shape, data.num_classes,
        preprocessing=data.preprocessing_layers())
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(), loss="sparse_categorical_crossentropy")
    trainer.fit(data.train, epochs=5, validation_data=data.validation)
    ```
    """
    import tensorflow_datasets as tfds  # only needed here

    if validation_size < 0:
        raise ValueError(f"`validation_size` must be >= 0. Received: {validation_size}")
    train_split = f"train[:-{validation_size}]" if validation_size else "train"
    splits = [train_split, "test"] + ([f"train[-{validation_size}:]"] if validation_size else [])
    loaded, info = tfds.load(name, split=splits, as_supervised=True, with_info=True,
                             data_dir=data_dir)
    features = info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"TFDS data set {name!r} has features {sorted(features.keys())}; "
            "load_tfds needs an image-classification set with `image` and `label`.")
    image_shape = tuple(features["image"].shape)
    if None in image_shape:
        raise ValueError(
            f"TFDS data set {name!r} has images of varying size {image_shape}; "
            "resize them into a fixed shape before training.")

    def cast(image, label):
        return tf.cast(image, tf.float32), tf.cast(label, tf.int32)

    def stream(ds, shuffle):
        ds = ds.map(cast, num_parallel_calls=tf.data.AUTOTUNE).cache()
        if shuffle:
            ds = ds.shuffle(10000, seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    train, test = loaded[0], loaded[1]
    pixels = np.concatenate([x.numpy() for x, _ in train.map(cast).take(statistics_size)
                             .batch(1000)]) / 255.0
    axes = tuple(range(pixels.ndim - 1))
    return TFDSData(
        train=stream(train, True),
        validation=stream(loaded[2], False) if validation_size else None,
        test=stream(test, False),
        image_shape=image_shape,
        num_classes=int(features["label"].num_classes),
        mean=pixels.mean(axis=axes), variance=pixels.var(axis=axes))
