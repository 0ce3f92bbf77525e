"""The trial's choice of new weight: the paper's argmin, the parabolic step
and its vertex alone."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_rso
from keras_rso.trial_rules import parabolic_offset
from conftest import deeper_convnet, small_convnet
from testing_utils import fit_rso


def _offset(l0, lp, lm, dw):
    return float(parabolic_offset(*(tf.constant(v, tf.float32) for v in (l0, lp, lm, dw))))


@pytest.mark.parametrize("dw", [0.5, -0.5, 0.2])
def test_parabolic_offset_is_the_vertex_of_a_quadratic(dw):
    def loss(t):
        return 3.0 * (t - 0.3) ** 2 + 1.0
    # The vertex lies within 2|dw| for each dw here.
    assert _offset(loss(0.0), loss(dw), loss(-dw), dw) == pytest.approx(0.3, abs=1e-5)


def test_parabolic_offset_clips_steps_downhill_and_ignores_non_finite():
    # Upward curve with its vertex at 5: clipped to 2|dw|.
    def loss(t):
        return (t - 5.0) ** 2
    assert _offset(loss(0.0), loss(0.5), loss(-0.5), 0.5) == pytest.approx(1.0)
    assert _offset(loss(0.0), loss(-0.5), loss(0.5), -0.5) == pytest.approx(1.0)
    # Flat or concave: 2|dw| toward the lower side.
    assert _offset(1.0, 0.9, 0.9, 0.5) == pytest.approx(1.0)
    assert _offset(1.0, 1.2, 0.8, 0.5) == pytest.approx(-1.0)
    assert _offset(1.0, 0.8, 1.2, -0.5) == pytest.approx(-1.0)
    assert _offset(1.0, float("nan"), 0.8, 0.5) == 0.0
    assert _offset(1.0, float("inf"), 0.8, 0.5) == 0.0


def _fit_one_weight(rule, seed):
    # One weight and a loss exactly quadratic in it: mse(w x, 0.05 x).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1)).astype("float32")
    model = keras.Sequential([keras.Input((1,)),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    fit_rso(model, x, 0.05 * x, loss="mse", batch_size=64, weights_per_batch=1, seed=seed,
            zero_std_sigma=1.0, step_rule=rule)
    return float(model.layers[0].kernel.numpy()[0, 0])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("rule", ["parabolic", "vertex"])
def test_parabolic_step_lands_on_the_minimum_of_a_quadratic(seed, rule):
    # dw ~ N(0, 1) overshoots the minimum at 0.05: the argmin keeps w = 0,
    # the parabolic step goes to the vertex in the same single trial.
    assert _fit_one_weight("argmin", seed) == 0.0
    assert _fit_one_weight(rule, seed) == pytest.approx(0.05, abs=1e-5)


def test_parabolic_step_lowers_the_loss_more_than_the_argmin_in_one_cycle(toy_data):
    x, y = toy_data
    losses = {}
    for rule in ("argmin", "parabolic"):
        trainer = keras_rso.RSOModel(small_convnet())
        trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=8, seed=0, step_rule=rule),
                        loss="sparse_categorical_crossentropy")
        hist = trainer.fit(x, y, batch_size=64, epochs=1, verbose=0)
        losses[rule] = hist.history["loss"][-1]
    assert losses["parabolic"] < losses["argmin"]


@pytest.mark.parametrize("rule", ["parabolic", "vertex"])
def test_parabolic_fast_path_matches_full_forward_path_in_float64(toy_data, float64, rule):
    # The vertex divides by a second difference of losses, so float32
    # rounding differences between the two paths (1e-7) grow into different
    # weights within a cycle; in float64 the paths must agree closely (a
    # wrong candidate or a taken mirror would differ by about sigma, 0.1).
    x, y = (a.astype("float64") if a.dtype.kind == "f" else a for a in toy_data)
    weights = {}
    for fast in (True, False):
        model = deeper_convnet()
        trainer = keras_rso.RSOModel(model, fast_path=fast)
        trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=64, seed=3,
                                                step_rule=rule),
                        loss="sparse_categorical_crossentropy")
        trainer.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        weights[fast] = [v.numpy() for v in model.weights]
    assert any(np.any(w != 0) for w in weights[True])
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)



def _one_trial(rule, loss):
    """The weight after one trial of `w = 0` in a net whose prediction is
    `w` itself (Dense(1) on inputs of 1) under `loss(y_pred)`, and the trial's
    `|dw|` (sigma 1: the zero-std fallback)."""
    x = np.ones((16, 1), "float32")
    model = keras.Sequential([keras.Input((1,)),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    fit_rso(model, x, np.zeros_like(x), loss=lambda y_true, y_pred: loss(y_pred),
            batch_size=16, weights_per_batch=1, seed=0, zero_std_sigma=1.0, step_rule=rule)
    # The search's noise of trial 0 (`TrialLoop`: keyed on the seed and trial).
    dw = abs(float(tf.random.stateless_normal([], seed=tf.constant([0, 0], tf.int64))))
    return float(model.layers[0].kernel.numpy()[0, 0]), dw


def test_vertex_leaves_out_the_mirror_the_parabolic_step_takes():
    # Rising slowly and linearly through w = 0 (no curvature: the step t is
    # 2|dw| toward the lower side, w = -2|dw|), with a deep drop beyond
    # w = 1.5 |dw| that only the mirror w + 2|dw| reaches.
    _, dw = _one_trial("argmin", lambda y: 0.01 * y)
    def loss(y):
        return 0.01 * y - tf.cast(y > 1.5 * dw, y.dtype)
    w_parabolic, _ = _one_trial("parabolic", loss)
    w_vertex, _ = _one_trial("vertex", loss)
    assert w_parabolic == pytest.approx(2 * dw, rel=1e-5)
    assert w_vertex == pytest.approx(-2 * dw, rel=1e-5)
