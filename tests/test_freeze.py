"""Freezing searched variables: `RSOModel.freeze` and `callbacks.FreezeAfter`."""

import keras
import numpy as np
import pytest

import keras_rso
from conftest import small_convnet
from test_resume import InterruptAtBatch
from testing_utils import fit_rso, weights_of


class _Snapshots(keras.callbacks.Callback):
    """Every weight of the wrapped model at each epoch end."""

    def __init__(self, model):
        super().__init__()
        self.watched, self.epochs = model, []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(weights_of(self.watched))


def _fit(x, y, callbacks_of=lambda model: [], epochs=2, fast_path=True, **rso):
    model = small_convnet(first_bias=False)
    snaps = _Snapshots(model)
    fitted = fit_rso(model, x, y, callbacks=[snaps] + callbacks_of(model), epochs=epochs,
                     shuffle=False, weights_per_batch=8, fast_path=fast_path, **rso)
    return fitted, snaps.epochs


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "full"])
def test_freeze_after_keeps_the_layer_and_leaves_earlier_cycles_unchanged(toy_data, fast_path):
    x, y = toy_data
    (_, plain_trainer, _), plain = _fit(x, y, fast_path=fast_path)
    (model, trainer, _), frozen = _fit(
        x, y, lambda m: [keras_rso.callbacks.FreezeAfter({m.layers[4].name: 1})],
        fast_path=fast_path)
    conv2 = [i for i, v in enumerate(model.weights) if v.path.startswith(model.layers[4].path)]
    assert conv2
    # Cycle 1 is the run without the freeze, bit for bit.
    for a, b in zip(plain[0], frozen[0]):
        np.testing.assert_array_equal(a, b)
    # In cycle 2 the second convolution stays as cycle 1 left it (the same
    # run without the freeze moves it); everything else is still searched.
    for i in conv2:
        np.testing.assert_array_equal(frozen[1][i], frozen[0][i])
        assert not np.array_equal(plain[1][i], plain[0][i])
    others = [i for i, v in enumerate(model.weights) if v.trainable and i not in conv2]
    assert any(not np.array_equal(frozen[1][i], frozen[0][i]) for i in others)
    # Its trials were skipped, not made: the cycle position and the trial
    # numbers moved on as far as without the freeze.
    opt, plain_opt = trainer.optimizer, plain_trainer.optimizer
    searched = [v.path for v in trainer.trainable_variables]
    tried = dict(zip(searched, opt.trials_per_variable.numpy()))
    plain_tried = dict(zip(searched, plain_opt.trials_per_variable.numpy()))
    for v in model.layers[4].trainable_weights:
        assert tried[v.path] == plain_tried[v.path] // 2 > 0
    assert int(opt.trials.numpy()) == int(plain_opt.trials.numpy())


def test_a_frozen_weight_is_not_decayed_either(toy_data):
    # At K=1 with weight decay the base pass runs at the trial weight's
    # decayed value (the authors' three evaluations per trial). With every
    # weight below the BatchNormalization frozen, its moving statistics
    # (updated by every base pass) must come out as without any decay.
    x, y = toy_data

    def run(decay):
        model = small_convnet(first_bias=False)
        bn = model.layers[1]

        class Freeze(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.model.freeze(lambda v: not v.path.startswith(model.layers[-1].path))

        fit_rso(model, x, y, callbacks=[Freeze()], batch_size=64, weights_per_batch=1,
                weight_decay=decay, bn_refresh=False, shuffle=False)
        return model, [bn.moving_mean.numpy(), bn.moving_variance.numpy()]

    decayed, stats = run(0.5)
    plain, plain_stats = run(0.0)
    for a, b in zip(stats, plain_stats):
        np.testing.assert_array_equal(a, b)
    # The classifier, still searched, is decayed: the runs differ there.
    assert not np.array_equal(decayed.layers[-1].kernel.numpy(), plain.layers[-1].kernel.numpy())
    np.testing.assert_array_equal(decayed.layers[0].kernel.numpy(),
                                  small_convnet(first_bias=False).layers[0].kernel.numpy())


def test_freeze_after_resumes_exactly(toy_data, tmp_path):
    x, y = toy_data

    def callbacks(model, extra=()):
        return [keras_rso.callbacks.FreezeAfter({model.layers[0].name: 1}),
                keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=1),
                *extra]

    (whole, _, _), _ = _fit(x, y, lambda m: [keras_rso.callbacks.FreezeAfter(
        {m.layers[0].name: 1})])
    _fit(x, y, lambda m: callbacks(m, [InterruptAtBatch(1, 1)]))
    (resumed, _, _), _ = _fit(x, y, callbacks)
    for a, b in zip(whole.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_freeze_under_a_strategy_keeps_the_variable(toy_data, strategy):
    x, y = toy_data
    kept = {}

    def build():
        model = small_convnet(first_bias=False)
        kept["before"] = model.layers[-1].kernel.numpy().copy()
        return model

    model, trainer, _ = fit_rso(build, x, y, strategy=strategy, shuffle=False,
                                weights_per_batch=8, callbacks=[_FreezeLast()])
    np.testing.assert_array_equal(model.layers[-1].kernel.numpy(), kept["before"])
    assert int(trainer.optimizer.weight_updates.numpy()) > 0


class _FreezeLast(keras.callbacks.Callback):
    """Freezes the classifier's kernel for the whole fit."""

    def on_train_begin(self, logs=None):
        self.model.freeze([self.model.model.layers[-1].kernel])


def _compiled(model):
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=8, seed=0),
                    loss="sparse_categorical_crossentropy")
    return trainer


def test_freeze_errors(toy_data):
    x, y = toy_data
    trainer = _compiled(small_convnet(first_bias=False))
    fresh = keras_rso.RSOModel(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="built model"):
        fresh.freeze([])
    trainer.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=1, verbose=0)
    with pytest.raises(ValueError, match="every searched variable"):
        trainer.freeze(lambda v: True)
    with pytest.raises(ValueError, match="not searched variables.*no/such"):
        trainer.freeze(["no/such"])
    with pytest.raises(ValueError, match="'no_such_layer' names no searched variable"):
        trainer.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=1, verbose=0,
                    callbacks=[keras_rso.callbacks.FreezeAfter({"no_such_layer": 1})])
    for bad in ({}, {"dense": -1}, {"dense": 1.5}, [("dense", 1)]):
        with pytest.raises(ValueError, match="last"):
            keras_rso.callbacks.FreezeAfter(bad)


def test_freeze_between_fits_retraces_the_step(toy_data):
    # The first fit traced the step without a freeze mask; `freeze` then
    # makes the next fit trace it again, with the mask.
    x, y = toy_data
    model = small_convnet(first_bias=False)
    trainer = _compiled(model)
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    kernel = model.layers[-1].kernel
    after_first = kernel.numpy().copy()
    trainer.freeze([kernel.path])
    trainer.fit(x, y, batch_size=32, initial_epoch=1, epochs=2, verbose=0)
    np.testing.assert_array_equal(kernel.numpy(), after_first)
    trainer.freeze()
    trainer.fit(x, y, batch_size=32, initial_epoch=2, epochs=3, verbose=0)
    assert not np.array_equal(kernel.numpy(), after_first)
