"""`RSOModel`: trains any Keras model with RSO through `compile`/`fit`.

Why this module is long: `RSOModel` is the one place where keras_rso meets
the Keras trainer, and every hook it overrides (`compile`, `fit`,
`train_step`, `test_step`, `make_train_function`, the config methods)
must live on the `keras.Model` subclass itself. What the hooks need is
kept elsewhere: the cycle plan in `schedule`, the trial loop in `search`,
the loss evaluation in `evaluators`, the resume callbacks in `fit_hooks`,
private Keras access in `_compat`.
"""

from __future__ import annotations

import warnings
from typing import Callable, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from keras_rso import _compat, distribution, schedule
from keras_rso.errors import NonFiniteLossError
from keras_rso.evaluators import (ChainEvaluator, FullForwardEvaluator, GraphEvaluator,
                                  chain_layers, flat_biases, graph_nodes)
from keras_rso.evaluators.topology import owner_layers
from keras_rso.fit_hooks import CycleKeeper, EpochMark
from keras_rso.memory import check_step_memory
from keras_rso.metrics import AcceptRate
from keras_rso.optimizer import RSO
from keras_rso.pool import LayerInputPool
from keras_rso.pool import segments as pool_segments
from keras_rso.schedule import CycleSchedule
from keras_rso.search import TrialLoop

VariableSpec = Union[None, Sequence[Union[keras.Variable, str]],
                     Callable[[keras.Variable], bool]]


def _select(candidates: List[keras.Variable], spec, option: str,
            among: str) -> List[keras.Variable]:
    """The `candidates` a variable spec names (a list of variables or paths,
    or a predicate), in their order; a ValueError names what `option`
    names outside them (`among` says what they are)."""
    if callable(spec):
        return [v for v in candidates if spec(v)]
    wanted = list(spec)
    chosen = [v for v in candidates
              if any(w is v or (isinstance(w, str) and w == v.path) for w in wanted)]
    known = {v.path for v in candidates}
    unknown = [w for w in wanted if isinstance(w, str) and w not in known]
    unknown += [w.path for w in wanted if isinstance(w, keras.Variable)
                and all(w is not v for v in candidates)]
    if unknown:
        raise ValueError(
            f"{option} names weights that are not {among}: {unknown}. "
            f"{among[0].upper() + among[1:]}: {sorted(known)}")
    return chosen


def _copy_metrics(metrics):
    """Fresh metric objects, so the two models never share metric state."""
    if metrics is None:
        return None
    def copy(m):
        if isinstance(m, keras.metrics.Metric):
            return keras.metrics.deserialize(keras.metrics.serialize(m))
        return m
    if isinstance(metrics, dict):
        return {k: _copy_metrics(v) if isinstance(v, (list, tuple)) else copy(v)
                for k, v in metrics.items()}
    return [_copy_metrics(m) if isinstance(m, (list, tuple)) else copy(m)
            for m in metrics]


def _reducible(logs: dict) -> dict:
    """Logs that Keras can reduce across workers.

    Under MultiWorkerMirroredStrategy Keras 3.15 averages each log value
    with `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars;
    a length-1 vector reduces to the same scalar.
    """
    if not distribution.is_multi_worker():
        return logs
    return {k: tf.reshape(v, [1]) for k, v in logs.items()}


