"""The residual fast path (`GraphEvaluator`) against the full forward path."""

import keras
import numpy as np
import pytest

import keras_rso
from keras_rso.evaluators import FullForwardEvaluator
from keras_rso.evaluators import GraphEvaluator, graph_nodes
from testing_utils import fit_rso

L = keras.layers


def _conv(filters, **kw):
    return L.Conv2D(filters, 3, padding="same", use_bias=False, **kw)


def skip_over_one():
    """x -> conv -> BN -> relu -> conv -> add(x') -> BN: a skip over one conv."""
    inputs = keras.Input((8, 8, 1))
    a = L.BatchNormalization()(_conv(4)(inputs))
    b = _conv(4)(L.ReLU()(a))
    h = L.BatchNormalization()(L.Add()([b, a]))
    return inputs, h


def skip_over_two():
    inputs = keras.Input((8, 8, 1))
    a = L.ReLU()(L.BatchNormalization()(_conv(4)(inputs)))
    b = L.ReLU()(L.BatchNormalization()(_conv(4)(a)))
    c = _conv(4, activation="relu")(b)
    return inputs, L.Add()([c, a])


def projection_shortcut():
    inputs = keras.Input((8, 8, 1))
    a = L.ReLU()(L.BatchNormalization()(_conv(3)(inputs)))
    b = L.BatchNormalization()(_conv(5)(a))
    skip = L.BatchNormalization()(L.Conv2D(5, 1, use_bias=False)(a))
    return inputs, L.ReLU()(L.Add()([b, skip]))


def concatenation():
    inputs = keras.Input((8, 8, 1))
    a = _conv(3, activation="relu")(inputs)
    b = L.Conv2D(2, 1, activation="tanh")(a)
    c = L.BatchNormalization()(_conv(2)(a))
    return inputs, L.Concatenate()([a, b, c])


def rejoin_after_pooling():
    """A branch that pools, convolves and rejoins a pooled main path."""
    inputs = keras.Input((8, 8, 1))
    a = L.BatchNormalization()(_conv(4)(inputs))
    main = L.AveragePooling2D(2)(_conv(4, activation="relu")(a))
    side = _conv(4)(L.MaxPooling2D(2)(a))
    return inputs, L.Multiply()([L.Add()([main, side]), L.Activation("sigmoid")(side)])


SHAPES = [skip_over_one, skip_over_two, projection_shortcut, concatenation,
          rejoin_after_pooling]


def _model(shape, seed=1):
    keras.utils.set_random_seed(seed)
    inputs, h = shape()
    h = L.GlobalAveragePooling2D()(h)
    outputs = L.Dense(3, activation="softmax")(h)
    return keras.Model(inputs, outputs, name=shape.__name__)


def _fit(model, x, y, fast, k, order="output_to_input", epochs=1):
    return fit_rso(model, x, y, fast_path=fast, batch_size=48, epochs=epochs, shuffle=False,
                   weights_per_batch=k, seed=3, order=order).trainer


def _same_weights_on_both_paths(shape, toy_data):
    """Fits `_model(shape)` for a cycle on the fast and the full path (in
    float64, where rounding differences between the paths cannot flip a
    decision), asserts the same weights, and returns, per trainable
    variable, whether the search changed it."""
    x, y = toy_data
    x = x.astype("float64")
    weights = {}
    for fast in (True, False):
        model = _model(shape)
        initial = [v.numpy().copy() for v in model.trainable_variables]
        trainer = _fit(model, x, y, fast, k=24)
        assert isinstance(trainer._plan()[0], GraphEvaluator if fast else FullForwardEvaluator)
        weights[fast] = [v.numpy() for v in model.weights]
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    return [bool(np.any(v.numpy() != w0))
            for v, w0 in zip(model.trainable_variables, initial)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.__name__)
def test_residual_fast_path_matches_full_forward_path(toy_data, float64, shape):
    changed = _same_weights_on_both_paths(shape, toy_data)
    assert all(changed), changed


