"""The tests' shared harness: build, compile and fit an `RSOModel`."""

from typing import Callable, NamedTuple, Optional, Union

import keras
import tensorflow as tf

import keras_rso


def weights_of(model: keras.Model) -> list:
    """Copies of every weight of `model`, as NumPy arrays, in `model.weights`
    order (to compare before and after a fit)."""
    return [v.numpy().copy() for v in model.weights]


class Fitted(NamedTuple):
    """What `fit_rso` returns."""

    model: keras.Model            # the wrapped model, holding the trained weights
    trainer: keras_rso.RSOModel
    history: Optional[keras.callbacks.History]  # None when a callback killed the fit


def fit_rso(model: Union[keras.Model, Callable[[], keras.Model]], x, y, *,
            strategy: Optional[tf.distribute.Strategy] = None, fast_path: bool = True,
            loss="sparse_categorical_crossentropy", metrics=None, batch_size: int = 32,
            epochs: int = 1, shuffle: bool = True, callbacks=(),
            steps_per_epoch: Optional[int] = None, **rso) -> Fitted:
    """Wraps `model` in an `RSOModel`, compiles it with `RSO(**rso)` and fits.

    Args:
        model: A model, or a function that builds one (called inside
            `strategy.scope()`, as a distributed model must be built).
        strategy: A `tf.distribute` strategy, or None for the default.
        **rso: `keras_rso.RSO` arguments; `seed` defaults to 0.

    A `KeyboardInterrupt` raised by a callback (a simulated kill) ends the
    fit; the model and trainer are returned as the kill left them.
    """
    strategy = strategy or tf.distribute.get_strategy()
    rso.setdefault("seed", 0)
    with strategy.scope():
        model = model() if callable(model) and not isinstance(model, keras.Model) else model
        trainer = keras_rso.RSOModel(model, fast_path=fast_path)
        trainer.compile(optimizer=keras_rso.RSO(**rso), loss=loss, metrics=metrics)
    try:
        history = trainer.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=shuffle,
                              verbose=0, callbacks=list(callbacks),
                              steps_per_epoch=steps_per_epoch)
    except KeyboardInterrupt:  # a simulated kill (`test_resume.InterruptAtBatch`)
        history = None
    return Fitted(model, trainer, history)
