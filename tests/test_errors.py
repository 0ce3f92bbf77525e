"""Bad input gets a clear error, raised before any weight changes."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_rso
from conftest import deeper_convnet, small_convnet
from testing_utils import weights_of


def _compiled(model, **opt):
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(**opt), loss="sparse_categorical_crossentropy")
    return trainer


def test_model_without_trainable_weights_is_rejected():
    model = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no trainable weights"):
        keras_rso.RSOModel(model)
    frozen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        keras_rso.RSOModel(frozen)


def test_gradient_optimizer_is_rejected():
    trainer = keras_rso.RSOModel(small_convnet())
    with pytest.raises(TypeError, match="keras_rso.RSO"):
        trainer.compile(optimizer="adam", loss="mse")
    with pytest.raises(TypeError, match="keras_rso.RSO"):
        trainer.compile(optimizer=keras.optimizers.SGD(), loss="mse")


def test_fit_before_compile_is_rejected(toy_data):
    x, y = toy_data
    model = small_convnet()
    before = weights_of(model)
    with pytest.raises(ValueError, match="compile"):
        keras_rso.RSOModel(model).fit(x, y, verbose=0)
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)


def test_compile_needs_a_loss():
    with pytest.raises(ValueError, match="loss"):
        keras_rso.RSOModel(small_convnet()).compile(optimizer=keras_rso.RSO())


@pytest.mark.parametrize("kwargs,error,match", [
    ({"weights_per_batch": 0}, ValueError, "weights_per_batch"),
    ({"weights_per_batch": 2.5}, TypeError, "weights_per_batch"),
    ({"order": "sideways"}, ValueError, "order"),
    ({"zero_std_sigma": -0.1}, ValueError, "zero_std_sigma"),
    ({"sigma_scale": -1.0}, ValueError, "sigma_scale"),
    ({"sigma_scale": float("nan")}, ValueError, "sigma_scale"),
    ({"seed": "zero"}, TypeError, "seed"),
    ({"tolerance": -1e-6}, ValueError, "tolerance"),
    ({"tolerance": 1.0}, ValueError, "tolerance"),
    ({"step_rule": "newton"}, ValueError, "step_rule"),
])
def test_out_of_range_options_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        keras_rso.RSO(**kwargs)


def test_sigma_annealing_rejects_bad_fraction_and_schedule(toy_data):
    with pytest.raises(ValueError, match="final_fraction"):
        keras_rso.callbacks.SigmaAnnealing(final_fraction=0.0)
    x, y = toy_data
    model = small_convnet()
    before = weights_of(model)
    trainer = _compiled(model, weights_per_batch=64)
    with pytest.raises(ValueError, match="positive finite scale"):
        trainer.fit(x, y, verbose=0, callbacks=[
            keras_rso.callbacks.SigmaAnnealing(schedule=lambda e, s: -1.0)])
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)


def test_unknown_variables_option_is_rejected(toy_data):
    x, y = toy_data
    trainer = keras_rso.RSOModel(small_convnet(), variables=["no/such/weight"])
    trainer.compile(optimizer=keras_rso.RSO(), loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="no/such/weight"):
        trainer.fit(x, y, verbose=0)


def test_nan_batch_stops_with_step_and_variable_named_and_keeps_last_good_weights(toy_data):
    x, y = toy_data
    batches = [(x[i * 32:(i + 1) * 32].copy(), y[i * 32:(i + 1) * 32]) for i in range(4)]
    batches[2][0][0, 0, 0, 0] = np.nan  # the third batch is poisoned
    ds = tf.data.Dataset.from_tensor_slices((np.stack([b[0] for b in batches]),
                                             np.stack([b[1] for b in batches])))
    model = small_convnet()
    trainer = _compiled(model, weights_per_batch=4)
    snapshots = []

    class Snap(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            snapshots.append(weights_of(model))

    with pytest.raises(keras_rso.NonFiniteLossError, match=r"train step 2 .*trial 8 of 211, next variable 'sequential\S*/dense\S*/kernel'\): the inputs of this batch contain NaN"):
        trainer.fit(ds, epochs=1, verbose=0, callbacks=[Snap()])
    assert len(snapshots) == 2  # steps 0 and 1 completed
    for a, b in zip(snapshots[-1], weights_of(model)):
        np.testing.assert_array_equal(a, b)
    assert int(trainer.optimizer.trials.numpy()) == 8
    # The flag is cleared: training on clean data carries on.
    clean = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(32)
    trainer.fit(clean, epochs=1, steps_per_epoch=2, verbose=0)
    assert int(trainer.optimizer.trials.numpy()) == 16


def test_a_bias_that_batchnorm_removes_is_named_once_in_a_warning():
    trainer = _compiled(small_convnet())  # Conv2D (bias, linear) -> BatchNormalization
    with pytest.warns(UserWarning, match=r"RSO searches \['sequential\S*/conv2d\S*/bias'\], but the BatchNormalization"):
        trainer.visit_schedule()
    quiet = [trainer,  # warned once already
             _compiled(small_convnet(first_bias=False)),
             _compiled(deeper_convnet())]  # its biased convs feed ReLU, not BN
    model = small_convnet()
    bias = model.layers[0].bias
    left_out = keras_rso.RSOModel(model, variables=lambda v: v is not bias)
    left_out.compile(optimizer=keras_rso.RSO(), loss="sparse_categorical_crossentropy")
    for t in quiet + [left_out]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t.visit_schedule()


class NanToZero(keras.layers.Layer):
    """Replaces NaN inputs by 0."""

    def call(self, x):
        return keras.ops.where(keras.ops.isnan(x), 0.0, x)


@pytest.mark.parametrize("fast_path", [True, False])
def test_nan_pixel_stops_even_where_the_loss_stays_finite(toy_data, fast_path):
    x, y = toy_data
    x, y = x[:64].copy(), y[:64]
    x[40, 3, 3, 0] = np.nan  # in the second batch of 32
    # Whether a NaN pixel reaches the loss depends on the CPU's kernels (some
    # fused BatchNorm-ReLU kernels turn it into 0), so a layer in front zeroes
    # it on every CPU: the loss stays finite and only a check of the inputs
    # can catch the NaN.
    model = keras.Sequential([keras.Input((8, 8, 1)), NanToZero(), *small_convnet().layers])
    predict = tf.function(lambda a: model(a, training=True))
    assert np.all(np.isfinite(predict(x[32:]).numpy()))
    trainer = keras_rso.RSOModel(model, fast_path=fast_path)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=4),
                    loss="sparse_categorical_crossentropy")
    snapshots = []

    class Snap(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            snapshots.append(weights_of(model))

    with pytest.raises(keras_rso.NonFiniteLossError,
                       match=r"train step 1 .*: the inputs of this batch contain NaN"):
        trainer.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
                    callbacks=[Snap()])
    assert trainer._plan()[0].fast == fast_path
    assert len(snapshots) == 1  # step 0 completed
    # Weights and BN moving statistics are as the clean step left them.
    for a, b in zip(snapshots[0], weights_of(model)):
        np.testing.assert_array_equal(a, b)
    assert int(trainer.optimizer.trials.numpy()) == 4


def test_nan_batch_under_random_order_names_the_variable_of_the_next_trial(toy_data):
    x, y = toy_data
    # A NaN sample weight (second batch of 32) makes the loss NaN.
    weights = np.ones(64, "float32")
    weights[40] = np.nan
    ds = tf.data.Dataset.from_tensor_slices((x[:64], y[:64], weights)).batch(32)
    trainer = _compiled(small_convnet(), weights_per_batch=4, order="random")
    with pytest.raises(keras_rso.NonFiniteLossError) as err:
        trainer.fit(ds, epochs=1, verbose=0)
    # The shuffled schedule's trial 4, not the variable at position 4 of
    # the unshuffled order.
    path = trainer.visit_schedule(cycle=0)[4][0]
    assert f"trial 4 of 211, next variable '{path}'" in str(err.value)


class NanOutsideUnitBall(keras.layers.Layer):
    """Scales its input by w; the output is NaN wherever |w| > 1."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],),
                                 initializer=keras.initializers.RandomUniform(-0.1, 0.1))

    def call(self, x):
        return x * self.w + 0.0 * keras.ops.log(1.0 - keras.ops.abs(self.w))