def test_paper_cifar10_net_takes_the_residual_fast_path():
    model = keras_rso.models.paper_cifar10_net()
    nodes = graph_nodes(model)
    assert nodes is not None
    assert [n.layer for n in nodes] == [l for l in model.layers
                                        if not isinstance(l, L.InputLayer)]
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO.paper(weights_per_batch=64),
                    loss=keras_rso.models.paper_loss())
    evaluator, plan = trainer._plan()
    visit = plan.visit
    assert isinstance(evaluator, GraphEvaluator)
    assert sum(int(np.prod(evaluator.variables[v].shape)) for v in visit) == 57104
    # conv3 feeds its own BN path and, through add3/pool3/bn3, conv5's skip.
    names = [n.layer.name for n in nodes]
    downstream = {names[k] for k in evaluator.downstream[names.index("bn1")]}
    assert {"relu2", "add3", "conv5_shortcut", "classifier"} <= downstream


def test_a_shared_layer_falls_back_to_the_full_forward_path(toy_data):
    x, y = toy_data
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    conv = L.Conv2D(1, 3, padding="same")
    h = L.Add()([conv(inputs), conv(conv(inputs))])
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(h)))
    assert graph_nodes(model) is None
    before = [v.numpy().copy() for v in model.trainable_variables]
    trainer = _fit(model, x, y, fast=True, k=8)
    assert isinstance(trainer._plan()[0], FullForwardEvaluator)
    assert any(np.any(v.numpy() != b) for v, b in zip(model.trainable_variables, before))


def test_paper_cifar10_net_fast_path_matches_full_path_in_float64(float64):
    # The authors' residual net on small images, a few variables of each kind
    # (the projection shortcut and its BN, BNs whose output feeds a skip, the
    # classifier): same weights both ways.
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(64, 4, 4, 3))
    y = rng.integers(0, 10, size=64).astype("int32")
    names = ["conv5_shortcut/kernel", "bn5_shortcut/gamma",
             "bn3/beta", "bn1/gamma", "classifier/kernel"]
    weights = {}
    for fast in (True, False):
        keras.utils.set_random_seed(2)
        model = keras_rso.models.paper_cifar10_net(input_shape=(4, 4, 3))
        searched = [v for v in model.trainable_variables
                    if any(v.path.endswith(n) for n in names)]
        assert len(searched) == len(names)
        trainer = keras_rso.RSOModel(model, fast_path=fast, variables=searched)
        trainer.compile(optimizer=keras_rso.RSO.paper(weights_per_batch=128, seed=1),
                        loss=keras_rso.models.paper_loss())
        trainer.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        assert isinstance(trainer._plan()[0], GraphEvaluator if fast else FullForwardEvaluator)
        weights[fast] = [v.numpy() for v in model.weights]
        assert trainer.optimizer.weight_updates.numpy() > 0
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def sign_and_round():
    """Step-shaped activations and a `keras.ops` call inside the graph."""
    inputs = keras.Input((8, 8, 1))
    a = L.BatchNormalization()(_conv(4)(inputs))
    b = L.Activation(keras.ops.sign)(a)
    c = _conv(4, activation=keras.ops.round)(b)
    d = keras.ops.floor(L.Add()([c, a]) * 2.0)
    return inputs, L.Activation("hard_tanh")(d)


def test_step_activations_take_the_fast_path_and_match_the_full_path(toy_data, float64):
    # Their gradient is zero almost everywhere; RSO trains through them,
    # and the fast path treats them as the element-wise functions they are.
    assert any(_same_weights_on_both_paths(sign_and_round, toy_data))


def argmax_lookup():
    """A hard choice inside the graph: each pixel's argmax over four
    channels, one-hot encoded, feeds the next convolution (a lookup)."""
    inputs = keras.Input((8, 8, 1))
    a = _conv(4)(inputs)
    choice = keras.ops.one_hot(keras.ops.argmax(a, axis=-1), 4)
    return inputs, L.Add()([_conv(4)(choice), a])


def test_an_argmax_lookup_trains_and_the_fast_path_matches_the_full_path(toy_data, float64):
    # argmax and one_hot are not element-wise: the graph evaluator reruns
    # every node after the perturbed layer in full, and the weights come out
    # as on full forward passes; every variable moves.
    changed = _same_weights_on_both_paths(argmax_lookup, toy_data)
    assert all(changed), changed
