"""LossSampling: batches drawn by loss, weighted to stay unbiased."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_rso
from keras_rso.sampling import LossSampling
from testing_utils import fit_rso, weights_of


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")
    return x, y


def _net():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                             keras.layers.BatchNormalization(), keras.layers.ReLU(),
                             keras.layers.Dense(2, activation="softmax")])


def _draw(sampling, step, count):
    sampling._build()  # as `fit` does through set_model
    return tuple(t.numpy() for t in sampling.draw(tf.constant(step, tf.int64), count))


def test_probabilities_follow_the_loss_and_keep_a_uniform_floor():
    x, y = _data(4)
    sampling = LossSampling(x, y, batch_size=2, power=1.0, uniform_share=0.2)
    p = sampling.probabilities(np.array([0.0, 1.0, 3.0, 0.0]))
    np.testing.assert_allclose(p, [0.05, 0.05 + 0.2, 0.05 + 0.6, 0.05])
    # No loss anywhere (or a non-finite one): uniform.
    np.testing.assert_allclose(sampling.probabilities(np.zeros(4)), 0.25)
    np.testing.assert_allclose(sampling.probabilities([np.inf, 1, 1, 1]), 0.25)


def test_draws_favour_high_losses_with_weights_that_undo_it():
    x, y = _data(100)
    sampling = LossSampling(x, y, batch_size=4000, uniform_share=0.1, seed=3)
    losses = np.where(np.arange(100) < 10, 5.0, 0.05)
    probs = sampling.probabilities(losses)
    sampling._build()
    sampling._cdf.assign(np.cumsum(probs))
    xb, yb, w = _draw(sampling, 0, 4000)
    index = np.array([np.flatnonzero((x == row).all(axis=1))[0] for row in xb])
    np.testing.assert_array_equal(yb, y[index])
    assert np.mean(index < 10) > 0.8  # ten hard examples out of a hundred
    np.testing.assert_allclose(w, 1.0 / (100 * probs[index]), rtol=1e-5)
    # The weighted mean of any per-example quantity estimates its plain mean.
    assert np.mean(w * losses[index]) == pytest.approx(losses.mean(), rel=0.05)


def test_a_draw_depends_only_on_the_seed_the_step_and_the_probabilities():
    x, y = _data()
    first, second = (LossSampling(x, y, batch_size=16, seed=5) for _ in range(2))
    for step in range(3):
        for u, v in zip(_draw(first, step, 16), _draw(second, step, 16)):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(_draw(first, 0, 16)[0], _draw(first, 1, 16)[0])
    other = LossSampling(x, y, batch_size=16, seed=6)
    assert not np.array_equal(_draw(other, 0, 16)[0], _draw(first, 0, 16)[0])
    # The stream alone draws uniformly, with shapes the fit can build from.
    xb, yb = next(iter(first.dataset()))
    assert xb.shape == (16, 6) and yb.shape == (16,)


def test_measuring_the_losses_leaves_the_model_as_it_was():
    x, y = _data()
    trainer = keras_rso.RSOModel(_net())
    trainer.compile(optimizer=keras_rso.RSO(seed=0), loss="sparse_categorical_crossentropy")
    trainer(x[:2])
    sampling = LossSampling(x, y, batch_size=16, refresh_batch=64)
    sampling.set_model(trainer)
    before = weights_of(trainer.model)  # BatchNormalization's moving statistics too
    losses = sampling.measure()
    for a, b in zip(before, weights_of(trainer.model)):
        np.testing.assert_array_equal(a, b)
    expected = keras.losses.sparse_categorical_crossentropy(
        y[:64], trainer.model(x[:64], training=True))
    np.testing.assert_allclose(losses[:64], expected, rtol=1e-5)
    assert losses.shape == (len(x),)


def test_rso_trains_on_loss_sampled_batches_and_repeats_exactly():
    x, y = _data(400)
    runs = []
    for _ in range(2):
        sampling = LossSampling(x, y, batch_size=64, refresh_every=3, refresh_batch=128,
                                seed=1)
        fitted = fit_rso(_net, sampling.dataset(), None, batch_size=None, epochs=3,
                         callbacks=[sampling], weights_per_batch=8)
        runs.append(weights_of(fitted.model))
        loss = fitted.history.history["loss"]
        assert loss[-1] < loss[0]
        # Refreshed: the probabilities now follow the losses, not uniform.
        assert np.ptp(np.diff(sampling._cdf.numpy(), prepend=0.0)) > 0
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    # The same stream without the callback trains on its uniform batches:
    # other weights, so the steps above drew their own.
    sampling = LossSampling(x, y, batch_size=64, seed=1)
    plain = fit_rso(_net, sampling.dataset(), None, batch_size=None, epochs=3,
                    weights_per_batch=8)
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], weights_of(plain.model)))


def test_it_refuses_a_layer_input_pool_and_a_plain_model():
    x, y = _data(64)
    sampling = LossSampling(x, y, batch_size=16)
    with pytest.raises(ValueError, match="layer-input pool"):
        fit_rso(_net, sampling.dataset(), None, batch_size=None, callbacks=[sampling],
                weights_per_batch=8, pool_size=32)
    plain = _net()
    plain.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="RSOModel"):
        plain.fit(sampling.dataset(), steps_per_epoch=1, callbacks=[sampling], verbose=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(uniform_share=0.0), "uniform_share"),
    (dict(power=-1.0), "power"),
    (dict(refresh_every=0), "refresh_every"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_settings_name_the_problem(kwargs, message):
    x, y = _data(10)
    settings = dict(batch_size=4)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=message):
        LossSampling(x, y, **settings)
    with pytest.raises(ValueError, match="same, positive number"):
        LossSampling(x, y[:5], batch_size=4)


class _KillAfter(keras.callbacks.Callback):
    """Simulates a killed job after `steps` steps."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.seen = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.steps:
            raise KeyboardInterrupt("simulated kill")


def test_a_resumed_fit_draws_what_the_uninterrupted_one_drew(tmp_path):
    x, y = _data(400)

    def run(*extra):
        sampling = LossSampling(x, y, batch_size=64, refresh_every=2, refresh_batch=128,
                                seed=1)
        return fit_rso(_net, sampling.dataset(), None, batch_size=None, epochs=2,
                       callbacks=[sampling, *extra], weights_per_batch=8)

    reference = weights_of(run().model)
    for killed_after in (4, 9):  # mid-epoch; the 2nd epoch's first step
        backup = str(tmp_path / f"backup{killed_after}")
        killed = run(keras.callbacks.BackupAndRestore(backup, save_freq=2),
                     _KillAfter(killed_after))
        assert killed.history is None  # the kill happened
        resumed = run(keras.callbacks.BackupAndRestore(backup, save_freq=2))
        steps = int(resumed.trainer.optimizer.iterations.numpy())
        assert steps == 2 * resumed.trainer.steps_per_cycle() > killed_after
        for a, b in zip(reference, weights_of(resumed.model)):
            np.testing.assert_array_equal(a, b)
