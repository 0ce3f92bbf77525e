"""Every use of TensorFlow's and Keras' private internals, in one place.

keras_rso needs a few things the public APIs do not offer: a model's own
layers and weights by layer, the graph of a functional model, a replica's
own copy of a mirrored variable, Keras' data adapters (so that `fit` takes
every input `keras.Model.fit` takes) and two hooks of the Keras trainer.
Each is wrapped here, once, and each wrapper has a test in
`tests/test_compat.py`, so that a TensorFlow or Keras release that moves
one of them fails there, by name. `setup.cfg` pins the TensorFlow and Keras
versions CI runs (TensorFlow 2.21, Keras 3.15).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, List, Optional, Sequence

import keras
import tensorflow as tf
from keras.src.trainers.data_adapters import array_slicing, get_data_adapter
from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
from keras.src.trainers.data_adapters.tf_dataset_adapter import TFDatasetAdapter
from keras.src.utils import file_utils

# ------------------------------------------------------------- layers, graph


def flatten_layers(layer: keras.layers.Layer, include_self: bool = True) -> list:
    """`layer` and every layer inside it, depth first (Keras' own order)."""
    return list(layer._flatten_layers(include_self=include_self))


def own_trainable_variables(layer: keras.layers.Layer) -> list:
    """The trainable weights `layer` holds itself (not its sublayers')."""
    return list(getattr(layer, "_trainable_variables", []))


def keras_history(tensor) -> Optional[tuple]:
    """`(operation, node index, tensor index)` of a symbolic tensor, or None."""
    return getattr(tensor, "_keras_history", None)


def inbound_node(operation, index: int):
    """The `index`-th call (node) of `operation` in a functional graph."""
    return operation._inbound_nodes[index]


def node_input_tensors(layer, index: int = 0) -> Optional[list]:
    """The input tensors of `layer`'s `index`-th call, or None if it has no
    such call."""
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes or len(nodes) <= index:
        return None
    return list(nodes[index].input_tensors)


def functional_operations(model) -> Optional[list]:
    """A functional model's operations in its own (topological) order, or
    None for a model that is not functional."""
    operations = getattr(model, "_operations", None)
    return None if operations is None else list(operations)


def is_functional(model) -> bool:
    """True for a functional (graph) model, including Sequential."""
    return bool(getattr(model, "_is_graph_network", False) or hasattr(model, "_operations"))


# ---------------------------------------------------------------- distribute


def local_variable(var) -> Optional[tf.Variable]:
    """The tf.Variable this replica writes (its copy of a mirrored variable),
    or None outside a replica context or for a variable that is not mirrored."""
    tf_var = var._value if isinstance(var, keras.Variable) else var
    if isinstance(tf_var, tf.distribute.DistributedValues) and \
            not tf.distribute.in_cross_replica_context():
        return tf_var._get_on_device_or_primary()
    return None


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Worker processes of `strategy` (1 for a single-process strategy)."""
    return int(getattr(strategy.extended, "_num_workers", 1))


def batchnorm_moments(layer, inputs, mask):
    """BatchNormalization's own moments of `inputs` (Keras' method)."""
    return type(layer)._moments(layer, inputs, mask)


def batchnorm_reduction_axes(layer) -> list:
    """The axes a BatchNormalization layer reduces over."""
    return list(layer._reduction_axes)


@contextlib.contextmanager
def batchnorm_moments_replaced(layers: Sequence, moments: Callable):
    """While active, `moments(layer, inputs, mask)` computes the moments of
    each of `layers`; an instance attribute, removed on exit."""
    for layer in layers:
        object.__setattr__(layer, "_moments", functools.partial(moments, layer))
    try:
        yield
    finally:
        for layer in layers:
            object.__delattr__(layer, "_moments")


def noinline_function(fn: Callable) -> Callable:
    """`tf.function(fn)` that TensorFlow keeps as a call (never inlined), so
    its nodes carry the same names in every caller's graph."""
    return tf.function(fn, autograph=False, experimental_attributes={"_noinline": True})


