"""The committed models of the headline runs give the accuracy their results
files (and the README) quote, when loaded with plain Keras."""

import json
import os

import keras
import numpy as np
import pytest

import keras_rso  # noqa: F401  (registers keras_rso's constraints for loading)
from keras_rso import datasets

RESULTS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "results")

# (saved model, results file, whether the model standardizes raw pixels
# itself). The validated MNIST runs use `models.mnist_paper_net`, which takes
# the standardized images of `datasets.load_mnist()`; the binary net is
# `paper_mnist_net`, which takes raw pixels.
HEADLINE = [
    ("mnist_val10k_b2048_k64_balanced_random_seed0.keras",
     "mnist_val10k_b2048_k64_c5_s3_ff033_balanced_random_seed0.json", False),
    ("mnist_val10k_b2048_k64_balanced_random_seed1.keras",
     "mnist_val10k_b2048_k64_c5_s3_ff033_balanced_random_seed1.json", False),
    ("binary_mnist_rso_b2048_k64_random_seed0.keras",
     "binary_mnist_rso_b2048_k64_random_seed0.json", True),
]


@pytest.fixture(scope="module")
def mnist_test():
    return {raw: datasets.load_mnist(limit=1, raw=raw)[1] for raw in (False, True)}


@pytest.mark.parametrize("model_file, results_file, raw", HEADLINE)
def test_committed_model_gives_its_recorded_test_accuracy(mnist_test, model_file,
                                                          results_file, raw):
    with open(os.path.join(RESULTS, results_file)) as f:
        recorded = json.load(f)
    assert recorded["complete"]
    model = keras.models.load_model(os.path.join(RESULTS, "models", model_file))
    x, y = mnist_test[raw]
    accuracy = float(np.mean(np.argmax(model.predict(x, batch_size=1000, verbose=0), 1) == y))
    assert accuracy == pytest.approx(recorded["test_accuracy"], abs=1e-4)
