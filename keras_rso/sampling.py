"""Batches that favour the examples a model gets wrong, weighted to stay unbiased.

An RSO trial decides by the sign of the mean loss difference, example by
example, between a candidate weight and the current one. Once a model
classifies most examples with confidence, their losses hardly move when a
weight does: the difference is carried by the few examples near a decision
boundary, and a uniform batch spends most of its images elsewhere.
`LossSampling` draws batches with probability that grows with each
example's current loss and weights each drawn example by the inverse of
its probability, so that the weighted batch loss is an unbiased estimate
of the training set's mean loss, with less noise per image
(`benchmarks/studies/importance_sampling.py` measures how much).
"""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from keras_rso import distribution


def loss_probabilities(losses, power: float, uniform_share: float) -> np.ndarray:
    """`uniform_share / N + (1 - uniform_share) * loss**power / sum(loss**power)`
    over the `N` per-example `losses` (uniform if they sum to 0 or are not
    finite)."""
    tilt = np.maximum(np.asarray(losses, np.float64), 0.0) ** power
    total = tilt.sum()
    if not np.isfinite(total) or total <= 0:
        tilt, total = np.ones_like(tilt), float(len(tilt))
    return uniform_share / len(tilt) + (1 - uniform_share) * tilt / total


class LossSampling(keras.callbacks.Callback):
    """Draws an `RSOModel`'s training batches in proportion to each example's loss.

    The probability of example `i` is
    `uniform_share / N + (1 - uniform_share) * loss_i**power / sum(loss**power)`
    over the `N` training examples; each drawn example carries the sample
    weight `1 / (N p_i)`, which `RSOModel` applies to the loss of every
    candidate. The uniform share bounds every weight by `1 / uniform_share`,
    so an example whose loss was small when last measured still counts.

    Use it as a callback of `RSOModel.fit` on the stream `dataset()` gives:
    each step then draws its batch inside the train step, by the step's
    count (`optimizer.iterations`), `seed` and the current probabilities, so
    a run repeats exactly. The losses are measured when an epoch begins and
    after every step whose count is a multiple of `refresh_every`, with the
    network in training mode (batch statistics, as a trial sees them) over
    chunks of `refresh_batch` examples, without touching its state. A fit
    resumed by `BackupAndRestore` repeats the uninterrupted fit exactly when
    its backups fall on epoch ends or on multiples of `refresh_every` steps
    (`save_freq=refresh_every`). Under a `tf.distribute` strategy each
    replica takes its rows of the step's drawn global batch, which
    `batch_size` must split evenly.

    BatchNormalization in training mode normalises with the drawn batch's
    own statistics, which the harder examples shift: the weights correct
    the loss, not those statistics. The layer-input pool
    (`RSO(pool_size=...)`) draws its own batches and does not combine with
    this.

    Args:
        x: Training inputs (an array; one input).
        y: Training targets (an array).
        batch_size: Examples per step (the global batch).
        power: Exponent of the loss in the probabilities (0 draws uniformly).
        uniform_share: Share of the probability spread evenly, in (0, 1].
        refresh_every: Steps between two measurements of the losses.
        refresh_batch: Examples per chunk when the losses are measured.
        seed: Seed of the draws.

    Example:

    ```python
    sampling = keras_rso.sampling.LossSampling(x, y, batch_size=512)
    trainer.fit(sampling.dataset(), epochs=5, callbacks=[sampling])
    ```
    """

    def __init__(self, x, y, batch_size: int, power: float = 1.0, uniform_share: float = 0.1,
                 refresh_every: int = 25, refresh_batch: int = 5000, seed: int = 0):
        super().__init__()
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must hold the same, positive number of examples; "
                             f"got {len(x)} and {len(y)}.")
        if not 0 < batch_size:
            raise ValueError(f"batch_size must be positive; got {batch_size}.")
        if not 0 < uniform_share <= 1:
            raise ValueError(f"uniform_share must lie in (0, 1] (0 would leave the weights "
                             f"unbounded); got {uniform_share}.")
        if power < 0:
            raise ValueError(f"power must be >= 0; got {power}.")
        if refresh_every < 1 or refresh_batch < 1:
            raise ValueError(f"refresh_every and refresh_batch must be positive; "
                             f"got {refresh_every} and {refresh_batch}.")
        self.x = np.asarray(x)
        self.y = np.asarray(y)
        self.batch_size = int(batch_size)
        self.power = float(power)
        self.uniform_share = float(uniform_share)
        self.refresh_every = int(refresh_every)
        self.refresh_batch = int(refresh_batch)
        self.seed = int(seed)
        # The cumulative probabilities a draw inverts (made by `set_model`);
        # uniform until measured.
        self._cdf = None
        self._data = None  # the arrays as tensors, captured by the train step
        self._refreshed_at = -1
        self._chunk = None  # (network, its traced loss function)
        self.losses: Optional[np.ndarray] = None

    def dataset(self) -> tf.data.Dataset:
        """The endless stream of `(x, y)` batches that drives the fit's steps.

        Its batches are uniform draws (the step replaces them by its own
        draw while this callback is attached), so that the stream alone
        still trains on the data rather than on a fixed batch.
        """
        self._build()
        x, y = self._data  # the tensors the step draws from: one copy, not two
        n = len(self.x)

        def uniform(step):
            index = tf.random.stateless_uniform([self.batch_size], seed=[self.seed, step],
                                                maxval=n, dtype=tf.int64)
            return tf.gather(x, index), tf.gather(y, index)

        return tf.data.Dataset.counter().map(uniform)

    def draw(self, step, count):
        """Traced in the train step: this replica's `count` rows of the
        global batch of `step`, as `(x, y, sample_weight)`."""
        x, y = self._data
        # The global batch's draws, of which this replica takes its rows.
        before, total = distribution.even_replica_rows(count)
        u = tf.random.stateless_uniform(tf.reshape(total, [1]), seed=tf.stack(
            [tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)]), dtype=tf.float64)
        u = u[before:before + tf.cast(count, tf.int64)]
        cdf = self._cdf.read_value()
        n = tf.shape(cdf, out_type=tf.int64)[0]
        index = tf.minimum(tf.searchsorted(cdf, u * cdf[-1], side="right", out_type=tf.int64),
                           n - 1)
        p = (tf.gather(cdf, index) - tf.gather(tf.concat([[0.0], cdf], 0), index)) / cdf[-1]
        weight = tf.cast(1.0 / (tf.cast(n, tf.float64) * p), tf.float32)
        return tf.gather(x, index), tf.gather(y, index), weight

    def probabilities(self, losses: np.ndarray) -> np.ndarray:
        """The draw probabilities for per-example `losses`."""
        return loss_probabilities(losses, self.power, self.uniform_share)

    def measure(self) -> np.ndarray:
        """Per-example losses of the network being trained, in training mode."""
        trainer = self.model
        net = getattr(trainer, "model", trainer)  # the network an RSOModel wraps
        if self._chunk is None or self._chunk[0] is not net:
            loss_fn = trainer.loss
            per_example = (loss_fn.call if isinstance(loss_fn, keras.losses.Loss)
                           else keras.losses.get(loss_fn))

            @tf.function(reduce_retracing=True)
            def chunk(xb, yb, trainable, non_trainable):
                # Stateless: the BatchNormalization moving statistics stay.
                out, _ = net.stateless_call(trainable, non_trainable, xb, training=True)
                return per_example(yb, out)

            self._chunk = (net, chunk)
        chunk = self._chunk[1]
        trainable = [v.value for v in net.trainable_variables]
        non_trainable = [v.value for v in net.non_trainable_variables]
        parts = [chunk(tf.constant(self.x[i:i + self.refresh_batch]),
                       tf.constant(self.y[i:i + self.refresh_batch]), trainable, non_trainable)
                 for i in range(0, len(self.x), self.refresh_batch)]
        return np.concatenate([np.reshape(p.numpy(), [-1]) for p in parts])

    def refresh(self) -> None:
        """Measures the losses and sets the draw probabilities from them."""
        self.losses = self.measure()
        self._cdf.assign(np.cumsum(self.probabilities(self.losses)))

    def set_model(self, model):
        super().set_model(model)
        attach = getattr(model, "_attach_sampling", None)
        if attach is None:
            raise ValueError(f"LossSampling draws the batches of a keras_rso.RSOModel's "
                             f"train step; got {type(model).__name__}.")
        self._build()
        attach(self)

    def _build(self) -> None:
        # Made here, outside the traced step, which captures them.
        if self._data is None:
            n = len(self.x)
            self._data = (tf.constant(self.x), tf.constant(self.y))
            self._cdf = tf.Variable(tf.range(1, n + 1, dtype=tf.float64) / n,
                                    trainable=False, name="loss_sampling_cdf")

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _refresh_at(self, step: int) -> None:
        self.refresh()
        self._refreshed_at = step

    def on_train_begin(self, logs=None):
        self._refreshed_at = -1

    def on_epoch_begin(self, epoch, logs=None):
        # Not at train begin: a BackupAndRestore later in the callback list
        # restores the weights there, after this callback would have run.
        if self._step() != self._refreshed_at:
            self._refresh_at(self._step())

    def on_train_batch_end(self, batch, logs=None):
        # Keyed to the optimizer's step count, which a resumed fit restores
        # and its replayed steps leave alone.
        step = self._step()
        if step % self.refresh_every == 0 and step != self._refreshed_at:
            self._refresh_at(step)

    def on_train_end(self, logs=None):
        self.model._attach_sampling(None)
