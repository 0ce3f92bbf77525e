"""Callbacks for RSO training: sigma annealing and balancing, per-layer logs,
freezing layers by cycle."""

from __future__ import annotations

import os
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from keras_rso.evaluators.topology import owner_layers


def _rso_optimizer(model):
    from keras_rso.optimizer import RSO

    opt = getattr(model, "optimizer", None)
    if not isinstance(opt, RSO):
        raise ValueError(
            "This callback needs a model compiled with `keras_rso.RSO`; "
            f"the model's optimizer is {opt!r}.")
    return opt


class SigmaAnnealing(keras.callbacks.Callback):
    """Scales every variable's sigma per epoch (one epoch = one RSO cycle).

    By default the scale falls linearly from the optimizer's initial scale
    (`RSO(sigma_scale=...)`, 1 unless set) at the first epoch of `fit` to
    `final_fraction` times that at the last, like
    `keras.callbacks.LearningRateScheduler` does for a learning rate.
    `rule="paper"` follows the authors' code instead: at cycle `e` (0-based)
    of `E`, `final_fraction + (1 - final_fraction) * (E - e) / E` times the
    initial scale (1 at the first cycle; it never quite reaches
    `final_fraction`). `total_cycles` sets `E` independently of `fit`'s
    epochs, so that a fit can run the first cycles of a longer schedule
    (the paper's "98% after 5 updates" is cycle 5 of a 50-cycle schedule)
    and a resumed fit continues it; past the end of a schedule shorter than
    the fit, the scale stays at `final_fraction` times the initial one, so
    that a fit can run further cycles at the schedule's floor. A
    `schedule(epoch, scale) -> scale` replaces both rules.

    Args:
        final_fraction: Scale used in the last epoch (`"linear"`), or the
            floor the paper's rule approaches, as a fraction of the
            initial scale, in (0, 1].
        schedule: Optional function of the epoch index (0-based) and the
            current scale returning the new scale.
        verbose: If 1, print the scale at each epoch start.
        total_cycles: Length of the schedule in cycles; `None` (default)
            is the `epochs` of `fit`.
        rule: `"linear"` (default) or `"paper"` (see above).

    Example:

    ```python
    trainer.fit(x, y, epochs=50,
                callbacks=[keras_rso.callbacks.SigmaAnnealing(0.1)])
    # The first 5 cycles of the authors' 50-cycle schedule:
    trainer.fit(x, y, epochs=5, callbacks=[keras_rso.callbacks.SigmaAnnealing(
        0.1, rule="paper", total_cycles=50)])
    ```
    """

    RULES = ("linear", "paper")

    def __init__(self, final_fraction: float = 0.1,
                 schedule: Optional[Callable[[int, float], float]] = None,
                 verbose: int = 0, total_cycles: Optional[int] = None,
                 rule: str = "linear"):
        super().__init__()
        if not (0.0 < final_fraction <= 1.0):
            raise ValueError(
                f"`final_fraction` must be in (0, 1]; received {final_fraction}.")
        if rule not in self.RULES:
            raise ValueError(f"`rule` must be one of {self.RULES}; received {rule!r}.")
        if total_cycles is not None and (isinstance(total_cycles, bool) or
                                         not isinstance(total_cycles, int) or total_cycles < 1):
            raise ValueError(f"`total_cycles` must be an int >= 1 or None; "
                             f"received {total_cycles!r}.")
        self.final_fraction = float(final_fraction)
        self.schedule = schedule
        self.verbose = verbose
        self.total_cycles = total_cycles
        self.rule = rule

    def _cycles(self) -> int:
        return self.total_cycles or int(self.params.get("epochs") or 1)

    def linear(self, epoch: int, initial: float = 1.0) -> float:
        """The default schedule: `initial` at epoch 0, `initial *
        final_fraction` at the last epoch of the schedule."""
        epochs = self._cycles()
        if epochs <= 1:
            return initial * self.final_fraction
        t = min(max(epoch / (epochs - 1), 0.0), 1.0)
        return initial * (1.0 - (1.0 - self.final_fraction) * t)

    def paper(self, epoch: int, initial: float = 1.0) -> float:
        """The authors' schedule: `initial * (f + (1 - f) * (E - e) / E)`."""
        cycles = self._cycles()
        remaining = min(max(cycles - epoch, 0), cycles) / cycles
        return initial * (self.final_fraction + (1.0 - self.final_fraction) * remaining)

    def on_epoch_begin(self, epoch, logs=None):
        opt = _rso_optimizer(self.model)
        current = float(opt.sigma_scale.numpy())
        if self.schedule is not None:
            scale = float(self.schedule(epoch, current))
        else:
            scale = getattr(self, self.rule)(epoch, opt.initial_sigma_scale)
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(
                f"The sigma schedule returned {scale} at epoch {epoch}; it "
                "must return a positive finite scale.")
        opt.set_sigma_scale(scale)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: SigmaAnnealing sets sigma scale to {scale:.4g}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sigma_scale"] = float(_rso_optimizer(self.model).sigma_scale.numpy())


