"""The loaders' standardization, as a layer for models that take raw pixels."""

import numpy as np
import pytest

from keras_rso import datasets


@pytest.mark.parametrize("name, load", [
    ("mnist", lambda raw: datasets.load_mnist(limit=1, raw=raw)),
    ("fashion_mnist", lambda raw: datasets.load_mnist(limit=1, fashion=True, raw=raw)),
    ("cifar10", lambda raw: datasets.load_cifar10(limit=1, raw=raw)),
])
def test_standardization_layer_gives_the_loaders_arrays(name, load):
    layer = datasets.standardization_layer(name)
    (_, (x_raw, _)), (_, (x_std, _)) = load(True), load(False)
    out = np.asarray(layer(x_raw[:500]))
    assert out.shape == x_std[:500].shape
    # The same standardization up to float32 rounding (a few ulp of values
    # of at most ~3).
    np.testing.assert_allclose(out, x_std[:500], rtol=0, atol=2e-6)
    assert not np.allclose(out, x_raw[:500] / 255.0, atol=1e-2)


def test_standardization_layer_names_an_unknown_dataset():
    with pytest.raises(ValueError, match="cifar100"):
        datasets.standardization_layer("cifar100")


def test_a_limited_load_is_the_first_images_of_the_whole_load():
    # `limit` keeps images, not statistics: the kept images are standardized
    # with the whole training set's mean and std, bit for bit.
    (x, y), (x_test, y_test) = datasets.load_mnist(limit=300)
    (x_all, y_all), (x_test_all, _) = datasets.load_mnist()
    assert x.shape == (300, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(x, x_all[:300])
    np.testing.assert_array_equal(y, y_all[:300])
    np.testing.assert_array_equal(x_test, x_test_all)
    assert abs(float(x_all.mean())) < 1e-4 and abs(float(x_all.std()) - 1) < 1e-4
    # The returned arrays are the caller's to change; the cache is not.
    x[0] = 0.0
    y[0] = -1
    (x_again, y_again), _ = datasets.load_mnist(limit=300)
    np.testing.assert_array_equal(x_again, x_all[:300])
    assert y_again[0] == y_all[0]
