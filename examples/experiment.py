"""Shared driver of the example scripts: train, evaluate, record results.

(Long because it is every example's command line, run loop and results
file; it is the lab's code, not part of the installed `keras_rso`.)

Every number the README quotes comes from a JSON file written here, which
holds the exact command line that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import keras
from keras.src.utils import file_utils
import numpy as np
import tensorflow as tf

from keras_rso import constraints
from keras_rso.callbacks import FreezeAfter, LayerAcceptRates, SigmaAnnealing, SigmaBalancing
from keras_rso.datasets import TFDSData, load_tfds
from keras_rso.model import RSOModel
from keras_rso.models import paper_loss, paper_sigmas
from keras_rso.optimizer import ORDERS, RSO, STEP_RULES
from keras_rso.sampling import LossSampling


class StopAfter(keras.callbacks.Callback):
    """Stops `fit` after `epochs` epochs (the schedule still spans all)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True


class EpochRecorder(keras.callbacks.Callback):
    """Keeps every epoch's logs with the cumulative wall-clock time.

    Args:
        on_row: Called with all rows so far after each epoch (the drivers
            write a partial results file with it, so a long run that is
            stopped early still leaves its numbers behind).
        annotate: Called with each new row before it is kept (adds fields).
        state_path: If given, the rows are also kept in this JSON file and
            read back when training starts, so a fit resumed by
            `BackupAndRestore` reports every cycle, not only the resumed
            ones. Put it inside the backup directory: it then disappears
            with the backup when training ends.

        progress_every: With `state_path`, also keep the time spent so far
            in the running epoch (`<state_path>.progress`), rewritten at
            most every this many seconds, so that a fit resumed in the
            middle of an epoch counts the time the interrupted process
            spent in it.

    Rows of epochs that a resumed fit runs again (the backup predates them)
    are replaced. After a resume, `seconds` continues from the last time
    kept: the interrupted epoch's progress if the fit resumes inside that
    epoch, else the last kept row. The steps between the backup and the
    interruption are then counted twice (once lost, once redone), so across
    a resume `seconds` is an upper bound of an uninterrupted run's time, by
    at most the backup interval plus `progress_every`.
    """

    def __init__(self, on_row: Optional[Callable[[list], None]] = None,
                 annotate: Optional[Callable[[dict], None]] = None,
                 state_path: Optional[str] = None, progress_every: float = 10.0):
        super().__init__()
        self.rows = []
        self.on_row = on_row
        self.annotate = annotate
        self.state_path = state_path
        self.progress_every = progress_every

    @property
    def progress_path(self) -> Optional[str]:
        return self.state_path + ".progress" if self.state_path else None

    def _elapsed(self) -> float:
        return round(self._offset + time.perf_counter() - self._start, 2)

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        # A later fit of the same run (--batch-schedule) counts on.
        self._offset = self.rows[-1]["seconds"] if self.rows else 0.0
        self._epoch = 0
        self._last_progress = self._start
        # What an interrupted process left in the backup directory: its rows
        # and the time it had spent in the epoch it was in. (Read once: a
        # fit resumes only when it starts.)
        rows = read_json(self.state_path)
        self._progress = read_json(self.progress_path)
        self._resuming = rows is not None or self._progress is not None
        if rows is not None:
            self.rows = rows

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._resuming:
            # The fit restarts at the backup's epoch: later rows are stale
            # (written after the backup the fit resumed from).
            self._resuming = False
            self.rows = [row for row in self.rows if row["epoch"] <= epoch]
            self._offset = self.rows[-1]["seconds"] if self.rows else 0.0
            if self._progress and self._progress["epoch"] == epoch:
                # Resumed inside the epoch the interrupted process was in.
                self._offset = max(self._offset, self._progress["seconds"])
            self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.progress_path and now - self._last_progress >= self.progress_every:
            self._last_progress = now
            write_json({"epoch": self._epoch, "seconds": self._elapsed()},
                       self.progress_path, announce=False)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "seconds": self._elapsed()}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        if self.annotate is not None:
            self.annotate(row)
        self.rows.append(row)
        write_json(self.rows, self.state_path, announce=False)
        if self.on_row is not None:
            self.on_row(self.rows)


def _partial_writer(args, fields: dict) -> Callable[[list], None]:
    """Writes the results file after every epoch, marked incomplete."""
    def write(rows):
        if not args.results:
            return
        results = provenance(args)
        results.update(fields)
        results.update({"complete": False, "per_cycle": rows,
                        "seconds": rows[-1]["seconds"]})
        write_json(results, args.results, announce=False)
    return write


def read_json(path: Optional[str]):
    """The JSON data in `path` (any filesystem Keras' file helpers reach),
    or None if no path is given or no such file exists."""
    if not (path and file_utils.exists(path)):
        return None
    with file_utils.File(path) as f:
        return json.loads(f.read())


def write_json(data, path: Optional[str], announce: bool = True):
    """Writes `data` as JSON to `path` (creating its directory), if a path is given."""
    if not path:
        return
    # Keras' file helpers, as BackupAndRestore uses: the rows file lives in
    # the backup directory, which may be remote (e.g. gs://).
    directory = os.path.dirname(path if file_utils.is_remote_path(path)
                                else os.path.abspath(path))
    if directory and not file_utils.exists(directory):
        file_utils.makedirs(directory)
    if file_utils.is_remote_path(path) and file_utils.exists(path):
        # Not every filesystem truncates on "w" (TensorFlow's ram:// appends).
        file_utils.remove(path)
    with file_utils.File(path, "w") as f:
        f.write(json.dumps(data, indent=1))
    if announce:
        print(f"Results written to {path}")


