"""The callbacks `RSOModel.fit` adds around the user's: exact resume and cycle starts.

Internal: `fit` puts `EpochMark` first and `CycleKeeper` last, so a backup
written at an epoch's end already records where the next epoch starts, and
`BackupAndRestore` has restored the search state before `CycleKeeper`
reads it.
"""

import keras

from keras_rso import _compat, constraints


class EpochMark(keras.callbacks.Callback):
    """Internal: records where each epoch ends, before any backup is written.

    Added first to the callbacks of `RSOModel.fit`, so that a backup taken at
    the end of an epoch (`BackupAndRestore`, `ModelCheckpoint`) already says
    that the next epoch starts here.
    """

    def on_epoch_end(self, epoch, logs=None):
        self.model.optimizer.mark_epoch_start()


class CycleKeeper(keras.callbacks.Callback):
    """Internal: resumes the data stream, measures sigma, starts cycles.

    Added last to the callbacks of `RSOModel.fit`, so `BackupAndRestore` has
    restored the RSO state before any of this reads it.
    """

    def __init__(self, backups=(), epochs_are_cycles: bool = True):
        super().__init__()
        self.backups = list(backups)
        # False when `fit` was given `steps_per_epoch`: an epoch is then not
        # a cycle, and its number says nothing about the cycle.
        self.epochs_are_cycles = epochs_are_cycles

    def _restored_from_backup(self) -> bool:
        """True if a BackupAndRestore callback has just loaded a backup."""
        return any(_compat.backup_exists(b) for b in self.backups)

    def on_train_begin(self, logs=None):
        self._ran_an_epoch = False
        model = self.model
        opt = model.optimizer
        iterations = int(opt.iterations.numpy())
        restored = self._restored_from_backup()
        if restored:
            # Keras restarts an interrupted epoch from its first step. The
            # stream restarts with it, at the batch that epoch began with,
            # and the steps it had already taken are replayed without
            # trials, so every later step sees the batch it would have seen
            # without the interruption (exact resume from mid-epoch backups).
            start = int(opt.epoch_start.numpy())
            for backup in self.backups:
                _compat.continue_backup_epoch(backup, model)
        else:
            # A new fit (new data, or going on after an error) starts fresh
            # epochs where training stands.
            start = iterations
            opt.mark_epoch_start(start)
        # A search that has never run, started at `initial_epoch=N` (say on
        # weights from an earlier run), begins at cycle N, as an
        # uninterrupted run would: the cycle picks the random order's
        # permutation (set in `on_epoch_begin`, which knows N).
        self._first_search = self.epochs_are_cycles and iterations == 0 and not restored
        model._replay_steps.assign(max(iterations - start, 0))
        model._data_offset.assign(start)
        if int(opt.sigmas_ready.numpy()) == 0:
            # Training starts inside every searched variable's domain (as a
            # gradient optimizer's first update would put it): the trials
            # only ever propose values inside it.
            for var in model.searched_variables():
                if constraints.of(var) is not None:
                    var.assign(var.constraint(var.value))
            model._initialize_sigmas()

    def on_epoch_end(self, epoch, logs=None):
        self._ran_an_epoch = True

    def on_train_end(self, logs=None):
        if self.model.stop_training or not self._ran_an_epoch:
            # Stopped early (EarlyStopping, a StopAfter...): the last epoch
            # may be partial, and its end must not be recorded as done. A
            # fit with no epoch to run has no end of its own to record.
            return
        for backup in self.backups:
            if not backup.delete_checkpoint and backup.save_freq != "epoch":
                # A kept backup saved every N steps rarely falls on the fit's
                # last step; without this, a following fit of the same run
                # (`initial_epoch=...`, another batch size) would restore an
                # older, mid-epoch backup and redo that epoch's end.
                _compat.save_backup(backup)

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        if self._first_search:
            self._first_search = False
            opt.cycle.assign(epoch)
        if int(opt.position.numpy()) >= self.model.trials_per_cycle:
            opt.start_next_cycle()
            if opt.remeasure_sigma:
                self.model._initialize_sigmas()
