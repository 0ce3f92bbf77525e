"""An interrupted fit resumes with BackupAndRestore and loses nothing."""

import json

import keras
import numpy as np
import pytest

import keras_rso
from conftest import make_toy_data, small_convnet


class Interrupt(keras.callbacks.Callback):
    """Simulates a killed job at the start of epoch `at`."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt("simulated kill")


class InterruptAtBatch(keras.callbacks.Callback):
    """Simulates a killed job after batch `batch` of epoch `epoch`."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self._current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt("simulated kill")


class EpochLogs(keras.callbacks.Callback):
    """Records the running logs after every batch, and each epoch's logs."""

    def __init__(self):
        super().__init__()
        self.batches, self.epochs, self._current = {}, {}, None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch
        self.batches[epoch] = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches[self._current].append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = dict(logs)


def _step_values(running, key):
    """Per-step values from Keras' running means (equal batch sizes)."""
    means = np.array([logs[key] for logs in running], dtype=np.float64)
    counts = np.arange(1, len(means) + 1)
    totals = means * counts
    return np.diff(totals, prepend=0.0)


def _run(x, y, callbacks, shuffle, output_passes=0):
    keras.utils.set_random_seed(0)
    model = small_convnet()
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=32, seed=4,
                                            output_passes=output_passes),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    anneal = keras_rso.callbacks.SigmaAnnealing(0.1)
    try:
        trainer.fit(x, y, batch_size=48, epochs=3, shuffle=shuffle, verbose=0,
                    callbacks=[anneal] + callbacks)
    except KeyboardInterrupt:
        pass
    return model, trainer


@pytest.fixture(scope="module")
def uninterrupted():
    """The uninterrupted run (shuffled, on `toy_data`) that every resumed run
    must equal, per number of output passes: `(model, trainer, EpochLogs)`.
    Run once per module (recording logs changes nothing it computes)."""
    runs = {}

    def run(passes: int = 0):
        if passes not in runs:
            x, y = make_toy_data()
            logs = EpochLogs()
            runs[passes] = (*_run(x, y, [logs], True, passes), logs)
        return runs[passes]

    return run


def test_backup_and_restore_resumes_to_identical_weights(toy_data, tmp_path, uninterrupted):
    x, y = toy_data
    reference, ref_trainer, _ = uninterrupted()
    backup = str(tmp_path / "backup")
    killed, _ = _run(x, y, [keras.callbacks.BackupAndRestore(backup), Interrupt(at=2)], True)
    assert not all(np.array_equal(a.numpy(), b.numpy())
                   for a, b in zip(killed.weights, reference.weights))
    # A fresh process would rebuild everything from scratch: so do we.
    resumed, trainer = _run(x, y, [keras.callbacks.BackupAndRestore(backup)], True)
    assert int(trainer.optimizer.cycle.numpy()) == int(ref_trainer.optimizer.cycle.numpy()) == 2
    assert int(trainer.optimizer.trials.numpy()) == 3 * trainer.trials_per_cycle
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_model_checkpoint_keeps_working(toy_data, tmp_path):
    x, y = toy_data
    path = str(tmp_path / "best.keras")
    model, trainer = _run(x, y, [keras.callbacks.ModelCheckpoint(path, monitor="loss")], False)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras_rso.RSOModel)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


# 211 weights at K=32: the sweep takes 7 steps; with 2 output passes over
# the 15 classifier weights, step 8 runs them. Killed after step 3, or
# after the sweep's last step, just before the passes.
@pytest.mark.parametrize("passes,killed_after", [(0, 2), (2, 6)])
def test_resume_from_a_mid_cycle_backup_is_exact(toy_data, tmp_path, uninterrupted, passes,
                                                 killed_after):
    x, y = toy_data
    reference, ref_trainer, ref_logs = uninterrupted(passes)
    backup = str(tmp_path / "backup")
    killed, killed_trainer = _run(
        x, y, [keras.callbacks.BackupAndRestore(backup, save_freq=1),
               InterruptAtBatch(epoch=1, batch=killed_after)], shuffle=True, output_passes=passes)
    # Stopped in the middle of cycle 2.
    assert 0 < int(killed_trainer.optimizer.position.numpy()) < killed_trainer.trials_per_cycle
    logs = EpochLogs()
    resumed, trainer = _run(
        x, y, [keras.callbacks.BackupAndRestore(backup, save_freq=1), logs], shuffle=True,
        output_passes=passes)
    assert trainer.steps_per_cycle() == 7 + (passes > 0)
    assert int(trainer.optimizer.iterations.numpy()) == int(ref_trainer.optimizer.iterations.numpy())
    assert int(trainer.optimizer.trials.numpy()) == 3 * trainer.trials_per_cycle
    assert int(trainer.optimizer.weight_updates.numpy()) == \
        int(ref_trainer.optimizer.weight_updates.numpy())
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # The resumed epoch's loss and accuracy average only the steps taken
    # after the resume: the replayed steps (already used before the kill)
    # do not count.
    for key in ("loss", "accuracy"):
        expected = _step_values(ref_logs.batches[1], key)[killed_after + 1:].mean()
        np.testing.assert_allclose(logs.epochs[1][key], expected, rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(logs.epochs[2][key], ref_logs.epochs[2][key],
                                   rtol=1e-6, err_msg=key)


def test_a_second_kill_in_the_resumed_epoch_resumes_exactly(toy_data, tmp_path, uninterrupted):
    # Killed in cycle 2, resumed, killed again in cycle 2: the second backup
    # must still say epoch 1 (Keras 3.15's BackupAndRestore forgets the
    # restored epoch until the epoch ends), so the third fit ends after
    # cycle 3 with the reference's weights, not one cycle later.
    x, y = toy_data
    reference, ref_trainer, _ = uninterrupted()
    backup = str(tmp_path / "backup")
    for kill_after in (1, 4):
        _run(x, y, [keras.callbacks.BackupAndRestore(backup, save_freq=1),
                    InterruptAtBatch(epoch=1, batch=kill_after)], True)
        with open(f"{backup}/training_metadata.json") as f:
            assert json.load(f)["epoch"] == 1
    logs = EpochLogs()
    resumed, trainer = _run(x, y, [keras.callbacks.BackupAndRestore(backup, save_freq=1),
                                   logs], True)
    assert sorted(logs.epochs) == [1, 2]
    assert int(trainer.optimizer.trials.numpy()) == 3 * trainer.trials_per_cycle
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def _compiled_trainer():
    """A fresh `RSOModel` of `small_convnet`, compiled, as a new process builds it."""
    keras.utils.set_random_seed(0)
    trainer = keras_rso.RSOModel(small_convnet())
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=32, seed=4),
                    loss="sparse_categorical_crossentropy")
    return trainer


