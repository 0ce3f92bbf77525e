"""The `RSO` optimizer: hyperparameters and state of random search optimization.

RSO (Tripathi & Singh, 2020, arXiv:2005.05955) trains a network without
gradients: each scalar weight in turn is perturbed by `dw ~ N(0, sigma)`, and
the best of `{w + dw, w, w - dw}` under the loss on a mini-batch is kept.

`RSO` plays the part of a gradient optimizer in `compile()`: it carries the
hyperparameters and every piece of state the search needs (position in the
cycle, per-variable sigma, sigma scale, counters). All of that state lives in
Keras variables, so it is saved with the model's training state and restored
by `keras.callbacks.BackupAndRestore`. The search itself runs in
`keras_rso.RSOModel.train_step`; `RSO` never sees a gradient.

Why this module is long: `RSO` documents every hyperparameter (as Keras'
optimizers do) and owns every piece of search state, with the methods
through which all other modules change it.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_rso import distribution

ORDERS = ("output_to_input", "input_to_output", "random", "paper")
STEP_RULES = ("argmin", "parabolic", "vertex")
SIGMA_RULES = ("std", "he")
KERNEL_ORDERS = ("keras", "paper")


@keras.saving.register_keras_serializable(package="keras_rso")
class RSO(keras.optimizers.Optimizer):
    """Random search optimization, in place of a gradient optimizer.

    One *cycle* tries every searched scalar exactly once. `RSOModel.fit`
    makes one epoch equal one cycle.

    Args:
        weights_per_batch: Number of consecutive weight trials that share one
            mini-batch (`K`). `1` is the paper's setting (a fresh batch for
            every weight); larger values amortise the cost of the base
            forward pass over `K` trials (docs/results.md, "Trials per
            batch (K)", compares them).
        seed: Integer seed of the perturbation stream. Draws are stateless
            and keyed on `(seed, trial number)`, so a run is reproducible and
            identical on every replica.
        order: Order in which a cycle visits the weights:
            `"output_to_input"` (the paper's order), `"input_to_output"`,
            `"random"` (a fresh permutation of all scalars each cycle), or
            `"paper"`: the authors' code, which also runs from the output
            to the input but visits a convolution's kernel *before* the
            BatchNormalization that follows it (kernel, beta, gamma), where
            `"output_to_input"` reverses the model's variable order (beta,
            gamma, kernel).
            The order runs from one mini-batch to the next; the
            `weights_per_batch` trials that share a batch always run from
            the output side first, which keeps the fast chain evaluator
            exact (for the paper's order the two coincide; for
            `"input_to_output"` they differ only in a batch that straddles
            two layers).
        zero_std_sigma: Sigma used for a variable whose standard deviation
            is zero when training starts (a zero-initialised bias, a
            BatchNormalization `gamma`/`beta`). `None` (default) takes the
            largest sigma of the other variables in the same layer (for a
            bias, its kernel's), or, where the layer has none, the median
            sigma of all variables with non-zero std. A float sets it
            explicitly.
        sigma_scale: Initial multiplier applied to every sigma. The
            `keras_rso.callbacks.SigmaAnnealing` callback changes it per
            epoch.
        remeasure_sigma: If False (default, the paper), each variable's
            sigma is its standard deviation measured once, when training
            starts. If True, it is measured again from the current weights
            at the start of every cycle. Behind BatchNormalization a
            kernel's scale does not change the function, and accepted
            steps make kernels grow, so a fixed sigma becomes an ever
            smaller step relative to the kernel; re-measuring keeps sigma
            proportional to the weights. Per-variable factors that
            `keras_rso.callbacks.SigmaBalancing` set (`sigma_factors`) are
            kept: sigma becomes the new std times the factor. On MNIST it
            ended 5 cycles 0.4 points below a fixed sigma, with and without
            balancing: the kernels' growth anneals the relative step, and
            that helps (docs/results.md). Departs from the paper.
        bn_refresh: If True (default), the last step of every cycle sets
            each BatchNormalization layer's moving mean and variance to the
            statistics of that step's batch under the final weights. RSO
            changes early layers last in a cycle, and each such change
            shifts every later layer's statistics, so the usual moving
            average lags far behind the weights (docs/results.md,
            "BatchNorm statistics"). Between refreshes the moving averages are
            updated once per batch as usual.
        output_passes: Extra passes over the output layer's weights at the
            end of every cycle, after the sweep that visits every weight
            once. `0` (default) is the paper's cycle. The output layer is
            the layer that owns the last searched variable (the `Dense`
            classifier of the paper's networks). It is searched first in
            the paper's order, before the layers below it have settled,
            and it has few weights (docs/results.md, "A second seed, and
            output passes", measures it). Its trials are cheap (only the last layer
            and the loss run), so a few passes cost little. The passes
            start on a fresh mini-batch. Departs from the paper.
        step_rule: How a trial picks the new weight. `"argmin"` (default,
            the paper) keeps the best of `w - dw`, `w`, `w + dw`.
            `"parabolic"` also tries the vertex `w + t` of the parabola
            through those three losses (and its mirror `w - t`; `|t|` at
            most `2 |dw|`) and keeps the best of the five, so a trial moves
            the weight to where the loss along it is lowest rather than to
            one of the random points. It evaluates twice as many
            candidates per trial. `"vertex"`: the parabolic step without
            the mirror, the best of `w - dw`, `w`, `w + dw` and `w + t`;
            where the evaluator can run one candidate alone (a kernel on
            the fast path) that is three candidate evaluations per trial
            instead of four (elsewhere the mirror is evaluated and never
            taken, so every path makes the same choice). Both depart from
            the paper.
        sigma_rule: How each variable's sigma is set when training starts.
            `"std"` (default): its measured standard deviation (see
            `zero_std_sigma` for zero-std variables). `"he"`, the authors'
            code: a kernel (2 or more axes) gets the He std of its layer,
            sqrt(2 / fan_in) with fan_in the product of all but its last
            axis; a BatchNormalization gamma or beta gets
            `batchnorm_sigma`; anything else falls back to `"std"`.
        batchnorm_sigma: Sigma of BatchNormalization gamma and beta under
            `sigma_rule="he"` (the authors' 0.167).
        sigma_overrides: Starting sigmas of named variables, `{variable
            path: sigma}`, in place of what `sigma_rule` gives them (the
            sigma scale and `SigmaBalancing`'s factors still apply). For
            the authors' residual CIFAR-10 net, whose code searches the 1x1
            shortcut with the sigma of the 3x3 convolution it joins,
            `keras_rso.models.paper_sigmas(model)` gives the entries.
            A path that names none of the model's trainable variables is an
            error when training starts. `None` (default): none.
        weight_decay: Per-trial weight decay: before its trial, the weight is
            multiplied by `1 - weight_decay`, the candidates are built around
            that decayed value, and the decay stays even when both
            perturbations are rejected (the authors' code, with 1e-4). It
            costs one more evaluation per trial. `0.0` (default): none.
        kernel_order: Order of a trial's scalars inside a kernel. `"keras"`
            (default): Keras' memory order (for a Conv2D kernel: row,
            column, input channel, output channel, the last fastest).
            `"paper"`: the authors' order: output channel, then input
            channel, then row, then column (a Dense kernel: for each output
            unit, all of its inputs).
        tolerance: Relative improvement a candidate needs to replace the
            current weight: it is kept only if its loss is below
            `loss(w) * (1 - tolerance)`. `0.0` (default) is the paper's
            argmin. A weight that does not affect the loss (e.g. into a dead
            ReLU) gives "improvements" made of float32 rounding; `1e-6`
            ignores those, which also makes a run under `tf.distribute`
            take the same decisions as on one device (the global loss is
            then summed in a different order).
        ties: What a candidate whose loss equals the current weight's gets.
            `"keep"` (default, the paper): `w` stays. `"move"` (not in the
            paper): the candidate is taken, so the search walks across a
            plateau instead of freezing on it: for a loss that is flat
            almost everywhere (a step activation, binary weights, a
            count-based objective). Ties between the two candidates go to
            `w + dw` either way.
        pool_size: `None` (default): each step's trials see that step's
            mini-batch from the data. An int `P`: the layer-input pool of
            the authors' code (`keras_rso.pool`). When the search reaches
            a layer, that layer's input is computed once for `P` training
            samples taken from the data (the first `ceil(P / batch)` steps
            of the layer's pass do only that), and every later step draws
            a fresh batch of the fit's batch size from the pool and runs
            the network from that layer on. It needs the fast path (a
            chain, or a functional graph that branches and merges, such as
            a residual net, whose pool then also holds every skip that
            crosses the layer), an order that visits one layer
            after another (`"paper"`, `"output_to_input"` or
            `"input_to_output"`) and no sample weights. Under
            `MirroredStrategy` every replica holds the whole pool (a fill
            step gathers the global batch) and draws its shard of each
            pooled batch, which makes the one-device decisions;
            multi-worker strategies are not supported. Memory: `P` times
            the widest searched layer's input (plus its skips, in a
            residual net), in float32, per replica.
        name: Optimizer name.

    Example:

    ```python
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=16, seed=0),
                    loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    trainer.fit(x, y, batch_size=256, epochs=5)
    ```
    """

    # Variables that later versions appended to `build`, oldest first; see
    # `load_own_variables`.
    _ADDED_LATER = ("nonfinite_inputs", "sigma_factors", "pool_fills")

    def __init__(
        self,
        weights_per_batch: int = 16,
        seed: int = 0,
        order: str = "output_to_input",
        zero_std_sigma: Optional[float] = None,
        sigma_scale: float = 1.0,
        remeasure_sigma: bool = False,
        bn_refresh: bool = True,
        tolerance: float = 0.0,
        ties: str = "keep",
        output_passes: int = 0,
        step_rule: str = "argmin",
        sigma_rule: str = "std",
        batchnorm_sigma: float = 0.167,
        sigma_overrides: Optional[Dict[str, float]] = None,
        weight_decay: float = 0.0,
        kernel_order: str = "keras",
        pool_size: Optional[int] = None,
        name: str = "rso",
        **kwargs,
    ):
        # Gradient-optimizer knobs have no meaning here; keep them out.
        kwargs.pop("learning_rate", None)
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        if isinstance(weights_per_batch, bool) or not isinstance(
            weights_per_batch, (int, np.integer)
        ):
            raise TypeError(
                "`weights_per_batch` must be an int >= 1 (the number of "
                f"weight trials per mini-batch). Received: {weights_per_batch!r}"
            )
        if weights_per_batch < 1:
            raise ValueError(
                "`weights_per_batch` must be >= 1 (use 1 for the paper's "
                f"fresh batch per weight). Received: {weights_per_batch}"
            )
        if order not in ORDERS:
            raise ValueError(
                f"Unknown `order`={order!r}. Expected one of {ORDERS}."
            )
        if zero_std_sigma is not None and not (
            np.isfinite(zero_std_sigma) and zero_std_sigma > 0
        ):
            raise ValueError(
                "`zero_std_sigma` must be a positive finite float or None. "
                f"Received: {zero_std_sigma}"
            )
        if not (np.isfinite(sigma_scale) and sigma_scale > 0):
            raise ValueError(
                "`sigma_scale` must be a positive finite float. "
                f"Received: {sigma_scale}"
            )
        if not (np.isfinite(tolerance) and 0.0 <= tolerance < 1.0):
            raise ValueError(
                "`tolerance` must be a float in [0, 1) (a relative loss "
                f"improvement, e.g. 1e-6). Received: {tolerance}"
            )
        if ties not in ("keep", "move"):
            raise ValueError(
                "`ties` must be 'keep' (an equal-loss candidate leaves w) or "
                f"'move' (it is taken). Received: ties={ties!r}")
        if isinstance(output_passes, bool) or not isinstance(
            output_passes, (int, np.integer)):
            raise TypeError(
                "`output_passes` must be an int >= 0 (extra passes over the "
                f"output layer per cycle). Received: {output_passes!r}"
            )
        if output_passes < 0:
            raise ValueError(
                f"`output_passes` must be >= 0. Received: {output_passes}")
        if step_rule not in STEP_RULES:
            raise ValueError(
                f"`step_rule` must be one of {STEP_RULES}. Received: {step_rule!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"`seed` must be an int. Received: {seed!r}")
        if sigma_rule not in SIGMA_RULES:
            raise ValueError(
                f"`sigma_rule` must be one of {SIGMA_RULES}. Received: {sigma_rule!r}")
        if not (np.isfinite(batchnorm_sigma) and batchnorm_sigma > 0):
            raise ValueError(
                f"`batchnorm_sigma` must be a positive finite float. Received: {batchnorm_sigma}")
        overrides = dict(sigma_overrides or {})
        bad = {k: v for k, v in overrides.items()
               if not isinstance(k, str) or isinstance(v, bool)
               or not isinstance(v, (int, float, np.number)) or not (np.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(
                "`sigma_overrides` maps variable paths (str) to positive finite "
                f"sigmas. Received these entries that do not: {bad}")
        if not (np.isfinite(weight_decay) and 0.0 <= weight_decay < 1.0):
            raise ValueError(
                "`weight_decay` must be a float in [0, 1) (the fraction a weight "
                f"shrinks by before each trial, e.g. 1e-4). Received: {weight_decay}")
        if kernel_order not in KERNEL_ORDERS:
            raise ValueError(
                f"`kernel_order` must be one of {KERNEL_ORDERS}. Received: {kernel_order!r}")
        if pool_size is not None:
            if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)):
                raise TypeError(
                    "`pool_size` must be None or an int >= 1 (training samples "
                    f"whose layer input is cached). Received: {pool_size!r}")
            if pool_size < 1:
                raise ValueError(f"`pool_size` must be >= 1. Received: {pool_size}")
            if order == "random":
                raise ValueError(
                    "`pool_size` needs an order that finishes one layer before "
                    "the next (\"paper\", \"output_to_input\" or "
                    "\"input_to_output\"): the pool holds one layer's input, and "
                    "order=\"random\" moves between layers at every trial.")
        self.weights_per_batch = int(weights_per_batch)
        self.seed = int(seed)
        self.order = order
        self.zero_std_sigma = (
            None if zero_std_sigma is None else float(zero_std_sigma)
        )
        self.initial_sigma_scale = float(sigma_scale)
        self.remeasure_sigma = bool(remeasure_sigma)
        self.bn_refresh = bool(bn_refresh)
        self.tolerance = float(tolerance)
        self.ties = ties
        self.output_passes = int(output_passes)
        self.step_rule = step_rule
        self.sigma_rule = sigma_rule
        self.batchnorm_sigma = float(batchnorm_sigma)
        self.sigma_overrides = {k: float(v) for k, v in overrides.items()}
        self.weight_decay = float(weight_decay)
        self.kernel_order = kernel_order
        self.pool_size = None if pool_size is None else int(pool_size)

    @classmethod
    def paper(cls, **overrides) -> "RSO":
        """An `RSO` set up as the authors' code (`train.py` of
        rohun-tripathi/RSO-gradient-free) runs it.

        A fresh mini-batch for every weight (`weights_per_batch=1`; use
        batch 5,000 in `fit`), the paper's visiting order (`order="paper"`)
        and order inside a kernel (`kernel_order="paper"`), He-std sigmas
        for kernels and 0.167 for BatchNorm gamma/beta (`sigma_rule="he"`),
        per-trial weight decay 1e-4, ties keep the (decayed) weight. The
        rest of the authors' setup lives outside the optimizer: the loss,
        summed in float64 (`keras_rso.models.paper_loss()`), the sigma
        schedule (`keras_rso.callbacks.SigmaAnnealing(0.1, rule="paper",
        total_cycles=50)`) and the networks (`keras_rso.models.
        paper_mnist_net`, `paper_cifar10_net`). On `paper_cifar10_net`, also
        pass `sigma_overrides=keras_rso.models.paper_sigmas(model)`: the
        authors search its 1x1 shortcut with the sigma of the convolution it
        joins.

        Args:
            **overrides: Any `RSO` argument, replacing the preset's value.

        Returns:
            A new `RSO`.

        Example:

        ```python
        trainer = keras_rso.RSOModel(keras_rso.models.paper_mnist_net())
        trainer.compile(optimizer=keras_rso.RSO.paper(seed=0),
                        loss=keras_rso.models.paper_loss(), metrics=["accuracy"])
        trainer.fit(x, y, batch_size=5000, epochs=5, callbacks=[
            keras_rso.callbacks.SigmaAnnealing(0.1, rule="paper", total_cycles=50)])
        ```
        """
        preset = dict(weights_per_batch=1, order="paper", kernel_order="paper",
                      sigma_rule="he", batchnorm_sigma=0.167, weight_decay=1e-4,
                      tolerance=0.0, step_rule="argmin", output_passes=0,
                      remeasure_sigma=False)
        preset.update(overrides)
        return cls(**preset)

    # ------------------------------------------------------------------ state
    def build(self, variables: Sequence[keras.Variable]) -> None:
        """Creates the search state for `variables` (the searched weights).

        Args:
            variables: The model variables RSO will search, in the model's
                order (input to output).
        """
        if self.built:
            return
        super().build(variables)
        n = len(variables)
        int_kw = dict(dtype="int64", aggregation="only_first_replica")
        self.sigma_scale = self.add_variable(
            (), initializer=keras.initializers.Constant(self.initial_sigma_scale),
            dtype="float32", aggregation="only_first_replica", name="sigma_scale")
        # Per-variable sigma, measured once when training starts (see
        # `initialize_sigmas`); `sigmas_ready` tells whether that happened.
        self.sigmas = self.add_variable(
            (max(n, 1),), dtype="float32", aggregation="only_first_replica",
            name="sigmas")
        self.sigmas_ready = self.add_variable((), name="sigmas_ready", **int_kw)
        self.cycle = self.add_variable((), name="cycle", **int_kw)
        self.position = self.add_variable((), name="position", **int_kw)
        self.trials = self.add_variable((), name="trials", **int_kw)
        self.weight_updates = self.add_variable(
            (), name="weight_updates", **int_kw)
        self.trials_per_variable = self.add_variable(
            (max(n, 1),), name="trials_per_variable", **int_kw)
        self.updates_per_variable = self.add_variable(
            (max(n, 1),), name="updates_per_variable", **int_kw)
        # `iterations` when the current epoch began (set at each epoch's
        # end): a fit resumed from a mid-epoch backup replays, without
        # trials, the steps of that epoch it had already taken.
        self.epoch_start = self.add_variable((), name="epoch_start", **int_kw)
        # Set when a batch had non-finite inputs or a non-finite base loss;
        # the step that saw it (and every later one) leaves the weights
        # alone. `nonfinite_inputs` tells the two causes apart for the error.
        self.nonfinite_step = self.add_variable(
            (), initializer=keras.initializers.Constant(-1),
            name="nonfinite_step", **int_kw)
        self.nonfinite_inputs = self.add_variable(
            (), name="nonfinite_inputs", **int_kw)
        # Each variable's sigma as a multiple of its measured std
        # (`rescale_sigmas` multiplies it), so that `remeasure_sigma` can
        # measure the stds again and keep the factors.
        self.sigma_factors = self.add_variable(
            (max(n, 1),), initializer="ones", dtype="float32",
            aggregation="only_first_replica", name="sigma_factors")
        # Steps of the current segment that have filled the layer-input pool
        # (`pool_size`). The pool's contents are not saved: a resumed fit
        # refills it by replaying those steps.
        self.pool_fills = self.add_variable((), name="pool_fills", **int_kw)

    def initialize_sigmas(self, variables: Sequence[keras.Variable],
                          layer_of: Sequence[int],
                          batchnorm: Optional[Sequence[bool]] = None) -> np.ndarray:
        """Measures each variable's std: the sigmas of the search.

        Called when training starts, and at every cycle start with
        `remeasure_sigma=True`. Each sigma is the measured std (or the
        zero-std fallback) times the variable's `sigma_factors` entry.

        Args:
            variables: The searched variables (same order as `build`).
            layer_of: For each variable, an id of the layer that owns it,
                used for the zero-std fallback.
            batchnorm: For each variable, whether it is a
                BatchNormalization gamma or beta (`sigma_rule="he"`).

        Returns:
            The sigmas as a numpy array (before `sigma_factors`).
        """
        stds = np.array(
            [float(np.std(keras.ops.convert_to_numpy(v.value))) for v in variables],
            dtype=np.float64,
        )
        sigmas = stds.copy()
        nonzero = stds[stds > 0]
        # The sigmas that `sigma_rule` and `sigma_overrides` set (an override
        # wins). The others are the stds, with a fallback for a zero std,
        # which the ones set here do not need (a binary net whose kernels are
        # frozen searches only BatchNormalization's gamma and beta, all of
        # zero std at the start).
        ruled = {}
        if self.sigma_rule == "he":
            for i, v in enumerate(variables):
                if batchnorm is not None and batchnorm[i]:
                    ruled[i] = self.batchnorm_sigma
                elif len(v.shape) >= 2:
                    ruled[i] = np.sqrt(2.0 / np.prod(v.shape[:-1]))
        index = {v.path: i for i, v in enumerate(variables)}
        overrides = self.sigma_overrides or {}
        ruled.update({index[path]: sigma for path, sigma in overrides.items() if path in index})
        for i, s in enumerate(stds):
            if s > 0 or i in ruled:
                continue
            if self.zero_std_sigma is not None:
                sigmas[i] = self.zero_std_sigma
                continue
            same_layer = [stds[k] for k in range(len(stds))
                          if layer_of[k] == layer_of[i] and stds[k] > 0]
            if same_layer:
                sigmas[i] = max(same_layer)
            elif nonzero.size:
                sigmas[i] = float(np.median(nonzero))
            else:
                raise ValueError(
                    "Every searched variable has zero standard deviation, so "
                    "RSO cannot derive a perturbation scale. Pass "
                    "`RSO(zero_std_sigma=...)` or initialise the weights "
                    "randomly (the paper uses He-normal)."
                )
        unknown = sorted(set(overrides) - set(index))
        if unknown:
            raise ValueError(
                f"`sigma_overrides` names {unknown}, which are not trainable "
                f"variables of the model. Its variables are: {sorted(index)}")
        for i, sigma in ruled.items():
            sigmas[i] = sigma
        factors = self.sigma_factors.numpy()[:len(sigmas)]
        self.sigmas.assign((sigmas * factors).astype(np.float32))
        self.sigmas_ready.assign(1)
        return sigmas

    def rescale_sigmas(self, factors: np.ndarray) -> None:
        """Multiplies each variable's sigma by its entry of `factors`.

        The factors are also kept in `sigma_factors`, so that
        `remeasure_sigma=True` applies them to the stds it measures next.
        Callbacks that change the sigmas (`SigmaBalancing`) go through here.

        Args:
            factors: One positive multiplier per searched variable.
        """
        factors = np.asarray(factors, dtype=np.float64)
        self.sigmas.assign((self.sigmas.numpy() * factors).astype(np.float32))
        self.sigma_factors.assign((self.sigma_factors.numpy() * factors).astype(np.float32))

    # -------------------------------------------------------- state changes
    # Every change to the search state goes through these methods; the
    # traced ones (`record_*`, `set_pool_fills`) write replica-locally, so
    # they are legal inside the trial loop on any replica.

    def set_sigma_scale(self, scale: float) -> None:
        """Sets the multiplier of every sigma (`SigmaAnnealing` calls it)."""
        self.sigma_scale.assign(scale)

    def start_next_cycle(self) -> None:
        """Moves the search to the first trial of the next cycle."""
        self.position.assign(0)
        self.pool_fills.assign(0)
        self.cycle.assign_add(1)

    def seek(self, trial: int) -> None:
        """Moves the search to trial `trial` of the current cycle (so that
        a benchmark can time one layer's trials)."""
        self.position.assign(trial)

    def mark_epoch_start(self, step: Optional[int] = None) -> None:
        """Records that the current epoch began at train step `step`
        (default: now), for the exact resume of an interrupted epoch."""
        self.epoch_start.assign(self.iterations if step is None else step)

    def take_nonfinite(self) -> Optional[tuple]:
        """`(train step, whether the inputs were at fault)` of the first
        batch with a non-finite loss or input since the last call, or None;
        clears the record, so that a later fit on clean data can go on."""
        step = int(self.nonfinite_step.numpy())
        if step < 0:
            return None
        inputs = bool(self.nonfinite_inputs.numpy())
        self.nonfinite_step.assign(-1)
        self.nonfinite_inputs.assign(0)
        return step, inputs

    def record_nonfinite(self, first_bad, bad_inputs) -> None:
        """Traced: notes the current step as the first non-finite one where
        `first_bad` holds, and whether `bad_inputs` caused it."""
        distribution.assign(self.nonfinite_step, tf.where(
            first_bad, tf.cast(tf.convert_to_tensor(self.iterations), tf.int64),
            tf.convert_to_tensor(self.nonfinite_step)))
        distribution.assign(self.nonfinite_inputs, tf.where(
            first_bad, tf.cast(bad_inputs, tf.int64),
            tf.convert_to_tensor(self.nonfinite_inputs)))

    def record_step(self, trials, accepted, tried_per_variable, accepted_per_variable,
                    replayed) -> None:
        """Traced: advances the cycle position by a step's `trials` and adds
        them and the `accepted` ones to the counters; a `replayed` step (a
        resumed fit's catch-up, with no trials) does not count as a step."""
        distribution.assign_add(self.position, trials)
        distribution.assign_add(self.trials, trials)
        distribution.assign_add(self.weight_updates, accepted)
        distribution.assign_add(self.trials_per_variable, tried_per_variable)
        distribution.assign_add(self.updates_per_variable, accepted_per_variable)
        distribution.assign_add(self.iterations, tf.where(
            replayed, tf.constant(0, tf.int64), tf.constant(1, tf.int64)))

    def set_pool_fills(self, value) -> None:
        """Traced: the steps of the current segment that filled the pool."""
        distribution.assign(self.pool_fills, value)

    def load_own_variables(self, store) -> None:
        """Restores the search state, also from files of earlier versions.

        Variables added in later versions are built last (`_ADDED_LATER`),
        so an older file holds a prefix of `variables`. Such a file restores
        everything it has and leaves the newer ones at their initial values:
        `nonfinite_inputs` is 0 (it is only set while a non-finite batch is
        being reported) and `sigma_factors` is 1 (older versions could not
        combine `SigmaBalancing` with `remeasure_sigma`, the only case that
        reads it), and `pool_fills` is 0 (older versions had no layer-input
        pool). Keras' default would skip every optimizer variable (with
        a warning), and a resumed fit would silently restart the search
        state: sigmas, cycle, position and counters.
        """
        missing = len(self.variables) - len(store.keys())
        if 0 < missing <= len(self._ADDED_LATER):
            for i, variable in enumerate(self.variables[:-missing]):
                variable.assign(store[str(i)])
            return
        super().load_own_variables(store)

    # ------------------------------------------------------ gradient API guard
    def update_step(self, gradient, variable, learning_rate):
        raise NotImplementedError(
            "RSO is gradient-free and does not apply gradients. Train with "
            "`keras_rso.RSOModel(model).compile(optimizer=keras_rso.RSO(...))`."
        )

    def apply(self, grads, trainable_variables=None):
        self.update_step(None, None, None)

    # --------------------------------------------------------------- config
    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "weights_per_batch": self.weights_per_batch,
            "seed": self.seed,
            "order": self.order,
            "zero_std_sigma": self.zero_std_sigma,
            "sigma_scale": self.initial_sigma_scale,
            "remeasure_sigma": self.remeasure_sigma,
            "bn_refresh": self.bn_refresh,
            "tolerance": self.tolerance,
            "ties": self.ties,
            "output_passes": self.output_passes,
            "step_rule": self.step_rule,
            "sigma_rule": self.sigma_rule,
            "batchnorm_sigma": self.batchnorm_sigma,
            "sigma_overrides": dict(self.sigma_overrides) or None,
            "weight_decay": self.weight_decay,
            "kernel_order": self.kernel_order,
            "pool_size": self.pool_size,
        })
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "RSO":
        return cls(**config)
