"""The experiment drivers: the results recorder keeps every cycle across a
resume; the gradient baseline's optimizer and learning-rate schedule."""

import argparse
import os

import numpy as np
import pytest
import tensorflow as tf

import keras

from examples.experiment import (EpochRecorder, data_splits, gradient_optimizer,
                                 load_initial_weights, raw_pixel_model)
from keras_rso import datasets, models
from keras_rso.datasets import TFDSData


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


def test_a_resume_inside_an_epoch_counts_the_interrupted_process_time(tmp_path,
                                                                     monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("examples.experiment.time.perf_counter", lambda: clock[0])
    path = str(tmp_path / "backup" / "results_rows.json")
    first = EpochRecorder(state_path=path, progress_every=5.0)
    first.on_train_begin()
    first.on_epoch_begin(0)
    clock[0] += 30.0
    first.on_epoch_end(0, {"loss": 0.9})
    first.on_epoch_begin(1)
    for _ in range(4):  # 4 steps of 3 s: progress written 3 s and 9 s in
        clock[0] += 3.0
        first.on_train_batch_end(0)
    # Killed here, 12 s into epoch 1 (9 s of them on record). The new
    # process resumes inside epoch 1 and takes 20 s more to finish it.
    clock[0] += 1000.0  # time between the two processes is not counted
    resumed = EpochRecorder(state_path=path)
    resumed.on_train_begin()
    resumed.on_epoch_begin(1)
    clock[0] += 20.0
    resumed.on_epoch_end(1, {"loss": 0.5})
    assert [r["seconds"] for r in resumed.rows] == [30.0, 59.0]
    # A resume at an epoch's start (the progress is of an earlier epoch)
    # continues from the last row, as before.
    again = EpochRecorder(state_path=path)
    again.on_train_begin()
    again.on_epoch_begin(2)
    clock[0] += 7.0
    again.on_epoch_end(2, {"loss": 0.4})
    assert [r["seconds"] for r in again.rows] == [30.0, 59.0, 66.0]


def test_gradient_baseline_cosine_decay_reaches_zero_at_the_last_step():
    opt = gradient_optimizer("sgd", 0.05, "cosine", total_steps=100)
    rates = []
    for step in (0, 50, 100):
        opt.iterations.assign(step)
        rates.append(float(opt.learning_rate))
    assert rates == pytest.approx([0.05, 0.025, 0.0], abs=1e-6)
    constant = gradient_optimizer("adam", 0.003)
    assert float(constant.learning_rate) == pytest.approx(0.003)


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="rmsprop", learning_rate=0.1), "'sgd' or 'adam'"),
    (dict(name="sgd", learning_rate=0.1, decay="linear"), "'none' or 'cosine'"),
    (dict(name="sgd", learning_rate=0.1, decay="cosine"), "total_steps"),
])
def test_gradient_baseline_rejects_unknown_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gradient_optimizer(**kwargs)


def test_pool_size_flag_defaults_to_the_training_split_under_the_paper_preset():
    import argparse

    from examples.experiment import _pool_size, add_rso_flags, parse_rso_args

    parser = argparse.ArgumentParser()
    add_rso_flags(parser, cycles=5, batch_size=1024, weights_per_batch=64)
    train = (np.zeros((700, 2)), np.zeros(700))
    paper = parse_rso_args(parser, ["--preset", "paper"])
    assert _pool_size(paper, train, paper=True) == 700
    assert _pool_size(parse_rso_args(parser, ["--preset", "paper", "--pool-size", "0"]),
                      train, paper=True) is None
    plain = parse_rso_args(parser, [])
    assert _pool_size(plain, train, paper=False) is None
    assert _pool_size(parse_rso_args(parser, ["--pool-size", "300"]), train, paper=False) == 300
    with pytest.raises(ValueError, match="--pool-size"):
        _pool_size(paper, object(), paper=True)


def test_test_limit_keeps_the_first_test_examples_of_arrays_and_streams():
    x = np.arange(20, dtype="float32").reshape(20, 1)
    y = np.arange(20, dtype="int32")
    args = argparse.Namespace(validation_size=4, limit=None, test_limit=3, batch_size=2)
    train, validation, test = data_splits(((x[:12], y[:12]), (x[12:], y[12:])), args)
    assert len(train[0]) == 8 and len(validation[0]) == 4
    np.testing.assert_array_equal(test[1], [12, 13, 14])
    stream = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    data = TFDSData(stream, None, stream, (1,), 20, mean=0.0, variance=1.0)
    _, _, test = data_splits(data, args)
    labels = np.concatenate([b.numpy() for _, b in test])
    np.testing.assert_array_equal(labels, [0, 1, 2])
    args.test_limit = None
    _, _, test = data_splits(data, args)
    assert test is stream


def test_initial_weights_load_from_a_saved_net_or_its_raw_pixel_wrapper(tmp_path):
    # `--initial-weights` takes what `--save` wrote: the network itself, or
    # the network behind the layer that standardizes raw pixels.
    keras.utils.set_random_seed(1)
    trained = models.paper_mnist_net(mean=0.1)
    plain, wrapped = str(tmp_path / "net.keras"), str(tmp_path / "raw.keras")
    trained.save(plain)
    raw_pixel_model(trained, datasets.standardization_layer("mnist"), (28, 28, 1)).save(wrapped)
    trained.save_weights(str(tmp_path / "net.weights.h5"))
    for path in (plain, wrapped, str(tmp_path / "net.weights.h5")):
        keras.utils.set_random_seed(2)
        fresh = models.paper_mnist_net(mean=0.1)
        assert not np.array_equal(fresh.weights[0].numpy(), trained.weights[0].numpy())
        load_initial_weights(fresh, path)
        for a, b in zip(fresh.weights, trained.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{path}: {a.path}")


def test_initial_weights_that_do_not_fit_are_refused_with_both_shapes(tmp_path):
    path = str(tmp_path / "small.keras")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(path)
    net = models.paper_mnist_net(mean=0.1)
    before = [w.numpy().copy() for w in net.weights]
    with pytest.raises(ValueError, match="do not fit the network.*found"):
        load_initial_weights(net, path)
    with pytest.raises(ValueError, match="no such file"):
        load_initial_weights(net, str(tmp_path / "missing.keras"))
    for a, b in zip(net.weights, before):  # nothing was overwritten
        np.testing.assert_array_equal(a.numpy(), b)
