"""The layer-input pool: `RSO(pool_size=...)` (keras_rso/pool.py)."""

import keras
import numpy as np
import pytest

import keras_rso
from conftest import make_toy_data, small_convnet
from test_resume import InterruptAtBatch


def residual_convnet(seed=1):
    """A tiny residual net: an identity skip over one convolution, a 1x1
    projection skip where the channels grow, the second merge pooled."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    a = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(inputs))
    b = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(L.ReLU()(a)))
    h = L.ReLU()(L.Add()([b, a]))
    c = L.BatchNormalization()(L.Conv2D(6, 3, padding="same", use_bias=False)(h))
    skip = L.BatchNormalization()(L.Conv2D(6, 1, use_bias=False)(h))
    h = L.AveragePooling2D(2)(L.Add()([c, skip]))
    outputs = L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(L.ReLU()(h)))
    return keras.Model(inputs, outputs)


def _trainer(pool_size=None, k=32, seed=4, tolerance=0.0, first_bias=True, build=None):
    keras.utils.set_random_seed(0)
    model = build() if build else small_convnet(first_bias=first_bias)
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=k, seed=seed,
                                            pool_size=pool_size, tolerance=tolerance),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, trainer


def _fit(x, y, callbacks=(), epochs=2, pool_size=96, batch=48, shuffle=True):
    model, trainer = _trainer(pool_size)
    try:
        history = trainer.fit(x, y, batch_size=batch, epochs=epochs, shuffle=shuffle,
                              verbose=0, callbacks=list(callbacks))
    except KeyboardInterrupt:
        history = None
    return model, trainer, history


def test_pool_fills_each_segment_then_trains(toy_data):
    x, y = toy_data
    model, trainer, history = _fit(x, y, epochs=3, shuffle=False)
    # Segments: the classifier; conv2; BatchNorm with conv1 (its anchor).
    # Each fills 96 rows in 2 steps of 48; then ceil(trials / 32) steps.
    steps = trainer.steps_per_cycle()
    assert len(trainer._pool.anchors) == 3
    assert steps == (2 + 1) + (2 + 5) + (2 + 2)
    opt = trainer.optimizer
    assert int(opt.iterations.numpy()) == 3 * steps
    assert int(opt.trials.numpy()) == 3 * trainer.trials_per_cycle
    assert int(opt.pool_fills.numpy()) == 0
    assert history.history["trials"] == [c * trainer.trials_per_cycle for c in (1, 2, 3)]
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > history.history["accuracy"][0]
    # The last segment's anchor is the first convolution, whose input is
    # the image itself: the pool holds the two batches of the unshuffled
    # stream that the last cycle's fill steps (its steps 10 and 11) took.
    pool = trainer._pool
    rows = int(pool.rows.numpy())
    (key,) = pool.key[min(pool.anchors)]  # a chain: one tensor per anchor
    stored = pool.buffers[key].numpy()[:rows]
    start = (3 * steps - 4) * 48 % len(x)
    assert rows == 96
    np.testing.assert_array_equal(stored, x[start:start + rows].reshape(rows, -1))
    np.testing.assert_array_equal(pool.targets.numpy()[:rows], y[start:start + rows])


# The chain runs two cycles (the second refills the pool from changed
# weights); the residual net one, since its 5-segment step costs most of
# this test's time to build and one cycle already visits every anchor.
@pytest.mark.parametrize("build, segments, epochs", [(None, 3, 2), (residual_convnet, 5, 1)],
                         ids=["chain", "residual"])
def test_pool_of_the_whole_batch_takes_the_same_decisions(toy_data, build, segments, epochs):
    """With the pool as large as the data and the batch, every step sees the
    same samples (in another order): the search must end where it ends
    without a pool, in float64 (where reordering a sum cannot flip a
    decision that a 1e-9 relative tolerance does not already reject).
    The residual net takes `GraphEvaluator`, whose pool holds every skip
    that crosses an anchor."""
    x, y = toy_data
    keras.config.set_dtype_policy("float64")
    try:
        results = []
        for pool in (None, len(x)):
            model, trainer = _trainer(pool, k=10_000, tolerance=1e-9, first_bias=False,
                                      build=build)
            trainer.fit(x.astype("float64"), y, batch_size=len(x), epochs=epochs,
                        shuffle=False, verbose=0)
            results.append((model, trainer))
    finally:
        keras.config.set_dtype_policy("float32")
    (plain, plain_trainer), (pooled, pooled_trainer) = results
    assert type(pooled_trainer._plan()[0]).__name__ == (
        "GraphEvaluator" if build else "ChainEvaluator")
    assert pooled_trainer.steps_per_cycle() == 2 * segments
    if build:
        # Anchors conv2 and the projection are crossed by a skip: their
        # segments pool two tensors (the main path's input and the skip).
        assert sorted(len(keys) for keys in pooled_trainer._pool.key.values()) == [1, 1, 1, 2, 2]
    assert plain_trainer.steps_per_cycle() == 1
    assert int(pooled_trainer.optimizer.weight_updates.numpy()) == \
        int(plain_trainer.optimizer.weight_updates.numpy()) > 0
    for a, b in zip(pooled.trainable_weights, plain.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, err_msg=a.path)


@pytest.fixture(scope="module")
def uninterrupted():
    """The one-cycle run that the interrupted ones must reproduce."""
    return _fit(*make_toy_data(), epochs=1)


# 14 steps per cycle: fills 0-1, classifier 2, fills 3-4, conv2 5-9, fills
# 10-11, conv1 and BatchNorm 12-13. Killed mid-fill, and mid-segment.
@pytest.mark.parametrize("killed_after", [3, 6])
def test_resume_from_a_mid_segment_backup_is_exact(toy_data, tmp_path, killed_after,
                                                    uninterrupted):
    x, y = toy_data
    reference, ref_trainer, _ = uninterrupted
    backup = str(tmp_path / "backup")
    _, killed_trainer, _ = _fit(x, y, [keras.callbacks.BackupAndRestore(backup, save_freq=1),
                                       InterruptAtBatch(epoch=0, batch=killed_after)],
                                epochs=1)
    assert 0 < int(killed_trainer.optimizer.pool_fills.numpy()) <= 2
    resumed, trainer, _ = _fit(x, y, [keras.callbacks.BackupAndRestore(backup, save_freq=1)],
                               epochs=1)
    assert int(trainer.optimizer.iterations.numpy()) == int(ref_trainer.optimizer.iterations.numpy())
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_pool_rejects_what_it_cannot_serve(toy_data):
    x, y = toy_data
    with pytest.raises(ValueError, match="order"):
        keras_rso.RSO(pool_size=10, order="random")
    with pytest.raises(ValueError, match=">= 1"):
        keras_rso.RSO(pool_size=0)
    with pytest.raises(TypeError, match="pool_size"):
        keras_rso.RSO(pool_size=True)
    assert keras_rso.RSO.from_config(keras_rso.RSO(pool_size=7).get_config()).pool_size == 7

    _, trainer = _trainer(pool_size=64)
    with pytest.raises(ValueError, match="sample weights"):
        trainer.fit(x, y, sample_weight=np.ones(len(y)), batch_size=32, epochs=1, verbose=0)

    # A multi-worker strategy (each worker would need its own pool) is
    # refused before anything is written.
    _, trainer = _trainer(pool_size=64)
    before = [w.numpy().copy() for w in trainer.model.weights]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras_rso._compat, "num_workers", lambda strategy: 2)
        with pytest.raises(ValueError, match="multi-worker"):
            trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for w, b in zip(trainer.model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)

    # Whole forward passes (no fast path) have no layer input to pool.
    trainer = keras_rso.RSOModel(residual_convnet(), fast_path=False)
    trainer.compile(optimizer=keras_rso.RSO(pool_size=64),
                    loss="sparse_categorical_crossentropy")
    before = [w.numpy().copy() for w in trainer.model.weights]
    with pytest.raises(ValueError, match="needs the fast path"):
        trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for w, b in zip(trainer.model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_paper_cifar10_net_pools_every_skip_that_crosses_an_anchor():
    # The authors' residual net under their preset with a pool: eleven
    # anchors (the classifier, nine convolutions and the 1x1 shortcut); from
    # conv2 on, each pools its main path's input and the skip crossing it.
    # The pool is checked as `fit` builds it, before the first step: tracing
    # this net's step takes a minute, and training from a pool of skips is
    # checked decision by decision on `residual_convnet` above (whose
    # projection shortcut is crossed by a skip as here).
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 10, size=50).astype("int32")
    keras.utils.set_random_seed(0)
    trainer = keras_rso.RSOModel(keras_rso.models.paper_cifar10_net())
    trainer.compile(optimizer=keras_rso.RSO.paper(seed=0, pool_size=100),
                    loss=keras_rso.models.paper_loss())
    trainer._ensure_ready((x, y))
    trainer._build_pool((x, y))
    pool = trainer._pool
    assert type(trainer._plan()[0]).__name__ == "GraphEvaluator"
    assert sorted(len(keys) for keys in pool.key.values()) == [1, 1] + [2] * 9
    # Each segment fills its 100 rows in two batches of 50 before its trials.
    assert pool.fill_steps == 2
    # Memory is linear in P: rows x (sum of the pooled widths) x 4 bytes + targets.
    widths = sum(w for w, _, _ in pool.buffers)
    assert pool.nbytes == 100 * widths * 4 + 100 * 4


def test_a_pool_larger_than_free_memory_is_refused_before_anything_changes(toy_data):
    x, y = toy_data
    _, trainer = _trainer(pool_size=64)
    before = [w.numpy().copy() for w in trainer.model.weights]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras_rso.pool, "available_memory", lambda: 1000)
        with pytest.raises(ValueError, match=r"pool_size=64\) needs .* GB available"):
            trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for w, b in zip(trainer.model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    assert trainer._pool is None
    # With the memory there, the same fit runs.
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert trainer._pool is not None and trainer._pool.nbytes > 1000
    assert keras_rso.pool.available_memory() > trainer._pool.nbytes
