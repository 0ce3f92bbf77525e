"""TFDS image-classification data sets, streamed into RSOModel.fit (offline:
`tfds.testing.mock_data` stands in for the download)."""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_rso import datasets

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _count(ds):
    return sum(int(x.shape[0]) for x, _ in ds)


def test_load_tfds_holds_out_the_end_of_the_training_split(monkeypatch):
    asked = []
    load = tfds.load

    def spy(name, split, **kwargs):
        asked.append(split)
        return load(name, split=split, **kwargs)

    monkeypatch.setattr(tfds, "load", spy)
    with tfds.testing.mock_data(num_examples=50):
        data = datasets.load_tfds("mnist", batch_size=8, validation_size=10)
    # (Mock data ignore split slicing: each stream holds 50 examples.)
    assert asked == [["train[:-10]", "test", "train[-10:]"]]
    assert _count(data.train) == _count(data.validation) == 50
    assert data.image_shape == (28, 28, 1) and data.num_classes == 10
    x, y = next(iter(data.train))
    assert x.dtype == "float32" and y.dtype == "int32"
    # Raw pixels in; the statistics are those of the training split / 255.
    assert float(np.max(x)) > 1.0
    pixels = np.concatenate([x.numpy() for x, _ in data.train]) / 255.0
    np.testing.assert_allclose(data.mean, [pixels.mean()], rtol=1e-4)
    np.testing.assert_allclose(data.variance, [pixels.var()], rtol=1e-3)
    # The layers standardize raw pixels with those statistics.
    out = keras.Sequential(data.preprocessing_layers())(x).numpy()
    np.testing.assert_allclose(out, (x.numpy() / 255 - data.mean) / np.sqrt(data.variance),
                               rtol=1e-4, atol=1e-4)


def test_load_tfds_rejects_a_data_set_without_images():
    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(ValueError, match="image-classification"):
            datasets.load_tfds("imdb_reviews", batch_size=2)


def test_mnist_example_trains_on_a_tfds_data_set(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # as `python examples/...` has it
    import mnist_rso

    saved = tmp_path / "model.keras"
    with tfds.testing.mock_data(num_examples=96):
        results = mnist_rso.main([
            "--dataset", "tfds:mnist", "--cycles", "1", "--validation-size", "32",
            "--batch-size", "16", "--weights-per-batch", "512", "--filters", "2",
            "--verbose", "0", "--save", str(saved)])
        raw, _ = next(iter(datasets.load_tfds("mnist", batch_size=8).test))
    assert results["complete"] and results["per_cycle"][0]["weight_updates"] > 0
    assert "val_accuracy" in results["per_cycle"][0]  # validated on the held-out split
    assert results["trials_per_cycle"] == results["per_cycle"][0]["trials"]
    # The saved plain model holds its preprocessing: it takes raw pixels.
    model = keras.models.load_model(saved)
    assert [l.name for l in model.layers[:2]] == ["rescale", "standardize"]
    assert model.predict(raw, verbose=0).shape == (8, 10)


def test_dataset_flag_is_checked():
    import mnist_rso

    with pytest.raises(SystemExit):
        mnist_rso.main(["--dataset", "imagenet"])
