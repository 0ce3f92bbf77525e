"""`keras_rso.evaluators.topology`: which layer owns a weight, how layers connect."""

import keras

from keras_rso.evaluators.topology import (chain_layers, feeding_kernel, layer_positions,
                                           owner_layers)

L = keras.layers


def _residual():
    inputs = keras.Input((8, 8, 1))
    a = L.Conv2D(2, 3, padding="same", name="conv_a")(inputs)
    bn = L.BatchNormalization(name="bn_a")
    b = bn(L.AveragePooling2D(1, name="pool")(a))
    merged = L.Add(name="add")([b, L.Conv2D(2, 1, name="conv_skip")(inputs)])
    outputs = L.Dense(3, name="dense")(L.GlobalAveragePooling2D()(merged))
    return keras.Model(inputs, outputs), bn


def test_owner_layers_finds_the_innermost_owner():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="inner_dense")], name="inner")
    model = keras.Sequential([keras.Input((4,)), inner, L.Dense(2, name="head")])
    owners = owner_layers(model, model.trainable_variables)
    assert [o.name for o in owners] == ["inner_dense", "inner_dense", "head", "head"]
    assert owner_layers(model, [keras.Variable(1.0)]) == [None]


def test_layer_positions_first_holder_wins_unless_unique():
    shared = L.Dense(2, name="shared")
    shared.build((None, 3))
    other = L.Dense(1)
    other.build((None, 2))
    wrapper = keras.Sequential([keras.Input((3,)), shared])
    positions = layer_positions([shared, other, wrapper])
    assert positions[id(shared.kernel)] == 0 and positions[id(other.kernel)] == 1
    assert layer_positions([shared, wrapper], unique=True) is None


def test_feeding_kernel_walks_through_pooling_and_the_first_input_of_a_merge():
    model, bn = _residual()
    assert feeding_kernel(bn) is model.get_layer("conv_a").kernel
    # `add`'s first input is bn_a, which has no kernel: the walk goes on to conv_a.
    assert feeding_kernel(model.get_layer("add")) is model.get_layer("conv_a").kernel
    assert feeding_kernel(model.get_layer("conv_a")) is None  # the input is next
    assert feeding_kernel(None) is None


def test_chain_layers_only_for_chains():
    model, _ = _residual()
    assert chain_layers(model) is None
    seq = keras.Sequential([keras.Input((3,)), L.Dense(2), L.ReLU(), L.Dense(1)])
    assert chain_layers(seq) == list(seq.layers)
    inputs = keras.Input((3,))
    functional = keras.Model(inputs, L.Dense(1, name="d2")(L.Dense(2, name="d1")(inputs)))
    assert [layer.name for layer in chain_layers(functional)] == ["d1", "d2"]