@pytest.mark.parametrize("fast_path", [True, False])
def test_non_finite_candidates_are_never_accepted(toy_data, fast_path):
    x, y = toy_data
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              NanOutsideUnitBall(), keras.layers.Dense(3, activation="softmax")])
    layer = model.layers[1]
    trainer = keras_rso.RSOModel(model, fast_path=fast_path)
    # sigma = 20 x std(w): most candidates leave the unit ball -> NaN loss.
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=16, sigma_scale=20.0),
                    loss="sparse_categorical_crossentropy")
    trainer.fit(x, y, batch_size=32, epochs=2, verbose=0)
    w = layer.w.numpy()
    assert np.all(np.abs(w) <= 1.0)
    assert int(trainer.optimizer.weight_updates.numpy()) > 0
    assert np.isfinite(model.evaluate(x, y, verbose=0))


def test_choose_prefers_keep_on_ties_and_never_takes_non_finite():
    from keras_rso.trial_rules import KEEP, choose
    plus, minus = 1, 2  # the paper's candidates w + dw, w - dw, in that order
    nan, inf = float("nan"), float("inf")
    cases = [((1.0, [0.5, 0.7]), plus), ((1.0, [0.7, 0.5]), minus), ((1.0, [1.0, 1.0]), KEEP),
             ((1.0, [0.5, 0.5]), plus), ((1.0, [nan, 0.9]), minus), ((1.0, [-inf, 2.0]), KEEP),
             ((1.0, [nan, nan]), KEEP), ((1.0, [inf, 1.5]), KEEP),
             # Four candidates (the parabolic step): the earlier wins a tie.
             ((1.0, [0.9, 0.8, 0.7, 0.95]), 3), ((1.0, [0.7, 0.8, 0.7, 0.7]), 1),
             ((1.0, [1.0, 1.0, 1.0, 1.0]), KEEP), ((1.0, [nan, 0.9, -inf, 0.5]), 4)]
    for (l0, losses), want in cases:
        got = int(choose(tf.constant(l0), [tf.constant(v) for v in losses]))
        assert got == want, ((l0, losses), got, want)


