"""The experiment drivers' results recorder keeps every cycle across a resume."""

import os

import tensorflow as tf

from keras_rso.experiment import EpochRecorder


def _epoch(recorder, epoch, loss):
    recorder.on_epoch_begin(epoch)
    recorder.on_epoch_end(epoch, {"loss": loss})


def test_rows_survive_a_resume_in_a_remote_backup_dir(tmp_path, monkeypatch):
    # `ram://` is a TensorFlow filesystem that plain `open` cannot reach,
    # as `gs://` would be for a backup directory on a bucket.
    monkeypatch.chdir(tmp_path)
    path = f"ram://{tmp_path.name}/backup/results_rows.json"
    first = EpochRecorder(state_path=path)
    first.on_train_begin()
    for epoch, loss in enumerate([0.9, 0.5]):
        _epoch(first, epoch, loss)
    # A new process resumes from a backup taken at the end of epoch 1
    # (index 0): the row of the epoch it runs again is replaced.
    written = []
    resumed = EpochRecorder(on_row=written.append, state_path=path)
    resumed.on_train_begin()
    _epoch(resumed, 1, 0.4)
    _epoch(resumed, 2, 0.3)
    assert [r["epoch"] for r in resumed.rows] == [1, 2, 3]
    assert [r["loss"] for r in resumed.rows] == [0.9, 0.4, 0.3]
    assert written[-1] is resumed.rows
    assert resumed.rows[1]["seconds"] >= resumed.rows[0]["seconds"]
    # Written through TensorFlow's filesystem, not to a local "ram:" folder.
    assert tf.io.gfile.exists(path)
    assert os.listdir(tmp_path) == []