@keras.saving.register_keras_serializable(package="keras_rso")
class RSOModel(_compat.BuildsFromFirstBatch, keras.Model):
    """Wraps a Keras model so that `fit` trains it with RSO, gradient-free.

    (A long class because each Keras trainer hook it overrides must be a
    method of it; see the module docstring.)

    The wrapped model is untouched: after `fit` it holds the trained
    weights and can be evaluated, saved and reloaded as a plain Keras model.
    One epoch of `fit` is one RSO cycle (every searched scalar tried once);
    the data are repeated as needed and `steps_per_epoch` is computed for
    you.

    Args:
        model: Any Keras model (Sequential, functional or subclassed).
        variables: Which weights to search. `None` (default) searches all
            of `model.trainable_variables` (kernels, biases, BatchNorm
            gamma/beta). Otherwise a list of variables or variable paths
            (`variable.path`), or a predicate `fn(variable) -> bool`.
            Non-trainable variables are never searched.
        fast_path: Re-run only what a weight can change, in every
            `RSO(order=...)`: the layer-chain evaluator when the model is a
            chain, the graph evaluator (`keras_rso.evaluators.graph`) when it
            is a functional graph that branches and merges (residual
            networks), each layer called once. `False` forces a full
            forward pass per candidate; the weights come out the same.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    ```python
    model = keras_rso.models.mnist_paper_net()
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=16, seed=0),
                    loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    trainer.fit(x_train, y_train, batch_size=256, epochs=5,
                callbacks=[keras_rso.callbacks.SigmaAnnealing(0.1)])
    model.save("mnist.keras")  # a plain Keras model
    ```
    """

    def __init__(self, model: keras.Model, variables: VariableSpec = None,
                 fast_path: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, keras.layers.Layer):
            raise TypeError(
                f"RSOModel wraps a Keras model; received {type(model).__name__}.")
        self.model = model
        self.variable_spec = variables
        self.fast_path = bool(fast_path)
        self._flat_biases_warned = False  # see `_warn_flat_biases`
        self.accept_rate_tracker = AcceptRate()
        # Batches of the repeated training stream to skip at the next fit
        # start; not a Keras variable, so it is never saved.
        self._data_offset = tf.Variable(0, dtype=tf.int64, trainable=False)
        # Steps of an interrupted epoch still to replay without trials (set
        # by `CycleKeeper.on_train_begin`); not saved either.
        self._replay_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._pool = None  # a `LayerInputPool` under `RSO(pool_size=...)`
        self._sampling = None  # a `LossSampling` that draws each step's batch
        # One bool per trainable variable, made by the first `freeze`; not a
        # Keras variable, so never saved (`FreezeAfter` sets it every cycle).
        self._frozen = None
        if model.built:
            self._check_trainable()

    # ------------------------------------------------------------ structure
    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def _check_trainable(self):
        if not self.model.trainable_variables:
            raise ValueError(
                f"Model '{self.model.name}' has no trainable weights, so RSO "
                "has nothing to search. Check `layer.trainable` and that the "
                "model has layers with weights.")

    def searched_variables(self) -> List[keras.Variable]:
        """The variables RSO searches, in the model's (input-to-output) order."""
        all_vars = list(self.model.trainable_variables)
        spec = self.variable_spec
        chosen = all_vars if spec is None else _select(
            all_vars, spec, "`variables`", f"trainable weights of '{self.model.name}'")
        if not chosen:
            raise ValueError(
                "No variable is selected for RSO: the `variables` option "
                "matches none of the model's trainable weights.")
        return chosen

    def freeze(self, variables: VariableSpec = ()) -> None:
        """Skips the trials of `variables` from the next step on, until the
        next call; `freeze()` searches everything again.

        A frozen variable keeps its value. Its trials keep their places in
        the cycle and their numbers, so every other weight is tried on the
        same batch with the same perturbation as without the freeze; a step
        whose trials are all frozen still runs its base pass (and under
        `RSO(pool_size=...)` a frozen layer's segment still fills its pool).
        Counters and accept rates count only the trials made. For a
        schedule by cycle, see `keras_rso.callbacks.FreezeAfter`.

        Args:
            variables: Searched variables, as `RSOModel(variables=...)`
                takes them: a list of variables or variable paths, or a
                predicate `fn(variable) -> bool`. An empty list (default)
                freezes nothing.

        Raises:
            ValueError: if the model is not built yet, if `variables` names
                a variable that is not searched, or if it would freeze every
                searched variable.

        Example:

        ```python
        trainer.freeze(lambda v: v.path.startswith("rso_mnist_net/block1_"))
        ```
        """
        if not self.built or not self.model.built:
            raise ValueError(
                "`freeze` needs a built model: call it after the model has run "
                "once (a callback's `on_train_begin` is late enough).")
        searched = self.searched_variables()
        frozen = _select(searched, variables, "`freeze`", "searched variables")
        if len(frozen) == len(searched):
            raise ValueError(
                f"`freeze` would freeze every searched variable ({len(searched)}), "
                "leaving RSO nothing to try. Freeze fewer, or stop training.")
        ids = {id(v) for v in frozen}
        mask = np.array([id(v) in ids for v in self.trainable_variables])
        if self._frozen is None:
            with self.distribute_strategy.scope():
                self._frozen = tf.Variable(mask, trainable=False, name="rso_frozen")
            if self.train_function is not None:
                # The step was traced without the mask: trace it again.
                self.make_train_function(force=True)
        else:
            self._frozen.assign(mask)

    def _plan(self) -> Tuple[object, CycleSchedule]:
        """Chooses an evaluator and plans the cycle (Python only)."""
        self._check_trainable()
        all_vars = list(self.trainable_variables)
        index = self._searched_index()
        opt = self.optimizer
        # Weight regularizers must see each candidate's value: only the full
        # forward path evaluates the loss with the candidate substituted.
        regularized = bool(self.model.losses)
        chain = chain_layers(self.model)
        self._warn_flat_biases(chain, [all_vars[i] for i in index])
        layers = chain if self.fast_path and not regularized else None
        nodes = (graph_nodes(self.model) if self.fast_path and not regularized
                 and chain is None else None)
        if layers is not None and ChainEvaluator.supports(all_vars, layers):
            ev = ChainEvaluator(layers, all_vars, self._loss_fn)
        elif GraphEvaluator.supports(all_vars, nodes):
            ev = GraphEvaluator(nodes, all_vars, self._loss_fn)
        else:
            ev = FullForwardEvaluator(self.model, all_vars, self._loss_fn)
        owners = self._owner_layers()
        layer_ids = self._layer_ids(owners)
        visit = schedule.visit_order(opt.order, index, owners, all_vars,
                                     ev.layer_of if ev.fast else None)
        visit += schedule.output_pass_visits(visit, layer_ids, opt.output_passes)
        # The output passes start on a fresh batch.
        breaks = schedule.cycle_parts(all_vars, index, layer_ids, opt.output_passes)[:-1]
        if opt.pool_size is not None:
            if not isinstance(ev, (ChainEvaluator, GraphEvaluator)):
                raise ValueError(
                    "RSO(pool_size=...) needs the fast path: a Sequential or "
                    "functional model (chains and graphs that branch and merge, "
                    "such as residual networks), without weight regularizers, and "
                    f"`RSOModel(fast_path=True)`; the trials of '{self.model.name}' "
                    "run whole forward passes, which have no layer input to pool. "
                    "Use pool_size=None.")
            # No step spans two segments: each draws from one anchor's pool.
            breaks = sorted(set(breaks) | {g.start for g in pool_segments(ev, visit)[1:]})
        return ev, CycleSchedule(all_vars, visit, opt, breaks,
                                 layer_of=getattr(ev, "layer_of", None))

    def _warn_flat_biases(self, chain, searched) -> None:
        """Warns, once per model, about searched biases the next BN removes."""
        if chain is None or self._flat_biases_warned:
            return
        ids = {id(v) for v in searched}
        flat = [v.path for v in flat_biases(chain) if id(v) in ids]
        if flat:
            self._flat_biases_warned = True
            warnings.warn(
                f"RSO searches {flat}, but the BatchNormalization after each "
                "of these layers subtracts the bias again in training mode: "
                "the loss does not depend on them, so their trials only cost "
                "time. Build those layers with `use_bias=False`, or leave the "
                "biases out with `RSOModel(variables=...)`.", stacklevel=3)

    def _initialize_sigmas(self) -> None:
        """Measures the search's sigmas from the current weights
        (`RSO.initialize_sigmas`), finding each variable's layer once."""
        owners = self._owner_layers()
        self.optimizer.initialize_sigmas(
            self.trainable_variables, self._layer_ids(owners),
            [isinstance(layer, keras.layers.BatchNormalization) for layer in owners])

    def _searched_index(self) -> List[int]:
        """Positions of the searched variables in `trainable_variables`."""
        searched = {id(v) for v in self.searched_variables()}
        return [i for i, v in enumerate(self.trainable_variables) if id(v) in searched]

    def _owner_layers(self) -> List[Optional[keras.layers.Layer]]:
        """For each trainable variable, the layer that owns it, or None."""
        return owner_layers(self.model, self.trainable_variables)

    def _layer_ids(self, owners: Optional[list] = None) -> List[int]:
        """For each trainable variable, an id of the layer that owns it
        (from `owners`, `_owner_layers()`'s result, when the caller has it)."""
        owners = self._owner_layers() if owners is None else owners
        return [i if layer is None else id(layer) for i, layer in enumerate(owners)]

    def visit_schedule(self, cycle: int = 0) -> List[tuple]:
        """The `(variable path, flat index)` of every trial of a cycle, in order.

        Computed by the same code that drives the traced train step; the
        model and optimizer must be built (after `fit`, or `build`).
        """
        return self._trial_targets(cycle, range(self.trials_per_cycle))

    def _trial_targets(self, cycle: int, trials) -> List[tuple]:
        """`(variable path, flat index)` of the given trials of a cycle."""
        evaluator, plan = self._plan()
        slots, flat = (t.numpy() for t in plan.trials(cycle))
        return [(evaluator.variables[plan.visit[slots[t]]].path, int(flat[t])) for t in trials]

    def _cycle_parts(self) -> List[int]:
        """Trials in each part of a cycle that starts on a fresh batch
        (`schedule.cycle_parts`); needs no evaluator."""
        return schedule.cycle_parts(self.trainable_variables, self._searched_index(),
                                    self._layer_ids(), self.optimizer.output_passes)

    @property
    def trials_per_cycle(self) -> int:
        """Number of weight trials in one cycle: every searched scalar once,
        plus the output layer's scalars once per `RSO(output_passes=...)`."""
        return sum(self._cycle_parts())

    def steps_per_cycle(self) -> int:
        """Train steps (mini-batches) per cycle: ceil(trials / K), per part
        of the cycle that starts on a fresh batch, plus, under
        `RSO(pool_size=...)`, the steps that fill each segment's pool."""
        k = self.optimizer.weights_per_batch
        if self.optimizer.pool_size is None:
            parts = self._cycle_parts()
            return schedule.count_steps([0] + list(np.cumsum(parts)), k)
        if self._pool is None:
            raise ValueError(
                "Under RSO(pool_size=...) the steps per cycle depend on the "
                "batch size; they are known once `fit` has started.")
        ev, plan = self._plan()
        return plan.trial_steps() + self._pool.fill_steps * len(pool_segments(ev, plan.visit))

    def _build_pool(self, batch) -> None:
        """Creates the layer-input pool for `RSO(pool_size=...)` (eager)."""
        opt = self.optimizer
        if opt.pool_size is None:
            return
        if _compat.num_workers(self.distribute_strategy) > 1:
            raise ValueError(
                "RSO(pool_size=...) serves the replicas of one worker process "
                "(e.g. MirroredStrategy), each holding the whole pool; it is not "
                "built for multi-worker strategies. Use pool_size=None there.")
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        if sample_weight is not None:
            raise ValueError(
                "RSO(pool_size=...) does not support sample weights or "
                "`class_weight`: the pool stores inputs and targets only.")
        if not isinstance(x, (tf.Tensor, np.ndarray)) or not isinstance(
                y, (tf.Tensor, np.ndarray)):
            raise ValueError(
                "RSO(pool_size=...) needs one input tensor and one target "
                f"tensor per batch; received {type(x).__name__} and "
                f"{type(y).__name__}.")
        ev, plan = self._plan()
        anchors = [g.anchor for g in pool_segments(ev, plan.visit)]
        if self._pool is not None and self._pool.size == opt.pool_size and set(
                self._pool.anchors) == set(anchors):
            return
        with self.distribute_strategy.scope():  # one pool per replica
            self._pool = LayerInputPool(ev, anchors, opt.pool_size,
                                        int(tf.shape(x)[0]), x, y)

    def _check_step_memory(self, batch) -> None:
        """Refuses a batch too large for the memory left (`keras_rso.memory`)."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
        ev, _ = self._plan()
        # Under a pool a step caches from its segment's anchor on (the
        # widest from the first anchor); without one, from the input.
        start = min(self._pool.anchors) if self._pool is not None else 0
        # Under a multi-worker strategy each process holds its share of the batch.
        rows = int(tf.shape(tf.nest.flatten(x)[0])[0])
        check_step_memory(ev, -(-rows // _compat.num_workers(self.distribute_strategy)), start)

    # ------------------------------------------------------------- compile
    def compile(self, optimizer: Union[RSO, str, dict, None] = None, **kwargs):
        """Configures the model for RSO training.

        Args:
            optimizer: An `RSO` instance, `"rso"`, an `RSO` config dict, or
                `None` for `RSO()` with defaults. Gradient optimizers are
                rejected: RSO computes no gradient.
            **kwargs: Everything `keras.Model.compile` takes (`loss`,
                `metrics`, `steps_per_execution`, ...).
        """
        if optimizer is None or (isinstance(optimizer, str) and optimizer.lower() == "rso"):
            optimizer = RSO()
        elif isinstance(optimizer, dict):
            optimizer = keras.optimizers.deserialize(optimizer)
        if not isinstance(optimizer, RSO):
            raise TypeError(
                "RSOModel trains without gradients and needs "
                "`optimizer=keras_rso.RSO(...)`; received "
                f"{optimizer!r}. To train with a gradient optimizer, compile "
                "and fit the wrapped model itself.")
        if kwargs.get("loss") is None:
            raise ValueError(
                "RSOModel.compile needs a `loss`: RSO keeps the candidate "
                "with the lowest loss.")
        if kwargs.get("auto_scale_loss"):
            raise ValueError(
                "RSOModel.compile got `auto_scale_loss=True`: loss scaling "
                "keeps float16 gradients from underflowing, and RSO computes "
                "no gradient. Leave it out; under a `mixed_float16` policy "
                "RSO compares the candidates' losses as they are.")
        # Under a `mixed_float16` policy Keras would wrap the optimizer in a
        # `LossScaleOptimizer`, which has nothing to scale here.
        kwargs["auto_scale_loss"] = False
        super().compile(optimizer=optimizer, **kwargs)
        if not getattr(self.model, "compiled", False) and isinstance(self.model, keras.Model):
            # So that `model.evaluate(...)` works on the plain model after
            # training, as it would after a gradient `fit`; no optimizer, so
            # the saved model needs no keras_rso to load.
            self.model.compile(
                optimizer=None, loss=kwargs.get("loss"),
                metrics=_copy_metrics(kwargs.get("metrics")),
                weighted_metrics=_copy_metrics(kwargs.get("weighted_metrics")))
            # Keras (3.15) cannot reload a model compiled with
            # `optimizer=None`: `compile_from_config` then calls
            # `None.build(...)`. Drop the compile config, so the saved plain
            # model reloads anywhere (uncompiled, like any model saved
            # before `compile`).
            _compat.drop_compile_config(self.model)

    def compile_from_config(self, config: dict) -> None:
        """Re-compiles from `get_compile_config()` (used by `load_model`)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _loss_fn(self, y, y_pred, sample_weight):
        return self.compute_loss(x=None, y=y, y_pred=y_pred,
                                 sample_weight=sample_weight, training=True)

    def _attach_sampling(self, sampling) -> None:
        """Makes `sampling` (a `keras_rso.sampling.LossSampling`, or None)
        draw each step's batch; the train step is traced again when it
        changes."""
        if sampling is not None:
            if self.optimizer is not None and getattr(self.optimizer, "pool_size", None):
                raise ValueError("LossSampling draws each step's batch itself and does not "
                                 "combine with a layer-input pool (RSO(pool_size=...)).")
            replicas = self.distribute_strategy.num_replicas_in_sync
            if sampling.batch_size % replicas:
                raise ValueError(f"LossSampling's batch_size ({sampling.batch_size}) must "
                                 f"split evenly over the strategy's {replicas} replicas.")
            if len(self.model.inputs or [None]) != 1:
                raise ValueError(f"LossSampling draws batches for a model with one input; "
                                 f"{self.model.name} has {len(self.model.inputs)}.")
        if sampling is not self._sampling:
            self._sampling = sampling
            self.train_function = None

    # ---------------------------------------------------------- train step
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self._sampling is not None:
            # The stream's batch only sets the step's rows; the step draws
            # its own, by its count, so that a draw never runs ahead of the
            # probabilities it should use.
            x, y, sample_weight = self._sampling.draw(self.optimizer.iterations,
                                                      tf.shape(x)[0])
        evaluator, plan = self._plan()
        result = TrialLoop(self.optimizer, evaluator, plan, replay_steps=self._replay_steps,
                           pool=self._pool, frozen=self._frozen)(x, y, sample_weight)
        # The predictions are for the targets the step returns: under a
        # layer-input pool, the batch drawn from the pool; in a replayed
        # step, one row of the batch.
        y, sample_weight = result.targets, result.sample_weight
        batch = tf.shape(tf.nest.flatten(result.y_pred)[0])[0]
        # A step that a resumed fit replays (see `CycleKeeper`) evaluates
        # the restored weights on a batch the interrupted epoch had already
        # used; it must not count in the epoch's loss and metrics. Metrics
        # compiled with `metrics=` ignore sample weights, so instead every
        # metric variable is put back to its value before the step.
        compiled = _compat.compiled_metrics(self)
        if compiled is not None and not compiled.built:
            # Keras builds them lazily on first update (without a strategy):
            # build now, so that their variables are among those restored.
            compiled.build(y, result.y_pred)
        metric_vars = [v for m in self.metrics for v in m.variables]
        before = [tf.identity(v.value) for v in metric_vars]
        # `result.loss` is already the global batch's loss (summed over
        # replicas of Keras' replica-scaled losses); the tracker sums its
        # weight over replicas, so each replica adds it with its share.
        with tf.control_dependencies(before):
            _compat.loss_tracker(self).update_state(result.loss, sample_weight=batch)
            self.compute_metrics(x, y, result.y_pred, sample_weight)
        for v, old in zip(metric_vars, before):
            # Outside control flow, so it also runs per replica.
            v.assign(tf.where(result.replayed, old, v.value))
        logs = self.get_metrics_result()
        self.accept_rate_tracker.update_state(result.accepted, result.trials)
        opt = self.optimizer
        logs["accept_rate"] = self.accept_rate_tracker.result()
        logs["sigma_scale"] = tf.convert_to_tensor(opt.sigma_scale)
        logs["weight_updates"] = tf.cast(tf.convert_to_tensor(opt.weight_updates), tf.float32)
        logs["trials"] = tf.cast(tf.convert_to_tensor(opt.trials), tf.float32)
        return _reducible(logs)

    def test_step(self, data):
        logs = super().test_step(data)
        logs.pop(self.accept_rate_tracker.name, None)  # a training-only figure
        return _reducible(logs)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=force)
        compiled = self.train_function

        def train_function(iterator):
            logs = compiled(iterator)
            self._raise_if_nonfinite()
            return logs

        self.train_function = train_function
        return train_function

    def _raise_if_nonfinite(self):
        opt = self.optimizer
        found = opt.take_nonfinite()
        if found is None:
            return
        step, inputs = found
        total = self.trials_per_cycle
        pos = int(opt.position.numpy())
        cycle = int(opt.cycle.numpy())
        nxt, _ = self._trial_targets(cycle, [min(pos, total - 1)])[0]
        raise NonFiniteLossError.at(step, cycle, pos, total, nxt, inputs=inputs)

    # ------------------------------------------------------------------ fit
    def _ensure_ready(self, data_batch):
        if not self.compiled or self.optimizer is None:
            raise ValueError(
                "You must call `compile(optimizer=keras_rso.RSO(...), loss=...)` "
                "before `fit`.")
        if not self.built or not self.model.built:
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data_batch)
            self(x, training=False)
        self._check_trainable()
        self.searched_variables()
        if not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto",
            callbacks=None, validation_split=0.0, validation_data=None,
            shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1):
        """Trains with RSO; one epoch is one cycle over all searched weights.

        Takes the arguments of `keras.Model.fit`. The training data are
        repeated (and reshuffled each pass, when `shuffle=True`) as often as
        a cycle needs. Leave `steps_per_epoch=None` to get exactly one cycle
        per epoch; an explicit value makes epochs and cycles independent.

        A `keras.callbacks.BackupAndRestore` among `callbacks` resumes an
        interrupted fit exactly, from its last epoch or (`save_freq=<steps>`)
        step. One that keeps its backup (`delete_checkpoint=False`) is also
        written when the fit has run all its epochs, so a following fit of
        the same run (`initial_epoch=...`, say with another batch size)
        starts exactly where this one ended.

        A search that has never run, given `initial_epoch=N`, starts at
        cycle N (for example to go on from the weights of an earlier run,
        loaded with `load_weights`): the SigmaAnnealing schedule and the
        random order's permutation are cycle N's. Only the weights carry
        over; sigma is measured again and the rest of the search state
        (SigmaBalancing's factors, counters) starts afresh, so this is a
        warm start, not the exact resume BackupAndRestore gives.
        """
        if validation_split and validation_data is None:
            (x, y, sample_weight), validation_data = _compat.train_validation_split(
                (x, y, sample_weight), validation_split)
        adapter = _compat.data_adapter(
            x, y, sample_weight, batch_size=batch_size,
            shuffle=False if isinstance(x, tf.data.Dataset) else shuffle,
            class_weight=class_weight)
        if _compat.is_rewindable(adapter):
            base = adapter.get_tf_dataset().repeat()
            # The stream resumes where the training state says it stopped:
            # `CycleKeeper.on_train_begin` sets the offset to the number of
            # steps already taken (restored by BackupAndRestore), and the
            # iterator, created after that, skips them. A resumed fit thus
            # sees the same batches as an uninterrupted one.
            offset = self._data_offset
            dataset = tf.data.Dataset.range(1).flat_map(
                lambda _: base.skip(offset.read_value()))
        else:
            # A Python generator cannot be rewound: it must yield enough
            # batches for the epochs asked for (as with `keras.Model.fit`).
            dataset = x
        first = None
        if dataset is not x or not self.built or not self.model.built:
            # One batch to build from (and for `_maybe_symbolic_build`); the
            # adapter's own dataset, not the stream above, whose iterator
            # would first skip every batch a resumed fit has consumed.
            first = next(iter(adapter.get_tf_dataset()))
            first = first if isinstance(first, tuple) else (first,)
        self._ensure_ready(first if not (self.built and self.model.built) else None)
        if self.optimizer.pool_size is not None:
            if first is None:
                first = next(iter(adapter.get_tf_dataset()))
                first = first if isinstance(first, tuple) else (first,)
            self._build_pool(first)
        if first is not None:
            self._check_step_memory(first)  # after the pool took its memory
        self._build_batch = first
        epochs_are_cycles = steps_per_epoch is None
        if steps_per_epoch is None:
            steps_per_epoch = self.steps_per_cycle()
        callbacks = list(callbacks or [])
        backups = [c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore)]
        callbacks = [EpochMark()] + callbacks + [CycleKeeper(backups, epochs_are_cycles)]
        return super().fit(
            dataset, epochs=epochs, verbose=verbose, callbacks=callbacks,
            shuffle=False,  # the repeated dataset already reshuffles
            validation_data=validation_data, initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
            validation_batch_size=validation_batch_size,
            validation_freq=validation_freq)

    # --------------------------------------------------------------- config
    def get_config(self) -> dict:
        spec = self.variable_spec
        if callable(spec):
            raise ValueError(
                "An RSOModel built with a callable `variables` cannot be "
                "serialized; pass a list of variable paths instead, or save "
                "the wrapped model (`trainer.model.save(...)`).")
        if spec is not None:
            spec = [v if isinstance(v, str) else v.path for v in spec]
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "variables": spec,
            "fast_path": self.fast_path,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "RSOModel":
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects)
        return cls(model, **config)