def write_or_print(data: dict, path: Optional[str], brief: dict) -> None:
    """Writes `data` as JSON to `path`; without a path, prints `brief` (the
    part of it worth reading on a terminal) instead."""
    if path:
        write_json(data, path)
    else:
        print(json.dumps(brief, indent=1))


# Environment variables that TensorFlow reads at start-up and that change
# how fast the same command runs (docs/results.md, "A CPU without AVX-512").
SPEED_SETTINGS = ("TF_CPU_ALLOCATOR_USE_BFC", "TF_ENABLE_ONEDNN_OPTS",
                  "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


def machine() -> dict:
    """The software versions and the CPU a result was measured on.

    The CPU is named because speeds differ several-fold between CPUs: on
    the same 2-core allowance, a CPU with only AVX2 ran the MNIST search
    several times slower than one with AVX-512 at batch 2048 (docs/results.md,
    "A CPU without AVX-512").
    `avx512` is None where the CPU's flags cannot be read (not Linux).
    `settings` holds the environment variables, read when TensorFlow
    starts, that changed the speed by up to 2x on that CPU
    (`SPEED_SETTINGS`); only those that are set.
    """
    cpu, flags = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    cpu = value.strip()
                elif key.strip() == "flags":
                    flags = value.split()
                    break
    except OSError:
        pass
    return {"python": platform.python_version(),
            "tensorflow": __import__("tensorflow").__version__,
            "keras": keras.__version__, "cpus": os.cpu_count(), "cpu": cpu,
            "avx512": None if flags is None else "avx512f" in flags,
            "settings": {k: os.environ[k] for k in SPEED_SETTINGS if k in os.environ}}


def provenance(args) -> dict:
    """The command, its parsed flags and the software/machine it ran on,
    recorded at the top of every results file (examples and benchmarks)."""
    return {"command": "python " + " ".join(sys.argv), "args": vars(args),
            "machine": machine()}


def _count(model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def _eval_batch(split):
    return 1000 if isinstance(split, tuple) else None


class RawPixels(NamedTuple):
    """How to save a model trained on standardized arrays so that it takes
    raw pixels: the layer that standardizes them
    (`keras_rso.datasets.standardization_layer`), and the raw test split,
    on which the saved model is checked."""

    layer: keras.layers.Layer
    test: tuple


# The name suffix that marks a model saved by `raw_pixel_model`; readers of
# saved models (benchmarks/studies/last_cycle_ablation.py) recognize it by it.
RAW_PIXELS_SUFFIX = "_raw_pixels"


def raw_pixel_model(model: keras.Model, layer: keras.layers.Layer,
                    image_shape: Sequence[int]) -> keras.Model:
    """`model` behind `layer`: a plain Keras model that takes raw pixels,
    named `model.name + RAW_PIXELS_SUFFIX`."""
    return keras.Sequential([keras.Input(tuple(image_shape)), layer, model],
                            name=model.name + RAW_PIXELS_SUFFIX)


def accuracy(model: keras.Model, x, y) -> float:
    """Top-1 accuracy of `model` on arrays."""
    return float(np.mean(np.argmax(model.predict(x, batch_size=1000, verbose=0), -1) == y))


def _finish(model, splits, recorder, args, fields: dict,
            raw_pixels: Optional[RawPixels] = None) -> dict:
    """Evaluates the final model on the validation and test splits, saves the
    model (behind `raw_pixels.layer` when given, checked on the raw test
    split), writes the results JSON."""
    _, validation, test = splits
    final = {}
    if validation is not None:
        val_loss, val_acc = model.evaluate(*_xy(validation), batch_size=_eval_batch(validation),
                                           verbose=0)
        final = {"validation_accuracy": float(val_acc), "validation_loss": float(val_loss)}
    test_loss, test_acc = model.evaluate(*_xy(test), batch_size=_eval_batch(test), verbose=0)
    test_size = len(test[0]) if isinstance(test, tuple) else None
    results = provenance(args)
    results.update(fields)
    results.update({
        "complete": True,
        "per_cycle": recorder.rows,
        "validation_size": args.validation_size, **final,
        # Examples scored (None: a stream, counted by nobody).
        "test_size": test_size,
        "test_accuracy": float(test_acc), "test_loss": float(test_loss),
        "seconds": recorder.rows[-1]["seconds"] if recorder.rows else 0.0,
    })
    if raw_pixels is not None:
        # The raw images of the test examples scored above.
        x_raw, y_raw = raw_pixels.test[0][:test_size], raw_pixels.test[1][:test_size]
        model = raw_pixel_model(model, raw_pixels.layer, x_raw.shape[1:])
        results["saved_model_inputs"] = "raw pixels"
        results["saved_model_test_accuracy"] = accuracy(model, x_raw, y_raw)
    if args.save:
        model.save(args.save)
        print(f"Saved the trained model to {args.save}")
    write_json(results, args.results)
    return results


def split_validation(data, validation_size: int, limit: Optional[int] = None,
                     test_limit: Optional[int] = None):
    """Holds out the last `validation_size` training examples for validation.

    Settings are chosen on the validation split; the test split is only
    read for the final model (`_finish`).

    Args:
        data: `((x_train, y_train), (x_test, y_test))`.
        validation_size: Training examples to hold out, from the end of the
            training split. `0` trains on all of them (the paper's runs) and
            validates on nothing.
        limit: If given, train on the first `limit` of the remaining
            training examples only (smoke runs); the validation split is
            unchanged.
        test_limit: If given, keep only the first `test_limit` test
            examples (smoke runs: scoring 10,000 images can cost more than
            the training it checks).

    Returns:
        `(train, validation, test)`, each an `(x, y)` pair; `validation` is
        `None` when `validation_size` is 0.
    """
    (x_train, y_train), test = data
    if not 0 <= validation_size < len(x_train):
        raise ValueError(
            f"--validation-size must be in [0, {len(x_train)}) (the training "
            f"split has {len(x_train)} examples). Received: {validation_size}")
    n = len(x_train) - validation_size
    train = (x_train[:n], y_train[:n])
    validation = (x_train[n:], y_train[n:]) if validation_size else None
    if limit is not None:
        train = (train[0][:limit], train[1][:limit])
    if test_limit is not None:
        test = (test[0][:test_limit], test[1][:test_limit])
    return train, validation, test


def data_splits(data, args):
    """`(train, validation, test)` of `data`, arrays or TFDS streams.

    Arrays (`((x_train, y_train), (x_test, y_test))`) are split by
    `split_validation`; a `TFDSData` already holds its three streams.
    """
    if isinstance(data, TFDSData):
        return (_first(data.train, args.limit, args.batch_size), data.validation,
                _first(data.test, args.test_limit, args.batch_size))
    return split_validation(data, args.validation_size, args.limit, args.test_limit)


def _first(stream: tf.data.Dataset, count: Optional[int], batch_size: int) -> tf.data.Dataset:
    """The first `count` examples of a batched `stream` (all when `None`)."""
    return stream if count is None else stream.unbatch().take(count).batch(batch_size)


def train_mean(data, args, per_channel: bool):
    """Mean of the training split's pixels / 255 (the validation split held
    out), which the paper's networks subtract inside the model."""
    (x, _), _, _ = split_validation(data, args.validation_size, args.limit)
    axes = tuple(range(x.ndim - 1)) if per_channel else None
    return (x / 255.0).mean(axis=axes, dtype=np.float64)


def load_data(args, keras_loader: Callable[[], tuple]):
    """The data the `--dataset` flag names: `tfds:NAME` streams it from
    TFDS (batched, validation split held out), anything else is
    `keras_loader()`."""
    if args.dataset.startswith("tfds:"):
        return load_tfds(args.dataset[len("tfds:"):], batch_size=args.batch_size,
                         validation_size=args.validation_size, seed=args.seed)
    return keras_loader()


def _xy(split) -> tuple:
    """`evaluate`/`fit` arguments for an `(x, y)` pair or a dataset."""
    return tuple(split) if isinstance(split, tuple) else (split,)


def _fit(model: keras.Model, splits, args, epochs: int, callbacks: list,
         batch_size: Optional[int] = None, initial_epoch: int = 0):
    """`model.fit` on the training split, validated on the validation split
    (never the test split), with TensorBoard logs when `--logdir` is given;
    batches of `batch_size` (default `--batch-size`) for arrays."""
    train, validation, _ = splits
    if args.logdir:
        callbacks = callbacks + [keras.callbacks.TensorBoard(args.logdir)]
    batch_size = (batch_size or args.batch_size) if isinstance(train, tuple) else None
    data = _xy(train)
    if getattr(args, "sampling", "uniform") == "loss":
        if not isinstance(train, tuple):
            raise ValueError("--sampling loss draws from training arrays; a streamed "
                             "data set (--dataset tfds:...) cannot be drawn from by loss.")
        # Batches drawn by loss, weighted: the stream replaces the arrays.
        sampling = LossSampling(*train, batch_size, power=args.sampling_power,
                                uniform_share=args.sampling_share,
                                refresh_every=args.sampling_refresh, seed=args.seed)
        data, batch_size, callbacks = (sampling.dataset(),), None, [sampling] + callbacks
    # Each cycle's validation pass uses the final evaluation's batch
    # (`_finish`), not the search's: a pass is then a few large batches even
    # when the search runs on small ones, and the last cycle's validation
    # numbers are the final ones.
    model.fit(*data, batch_size=batch_size, epochs=epochs,
              initial_epoch=initial_epoch, validation_data=validation,
              validation_batch_size=_eval_batch(validation),
              callbacks=callbacks, verbose=args.verbose)


def run_rso(build_model: Callable[[], keras.Model], data, args,
            loss: Union[str, keras.losses.Loss] = "sparse_categorical_crossentropy",
            raw_pixels: Optional[RawPixels] = None) -> dict:
    """Trains `build_model()` with RSO as the example scripts' flags say.

    Args:
        build_model: Returns a fresh, uncompiled Keras model.
        data: `((x_train, y_train), (x_test, y_test))`; the last
            `args.validation_size` training examples are held out for
            validation (`split_validation`).
        args: Parsed flags: validation_size, limit, cycles, batch_size, weights_per_batch, seed,
            sigma_scale, final_fraction, remeasure_sigma, balance_sigma, order, stop_after,
            no_bn_refresh, tolerance, ties, sigma_rule, output_passes, step_rule,
            initial_weights, initial_cycle, freeze_discrete, freeze_after (optional),
            backup_dir, backup_every, logdir, save, results, verbose.
        loss: The loss without `--preset paper` (which uses `paper_loss()`).
        raw_pixels: When `data` is standardized outside the model: how to
            save a model that takes raw pixels instead (`RawPixels`).

    Returns:
        The results dictionary (also written to `args.results`).
    """
    splits = data_splits(data, args)
    keras.utils.set_random_seed(args.seed)
    model = build_model()
    if args.initial_weights:
        load_initial_weights(model, args.initial_weights)
    if getattr(args, "freeze_discrete", False):
        freeze_discrete(model)
    trainer = RSOModel(model)
    preset = preset_of(args)
    paper = bool(preset and preset.authors_code)
    pool_size = _pool_size(args, splits[0], paper)
    if paper:
        # The authors' sigma for a residual net's 1x1 shortcut (none on MNIST).
        optimizer = RSO.paper(seed=args.seed, pool_size=pool_size,
                              sigma_overrides=paper_sigmas(model) or None)
        loss = paper_loss()
        annealing = SigmaAnnealing(0.1, rule="paper", total_cycles=args.schedule_cycles)
    else:
        optimizer = RSO(weights_per_batch=args.weights_per_batch, seed=args.seed,
                        order=args.order, sigma_scale=args.sigma_scale,
                        remeasure_sigma=args.remeasure_sigma,
                        bn_refresh=not args.no_bn_refresh,
                        tolerance=args.tolerance, ties=args.ties,
                        sigma_rule=args.sigma_rule,
                        output_passes=args.output_passes,
                        step_rule=args.step_rule, pool_size=pool_size)
        # The schedule's length is given, not taken from `fit`'s epochs:
        # a --batch-schedule runs one fit per batch size.
        annealing = SigmaAnnealing(final_fraction=args.final_fraction,
                                   total_cycles=args.schedule_cycles or args.cycles)
    trainer.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    backup_dir = args.backup_dir
    # Per-variable accept rates go into every results row (and, with
    # --logdir, to TensorBoard): they show which layers' steps are too large.
    layer_rates = LayerAcceptRates(args.logdir)

    phases = batch_phases(args)

    def add_layer_rates(row):
        row["accept_rate_per_variable"] = layer_rates.rates()
        # The batch of the fit that ran this cycle (rows count from 1).
        row["batch_size"] = next(b for b, end in phases if row["epoch"] <= end)

    recorder = EpochRecorder(_partial_writer(args, {
        "method": "rso", "model": model.name, "parameters": _count(model),
        "trials_per_cycle": trainer.trials_per_cycle}),
        annotate=add_layer_rates,
        state_path=file_utils.join(backup_dir, "results_rows.json") if backup_dir else None)
    callbacks = [annealing, layer_rates, recorder]
    if args.balance_sigma:
        # Before BackupAndRestore, so that an epoch's backup holds the
        # sigmas the next cycle will use.
        callbacks.insert(1, SigmaBalancing())
    if getattr(args, "freeze_after", None):
        callbacks.append(FreezeAfter(args.freeze_after))
    after_backup = [StopAfter(args.stop_after)] if args.stop_after else []
    # --initial-cycle N: the weights hold cycles 1-N already; the fits start
    # at cycle N + 1 of the schedules (`RSOModel.fit`'s `initial_epoch`).
    start = args.initial_cycle
    for index, (batch_size, end) in enumerate(phases):
        last = index == len(phases) - 1
        if not last and end <= args.initial_cycle:
            continue
        if not last and backup_dir and backed_up_epochs(backup_dir) >= end:
            # Done before an interruption; the next phase's fit restores
            # the backup it left.
            start = end
            continue
        backup = []
        if backup_dir:
            # After the recorder: if a kill falls between the two epoch-end
            # writes, the backup is the older one and the recorder's extra
            # row is dropped on resume (the other order would lose a row).
            # Kept between phases: the next phase resumes from it
            # (`RSOModel.fit` saves a kept backup at the fit's end too).
            backup = [keras.callbacks.BackupAndRestore(
                backup_dir, save_freq=args.backup_every or "epoch", delete_checkpoint=last)]
        _fit(trainer, splits, args, end, callbacks + backup + after_backup,
             batch_size=batch_size, initial_epoch=start)
        start = end
        if trainer.stop_training:  # --stop-after
            break
    results = _finish(model, splits, recorder, args, {
        "method": "rso",
        "model": model.name,
        "parameters": _count(model),
        "trials_per_cycle": trainer.trials_per_cycle,
        "weight_updates": int(trainer.optimizer.weight_updates.numpy()),
        # What the search ran with, flags and preset resolved (for example
        # the pool size `--preset paper` chose).
        "optimizer": trainer.optimizer.get_config(),
    }, raw_pixels)
    print(f"Test accuracy after {len(recorder.rows)} cycle(s): {results['test_accuracy']:.4f}  "
          f"({results['weight_updates']} weight updates, {results['seconds']:.0f} s)")
    return results


def freeze_discrete(model: keras.Model) -> None:
    """Makes the variables with a `Discrete` constraint not trainable
    (`--freeze-discrete`), so that RSO searches only the others.

    Raises ValueError when `model` has no such variable or nothing else.
    """
    frozen = constraints.discrete_variables(model)
    if not frozen:
        raise ValueError(f"--freeze-discrete: {model.name!r} has no variable with a "
                         "Discrete constraint; nothing to freeze")
    if len(frozen) == len(model.trainable_variables):
        raise ValueError(f"--freeze-discrete: every trainable variable of {model.name!r} "
                         "is discrete; nothing would be searched")
    for variable in frozen:
        variable.trainable = False


def load_initial_weights(model: keras.Model, path: str) -> None:
    """Sets `model`'s weights to those of the model saved at `path`
    (`--initial-weights`).

    `path` is a `.keras` file an example saved (the network itself, or the
    network behind the layer that standardizes raw pixels) or a
    `.weights.h5` file of the same network. Raises ValueError, naming both,
    when the saved weights do not fit `model`.
    """
    if not os.path.exists(path):
        raise ValueError(f"--initial-weights: no such file: {path!r}")
    shapes = [tuple(w.shape) for w in model.weights]
    if path.endswith(".keras"):
        saved = keras.saving.load_model(path, compile=False)
        # The network itself, or the one an example saved behind its
        # raw-pixel layer (`raw_pixel_model`).
        for candidate in [saved] + [layer for layer in saved.layers
                                    if isinstance(layer, keras.Model)]:
            if [tuple(w.shape) for w in candidate.weights] == shapes:
                model.set_weights(candidate.get_weights())
                return
        found = [tuple(w.shape) for w in saved.weights]
    else:
        try:
            model.load_weights(path)
            return
        except ValueError as error:
            found = str(error)
    raise ValueError(
        f"--initial-weights: the weights in {path!r} do not fit the network this command "
        f"builds ({model.name!r}, {len(shapes)} weights of shapes {shapes}); found {found}")


def batch_phases(args) -> List[Tuple[int, int]]:
    """`(batch size, epoch the fit ends at)` of each fit the run makes: one
    per `--batch-schedule` entry, else one at `--batch-size` for all cycles."""
    if not args.batch_schedule:
        return [(args.batch_size, args.cycles)]
    phases, end = [], 0
    for batch_size, cycles in args.batch_schedule:
        end += cycles
        phases.append((batch_size, end))
    return phases


def backed_up_epochs(backup_dir: str) -> int:
    """Epochs completed in the `BackupAndRestore` backup in `backup_dir`
    (0 when there is none)."""
    metadata = read_json(file_utils.join(backup_dir, "training_metadata.json"))
    return int(metadata["epoch"]) if metadata else 0


def parse_batch_schedule(text: str) -> List[Tuple[int, int]]:
    """`--batch-schedule` as `[(batch size, cycles), ...]`: "512:2,2048:3"."""
    schedule = []
    for entry in text.split(","):
        parts = entry.strip().split(":")
        try:
            batch_size, cycles = (int(part) for part in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected BATCH:CYCLES pairs separated by commas (e.g. 512:2,2048:3); "
                f"got {entry.strip()!r} in {text!r}") from None
        if batch_size < 1 or cycles < 1:
            raise argparse.ArgumentTypeError(
                f"batch sizes and cycles must be >= 1; got {entry.strip()!r}")
        schedule.append((batch_size, cycles))
    return schedule


def parse_freeze_after(text: str) -> dict:
    """`--freeze-after` as `{layer name or variable path: last cycle}`:
    "block1_conv:3,block2_conv:3"."""
    last = {}
    for entry in text.split(","):
        name, _, cycle = entry.strip().rpartition(":")
        if not name or not cycle.isdigit():
            raise argparse.ArgumentTypeError(
                f"expected LAYER:CYCLE pairs separated by commas (e.g. block1_conv:3), "
                f"CYCLE >= 0; got {entry.strip()!r} in {text!r}")
        last[name] = int(cycle)
    return last


def _pool_size(args, train, paper: bool) -> Optional[int]:
    """`RSO(pool_size=...)` from `--pool-size`: 0 turns the pool off; left
    out, `--preset paper` pools the whole training split (the authors'
    code), anything else runs without a pool."""
    size = getattr(args, "pool_size", None)
    if size is None:
        if not paper:
            return None
        if not isinstance(train, tuple):
            raise ValueError("--preset paper on a streamed dataset needs --pool-size "
                             "(its length is not known in advance), or 0 for none.")
        size = len(train[0])
    return size or None


def gradient_optimizer(name: str, learning_rate: float, decay: str = "none",
                       total_steps: Optional[int] = None) -> keras.optimizers.Optimizer:
    """The gradient baseline's optimizer: SGD (momentum 0.9) or Adam.

    Args:
        name: `"sgd"` or `"adam"`.
        learning_rate: The initial learning rate.
        decay: `"none"` keeps it constant; `"cosine"` decays it to 0 over
            `total_steps` (a constant rate leaves the last epochs' test
            accuracy swinging by points: BatchNorm's moving statistics
            chase weights that still move fast).
        total_steps: Optimizer steps of the whole run (for `"cosine"`).
    """
    if decay == "cosine":
        if not total_steps or total_steps < 1:
            raise ValueError(f"`decay='cosine'` needs total_steps >= 1; received {total_steps}.")
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    elif decay != "none":
        raise ValueError(f"`decay` must be 'none' or 'cosine'; received {decay!r}.")
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    raise ValueError(f"`name` must be 'sgd' or 'adam'; received {name!r}.")


def run_gradient(build_model: Callable[[], keras.Model], data, args,
                 loss: Union[str, keras.losses.Loss] = "sparse_categorical_crossentropy"
                 ) -> dict:
    """Trains the same network with a gradient optimizer, for comparison.

    Records accuracy per epoch and the number of parameter updates
    (parameters x steps), the paper's count for SGD.

    Raises:
        ValueError: If `--batch-schedule` or `--initial-weights` was given
            (RSO flags: the gradient baseline trains on `--batch-size`
            throughout, from a fresh initialization).
    """
    if getattr(args, "batch_schedule", None):
        raise ValueError("--batch-schedule applies to --method rso; the gradient baseline "
                         "trains on --batch-size throughout: drop --batch-schedule")
    if getattr(args, "initial_weights", None):
        raise ValueError("--initial-weights applies to --method rso; the gradient baseline "
                         "starts from a fresh initialization: drop --initial-weights")
    splits = data_splits(data, args)
    keras.utils.set_random_seed(args.seed)
    model = build_model()
    train = splits[0]
    steps = (int(np.ceil(len(train[0]) / args.batch_size)) if isinstance(train, tuple)
             else int(train.reduce(0, lambda n, _: n + 1)))
    optimizer = gradient_optimizer(args.optimizer, args.learning_rate, args.decay,
                                   total_steps=steps * args.epochs)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    params = _count(model)

    def count_updates(row):
        row["weight_updates"] = params * steps * row["epoch"]

    recorder = EpochRecorder(_partial_writer(args, {
        "method": args.optimizer, "model": model.name, "parameters": params}),
        annotate=count_updates)
    callbacks = [recorder]
    _fit(model, splits, args, args.epochs, callbacks)
    results = _finish(model, splits, recorder, args, {
        "method": args.optimizer, "model": model.name, "parameters": params,
        "weight_updates": params * steps * args.epochs,
    })
    print(f"Test accuracy after {args.epochs} epoch(s): {results['test_accuracy']:.4f}")
    return results


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_rso_flags(parser, cycles: int, batch_size: int, weights_per_batch: int,
                  validation_size: int = 10000, presets: Sequence[str] = ("paper",)):
    """Adds the flags shared by the RSO example scripts; `presets` are the
    `--preset` values the script offers (keys of `PRESETS`)."""
    parser.add_argument("--cycles", type=int, default=cycles,
                        help="RSO cycles (= epochs); each tries every weight once")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--weights-per-batch", type=int, default=weights_per_batch,
                        help="weight trials sharing one mini-batch (K; paper: 1)")
    parser.add_argument("--sigma-scale", type=float, default=1.0,
                        help="sigma scale at the first cycle, a multiple of each "
                             "layer's initial weight std (paper: 1)")
    parser.add_argument("--final-fraction", type=float, default=0.1,
                        help="sigma scale at the last cycle, as a fraction of the "
                             "first cycle's (paper: 0.1)")
    parser.add_argument("--remeasure-sigma", action="store_true",
                        help="measure each layer's weight std again at every cycle "
                             "start (paper: once, at the start)")
    parser.add_argument("--balance-sigma", action="store_true",
                        help="rescale each layer's sigma between cycles toward equal "
                             "accept rates (keras_rso.callbacks.SigmaBalancing; "
                             "paper: no)")
    parser.add_argument("--output-passes", type=_non_negative_int, default=0,
                        help="extra passes over the output layer at the end of "
                             "every cycle (RSO(output_passes=...); paper: 0)")
    parser.add_argument("--step-rule", default="argmin", choices=list(STEP_RULES),
                        help="argmin: best of w-dw, w, w+dw (paper); parabolic: also "
                             "the vertex of the parabola through their losses and its "
                             "mirror (RSO(step_rule=...), twice the evaluations per "
                             "trial); vertex: the vertex alone (1.5x the evaluations)")
    parser.add_argument("--order", default="output_to_input", choices=list(ORDERS),
                        help="order of a cycle from one batch to the next (paper: "
                             "output_to_input); the trials sharing a batch run from "
                             "the output side first (RSO(order=...))")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after N cycles of the --cycles schedule (sweeps)")
    parser.add_argument("--schedule-cycles", type=int, default=None,
                        help="length of the sigma schedule in cycles (default: --cycles); "
                             "e.g. --cycles 5 --schedule-cycles 50 runs the first 5 cycles "
                             "of a 50-cycle schedule; --cycles 20 --schedule-cycles 10 runs "
                             "cycles 11-20 at the schedule's last scale")
    parser.add_argument("--preset", choices=list(presets), default=None,
                        help="; ".join(f"{name}: {PRESETS[name].help}" for name in presets)
                        + "; the search flags a preset sets must then stay unset")
    parser.add_argument("--pool-size", type=_non_negative_int, default=None,
                        help="layer-input pool of N training images (RSO(pool_size=N)): "
                             "each layer's input is cached once per cycle and every "
                             "trial draws a fresh batch from it (the authors' code); "
                             "0: none. Default: the whole training split under "
                             "--preset paper, else none")
    parser.add_argument("--no-bn-refresh", action="store_true",
                        help="keep plain moving-average BN statistics (ablation)")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="relative loss improvement a candidate needs (paper: 0)")
    parser.add_argument("--ties", default="keep", choices=["keep", "move"],
                        help="an equal-loss candidate: keep w (paper) or move to it "
                             "(RSO(ties=...), for step-shaped losses)")
    parser.add_argument("--sigma-rule", default="std", choices=["std", "he"],
                        help="std: each variable's initial std; he: a kernel's He std and "
                             "0.167 for BatchNorm gamma/beta (the authors' code)")
    parser.add_argument("--batch-schedule", type=parse_batch_schedule, default=None,
                        help="batch size by cycle, as BATCH:CYCLES pairs in order (e.g. "
                             "512:2,2048:3: the first 2 cycles on batches of 512, the next 3 "
                             "on 2048; one fit per pair); replaces --batch-size, and its "
                             "cycles make --cycles (paper: 5000 throughout)")
    parser.add_argument("--initial-weights", default=None, metavar="MODEL",
                        help="start from the weights of this saved model (.keras, as "
                             "--save wrote it, or .weights.h5) instead of a fresh "
                             "initialization; with --initial-cycle")
    parser.add_argument("--initial-cycle", type=_non_negative_int, default=0, metavar="N",
                        help="the cycles the --initial-weights already had: training "
                             "runs cycles N+1 to --cycles of the sigma and batch "
                             "schedules (a warm start: only the weights carry over; "
                             "BackupAndRestore's --backup-dir resumes exactly)")
    parser.add_argument("--freeze-discrete", action="store_true",
                        help="search only the variables without a Discrete constraint "
                             "(a binary net's BatchNormalization gamma and beta); the "
                             "discrete kernels stay as they are: usually with "
                             "--initial-weights, to tune the real-valued variables of a "
                             "settled binary net")
    parser.add_argument("--freeze-after", type=parse_freeze_after, default=None,
                        metavar="LAYER:CYCLE,...",
                        help="stop searching a layer (or variable path) after that cycle: "
                             "its trials are skipped from the next cycle on, the others "
                             "run as before (keras_rso.callbacks.FreezeAfter; e.g. "
                             "block1_conv:3,block2_conv:3; paper: every cycle tries every "
                             "weight)")
    parser.add_argument("--sampling", choices=("uniform", "loss"), default="uniform",
                        help="how a batch is drawn: uniform (paper), or loss: in proportion "
                             "to each training image's current loss, weighted to stay "
                             "unbiased (keras_rso.sampling.LossSampling; arrays only)")
    parser.add_argument("--sampling-power", type=float, default=1.0,
                        help="--sampling loss: exponent of the loss in the probabilities")
    parser.add_argument("--sampling-share", type=float, default=0.1,
                        help="--sampling loss: share of the probability spread evenly")
    parser.add_argument("--sampling-refresh", type=int, default=25,
                        help="--sampling loss: steps between two measurements of the losses")
    parser.add_argument("--backup-dir", default=None,
                        help="keep a backup here; rerunning the same command after an "
                             "interruption resumes where it stopped (removed at the end)")
    parser.add_argument("--backup-every", type=_non_negative_int, default=0,
                        help="also back up every N steps inside a cycle (0: at cycle ends)")
    add_common_flags(parser, validation_size)


