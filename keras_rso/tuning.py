"""`RSOHyperModel`: KerasTuner search over RSO's hyperparameters.

Needs the `keras-tuner` package (`pip install keras-tuner`); the rest of
keras_rso does not import this module.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import keras
import keras_tuner
import tensorflow as tf

from keras_rso.callbacks import SigmaAnnealing, SigmaBalancing
from keras_rso.model import RSOModel
from keras_rso.optimizer import ORDERS, RSO, STEP_RULES

#: The hyperparameters `RSOHyperModel` tunes and the values it tries by
#: default (override any with `space=`; one value fixes it).
DEFAULT_SPACE: Dict[str, Sequence] = {
    "batch_size": (256, 1024, 2048),
    "weights_per_batch": (16, 64, 256),
    "sigma_scale": (1.0, 2.0, 3.0),
    "final_fraction": (0.1, 0.3333),
    "order": ORDERS,
    "balance_sigma": (False, True),
    "step_rule": STEP_RULES,
}


class RSOHyperModel(keras_tuner.HyperModel):
    """A KerasTuner hypermodel that trains a Keras model with RSO.

    Each trial builds a fresh model from the same seed, wraps it in an
    `RSOModel` and fits it with the trial's RSO settings: mini-batch size,
    `weights_per_batch`, initial sigma scale, the fraction `SigmaAnnealing`
    ends at, visiting order, `SigmaBalancing` on or off, and the step rule
    (how a trial decides). Tune it on validation data
    (`objective="val_accuracy"` with `validation_data=` or
    `validation_split=` in `search`): the test set must never choose a
    setting.

    With a `keras.callbacks.TensorBoard` callback in `search(callbacks=...)`,
    KerasTuner writes each trial's hyperparameters to TensorBoard's HParams
    dashboard.

    The batch size is tuned only for array inputs: a `tf.data.Dataset`
    arrives batched.

    Args:
        build_model: Returns a fresh, uncompiled Keras model.
        loss: Loss that RSO minimises.
        metrics: Metrics to compile (the objective must be among them or
            their `val_` forms).
        space: Values to try per hyperparameter, overriding
            `DEFAULT_SPACE` (keys must be among its keys). A single value
            fixes a hyperparameter.
        seed: Seed of the model's initialisation and of RSO's draws, the
            same in every trial, so that trials differ only in their
            settings.
        name: Name of the hypermodel.

    Example:

    ```python
    tuner = keras_tuner.RandomSearch(
        keras_rso.tuning.RSOHyperModel(keras_rso.models.mnist_paper_net,
                                       space={"order": ["random"]}),
        objective="val_accuracy", max_trials=8, directory="tuning")
    tuner.search(x_train, y_train, epochs=2, validation_data=(x_val, y_val),
                 callbacks=[keras.callbacks.TensorBoard("tuning/tb")])
    ```
    """

    def __init__(self, build_model: Callable[[], keras.Model],
                 loss="sparse_categorical_crossentropy",
                 metrics: Sequence = ("accuracy",),
                 space: Optional[Dict[str, Sequence]] = None,
                 seed: int = 0, name: Optional[str] = None):
        super().__init__(name=name, tunable=True)
        unknown = sorted(set(space or {}) - set(DEFAULT_SPACE))
        if unknown:
            raise ValueError(
                f"`space` names unknown hyperparameters {unknown}; "
                f"RSOHyperModel tunes {sorted(DEFAULT_SPACE)}.")
        self.space = {**DEFAULT_SPACE, **{k: tuple(v) for k, v in (space or {}).items()}}
        for key, values in self.space.items():
            if not values:
                raise ValueError(f"`space[{key!r}]` is empty; give at least one value.")
        self.build_model = build_model
        self.loss = loss
        self.metrics = list(metrics)
        self.seed = int(seed)

    def _choice(self, hp, key):
        values = self.space[key]
        if len(values) == 1:
            return hp.Fixed(key, values[0])
        if all(isinstance(v, bool) for v in values):
            return hp.Boolean(key)
        return hp.Choice(key, list(values))

    def build(self, hp) -> RSOModel:
        keras.utils.set_random_seed(self.seed)
        trainer = RSOModel(self.build_model())
        trainer.compile(
            optimizer=RSO(weights_per_batch=self._choice(hp, "weights_per_batch"),
                          sigma_scale=self._choice(hp, "sigma_scale"),
                          order=self._choice(hp, "order"),
                          step_rule=self._choice(hp, "step_rule"),
                          seed=self.seed),
            loss=self.loss, metrics=self.metrics)
        if trainer.model.built and not trainer.built:
            # KerasTuner loads the best trial's weights, with RSO's state,
            # into a fresh model (`get_best_models`): its variables must exist.
            trainer.build(trainer.model.input_shape)
            trainer.optimizer.build(trainer.trainable_variables)
        return trainer

    def fit(self, hp, model: RSOModel, *args, callbacks=None, **kwargs):
        """`model.fit` with the trial's batch size and sigma callbacks."""
        callbacks = list(callbacks or [])
        sigma = [SigmaAnnealing(final_fraction=self._choice(hp, "final_fraction"))]
        if self._choice(hp, "balance_sigma"):
            sigma.append(SigmaBalancing())
        # A tf.data.Dataset comes batched; arrays take the trial's size.
        if "batch_size" not in kwargs and not (args and isinstance(args[0], tf.data.Dataset)):
            kwargs["batch_size"] = self._choice(hp, "batch_size")
        return model.fit(*args, callbacks=sigma + callbacks, **kwargs)
