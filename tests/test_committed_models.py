"""The committed models of the headline runs give the accuracy their results
files (and the README) quote, when loaded with plain Keras on raw pixels."""

import json
import os

import keras
import numpy as np
import pytest

import keras_rso  # noqa: F401  (registers keras_rso's constraints for loading)
from keras_rso import datasets

RESULTS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "results")

# (saved model, results file). Every one takes raw pixels (0-255), as
# `keras.datasets.mnist.load_data()` returns them: the validated MNIST runs'
# models were trained on standardized arrays and saved behind the same
# standardization (`benchmarks/raw_pixel_models.py`, which records the
# saved model's own test accuracy); the paper preset's and the binary net
# (`paper_mnist_net`) subtract the training mean inside.
HEADLINE = [
    ("mnist_val10k_b2048_k64_balanced_random_seed0.keras",
     "mnist_val10k_b2048_k64_c5_s3_ff033_balanced_random_seed0.json"),
    ("mnist_val10k_b2048_k64_balanced_random_seed1.keras",
     "mnist_val10k_b2048_k64_c5_s3_ff033_balanced_random_seed1.json"),
    ("mnist_val10k_b2048_k64_balanced_random_seed2.keras",
     "mnist_val10k_b2048_k64_c5_s3_ff033_balanced_random_seed2.json"),
    ("mnist_val10k_b2048_k64_balanced_random_parabolic_seed0.keras",
     "mnist_val10k_b2048_k64_c5_s3_ff033_balanced_random_parabolic_seed0.json"),
    ("mnist_val10k_b2048_k64_balanced_random_parabolic_seed1.keras",
     "mnist_val10k_b2048_k64_c5_s3_ff033_balanced_random_parabolic_seed1.json"),
    ("mnist_val10k_b2048_k64_balanced_random_parabolic_seed2.keras",
     "mnist_val10k_b2048_k64_c5_s3_ff033_balanced_random_parabolic_seed2.json"),
    ("mnist_fastest_pool13_seed0.keras", "mnist_fastest_pool13_seed0.json"),
    ("mnist_fastest_pool13_seed1.keras", "mnist_fastest_pool13_seed1.json"),
    ("mnist_fastest_pool13_seed2.keras", "mnist_fastest_pool13_seed2.json"),
    ("mnist_fastest_pool13_2threads_seed3.keras", "mnist_fastest_pool13_2threads_seed3.json"),
    ("mnist_fastest_pool13_2threads_seed4.keras", "mnist_fastest_pool13_2threads_seed4.json"),
    ("mnist_is1024_c4_pool13_seed0.keras", "mnist_is1024_c4_pool13_seed0.json"),
    ("mnist_is1024_c4_pool13_seed1.keras", "mnist_is1024_c4_pool13_seed1.json"),
    ("mnist_is1024_c4_pool13_2threads_seed2.keras", "mnist_is1024_c4_pool13_2threads_seed2.json"),
    ("mnist_fastest_2threads_seed0.keras", "mnist_fastest_2threads_seed0.json"),
    ("mnist_fastest_2threads_seed1.keras", "mnist_fastest_2threads_seed1.json"),
    ("mnist_fastest_2threads_seed2.keras", "mnist_fastest_2threads_seed2.json"),
    ("binary_mnist_rso_c14_bn_polish10_seed0.keras",
     "binary_mnist_rso_c14_bn_polish10_seed0.json"),
    ("binary_mnist_rso_c14_bn_polish10_seed1.keras",
     "binary_mnist_rso_c14_bn_polish10_seed1.json"),
    ("binary_mnist_rso_c14_bn_polish10_seed2.keras",
     "binary_mnist_rso_c14_bn_polish10_seed2.json"),
    ("mnist_paper_preset_c5_of50_seed0.keras", "mnist_paper_preset_c5_of50_seed0.json"),
    ("mnist_paper_preset_c5_of50_seed1.keras", "mnist_paper_preset_c5_of50_seed1.json"),
    ("binary_mnist_rso_b2048_k64_random_seed0.keras",
     "binary_mnist_rso_b2048_k64_random_seed0.json"),
    ("binary_mnist_rso_b4096_k64_random_seed0.keras",
     "binary_mnist_rso_b4096_k64_random_seed0.json"),
    ("binary_mnist_rso_b4096_k64_random_c10_seed0.keras",
     "binary_mnist_rso_b4096_k64_random_c10_seed0.json"),
    ("binary_mnist_rso_b4096_k64_random_c10_seed1.keras",
     "binary_mnist_rso_b4096_k64_random_c10_seed1.json"),
    ("binary_mnist_rso_b4096_k64_random_c10_seed2.keras",
     "binary_mnist_rso_b4096_k64_random_c10_seed2.json"),
    ("binary_mnist_rso_b4096x10_8192x4_k64_random_seed0.keras",
     "binary_mnist_rso_b4096x10_8192x4_k64_random_seed0.json"),
    ("binary_mnist_rso_b4096x10_8192x4_k64_random_seed1.keras",
     "binary_mnist_rso_b4096x10_8192x4_k64_random_seed1.json"),
    ("binary_mnist_rso_b4096x10_8192x4_k64_random_seed2.keras",
     "binary_mnist_rso_b4096x10_8192x4_k64_random_seed2.json"),
]


# The CIFAR-10 runs on the authors' residual net (`paper_cifar10_net`,
# which subtracts the per-channel training mean inside): raw CIFAR-10 test
# images in, the recorded test accuracy out.
CIFAR10 = [
    ("cifar10_paper_net_b512_k64_balanced_random_seed0.keras",
     "cifar10_paper_net_b512_k64_c5_s3_ff033_balanced_random_seed0.json"),
    ("cifar10_paper_net_adam_lr0.003_cosine_e20_seed1.keras",
     "cifar10_paper_net_adam_lr0.003_cosine_e20_seed1.json"),
    ("cifar10_paper_net_adam_lr0.003_cosine_e20_seed2.keras",
     "cifar10_paper_net_adam_lr0.003_cosine_e20_seed2.json"),
]


_LOADERS = {"mnist": datasets.load_mnist, "cifar10": datasets.load_cifar10}


@pytest.fixture(scope="module")
def raw_test_sets():
    """Each data set's raw test split, loaded on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _LOADERS[name](limit=1, raw=True)[1]
        return cache[name]
    return get


@pytest.mark.parametrize("dataset, model_file, results_file",
                         [("mnist", *pair) for pair in HEADLINE]
                         + [("cifar10", *pair) for pair in CIFAR10])
def test_committed_model_gives_its_recorded_test_accuracy(raw_test_sets, dataset, model_file,
                                                          results_file):
    with open(os.path.join(RESULTS, results_file)) as f:
        recorded = json.load(f)
    assert recorded["complete"]
    model = keras.models.load_model(os.path.join(RESULTS, "models", model_file))
    x, y = raw_test_sets(dataset)
    accuracy = float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), 1) == y))
    # The trained model's accuracy, up to images whose top two scores swap
    # under the float32 rounding of standardizing inside the model.
    assert accuracy == pytest.approx(recorded["test_accuracy"], abs=3e-4)
    if "saved_model_test_accuracy" in recorded:
        assert accuracy == pytest.approx(recorded["saved_model_test_accuracy"], abs=1e-6)