# The search flags --preset paper fixes itself; setting one is an error.
PRESET_FIXED = ("weights_per_batch", "sigma_scale", "final_fraction", "remeasure_sigma",
                "balance_sigma", "output_passes", "step_rule", "order", "no_bn_refresh",
                "tolerance", "ties", "sigma_rule", "freeze_after", "sampling", "sampling_power",
                "sampling_share", "sampling_refresh")


class Preset(NamedTuple):
    """A named configuration of the RSO examples' flags.

    `defaults` replace the script's defaults; the flags in `fixed` must then
    keep them (an explicit other value is an error, so that a preset always
    reruns as recorded); the other flags stay free. `network` is the network
    the preset was measured on: `"paper"` (the authors') or `"own"` (the
    script's own at its default `--filters`); `authors_code` trains with
    `RSO.paper()`, `paper_loss()` and the authors' sigma schedule instead of
    the search flags.
    """

    help: str
    defaults: dict
    fixed: Tuple[str, ...]
    network: str
    authors_code: bool = False


PRESETS = {
    "paper": Preset(
        help="the authors' code (the paper's network taking raw pixels, batch 5000, one "
             "weight per batch, RSO.paper(), float64 summed loss, the first --cycles of "
             "their 50-cycle sigma schedule)",
        defaults=dict(batch_size=5000, weights_per_batch=1, schedule_cycles=50),
        fixed=PRESET_FIXED, network="paper", authors_code=True),
    # Chosen on validation accuracy (docs/results.md, "Validated runs": the
    # parabolic step against the argmin one; "Pooling earlier": pooling after
    # convolutions 1 and 3; "Training on loss-drawn batches": batches of 1024
    # drawn by loss over 4 cycles against uniform batches of 2048 over 5).
    "fastest": Preset(
        help="the fastest configuration to 98%% measured on MNIST (mnist_paper_net pooling "
             "after convolutions 1 and 3, batches of 1024 drawn in proportion to each "
             "image's loss and weighted, 64 weights per batch, parabolic steps, random "
             "order, sigma 3x down to 1x over a 4-cycle schedule, balanced between "
             "cycles; docs/results.md)",
        defaults=dict(batch_size=1024, weights_per_batch=64, sigma_scale=3.0,
                      final_fraction=0.3333, balance_sigma=True, order="random",
                      step_rule="parabolic", cycles=4, schedule_cycles=4, pool_after=(1, 3),
                      sampling="loss"),
        fixed=PRESET_FIXED + ("batch_size", "schedule_cycles"), network="own"),
}