def _counts(opt) -> np.ndarray:
    """Trials and accepted trials so far, per searched variable: `(2, n)`."""
    return np.stack([opt.trials_per_variable.numpy(),
                     opt.updates_per_variable.numpy()]).astype(np.float64)


class _EpochCounts(keras.callbacks.Callback):
    """Base of the callbacks that read each variable's trials and accepted
    trials of the current epoch (cycle) from the optimizer's counters."""

    def on_epoch_begin(self, epoch, logs=None):
        self._counts0 = _counts(_rso_optimizer(self.model))

    def epoch_counts(self) -> np.ndarray:
        """`(tried, accepted)` per variable since the epoch began."""
        return _counts(_rso_optimizer(self.model)) - self._counts0


class SigmaBalancing(_EpochCounts):
    """Rescales each variable's sigma between cycles toward equal accept rates.

    Departs from the paper, which keeps every layer's sigma at its initial
    std (times the annealed scale). Measured on the paper's MNIST net, that
    leaves accept rates from 0.12 in the first convolution to 0.7 in the
    last: steps far too large for the layers near the input, which are
    searched last in a cycle, when the layers after them are already tuned
    to their features.

    Along one coordinate with a locally quadratic loss, `w + dw` or `w - dw`
    beats `w` exactly when `|dw| < 2 |g| / h`, so a variable's accept rate
    `p` at step size sigma says `|g| / h = sigma * erfinv(p) / sqrt(2)`. At
    the end of every epoch (cycle) this multiplies each variable's sigma by
    `erfinv(p_v)`, divided by the geometric mean of `erfinv(p)` over all
    trials of the cycle: every variable's step moves toward the same ratio
    to its `|g| / h`, and the overall step size, which
    `SigmaAnnealing` sets, is left unchanged.

    With `RSO(remeasure_sigma=True)` the factors accumulate in the
    optimizer's `sigma_factors`, and each cycle's sigma is the std measured
    at its start times that product: balancing then sets each variable's
    step relative to its weights' current scale.

    The sigmas live in the optimizer, so backups keep them. After a resume
    from a mid-cycle backup (`BackupAndRestore(save_freq=<int>)`), that
    cycle's rates cover only the steps run after the resume.

    Args:
        max_factor: Largest change of a sigma in one cycle (either way);
            also bounds the effect of rates of 0 or 1 (few trials).

    Example:

    ```python
    trainer.fit(x, y, epochs=5, callbacks=[
        keras_rso.callbacks.SigmaAnnealing(0.1),
        keras_rso.callbacks.SigmaBalancing()])
    ```
    """

    def __init__(self, max_factor: float = 4.0):
        super().__init__()
        if not (np.isfinite(max_factor) and max_factor > 1.0):
            raise ValueError(f"`max_factor` must be a finite float > 1; received {max_factor}.")
        self.max_factor = float(max_factor)

    def factors(self) -> np.ndarray:
        """Each variable's sigma multiplier from its accept rate this epoch."""
        tried, accepted = self.epoch_counts()
        searched = tried > 0
        factors = np.ones_like(tried)
        if not searched.any():
            return factors
        # Rates of exactly 0 or 1 (a few trials) would give erfinv 0 or inf.
        rate = np.clip(accepted[searched] / tried[searched], 0.01, 0.99)
        log_g = np.log(keras.ops.convert_to_numpy(keras.ops.erfinv(rate)))
        log_mean = np.sum(tried[searched] * log_g) / np.sum(tried[searched])
        bound = np.log(self.max_factor)
        factors[searched] = np.exp(np.clip(log_g - log_mean, -bound, bound))
        return factors

    def on_epoch_end(self, epoch, logs=None):
        _rso_optimizer(self.model).rescale_sigmas(self.factors())


