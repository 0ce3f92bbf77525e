"""Models built under a Keras mixed precision policy (float32 variables,
bfloat16 or float16 computation) train with RSO on the fast paths."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_rso
from keras_rso.evaluators import (ChainEvaluator, FullForwardEvaluator, GraphEvaluator,
                                  chain_layers)
from testing_utils import fit_rso

L = keras.layers


@pytest.fixture(params=["mixed_bfloat16", "mixed_float16"])
def mixed_policy(request):
    """Runs a test under each of Keras' two mixed precision policies."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(policy)


def _chain(seed=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(4, 3, padding="same", use_bias=False, name="conv1"),
        L.BatchNormalization(name="bn1"), L.ReLU(), L.AveragePooling2D(2),
        L.Conv2D(4, 3, name="conv2"), L.Activation("tanh"), L.Flatten(),
        # The output layer in float32, as Keras' mixed precision guide advises.
        L.Dense(3, name="dense", dtype="float32")])


def _residual(seed=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(inputs)))
    b = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(a))
    h = L.GlobalAveragePooling2D()(L.ReLU()(L.Add()([a, b])))
    return keras.Model(inputs, L.Dense(3, dtype="float32")(h))


def _loss(y, y_pred, sample_weight):
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
        y, tf.cast(y_pred, "float32"), from_logits=True))


def test_chain_trials_match_the_full_forward_path(mixed_policy, toy_data):
    model = _chain()
    assert model.layers[0].compute_dtype == mixed_policy.removeprefix("mixed_")
    x, y = (tf.constant(a[:32]) for a in toy_data)
    variables = list(model.trainable_variables)
    assert all(v.dtype == "float32" for v in variables)
    chain = ChainEvaluator(chain_layers(model), variables, _loss)
    full = FullForwardEvaluator(model, variables, _loss)
    # bn1 takes the channel-sparse path (it normalises in float32, as the layer does).
    assert chain.sparse_to == {0: 4}
    loss0, _, fixed, carried = chain.begin(x, y, None)
    np.testing.assert_allclose(loss0, full.begin(x, y, None)[0], rtol=1e-2)
    gaps, errors = [], []
    for v in reversed(range(len(variables))):
        for j in (0, int(np.prod(variables[v].shape)) - 1):
            dw = tf.constant(1.0)
            fast = chain.trial(v, j, dw, fixed, carried, x, y, None)
            ref = full.trial(v, j, dw, (), (), x, y, None)
            for a, b in ((fast.loss_plus, ref.loss_plus), (fast.loss_minus, ref.loss_minus)):
                errors.append(abs(float(a) - float(b)))
            gaps.append(abs(float(ref.loss_plus) - float(ref.loss_minus)))
    # The paths round differently in half precision, but far less than the
    # candidates differ: the same candidate wins on both.
    assert max(errors) < 2e-2 and np.median(errors) < 0.1 * np.median(gaps), (errors, gaps)


@pytest.mark.parametrize("build, evaluator, pool_size", [
    (_chain, ChainEvaluator, None), (_residual, GraphEvaluator, None),
    (_chain, ChainEvaluator, 128)], ids=["chain", "residual", "chain_pool"])
def test_fast_path_trains_under_mixed_precision(mixed_policy, toy_data, build, evaluator,
                                                pool_size):
    x, y = toy_data
    model = build()
    initial = [v.numpy().copy() for v in model.trainable_variables]
    fitted = fit_rso(model, x, y, batch_size=64, epochs=4, weights_per_batch=8,
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     metrics=["accuracy"], pool_size=pool_size)
    assert isinstance(fitted.trainer._plan()[0], evaluator)
    # No loss scaling: RSO computes no gradient to scale.
    assert type(fitted.trainer.optimizer) is keras_rso.RSO
    accuracy = fitted.history.history["accuracy"]
    assert accuracy[-1] > accuracy[0] and accuracy[-1] > 0.6, accuracy
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert all(np.any(v.numpy() != w) for v, w in zip(model.trainable_variables, initial)
               if v.path.endswith("kernel"))


def test_loss_scaling_is_refused_with_a_reason(mixed_policy):
    trainer = keras_rso.RSOModel(_chain())
    with pytest.raises(ValueError, match="auto_scale_loss=True.*no gradient"):
        trainer.compile(optimizer=keras_rso.RSO(), loss="mse", auto_scale_loss=True)
