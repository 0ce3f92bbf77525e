"""Random layers: a trial's three losses come from one draw of the noise."""

import keras
import numpy as np
import pytest

import keras_rso
from keras_rso.evaluators import chain_layers, seed_states


def _dead_input_model(noise_layers, seed=0):
    """Dense on an all-zero input, then a random layer, then a classifier.

    The first kernel multiplies zeros: every candidate of its trials gives
    exactly the current weight's outputs, unless the random layer draws
    different noise for it. Its random biases keep a signal alive.
    """
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential([
        keras.Input((6,)),
        L.Dense(16, bias_initializer=keras.initializers.RandomNormal(1.0, 1.0), name="dead"),
        *noise_layers,
        L.Dense(3, activation="softmax", name="out"),
    ])


L = keras.layers
NOISE = {
    "dropout": lambda: [L.Dropout(0.5)],
    "gaussian_noise": lambda: [L.GaussianNoise(1.0)],
    "gaussian_dropout": lambda: [L.GaussianDropout(0.5)],
    "spatial_dropout": lambda: [L.Reshape((4, 4)), L.SpatialDropout1D(0.5), L.Flatten()],
    "random_flip": lambda: [L.Reshape((4, 4, 1)), L.RandomFlip("horizontal"), L.Flatten()],
}


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("noise", sorted(NOISE))
def test_candidates_of_a_dead_weight_tie_with_the_current_weight(noise, fast_path):
    # Same noise for w, w + dw and w - dw: their losses are equal, ties keep
    # w, and no weight of the dead kernel ever changes. With a fresh draw per
    # evaluation, trials "improve" on noise alone. (`tolerance` ignores the
    # float32 rounding of a loss summed over a batch of another size: the
    # fast path evaluates both candidates stacked.)
    model = _dead_input_model(NOISE[noise]())
    x = np.zeros((64, 6), "float32")
    y = np.random.default_rng(0).integers(0, 3, 64)
    dead = model.get_layer("dead").kernel
    before = dead.numpy().copy()
    trainer = keras_rso.RSOModel(model, variables=[dead], fast_path=fast_path)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=8, seed=0, tolerance=1e-6),
                    loss="sparse_categorical_crossentropy")
    assert (chain_layers(model) is not None) or not fast_path
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert int(trainer.optimizer.trials.numpy()) == before.size
    assert int(trainer.optimizer.weight_updates.numpy()) == 0
    np.testing.assert_array_equal(dead.numpy(), before)


def test_noise_is_drawn_afresh_for_every_batch():
    model = _dead_input_model([keras.layers.Dropout(0.5)])
    (state,) = seed_states(model.non_trainable_variables)
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=16, seed=0),
                    loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(1).normal(size=(64, 6)).astype("float32")
    y = np.random.default_rng(2).integers(0, 3, 64)
    start = state.numpy().copy()
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    steps = trainer.steps_per_cycle()
    # One draw per batch: the state advanced once per step, not per trial.
    assert steps > 1
    np.testing.assert_array_equal(state.numpy() - start, [0, steps])


def test_dropout_model_trains_on_both_paths():
    # The decisions differ between the paths only through float rounding;
    # what matters is that both learn with dropout active.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    for fast_path in (True, False):
        keras.utils.set_random_seed(4)
        model = keras.Sequential([
            keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.2), keras.layers.Dense(3, activation="softmax")])
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        _, acc0 = model.evaluate(x, y, verbose=0)
        trainer = keras_rso.RSOModel(model, fast_path=fast_path)
        trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=16, seed=0),
                        loss="sparse_categorical_crossentropy")
        trainer.fit(x, y, batch_size=64, epochs=3, verbose=0)
        _, acc1 = model.evaluate(x, y, verbose=0)
        assert acc1 > max(acc0 + 0.2, 0.7), (fast_path, acc0, acc1)