def test_tolerance_ignores_improvements_below_it():
    from keras_rso.trial_rules import KEEP, choose
    l0, tiny, clear = tf.constant(2.0), tf.constant(2.0 - 1e-6), tf.constant(1.9)
    assert int(choose(l0, [tiny, tf.constant(3.0)])) == 1
    assert int(choose(l0, [tiny, tf.constant(3.0)], tolerance=1e-6)) == KEEP
    assert int(choose(l0, [tf.constant(3.0), clear], tolerance=1e-6)) == 2


def test_wrong_input_shape_raises_before_any_change(toy_data):
    x, y = toy_data
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    before = weights_of(model)
    trainer = _compiled(model)
    with pytest.raises(ValueError, match="incompatible|expected|shape"):
        trainer.fit(np.zeros((64, 9, 9, 1), "float32"), y[:64], verbose=0)
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)


class BatchCentering(keras.layers.Layer):
    """An unknown layer that mixes samples (subtracts the batch mean)."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return (x - keras.ops.mean(x, axis=0, keepdims=True)) * self.scale


def test_unknown_layer_in_a_chain_is_evaluated_per_candidate(toy_data):
    x, y = toy_data
    results = {}
    for fast in (True, False):
        keras.utils.set_random_seed(7)
        model = keras.Sequential([
            keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, activation="relu"),
            BatchCentering(), keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax")])
        trainer = keras_rso.RSOModel(model, fast_path=fast)
        trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=16, seed=1),
                        loss="sparse_categorical_crossentropy")
        trainer.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        results[fast] = weights_of(model)
    for a, b in zip(results[True], results[False]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
