"""Each shim of `keras_rso._compat` against the TensorFlow and Keras CI runs.

A release that moves one of the private internals keras_rso relies on
fails here, by the shim's name, before anything downstream does.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_rso import _compat

L = keras.layers


def _functional():
    inputs = keras.Input((4,))
    hidden = L.Dense(3, name="hidden")(inputs)
    outputs = L.Dense(2, name="out")(L.ReLU(name="relu")(hidden))
    return keras.Model(inputs, outputs), inputs, hidden, outputs


def test_flatten_layers_and_own_variables():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="inner_dense")], name="inner")
    model = keras.Sequential([keras.Input((4,)), inner, L.Dense(2, name="head")])
    names = [layer.name for layer in _compat.flatten_layers(model, include_self=False)
             if not isinstance(layer, L.InputLayer)]
    assert names == ["inner", "inner_dense", "head"]
    assert _compat.flatten_layers(model)[0] is model
    dense = model.get_layer("head")
    assert [v.path for v in _compat.own_trainable_variables(dense)] == [
        dense.kernel.path, dense.bias.path]
    assert _compat.own_trainable_variables(inner) == []  # its Dense holds them


def test_functional_graph_access():
    model, inputs, hidden, outputs = _functional()
    assert _compat.is_functional(model)
    assert not _compat.is_functional(L.Dense(2))
    op, node_index, tensor_index = _compat.keras_history(outputs)
    assert op.name == "out" and tensor_index == 0
    node = _compat.inbound_node(op, node_index)
    assert _compat.keras_history(node.input_tensors[0])[0].name == "relu"
    relu = model.get_layer("relu")
    assert _compat.node_input_tensors(relu, 0)[0] is hidden
    assert _compat.node_input_tensors(relu, 1) is None  # called once
    assert _compat.node_input_tensors(L.Dense(1), 0) is None  # never called
    assert _compat.keras_history(np.zeros(2)) is None
    operations = _compat.functional_operations(model)
    assert [op.name for op in operations if not isinstance(op, L.InputLayer)] == [
        "hidden", "relu", "out"]
    assert _compat.functional_operations(L.Dense(1)) is None


def test_local_variable_is_the_replica_copy():
    plain = keras.Variable(1.0)
    assert _compat.local_variable(plain) is None
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert _compat.num_workers(strategy) == 1
    with strategy.scope():
        mirrored = keras.Variable(1.0)
        assert _compat.local_variable(mirrored) is None  # cross-replica context

    def replica_fn():
        local = _compat.local_variable(mirrored)
        assert isinstance(local, tf.Variable)
        assert not isinstance(local, tf.distribute.DistributedValues)
        local.assign(5.0)
        return local.read_value()

    strategy.run(tf.function(replica_fn))
    assert float(mirrored.numpy()) == 5.0


def test_batchnorm_moments_and_their_replacement():
    bn = L.BatchNormalization(axis=-1)
    x = tf.constant(np.random.default_rng(0).normal(size=(8, 5, 3)), tf.float32)
    bn.build(x.shape)
    mean, variance = _compat.batchnorm_moments(bn, x, None)
    np.testing.assert_allclose(mean, tf.reduce_mean(x, axis=[0, 1]), atol=1e-6)
    np.testing.assert_allclose(variance, tf.math.reduce_variance(x, axis=[0, 1]), atol=1e-5)
    assert _compat.batchnorm_reduction_axes(bn) == [0, 1]
    calls = []

    def moments(layer, inputs, mask):
        calls.append(layer)
        return tf.zeros([3]), tf.ones([3])

    with _compat.batchnorm_moments_replaced([bn], moments):
        out = bn(x, training=True)
    np.testing.assert_allclose(out, x / np.sqrt(1.0 + bn.epsilon), rtol=1e-5)
    assert calls == [bn]
    bn(x, training=True)  # the override is gone
    assert calls == [bn] and "_moments" not in vars(bn)


def test_noinline_function_computes_the_same():
    fn = _compat.noinline_function(lambda a: a * 2.0 + 1.0)
    assert float(fn(tf.constant(3.0))) == 7.0


def test_trainer_hooks_and_compile_state(tmp_path):
    model, *_ = _functional()
    model.compile(optimizer=None, loss="mse", metrics=["mae"])
    model.evaluate(np.zeros((4, 4)), np.zeros((4, 2)), verbose=0)
    # The shims return the objects Keras itself reports and updates.
    assert any(m is _compat.loss_tracker(model) for m in model.metrics)
    assert any(m is _compat.compiled_metrics(model) for m in model.metrics)
    assert _compat.compiled_metrics(model).built
    _compat.drop_compile_config(model)
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert not keras.saving.load_model(path).compiled  # reloads, uncompiled
    # The hook `BuildsFromFirstBatch` overrides, and what it calls.
    assert callable(getattr(keras.Model, "_maybe_symbolic_build"))
    assert callable(getattr(keras.Model, "_symbolic_build"))


def test_backup_exists(tmp_path):
    model, *_ = _functional()
    model.compile(optimizer="sgd", loss="mse")
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "b"), delete_checkpoint=False)
    assert not _compat.backup_exists(backup)
    model.fit(np.zeros((4, 4)), np.zeros((4, 2)), epochs=1, verbose=0, callbacks=[backup])
    assert _compat.backup_exists(backup)


def test_continue_backup_epoch_sets_the_callbacks_epoch(tmp_path):
    model, *_ = _functional()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "b"))
    model._initial_epoch = 3  # what Keras' restore sets
    _compat.continue_backup_epoch(backup, model)
    assert backup._current_epoch == 3


def test_data_adapters_and_validation_split():
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10.0)
    (xt, yt, _), (xv, yv, _) = _compat.train_validation_split((x, y, None), 0.2)
    assert len(xt) == 8 and len(xv) == 2 and np.array_equal(xv, x[8:])
    adapter = _compat.data_adapter(x, y, None, batch_size=4, shuffle=False, class_weight=None)
    assert _compat.is_rewindable(adapter)
    first = next(iter(adapter.get_tf_dataset()))
    assert np.array_equal(first[0], x[:4])
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    assert _compat.is_rewindable(_compat.data_adapter(dataset, None, None, None, False, None))
    generator = ((x[i:i + 2], y[i:i + 2]) for i in range(0, 10, 2))
    assert not _compat.is_rewindable(
        _compat.data_adapter(generator, None, None, None, False, None))
