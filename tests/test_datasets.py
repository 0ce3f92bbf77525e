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