def _chained_fits(x, y, backup=None, fits=(0, 1)):
    """The fits of a run that changes its batch size between cycles: cycle 1
    at batch 48 (7 steps), cycle 2 at batch 96. With `backup`, each fit keeps
    a backup every 3 steps, which never falls on the fit's last step.
    Returns the trained model."""
    trainer = _compiled_trainer()
    anneal = keras_rso.callbacks.SigmaAnnealing(0.1, total_cycles=2)
    for index in fits:
        callbacks = [anneal]
        if backup:
            callbacks.append(keras.callbacks.BackupAndRestore(
                backup, save_freq=3, delete_checkpoint=False))
        trainer.fit(x, y, batch_size=(48, 96)[index], initial_epoch=index, epochs=index + 1,
                    verbose=0, callbacks=callbacks)
    return trainer.model


def test_a_kept_backup_records_the_end_of_its_fit(toy_data, tmp_path):
    # A second fit in a fresh process (new batch size, initial_epoch=1)
    # resumes from the first fit's end, not from its last periodic backup
    # (step 6 of 7), and ends with the weights of the two fits run together.
    x, y = toy_data
    reference = _chained_fits(x, y)
    backup = str(tmp_path / "backup")
    _chained_fits(x, y, backup, fits=(0,))
    with open(f"{backup}/training_metadata.json") as f:
        assert json.load(f) == {"epoch": 1, "batch": 0}
    resumed = _chained_fits(x, y, backup, fits=(1,))
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_an_early_stop_leaves_the_last_periodic_backup(toy_data, tmp_path):
    # A fit stopped inside an epoch must not record that epoch as done.
    x, y = toy_data
    trainer = _compiled_trainer()
    backup = str(tmp_path / "backup")

    class StopAtBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 4:
                self.model.stop_training = True

    trainer.fit(x, y, batch_size=48, epochs=2, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(backup, save_freq=3, delete_checkpoint=False),
        StopAtBatch()])
    with open(f"{backup}/training_metadata.json") as f:
        assert json.load(f) == {"epoch": 0, "batch": 2}


def test_a_fit_with_no_epoch_to_run_writes_no_backup(toy_data, tmp_path):
    x, y = toy_data
    trainer = _compiled_trainer()
    backup = tmp_path / "backup"
    trainer.fit(x, y, batch_size=48, initial_epoch=2, epochs=2, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(str(backup), save_freq=3, delete_checkpoint=False)])
    assert not backup.exists()


def test_a_search_started_at_initial_epoch_n_begins_at_cycle_n(toy_data):
    # A warm start (weights from an earlier run, a fresh optimizer) at
    # `initial_epoch=2` searches cycle 2, with cycle 2's sigma scale, as the
    # uninterrupted run would; the cycle picks the random order's permutation.
    x, y = toy_data
    keras.utils.set_random_seed(0)
    trainer = keras_rso.RSOModel(small_convnet())
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=64, seed=4, order="random"),
                    loss="sparse_categorical_crossentropy")
    anneal = keras_rso.callbacks.SigmaAnnealing(0.1, total_cycles=3)
    hist = trainer.fit(x, y, batch_size=48, initial_epoch=2, epochs=3, verbose=0,
                       callbacks=[anneal])
    assert int(trainer.optimizer.cycle.numpy()) == 2
    np.testing.assert_allclose(hist.history["sigma_scale"], [0.1], rtol=1e-6)
    assert trainer.visit_schedule(2) != trainer.visit_schedule(0)
    # The next fit of the same run goes on to cycle 3.
    trainer.fit(x, y, batch_size=48, initial_epoch=3, epochs=4, verbose=0)
    assert int(trainer.optimizer.cycle.numpy()) == 3


def test_epochs_that_are_not_cycles_leave_the_cycle_count_alone(toy_data):
    # With `steps_per_epoch` an epoch is not a cycle: `initial_epoch` then
    # says nothing about which cycle the search is in.
    x, y = toy_data
    trainer = _compiled_trainer()
    trainer.fit(x, y, batch_size=48, initial_epoch=2, epochs=3, steps_per_epoch=2, verbose=0)
    assert int(trainer.optimizer.cycle.numpy()) == 0