class LayerAcceptRates(_EpochCounts):
    """Writes each searched variable's accept rate per epoch to TensorBoard.

    Scalars go to `log_dir/train` (next to those of
    `keras.callbacks.TensorBoard`) under `accept_rate/<variable path>`,
    at step = epoch. The rate is accepted trials / trials of that variable
    in the epoch.

    Args:
        log_dir: TensorBoard log directory (the one given to `TensorBoard`).
            `None` writes nothing: the rates are then only read with
            `rates()`, e.g. at the end of an epoch by another callback.
    """

    def __init__(self, log_dir: Optional[str]):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_train_begin(self, logs=None):
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def rates(self) -> dict:
        """Accept rate of each variable since the epoch began."""
        tried, acc = self.epoch_counts()
        return {
            v.path: float(acc[i] / tried[i])
            for i, v in enumerate(self.model.trainable_variables)
            if tried[i] > 0
        }

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            return
        with self._writer.as_default():
            for path, rate in self.rates().items():
                tf.summary.scalar(f"accept_rate/{path}", rate, step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


class FreezeAfter(keras.callbacks.Callback):
    """Stops searching chosen layers or variables after a given cycle.

    `FreezeAfter({"block1_conv": 3})` searches the weights of the layer
    `block1_conv` in cycles 1-3 only: from cycle 4 on they keep their
    values and their trials are skipped (`RSOModel.freeze`), while every
    other weight is tried on the same batch with the same perturbation as
    without the freeze. A cycle's cost falls by what the skipped trials
    cost; in the paper's MNIST net the trials of the first convolutions,
    which rerun nearly the whole net, cost most (docs/results.md "The limit,
    measured"). Departs from the paper, whose every cycle tries every
    weight. Epochs are cycles (`fit` with `steps_per_epoch=None`) and
    counted from 0 as `fit` counts them, so a resumed fit or one with
    `initial_epoch` freezes by the same schedule.

    Args:
        last_cycles: `{layer name or variable path: the last cycle (from
            1) in which its weights are searched}`. A layer name covers
            every searched variable of that layer.

    Example:

    ```python
    trainer.fit(x, y, batch_size=2048, epochs=5, callbacks=[
        keras_rso.callbacks.SigmaAnnealing(0.3333),
        keras_rso.callbacks.FreezeAfter({"block1_conv": 3, "block2_conv": 3})])
    ```
    """

    def __init__(self, last_cycles: dict):
        super().__init__()
        if not isinstance(last_cycles, dict) or not last_cycles:
            raise ValueError("`last_cycles` must be a non-empty dict {layer name or "
                             f"variable path: last cycle}}; received {last_cycles!r}.")
        for name, cycle in last_cycles.items():
            if isinstance(cycle, bool) or not isinstance(cycle, (int, np.integer)) or cycle < 0:
                raise ValueError(f"The last cycle of {name!r} must be an int >= 0; "
                                 f"received {cycle!r}.")
        self.last_cycles = dict(last_cycles)
        # Set when training begins: the searched variables, and the last
        # cycle of each one `last_cycles` names (by `id`).
        self._searched, self._last = [], {}

    def on_train_begin(self, logs=None):
        trainer = self.model
        if not hasattr(trainer, "freeze"):
            raise ValueError("FreezeAfter needs a `keras_rso.RSOModel`; "
                             f"received {type(trainer).__name__}.")
        _rso_optimizer(trainer)
        searched = trainer.searched_variables()
        owner = {id(v): layer for v, layer in
                 zip(searched, owner_layers(trainer.model, searched))}
        self._last = {}
        for name, cycle in self.last_cycles.items():
            named = [v for v in searched
                     if v.path == name or getattr(owner.get(id(v)), "name", None) == name]
            if not named:
                layers = sorted({owner[id(v)].name for v in searched if owner.get(id(v))})
                raise ValueError(
                    f"FreezeAfter: {name!r} names no searched variable: neither a "
                    f"variable path nor the name of a layer with searched weights "
                    f"({layers}).")
            for v in named:
                self._last[id(v)] = min(cycle, self._last.get(id(v), cycle))
        self._searched = searched

    def on_epoch_begin(self, epoch, logs=None):
        # `epoch` counts from 0: cycle `epoch + 1` begins.
        self.model.freeze([v for v in self._searched
                           if id(v) in self._last and epoch >= self._last[id(v)]])
