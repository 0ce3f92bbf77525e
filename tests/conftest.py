"""Test set-up: offline Keras data cache, quiet TF, two logical CPUs."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One thread per op: the suite runs in two worker processes (setup.cfg,
# `-n 2`) on two cores, so that each worker does not also run two op
# threads of its own (one pair of runs: 11m02s before, 10m19s after, within
# that sitting's run-to-run spread).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
_shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "datasets" / "keras"
if "KERAS_HOME" not in os.environ and _shared.is_dir():
    os.environ["KERAS_HOME"] = str(_shared)

import keras  # noqa: E402  (after KERAS_HOME is set)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, for MirroredStrategy tests (must precede any op).
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(params=["one_device", "mirrored"])
def strategy(request):
    """Runs a test on one device and again under `MirroredStrategy` on the two
    logical CPUs (as larq's `distribute_scope` fixture does)."""
    if request.param == "mirrored":
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    return tf.distribute.get_strategy()


@pytest.fixture
def float64():
    """Runs a test with float64 as Keras' float type and dtype policy:
    comparisons of two evaluation paths whose float32 rounding differs."""
    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)


@pytest.fixture
def toy_data():
    """A small learnable 3-class image problem (class = brightest quadrant)."""
    return make_toy_data()


def make_toy_data():
    """The arrays of the `toy_data` fixture (for module-scoped fixtures)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(192, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=192).astype("int32")
    for i, c in enumerate(y):
        r, s = divmod(int(c), 2)
        x[i, r * 4:(r + 1) * 4, s * 4:(s + 1) * 4, 0] += 1.5
    return x, y


def small_convnet(seed=1, bn=True, first_bias=True):
    """A tiny chain: conv-BN-ReLU-pool-conv-GAP-dense.

    With `bn`, the first convolution's bias is a flat direction of the loss
    (training-mode BatchNormalization subtracts it again): which candidate
    wins there is decided by float rounding, which differs between CPUs.
    Tests that compare two evaluation paths exactly pass `first_bias=False`.
    """
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((8, 8, 1)),
              keras.layers.Conv2D(4, 3, padding="same", use_bias=first_bias)]
    if bn:
        layers.append(keras.layers.BatchNormalization())
    layers += [
        keras.layers.ReLU(), keras.layers.AveragePooling2D(2),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ]
    return keras.Sequential(layers)


def mnist_subset(n_train=512, n_test=1000):
    from keras_rso import datasets

    (x, y), (xt, yt) = datasets.load_mnist(limit=n_train)
    return (x, y), (xt[:n_test], yt[:n_test])


def deeper_convnet(seed=1):
    """Three mixers in a row with BN between them: exercises every cache."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(4, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(),
        L.AveragePooling2D(2),
        L.Conv2D(4, 3, padding="same", use_bias=False), L.BatchNormalization(),
        L.Activation("relu"),
        L.Conv2D(5, 3, activation="relu"), L.MaxPooling2D(2),
        L.GlobalAveragePooling2D(), L.Dense(6, activation="relu"),
        L.Dense(3, activation="softmax"),
    ])