def preset_of(args) -> Optional[Preset]:
    """The `Preset` the parsed flags name, or None."""
    return PRESETS.get(getattr(args, "preset", None))


def parse_rso_args(parser, argv=None):
    """Parses the flags, applying the `--preset`'s defaults (`PRESETS`) and
    refusing a flag that contradicts the preset."""
    known, _ = parser.parse_known_args(argv)
    preset = preset_of(known)
    if preset:
        parser.set_defaults(**preset.defaults)
    args = parser.parse_args(argv)
    if preset:
        # The preset's own defaults are set above, so this compares with them.
        changed = [f"--{k.replace('_', '-')}" for k in preset.fixed
                   if getattr(args, k) != parser.get_default(k)]
        if changed:
            parser.error(f"--preset {args.preset} fixes {', '.join(sorted(changed))}; "
                         "drop them, or leave out --preset to choose them yourself")
    if args.batch_schedule:
        _check_batch_schedule(parser, args)
    if args.initial_cycle and not args.initial_weights:
        parser.error("--initial-cycle says how many cycles --initial-weights already "
                     "had; give --initial-weights too")
    if args.initial_cycle >= args.cycles:
        parser.error(f"--initial-cycle {args.initial_cycle} leaves nothing to run: "
                     f"--cycles is {args.cycles}")
    return args