# ------------------------------------------------------------------- trainer


def drop_compile_config(model: keras.Model) -> None:
    """Forgets `model`'s compile arguments, so that it saves uncompiled."""
    if hasattr(model, "_compile_config"):
        del model._compile_config


def compiled_metrics(model: keras.Model):
    """The `CompileMetrics` container `compile(metrics=...)` made, or None."""
    return model._compile_metrics


def loss_tracker(model: keras.Model) -> keras.metrics.Mean:
    """The metric behind the `loss` entry of the training logs."""
    return model._loss_tracker


class BuildsFromFirstBatch:
    """Trainer mixin: Keras' symbolic build runs on `self._build_batch`.

    `RSOModel.fit` already holds a plain first batch: build the compiled
    loss and metrics from it, before the train function is traced, with or
    without a strategy. Keras (3.15) defers this to the first trace when
    there is no strategy; the metric variables created there make
    `tf.function` trace the train step a second time, and an RSO step is
    slow to trace (about 33 s for the CIFAR-10 net). Under
    MultiWorkerMirroredStrategy, Keras' own peek at the iterator reduces a
    tuple of per-replica tensors, which fails.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        batch = getattr(self, "_build_batch", None)
        if iterator is not None and batch is not None:
            with self.distribute_strategy.scope():
                return self._symbolic_build(data_batch=batch)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def backup_exists(callback: keras.callbacks.BackupAndRestore) -> bool:
    """True if `callback`'s backup directory holds a backup."""
    # Keras' own file helpers, as BackupAndRestore uses: its backup_dir may
    # be a remote path (e.g. gs://) that os.path cannot see.
    return bool(file_utils.exists(getattr(
        callback, "_training_metadata_path",
        file_utils.join(callback.backup_dir, "training_metadata.json"))))


def continue_backup_epoch(callback: keras.callbacks.BackupAndRestore, model) -> None:
    """Tells `callback` the epoch its restored backup resumes.

    Keras (3.15) restores a backup's epoch into the model only; the
    callback's own count stays 0 until that epoch ends, so a backup taken
    inside the resumed epoch records epoch 0, and a second resume from it
    would run every epoch again.
    """
    epoch = getattr(model, "_initial_epoch", None)
    if epoch is not None:
        callback._current_epoch = int(epoch)


def save_backup(callback: keras.callbacks.BackupAndRestore) -> None:
    """Makes `callback` write its backup now, as at the end of an epoch."""
    callback._save_model()


# ---------------------------------------------------------------------- data


def train_validation_split(arrays: tuple, validation_split: float) -> tuple:
    """`keras.Model.fit`'s split of arrays into training and validation data."""
    return array_slicing.train_validation_split(arrays, validation_split=validation_split)


def data_adapter(x, y, sample_weight, batch_size, shuffle, class_weight):
    """The adapter `keras.Model.fit` builds for these arguments."""
    return get_data_adapter(x, y, sample_weight, batch_size=batch_size,
                            shuffle=shuffle, class_weight=class_weight)


def is_rewindable(adapter) -> bool:
    """True if `adapter`'s `tf.data` stream can be repeated and skipped
    (arrays, `tf.data.Dataset`, `keras.utils.PyDataset`; not a generator)."""
    return isinstance(adapter, (ArrayDataAdapter, TFDatasetAdapter, PyDatasetAdapter))


__all__: List[str] = [
    "BuildsFromFirstBatch", "backup_exists", "batchnorm_moments", "continue_backup_epoch",
    "batchnorm_moments_replaced", "batchnorm_reduction_axes", "compiled_metrics",
    "data_adapter", "drop_compile_config", "flatten_layers", "functional_operations",
    "inbound_node", "is_functional", "is_rewindable", "keras_history", "local_variable",
    "loss_tracker", "node_input_tensors", "noinline_function", "num_workers",
    "own_trainable_variables", "save_backup", "train_validation_split",
]
