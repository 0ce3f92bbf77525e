"""KerasTuner over RSO's hyperparameters: objective on validation data,
trials in TensorBoard's HParams dashboard."""

import pathlib

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from keras_rso.tuning import DEFAULT_SPACE, RSOHyperModel


def _mlp():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])


def _data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(128, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    return x, y


def _hparams_sessions(logdir):
    found = set()
    for path in pathlib.Path(logdir).rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    found.add(path.parent.parent.name)
    return found


def test_random_search_tunes_rso_on_validation_data(tmp_path):
    train, validation = _data(0), _data(1)
    # Two settings: steps of 1e-6 std (the weights barely move) and of one
    # std; the search must find the better one on validation accuracy.
    hypermodel = RSOHyperModel(_mlp, space={
        "weights_per_batch": [8], "batch_size": [32], "sigma_scale": [1e-6, 1.0],
        "final_fraction": [0.1], "order": ["output_to_input"], "balance_sigma": [False],
        "step_rule": ["argmin"]})
    tuner = keras_tuner.GridSearch(hypermodel, objective="val_accuracy", max_trials=2,
                                   directory=str(tmp_path), project_name="t")
    tuner.search(*train, epochs=2, validation_data=validation, verbose=0,
                 callbacks=[keras.callbacks.TensorBoard(str(tmp_path / "tb"))])
    trials = tuner.oracle.get_best_trials(num_trials=2)
    assert len(trials) == 2
    best = trials[0]
    assert best.hyperparameters.get("sigma_scale") == 1.0
    assert best.score > trials[1].score + 0.1
    # The score is the validation accuracy of the trial's best epoch, and
    # the reloaded best model reproduces it.
    model = tuner.get_best_models(1)[0]
    assert model.optimizer.initial_sigma_scale == 1.0
    _, acc = model.evaluate(*validation, verbose=0)
    assert acc == pytest.approx(best.score)
    # Each trial's hyperparameters are in TensorBoard's HParams dashboard.
    assert _hparams_sessions(tmp_path / "tb") == {t.trial_id for t in trials}


def test_space_is_checked():
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        RSOHyperModel(_mlp, space={"learning_rate": [0.1]})
    with pytest.raises(ValueError, match="empty"):
        RSOHyperModel(_mlp, space={"order": []})
    assert set(DEFAULT_SPACE) >= {"batch_size", "weights_per_batch", "step_rule"}
