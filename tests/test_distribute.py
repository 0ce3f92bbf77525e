"""RSO under tf.distribute: MirroredStrategy on two logical CPUs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_rso
from conftest import small_convnet
from test_resume import InterruptAtBatch
from testing_utils import fit_rso


def _fit(strategy, x, y, bn=False, tolerance=1e-6, epochs=2, options=None, callbacks=(),
         **bn_kwargs):
    def build():
        model = small_convnet(bn=bn)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                for k, v in bn_kwargs.items():
                    setattr(layer, k, v)
        return model
    return fit_rso(build, x, y, strategy=strategy, metrics=["accuracy"], epochs=epochs,
                   shuffle=False, weights_per_batch=8, seed=3, tolerance=tolerance,
                   callbacks=callbacks, **(options or {}))


def _mirrored():
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def test_two_replicas_match_one_device(toy_data):
    x, y = toy_data
    single, t1, h1 = _fit(tf.distribute.get_strategy(), x, y)
    mirrored, t2, h2 = _fit(_mirrored(), x, y)
    assert t2.distribute_strategy.num_replicas_in_sync == 2
    assert int(t2.optimizer.weight_updates.numpy()) > 0
    assert int(t1.optimizer.weight_updates.numpy()) == int(t2.optimizer.weight_updates.numpy())
    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(h1.history["accuracy"], h2.history["accuracy"])


# Output passes and the parabolic step share one run: each fit of a
# mirrored model spends most of its time tracing the step.
@pytest.mark.parametrize("options", [{}, {"output_passes": 2, "step_rule": "parabolic"}],
                         ids=["argmin", "parabolic_with_output_passes"])
def test_replicas_never_diverge_with_batchnorm(toy_data, options):
    # Per-replica BN statistics and the paper's exact argmin (tolerance 0):
    # decisions are still taken on the gathered global loss, identical on
    # both replicas, and BN moving statistics are averaged. The same holds
    # with output passes and the parabolic step (whose offset is computed
    # from the gathered losses).
    x, y = toy_data
    model, trainer, history = _fit(_mirrored(), x, y, bn=True, tolerance=0.0,
                                   options=options)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for v in model.weights:
        copies = [c.numpy() for c in v._value.values]
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=v.path)
    for v in trainer.optimizer.variables:
        copies = [c.numpy() for c in v._value.values]
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=v.path)


def test_synchronized_batchnorm_matches_one_device(toy_data):
    # Global-batch BN statistics inside the trial loop go through the same
    # gathered sums as the losses.
    x, y = toy_data
    single, _, _ = _fit(tf.distribute.get_strategy(), x, y, bn=True, epochs=1, synchronized=True)
    mirrored, _, _ = _fit(_mirrored(), x, y, bn=True, epochs=1, synchronized=True)
    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


def test_layer_input_pool_two_replicas_match_one_device(toy_data, tmp_path):
    # Each replica stores the gathered global batches and draws its shard of
    # each pooled batch: the search sees what it sees on one device (with
    # synchronized BN, the pool's layer inputs are the global batch's).
    # The two-replica run is also killed mid-segment (step 10 of 36: three
    # fills of the second segment, then trials) and resumed
    # from its backup, which refills the pool by replaying them: exact
    # resume holds under the strategy too.
    x, y = toy_data
    options = {"pool_size": 96}
    single, t1, _ = _fit(tf.distribute.get_strategy(), x, y, bn=True, options=options,
                         synchronized=True)
    backup = str(tmp_path / "backup")
    _, killed, _ = _fit(_mirrored(), x, y, bn=True, options=options, synchronized=True,
                        callbacks=[keras.callbacks.BackupAndRestore(backup, save_freq=1),
                                   InterruptAtBatch(epoch=0, batch=9)])
    assert int(killed.optimizer.pool_fills.numpy()) > 0
    assert int(killed.optimizer.iterations.numpy()) < int(t1.optimizer.iterations.numpy())
    mirrored, t2, history = _fit(_mirrored(), x, y, bn=True, options=options, synchronized=True,
                                 callbacks=[keras.callbacks.BackupAndRestore(backup, save_freq=1)])
    assert t2._pool.fill_steps == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert int(t1.optimizer.iterations.numpy()) == int(t2.optimizer.iterations.numpy())
    assert int(t1.optimizer.weight_updates.numpy()) == int(t2.optimizer.weight_updates.numpy()) > 0
    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
    for key, buffer in t1._pool.buffers.items():
        np.testing.assert_allclose(t2._pool.buffers[key].numpy(), buffer.numpy(), atol=1e-5)
    np.testing.assert_array_equal(t2._pool.targets.numpy(), t1._pool.targets.numpy())


def test_residual_pool_two_replicas_match_one_device(toy_data):
    # A residual net's pool holds, per anchor, the main path's input and the
    # skips that cross it; under two replicas each is gathered and stored
    # row by row, and the search takes the one-device decisions.
    x, y = toy_data

    def build():
        # One identity skip crossing one anchor: the smallest net whose pool
        # stores two tensors per row (test_pool.py covers more shapes on
        # one device); a larger one only adds tracing time here.
        keras.utils.set_random_seed(1)
        L = keras.layers
        inputs = keras.Input((8, 8, 1))
        a = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(inputs))
        b = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(L.ReLU()(a)))
        h = L.GlobalAveragePooling2D()(L.ReLU()(L.Add()([b, a])))
        model = keras.Model(inputs, L.Dense(3, activation="softmax")(h))
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
        return model

    # In float64, so that the replicas' other summation order cannot flip a
    # near-tie that the 1e-9 tolerance does not already reject.
    keras.config.set_dtype_policy("float64")
    try:
        runs = [fit_rso(build, x.astype("float64"), y, strategy=strategy, epochs=1,
                        shuffle=False, weights_per_batch=32, seed=3, tolerance=1e-9,
                        pool_size=64)
                for strategy in (tf.distribute.get_strategy(), _mirrored())]
    finally:
        keras.config.set_dtype_policy("float32")
    (single, t1, _), (mirrored, t2, _) = runs
    assert type(t2._plan()[0]).__name__ == "GraphEvaluator"
    assert max(len(keys) for keys in t2._pool.key.values()) == 2
    assert int(t1.optimizer.weight_updates.numpy()) == int(t2.optimizer.weight_updates.numpy()) > 0
    # The searched weights take the same values; BN's moving statistics
    # (averaged over the replicas) agree as in the chain's test.
    for a, b in zip(single.trainable_weights, mirrored.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, err_msg=a.path)
    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


def _free_port_block(n):
    import socket
    for _ in range(50):
        base = np.random.default_rng().integers(20000, 60000)
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", int(base) + i))
                socks.append(s)
            return int(base)
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


@pytest.mark.timeout(400)
def test_multi_worker_example_runs_two_workers_in_lockstep(tmp_path):
    """Two worker processes on localhost (TF_CONFIG) end with equal weights."""
    import os
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "examples" / "multi_worker_rso.py"
    port = _free_port_block(2)
    common = ["--workers", "2", "--port", str(port), "--filters", "4",
              "--limit", "512", "--batch-size", "32", "--weights-per-batch", "128"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = [subprocess.Popen(
        [sys.executable, str(script), "--index", str(i), *common,
         "--output", str(tmp_path / f"w{i}.npz")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=300)
            outputs.append(out)
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert "replicas in sync 2" in out
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    assert set(w0) == set(w1)
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
    # Training happened: the classifier moved away from its initial value.
    import keras
    from keras_rso import models
    keras.utils.set_random_seed(0)
    init = models.mnist_paper_net(filters=4)
    assert not np.array_equal(init.get_layer("classifier").kernel.numpy(),
                              w0["rso_mnist_net/classifier/kernel"])


def _residual_net():
    keras.utils.set_random_seed(1)
    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    b = L.Conv2D(4, 3, padding="same")(a)
    h = L.ReLU()(L.Add()([a, b]))
    return keras.Model(inputs, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(h)))


def test_residual_fast_path_two_replicas_match_one_device(toy_data):
    from keras_rso.evaluators import GraphEvaluator

    x, y = toy_data
    weights = []
    for strategy in (tf.distribute.get_strategy(), _mirrored()):
        with strategy.scope():
            model = _residual_net()
            trainer = keras_rso.RSOModel(model)
            trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=16, seed=3,
                                                    tolerance=1e-6),
                            loss="sparse_categorical_crossentropy")
        trainer.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        assert isinstance(trainer._plan()[0], GraphEvaluator)
        assert int(trainer.optimizer.weight_updates.numpy()) > 0
        weights.append([v.numpy() for v in model.weights])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-6)




def test_loss_sampling_two_replicas_match_one_device(toy_data):
    # Each replica takes its rows of the step's drawn global batch, so the
    # replicas together see what one device sees (a tolerance keeps float
    # rounding of the replica-summed loss from flipping exact near-ties).
    from keras_rso.sampling import LossSampling
    x, y = toy_data
    runs = []
    for strategy in (tf.distribute.get_strategy(), _mirrored()):
        sampling = LossSampling(x, y, batch_size=32, refresh_every=3, refresh_batch=64, seed=2)
        runs.append(fit_rso(lambda: small_convnet(bn=False), sampling.dataset(), None,
                            strategy=strategy, batch_size=None, epochs=2,
                            weights_per_batch=8, seed=3, tolerance=1e-6, callbacks=[sampling]))
    assert runs[1].trainer.distribute_strategy.num_replicas_in_sync == 2
    assert int(runs[0].trainer.optimizer.weight_updates.numpy()) == \
        int(runs[1].trainer.optimizer.weight_updates.numpy()) > 0
    for a, b in zip(runs[0].model.weights, runs[1].model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)
    odd = LossSampling(x, y, batch_size=33)
    with pytest.raises(ValueError, match="split evenly"):
        fit_rso(lambda: small_convnet(bn=False), odd.dataset(), None, strategy=_mirrored(),
                batch_size=None, weights_per_batch=8, callbacks=[odd])