def _check_batch_schedule(parser, args) -> None:
    """Refuses flags that contradict `--batch-schedule`; sets `--cycles`."""
    if preset_of(args):
        parser.error(f"--preset {args.preset} fixes the batch size; drop --batch-schedule")
    if args.batch_size != parser.get_default("batch_size"):
        parser.error("--batch-schedule gives the batch sizes; drop --batch-size")
    if args.pool_size:
        parser.error("--batch-schedule cannot be combined with --pool-size (a pool "
                     "serves one batch size); drop one of them")
    if getattr(args, "dataset", "").startswith("tfds:"):
        parser.error("--batch-schedule batches arrays; a --dataset tfds:... stream comes "
                     "batched at --batch-size")
    cycles = sum(c for _, c in args.batch_schedule)
    if args.cycles != parser.get_default("cycles") and args.cycles != cycles:
        parser.error(f"--batch-schedule runs {cycles} cycles but --cycles is {args.cycles}; "
                     "drop --cycles or make them agree")
    args.cycles = cycles


def add_net_flag(parser, variant: str, help_variant: str) -> None:
    """Adds `--net {variant, paper}`: the script's own network, or the
    authors' (`paper`) under whatever search settings the flags give."""
    parser.add_argument("--net", choices=[variant, "paper"], default=None,
                        help=f"{variant} ({help_variant}) or paper (the authors' network "
                             "as their code builds it, raw pixels in); default: paper "
                             f"under --preset paper, else {variant}")


