"""The memory a step needs, checked before `fit` takes its first step."""

import numpy as np
import pytest

import keras_rso
from conftest import small_convnet

# small_convnet's activations per example, in float32 bytes: conv 8x8x4
# (no activation: its pre-activation is its output), BN, ReLU, pooling
# 4x4x4, conv 2x2x4 with ReLU (pre-activation and output apart), global
# pooling 4, dense 3 with softmax (apart).
PER_LAYER = [1024, 1024, 1024, 256, 2 * 64, 16, 2 * 12]


def _trainer(model, **kwargs):
    trainer = keras_rso.RSOModel(model, **kwargs)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=4, seed=0),
                    loss="sparse_categorical_crossentropy")
    trainer(np.zeros((1, 8, 8, 1), "float32"))
    return trainer


def test_the_cache_counts_every_activation_from_where_a_step_starts():
    evaluator = _trainer(small_convnet())._plan()[0]
    assert keras_rso.memory.activation_bytes(evaluator.layers) == PER_LAYER
    assert keras_rso.memory.cache_bytes(evaluator, 10) == 10 * sum(PER_LAYER)
    # A pooled step that starts at the classifier caches from there on.
    assert keras_rso.memory.cache_bytes(evaluator, 10, start=6) == 10 * PER_LAYER[-1]
    # The full forward path caches nothing between trials.
    full = _trainer(small_convnet(), fast_path=False)._plan()[0]
    assert keras_rso.memory.cache_bytes(full, 10) is None


def test_a_batch_whose_cache_exceeds_available_memory_is_refused_before_anything_changes(
        toy_data):
    x, y = toy_data
    trainer = _trainer(small_convnet())
    before = [w.numpy().copy() for w in trainer.model.weights]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras_rso.memory, "available_memory", lambda: 32 * sum(PER_LAYER) - 1)
        with pytest.raises(ValueError, match=r"A batch of 32 rows caches .* Use a batch below 10 "):
            trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for w, b in zip(trainer.model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    assert int(trainer.optimizer.iterations.numpy()) == 0
    # With the memory there, the same fit runs.
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations.numpy()) > 0
    assert any(not np.array_equal(w.numpy(), b)
               for w, b in zip(trainer.model.trainable_weights, before))


def test_a_batch_that_fits_only_without_room_for_its_trials_gets_a_warning(toy_data):
    x, y = toy_data
    trainer = _trainer(small_convnet())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras_rso.memory, "available_memory", lambda: 2 * 32 * sum(PER_LAYER))
        with pytest.warns(RuntimeWarning, match="may kill the process"):
            trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations.numpy()) > 0
