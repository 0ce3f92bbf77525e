"""`ChainEvaluator` on its own: each trial's two losses equal full forward passes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rso.evaluators import ChainEvaluator, FullForwardEvaluator, chain_layers
from testing_utils import fit_rso, weights_of

L = keras.layers


def _chain():
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        L.Conv2D(3, 3, padding="same", name="conv1"), L.BatchNormalization(name="bn1"),
        L.ReLU(), L.AveragePooling2D(2), L.Conv2D(4, 3, use_bias=False, name="conv2"),
        L.Activation("tanh"), L.Flatten(), L.Dense(3, name="dense")])


def _loss(y, y_pred, sample_weight):
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, y_pred, from_logits=True))


def test_every_variable_kind_matches_the_full_forward_path(float64):
    model = _chain()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(16, 6, 6, 2)))
    y = tf.constant(rng.integers(0, 3, 16))
    variables = list(model.trainable_variables)
    chain = ChainEvaluator(chain_layers(model), variables, _loss)
    full = FullForwardEvaluator(model, variables, _loss)
    assert chain.fast and [v.path.split("/")[-2] for v in variables] == [
        "conv1", "conv1", "bn1", "bn1", "conv2", "dense", "dense"]
    loss0, _, fixed, carried = chain.begin(x, y, None)
    ref0, _, _, _ = full.begin(x, y, None)
    np.testing.assert_allclose(loss0, ref0, rtol=1e-12)
    # Output side first, as a step runs them: the caches stay valid.
    for v in reversed(range(len(variables))):
        for j in (0, int(np.prod(variables[v].shape)) - 1):
            dw = tf.constant(0.3, tf.float64)
            fast = chain.trial(v, j, dw, fixed, carried, x, y, None)
            ref = full.trial(v, j, dw, (), (), x, y, None)
            np.testing.assert_allclose([fast.loss_plus, fast.loss_minus],
                                       [ref.loss_plus, ref.loss_minus], rtol=1e-10,
                                       err_msg=f"{variables[v].path}[{j}]")
            # A real comparison, except conv1's bias, which bn1 subtracts again.
            flat = variables[v].path.endswith("conv1/bias")
            gap = abs(float(fast.loss_plus) - float(fast.loss_minus))
            assert (gap < 1e-12) == flat, (variables[v].path, gap)


def test_supports_only_variables_of_its_layers():
    model = _chain()
    layers = chain_layers(model)
    assert ChainEvaluator.supports(model.trainable_variables, layers)
    assert not ChainEvaluator.supports(model.trainable_variables, layers[1:])
    with pytest.raises(ValueError, match="outside the chain"):
        ChainEvaluator(layers[1:], model.trainable_variables, _loss)


def test_an_argmax_lookup_layer_in_a_chain_matches_the_full_path(float64):
    # A Lambda that one-hot encodes the argmax of the layer before it: the
    # chain evaluator reruns it in full after the perturbed layer, and the
    # weights equal those of full forward passes; every variable moves.
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 5)), rng.integers(0, 3, 64)
    weights = {}
    for fast in (True, False):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((5,)), keras.layers.Dense(4),
            keras.layers.Lambda(lambda h: keras.ops.one_hot(keras.ops.argmax(h, axis=-1), 4)),
            keras.layers.Dense(3)])
        initial = weights_of(model)
        fitted = fit_rso(model, x, y, fast_path=fast, batch_size=32, epochs=2, shuffle=False,
                         weights_per_batch=4, seed=1,
                         loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        assert isinstance(fitted.trainer._plan()[0], ChainEvaluator if fast else FullForwardEvaluator)
        weights[fast] = [v.numpy() for v in model.weights]
        assert all(np.any(w != w0) for w, w0 in zip(weights[fast], initial))
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_array_equal(a, b)