def resolve_net(parser, args, variant: str) -> bool:
    """Settles `--net` against `--preset`, `--dataset` and the network's
    shape flags (`--filters`, and `--pool-after` where the script has it);
    returns True when the authors' network is trained."""
    preset = preset_of(args)
    shaped = [flag for flag in ("filters", "pool_after")
              if hasattr(args, flag) and getattr(args, flag) != parser.get_default(flag)]
    if preset and preset.network == "paper":
        if args.net not in (None, "paper"):
            parser.error(f"--preset {args.preset} trains the paper's network; drop --net")
        args.net = "paper"
    elif preset:
        if args.net not in (None, variant) or shaped:
            parser.error(f"--preset {args.preset} trains {variant} as measured; "
                         "drop --net, --filters and --pool-after")
    args.net = args.net or variant
    paper = args.net == "paper"
    if paper and args.dataset.startswith("tfds:"):
        parser.error("--net paper trains on keras.datasets arrays; drop --dataset tfds:...")
    if paper and "filters" in shaped:
        parser.error("--net paper has the paper's channels; drop --filters")
    if paper and "pool_after" in shaped:
        parser.error("--net paper pools where the authors do (after convolutions 2 and 4); "
                     "drop --pool-after")
    return paper


def add_gradient_flags(parser, methods: str, optimizer: str, learning_rate: float,
                       decay: str = "cosine", epochs: int = 5) -> None:
    """Adds the flags of a script's gradient baseline (`--epochs`,
    `--learning-rate`, `--decay`); `methods` and `optimizer` name, in the
    help, the `--method` values and the optimizer they apply to."""
    parser.add_argument("--epochs", type=int, default=epochs, help=f"--method {methods}: epochs")
    parser.add_argument("--learning-rate", type=float, default=learning_rate,
                        help=f"--method {methods}: {optimizer}'s learning rate")
    parser.add_argument("--decay", choices=["none", "cosine"], default=decay,
                        help=f"--method {methods}: learning-rate schedule (constant, or "
                             "cosine decay to 0 over the run)")


def add_common_flags(parser, validation_size: int = 10000):
    """Adds the flags every example script shares (data, outputs)."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-size", type=_non_negative_int,
                        default=validation_size,
                        help="hold out the last N training images for validation; "
                             "settings are chosen on it, the test set is read only for "
                             "the final model (0: train on all, as the paper)")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N training images only (smoke runs)")
    parser.add_argument("--test-limit", type=_positive_int, default=None,
                        help="score the final model on the first N test images only "
                             "(smoke runs; results record test_size)")
    parser.add_argument("--logdir", default=None, help="TensorBoard log directory")
    parser.add_argument("--save", default=None, help="save the trained model (.keras)")
    parser.add_argument("--results", default=None, help="write results JSON here")
    parser.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
