"""One RSO step: up to `weights_per_batch` weight trials on one mini-batch.

Everything here is traced into the train function: the position in the
cycle, the random draw and the accept/reject decision are tensors, and the
per-variable code is selected with `tf.switch_case`, so no Python runs per
weight.
"""


from typing import NamedTuple, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_rso import constraints, distribution
from keras_rso.evaluators import replace_scalar, split_offsets
from keras_rso.optimizer import RSO
from keras_rso.pool import anchor_of as pool_anchor_of
from keras_rso.pool import segments as pool_segments

KEEP = 0  # `choose` index of the current weight; candidate i is i + 1


class StepResult(NamedTuple):
    loss: tf.Tensor         # loss of the accepted weights on this batch
    y_pred: object          # predictions of the accepted weights
    trials: tf.Tensor       # trials made in this step
    accepted: tf.Tensor     # trials whose candidate was accepted
    replayed: tf.Tensor     # True for a step a resumed fit only replays
    targets: object = None  # the targets `y_pred` is for, if not the batch's


def choose(loss0, candidate_losses: Sequence, tolerance: float = 0.0,
           ties: str = "keep"):
    """Index of the weight to keep: `0` for `w`, `i + 1` for candidate `i`.

    A candidate must be strictly better than the current weight, by the
    relative `tolerance`, a candidate with a non-finite loss is never
    taken, and an earlier candidate wins a tie between candidates. A
    candidate that only ties with the current weight keeps `w` with
    `ties="keep"`, and is taken with `ties="move"` (a random walk across a
    plateau of the loss).
    """
    inf = tf.constant(np.inf, loss0.dtype)
    best_loss = (loss0 - tf.cast(tolerance, loss0.dtype) * tf.abs(loss0)
                 if tolerance else loss0)
    best = tf.constant(KEEP, tf.int32)
    for i, loss in enumerate(candidate_losses):
        loss = tf.where(tf.math.is_finite(loss), loss, inf)
        better = loss < best_loss
        if ties == "move":
            better = tf.logical_or(better, tf.logical_and(
                tf.equal(best, KEEP), tf.equal(loss, best_loss)))
        best = tf.where(better, i + 1, best)
        best_loss = tf.where(better, loss, best_loss)
    return best


def domain_offsets(var, j, dw):
    """The offsets `(d_plus, d_minus)` of a trial of scalar `j` of `var`
    whose unconstrained step is `dw`, and whether each candidate differs
    from `w`.

    * No constraint, or one that acts on the whole variable (MaxNorm,
      UnitNorm, ...: the evaluators project each whole candidate): `dw`
      both ways.
    * `constraints.Discrete`: the values `max(1, round(|dw| / level))`
      levels above and below `w` (in the direction of `dw` first), clipped
      to the ends of the set. A binary weight's trial is its flip.
    * Another element-wise constraint (`NonNeg`): `w + dw` and `w - dw`,
      each projected.
    """
    constraint = constraints.of(var)
    dtype = var.dtype
    dw = tf.cast(dw, dtype)
    if constraint is None or not constraints.is_elementwise(constraint):
        return (dw, dw), (tf.constant(True), tf.constant(True))
    w = tf.gather(tf.reshape(tf.convert_to_tensor(var.value), [-1]), j)
    if isinstance(constraint, constraints.Discrete):
        values = tf.constant(constraint.values, dtype)
        last = len(constraint.values) - 1
        index = tf.cast(constraint.index(tf.reshape(w, [1]))[0], tf.int64)
        levels = tf.maximum(tf.cast(tf.round(tf.abs(dw) / constraint.spacing), tf.int64), 1)
        levels = tf.where(dw < 0, -levels, levels)
        up = tf.clip_by_value(index + levels, 0, last)
        down = tf.clip_by_value(index - levels, 0, last)
        plus, minus = tf.gather(values, up), tf.gather(values, down)
        return (plus - w, w - minus), (tf.not_equal(up, index), tf.not_equal(down, index))
    plus = constraint(tf.reshape(w + dw, [1]))[0]
    minus = constraint(tf.reshape(w - dw, [1]))[0]
    return (plus - w, w - minus), (tf.not_equal(plus, w), tf.not_equal(minus, w))


def parabolic_offset(loss0, loss_plus, loss_minus, dw, max_ratio: float = 2.0):
    """Offset from `w` to the vertex of the parabola through the three losses.

    The losses are those at `w - dw`, `w` and `w + dw` (`dw` may be
    negative). Where they curve upward, this is the offset that minimises
    the parabola, clipped to `max_ratio * |dw|`: beyond the points measured
    the quadratic model is a guess. Where they do not curve upward (flat or
    concave), it is a step of `max_ratio * |dw|` toward the lower side.
    A non-finite loss gives `0` (no second pair of candidates is worth
    evaluating).
    """
    dw = tf.cast(dw, loss0.dtype)
    curvature = loss_plus + loss_minus - 2.0 * loss0
    reach = max_ratio * tf.abs(dw)
    vertex = dw * (loss_minus - loss_plus) / (2.0 * curvature)
    downhill = tf.where(loss_plus <= loss_minus, reach, -reach) * tf.sign(dw)
    offset = tf.where(curvature > 0, tf.clip_by_value(vertex, -reach, reach), downhill)
    # `curvature` is non-finite when any of the three losses is.
    usable = tf.logical_and(tf.math.is_finite(curvature), tf.math.is_finite(offset))
    return tf.where(usable, offset, tf.zeros_like(offset))


class TrialLoop:
    """Builds the traced trial loop for a fixed list of searched variables.

    Args:
        optimizer: The built `RSO` instance holding state and settings.
        evaluator: A `FullForwardEvaluator` or `ChainEvaluator`.
        visit: Indices into `evaluator.variables`, in the order a cycle
            visits them (output to input for the paper's order).
        replay_steps: Optional int64 variable; while it is positive, a step
            only counts it down (no trial, no state change, `iterations`
            unchanged). A fit resumed mid-epoch uses it to consume the
            batches the interrupted epoch had already used.
        breaks: Trial numbers (within a cycle) at which a step must start
            on a fresh batch; no step spans one. `ChainEvaluator`'s caches
            are valid only while the trials of a batch move toward the
            input, so a visit that returns to the output layer (see
            `RSO(output_passes=...)`) starts a new batch.
        pool: A `keras_rso.pool.LayerInputPool` for `RSO(pool_size=...)`,
            or None. `breaks` must then include every segment's start.

    The trials of one step share a mini-batch, and `ChainEvaluator`'s caches
    stay valid only while those trials move toward the input. So for every
    order but `"output_to_input"` (whose `visit` already runs that way),
    `visit` lists the variables from the input to the output and each
    step runs its trials in descending visiting index: the cycle follows
    the order from one batch to the next, and within a batch the trials
    closest to the output come first. The full-forward evaluator runs the
    same schedule, so both evaluators give the same weights.
    """

    def __init__(self, optimizer: RSO, evaluator, visit: Sequence[int],
                 replay_steps: Optional[tf.Variable] = None,
                 breaks: Sequence[int] = (), pool=None):
        self.opt = optimizer
        self.replay_steps = replay_steps
        self.ev = evaluator
        self.visit = list(visit)
        self.variables = evaluator.variables
        sizes = [int(np.prod(self.variables[v].shape)) for v in self.visit]
        self.total = int(sum(sizes))
        ends = np.cumsum(sizes)
        self.starts = tf.constant(ends - np.asarray(sizes), tf.int64)
        self.ends = tf.constant(ends, tf.int64)
        self.visit_t = tf.constant(self.visit, tf.int64)
        self.output_first = optimizer.order != "output_to_input"
        # `order="paper"` lists kernels before the BatchNormalization after
        # them, so a step's trials are put output-first by each variable's
        # place in the model (its rank), not by their place in `visit`.
        self.rank_of_g = None
        if optimizer.order == "paper":
            layer_of = getattr(evaluator, "layer_of", None)
            key = (lambda v: (layer_of[v], v)) if layer_of is not None else (lambda v: v)
            rank = {v: r for r, v in enumerate(sorted(set(self.visit), key=key))}
            self.rank_of_g = tf.constant(np.repeat([rank[v] for v in self.visit], sizes),
                                         tf.int64)
        # `kernel_order="paper"`: the flat index of the n-th scalar a trial
        # visits inside each variable (`_paper_kernel_order`).
        self.flat_of_g = None
        if optimizer.kernel_order == "paper":
            self.flat_of_g = tf.constant(np.concatenate(
                [_paper_kernel_order(tuple(self.variables[v].shape)) for v in self.visit]),
                tf.int64)
        # At one trial per batch, the weight decay of `RSO(weight_decay=...)`
        # is applied to the base pass itself, which then gives the decayed
        # weight's loss (the authors' three evaluations per trial), instead
        # of an extra evaluation of the decayed weight (`_decay`).
        self.decay_in_base = bool(optimizer.weight_decay) and optimizer.weights_per_batch == 1
        # A constraint defines a variable's domain (`keras_rso.constraints`):
        # its trials stay inside it, and weight decay, which would leave a
        # discrete set or a unit sphere, does not apply to it.
        self.constrained = [constraints.of(var) for var in self.variables]
        self.decays = [c is None for c in self.constrained]
        self.breaks = sorted({int(b) for b in breaks if 0 < b < self.total})
        self.step_ends = tf.constant(self.breaks + [self.total], tf.int64)
        self.pool = pool
        if pool is not None:
            segs = pool_segments(evaluator, self.visit)
            self.seg_starts = tf.constant([g.start for g in segs], tf.int64)
            self.seg_ends = tf.constant([g.end for g in segs], tf.int64)
            self.seg_anchor = tf.constant([pool.anchors.index(g.anchor) for g in segs],
                                          tf.int32)
            # The visit slots each anchor's segments search.
            anchors = [pool_anchor_of(evaluator, evaluator.layer_of[v]) for v in self.visit]
            self.anchor_slots = {a: [s for s, b in enumerate(anchors) if b == a]
                                 for a in pool.anchors}

    def _locate(self, g):
        """Maps global indices in visiting order to (slot, flat index)."""
        g = tf.convert_to_tensor(g, tf.int64)
        slot = tf.reshape(tf.searchsorted(self.ends, tf.reshape(g, [-1]), side="right"),
                          tf.shape(g))
        slot = tf.minimum(slot, len(self.visit) - 1)
        if self.flat_of_g is not None:
            return slot, tf.gather(self.flat_of_g, g)
        return slot, g - tf.gather(self.starts, slot)

    def step_length(self, position):
        """Trials of the step that starts at trial `position` of a cycle:
        up to `weights_per_batch`, ending at the next break or cycle end."""
        segment = tf.searchsorted(self.step_ends, tf.reshape(position, [1]),
                                  side="right")[0]
        end = tf.gather(self.step_ends, tf.minimum(segment, len(self.breaks)))
        return tf.clip_by_value(end - position, 0, self.opt.weights_per_batch)

    def step_trials(self, position, n, perm=None):
        """Global visiting indices of a step's `n` trials, in the order they run."""
        g = position + tf.range(n, dtype=tf.int64)
        if perm is not None:
            g = tf.gather(perm, g)
        if self.rank_of_g is not None:
            # Output-first by the variable's place in the model; within a
            # variable, in visiting order.
            key = tf.gather(self.rank_of_g, g) * self.total + (self.total - 1 - g)
            g = tf.gather(g, tf.argsort(key, direction="DESCENDING", stable=True))
        elif self.output_first:
            g = tf.sort(g, direction="DESCENDING")
        return g

    def schedule(self, cycle):
        """`(slot in visit, flat index)` arrays of every trial of a cycle,
        in the order the steps run them (eager; for inspection)."""
        perm = self.permutation(cycle)
        position, parts = tf.constant(0, tf.int64), []
        while int(position) < self.total:
            n = self.step_length(position)
            parts.append(self.step_trials(position, n, perm))
            position += n
        return self._locate(tf.concat(parts, 0))

    def _refreshed_statistics(self, x):
        """BN moving statistics set to the batch statistics of `x`.

        Returns the new values (one per `evaluator.state_variables`) without
        writing them, so that the caller can average them across replicas
        and write them outside control flow.
        """
        saved = [bn.momentum for bn in self.ev.batchnorms]
        try:
            # Momentum is read when the graph is traced; 0 makes the
            # update write the batch statistics themselves.
            for bn in self.ev.batchnorms:
                bn.momentum = 0.0
            with keras.StatelessScope() as scope:
                self.ev.forward(x)
        finally:
            for bn, m in zip(self.ev.batchnorms, saved):
                bn.momentum = m
        return [_current_or(scope, v) for v in self.ev.state_variables]

    def permutation(self, cycle):
        """The random visiting permutation of a cycle, or `None` unless
        `order="random"` (the visit list is then followed as it is).

        Only the sweep over every weight is shuffled; trials after the
        first break (the output-layer passes) keep their place at the end.
        """
        if self.opt.order != "random":
            return None
        swept = self.breaks[0] if self.breaks else self.total
        shuffled = tf.random.experimental.stateless_shuffle(
            tf.range(swept, dtype=tf.int64),
            seed=tf.stack([tf.constant(self.opt.seed, tf.int64) + 1,
                           tf.cast(cycle, tf.int64)]))
        return tf.concat([shuffled, tf.range(swept, self.total, dtype=tf.int64)], 0)

    def __call__(self, x, y, sample_weight) -> StepResult:
        if self.pool is not None:
            return self._pool_step(x, y, sample_weight)
        if distribution.num_replicas() > 1:
            # Collective ops inside a while loop pair up across replicas by
            # the loop's frame name, and node names differ between the
            # replicas of one graph. Each replica's step therefore becomes
            # its own function, not inlined, whose nodes carry the same
            # names on every replica.
            step = tf.function(self._step, autograph=False,
                               experimental_attributes={"_noinline": True})
            with distribution.collective_batchnorm(self.ev.batchnorms):
                return step(x, y, sample_weight)
        return self._step(x, y, sample_weight)

    def _pool_step(self, x, y, sample_weight) -> StepResult:
        """A step under `RSO(pool_size=...)`: fills the live segment's pool
        from this batch, or draws its batch from the pool; then searches
        from the segment's anchor on (see `keras_rso.pool`)."""
        if sample_weight is not None:
            raise ValueError(
                "RSO(pool_size=...) does not support sample weights or "
                "`class_weight`: the pool stores inputs and targets only.")
        opt, pool = self.opt, self.pool
        position = tf.convert_to_tensor(opt.position)
        seg = tf.clip_by_value(
            tf.searchsorted(self.seg_starts, tf.reshape(position, [1]), side="right")[0] - 1,
            0, int(self.seg_starts.shape[0]) - 1)
        seg_start = tf.gather(self.seg_starts, seg)
        k = tf.constant(opt.weights_per_batch, tf.int64)
        trial_steps = (position - seg_start + k - 1) // k  # taken in this segment
        fills = tf.convert_to_tensor(opt.pool_fills)
        in_cycle = position < self.total
        if self.replay_steps is not None:
            remaining = tf.convert_to_tensor(self.replay_steps)
        else:
            remaining = tf.constant(0, tf.int64)
        replaying = remaining > 0
        # A resumed fit replays the interrupted epoch's steps without
        # trials; those that filled the live segment's pool fill it again,
        # from the same batches: the step `remaining` steps before the
        # interruption was the segment's step `trial_steps + fills - remaining`.
        replayed_index = trial_steps + fills - remaining
        fill_index = tf.where(replaying, replayed_index, fills)
        fill = tf.logical_and(in_cycle, tf.where(
            replaying, tf.logical_and(replayed_index >= 0, replayed_index < fills),
            fills < pool.fill_steps))
        seed = tf.stack([tf.constant(opt.seed, tf.int64) + 2,
                         tf.cast(tf.convert_to_tensor(opt.cycle), tf.int64)
                         * tf.size(self.seg_starts, out_type=tf.int64)
                         + tf.cast(seg, tf.int64)])
        count = tf.shape(tf.nest.flatten(x)[0])[0]

        def anchor_step(a):
            def run():
                h, targets = tf.cond(
                    fill, lambda: pool.fill(a, x, y, fill_index),
                    lambda: pool.draw(a, count, seed, trial_steps * tf.cast(count, tf.int64)))
                h = tf.ensure_shape(h, [None, *pool.shapes[a]])
                result = self._step(h, targets, None, start=a, slots=self.anchor_slots[a],
                                    fill=fill, forward_x=x)
                return result._replace(targets=targets)
            return run

        result = tf.switch_case(tf.gather(self.seg_anchor, seg),
                                [anchor_step(a) for a in pool.anchors])
        with tf.control_dependencies([result.loss]):
            # Counted once the step has run; a segment's last trial step
            # clears the count for the next segment.
            after = tf.convert_to_tensor(opt.position)
            filled = tf.where(tf.logical_and(fill, tf.logical_not(replaying)),
                              fills + 1, fills)
            done = tf.logical_and(tf.logical_not(fill), after >= tf.gather(self.seg_ends, seg))
            opt.pool_fills.assign(tf.where(done, tf.zeros_like(filled), filled))
        return result

    def _step(self, x, y, sample_weight, start: int = 0, slots=None, fill=None,
              forward_x=None) -> StepResult:
        """One step on the batch `(x, y)`.

        Under a pool (see `_pool_step`), `x` is the input of layer `start`,
        only the visit `slots` of that anchor are searched, a `fill` step
        makes no trial, and `forward_x` is the step's batch from the data
        (for the end-of-cycle BatchNorm refresh).
        """
        opt = self.opt
        position = tf.convert_to_tensor(opt.position)
        stopped = tf.convert_to_tensor(opt.nonfinite_step) >= 0
        n = self.step_length(position)
        if fill is not None:
            n = tf.where(fill, tf.constant(0, tf.int64), n)

        # Every write below happens outside control flow or through
        # `distribution.assign`, and every loss is summed over replicas,
        # so the same code runs on one device and under tf.distribute.

        # The base pass's state updates (BN moving statistics) are held
        # back and applied only if its loss is finite: a NaN batch must
        # leave every variable as the last good step left it.
        # Trainable variables are mapped to their values so that weight
        # regularizers (which read them through the scope) see them.
        current = [(v, tf.convert_to_tensor(v.value)) for v in self.variables]
        perm = self.permutation(tf.convert_to_tensor(opt.cycle))
        if self.decay_in_base:
            current = self._decayed_mapping(current, position, n, perm)
        with keras.StatelessScope(state_mapping=current) as scope:
            if start:
                loss0, y_pred0, fixed, carried0 = self.ev.begin(x, y, sample_weight,
                                                                start=start)
            else:
                loss0, y_pred0, fixed, carried0 = self.ev.begin(x, y, sample_weight)
        updated = [_current_or(scope, v) for v in self.ev.state_variables]
        loss0 = distribution.cross_replica_sum(loss0)
        # A NaN pixel does not always reach the loss: inside a tf.function,
        # TF's fused CPU kernels can turn a NaN BatchNormalization output
        # into 0 after a ReLU, and RSO would then search on garbage without
        # noticing. So the inputs are checked too (cheap next to a trial).
        bad_inputs = distribution.cross_replica_sum(
            _count_non_finite(x)) > 0
        finite = tf.logical_and(tf.math.is_finite(loss0),
                                tf.logical_not(bad_inputs))
        replaying = (tf.convert_to_tensor(self.replay_steps) > 0
                     if self.replay_steps is not None else tf.constant(False))
        active = tf.logical_and(tf.logical_not(stopped), tf.logical_not(replaying))
        good = tf.logical_and(finite, active)
        # Seed states are written after the trials, so that every candidate
        # of this batch draws the base pass's random numbers.
        seeds = {id(v) for v in self.ev.seed_states}
        self._write_state(good, updated, skip=seeds)
        n = tf.where(good, n, tf.constant(0, tf.int64))
        first_bad = tf.logical_and(tf.logical_not(finite), active)
        distribution.assign(opt.nonfinite_step, tf.where(
            first_bad, tf.cast(tf.convert_to_tensor(opt.iterations), tf.int64),
            tf.convert_to_tensor(opt.nonfinite_step)))
        distribution.assign(opt.nonfinite_inputs, tf.where(
            first_bad, tf.cast(bad_inputs, tf.int64),
            tf.convert_to_tensor(opt.nonfinite_inputs)))

        first_trial = tf.convert_to_tensor(opt.trials)
        sigmas = tf.convert_to_tensor(opt.sigmas)
        scale = tf.convert_to_tensor(opt.sigma_scale)
        step_g = self.step_trials(position, n, perm)
        seed0 = tf.constant(opt.seed, tf.int64)
        n_vars = len(self.variables)

        def body(k, loss, y_pred, carried, accepted_vec, tried_vec):
            slot, j = self._locate(step_g[k])
            # Keyed on the trial number, so every replica (and a resumed
            # run) draws the same perturbation.
            noise = tf.random.stateless_normal(
                [], seed=tf.stack([seed0, first_trial + k]), dtype=tf.float32)

            def make_branch(v):
                var = self.variables[v]

                def branch():
                    dw = noise * sigmas[v] * scale
                    loss_w, y_pred_w, carried_w = loss, y_pred, carried
                    if self.decays[v] and self.decay_in_base:
                        # The base pass already ran at the decayed weight
                        # (`_decayed_mapping`); commit it.
                        distribution.assign(var, _decayed(var.value, j, opt.weight_decay))
                    elif self.decays[v] and opt.weight_decay:
                        loss_w, y_pred_w, carried_w = self._decay(
                            var, v, j, fixed, carried, x, y, sample_weight)
                    offsets, differs = domain_offsets(var, j, dw)
                    if self.constrained[v] is None:
                        offsets = dw  # the symmetric trial
                    trial = self.ev.trial(v, j, offsets, fixed, carried_w, x, y, sample_weight)
                    inf = tf.constant(np.inf, loss.dtype)
                    # A candidate equal to w (a domain's end) is not a move.
                    lp = tf.where(differs[0], distribution.cross_replica_sum(trial.loss_plus), inf)
                    lm = tf.where(differs[1], distribution.cross_replica_sum(trial.loss_minus), inf)
                    # (trial, offsets from w, losses of w + d_plus and w - d_minus)
                    pairs = [(trial, split_offsets(offsets), lp, lm)]
                    if opt.step_rule == "parabolic" and self.constrained[v] is None:
                        t = parabolic_offset(loss_w, lp, lm, dw)
                        second = self.ev.trial(v, j, t, fixed, carried_w, x, y, sample_weight)
                        # At t == 0 both candidates are w itself, and rounding
                        # could make w look better than w.
                        usable = tf.not_equal(t, 0.0)
                        inf = tf.constant(np.inf, loss.dtype)
                        lq = tf.where(usable, distribution.cross_replica_sum(second.loss_plus), inf)
                        lqm = tf.where(usable, distribution.cross_replica_sum(second.loss_minus), inf)
                        pairs.append((second, (t, t), lq, lqm))
                    choice = choose(loss_w, [l for p in pairs for l in p[2:]], opt.tolerance,
                                    opt.ties)

                    def keep():
                        return tf.identity(loss_w), y_pred_w, trial.kept

                    def take(trial, offset, loss_plus, loss_minus):
                        def apply():
                            # `choose` numbers pair i's candidates 2i + 1 (w +
                            # offset) and 2i + 2 (w - offset). One branch per
                            # pair, not per candidate: half the traced code.
                            minus = tf.equal(choice % 2, 0)
                            # Later trials read the committed weight: the
                            # next iteration runs on this switch's outputs.
                            value = tf.convert_to_tensor(var.value)
                            w = tf.gather(tf.reshape(value, [-1]), j)
                            step = tf.cast(tf.where(minus, -offset[1], offset[0]), value.dtype)
                            new = replace_scalar(value, j, w + step)
                            if self.constrained[v] is not None:
                                # The value evaluated (projected as the
                                # evaluator did; a discrete level exactly).
                                new = self.constrained[v](new)
                            distribution.assign(var, new)
                            return (tf.where(minus, loss_minus, loss_plus),
                                    trial.y_pred(minus), trial.entries(minus))
                        return apply

                    # Only the chosen candidate's cache entries are built.
                    # Both trials of a weight name the same entries, so
                    # `trial.merge` also takes the second trial's.
                    new_loss, new_y_pred, entries = tf.switch_case(
                        (choice + 1) // 2, [keep] + [take(*p) for p in pairs])
                    return (new_loss, new_y_pred, trial.merge(entries),
                            tf.cast(choice != KEEP, tf.int64))

                return branch

            if slots is None:
                branch_index, branches = slot, [make_branch(v) for v in self.visit]
            else:
                local = np.zeros(len(self.visit), np.int64)
                local[list(slots)] = np.arange(len(slots))
                branch_index = tf.gather(tf.constant(local), slot)
                branches = [make_branch(self.visit[s]) for s in slots]
            new_loss, new_y_pred, new_carried, acc = tf.switch_case(
                tf.cast(branch_index, tf.int32), branches)
            v_index = tf.reshape(tf.gather(self.visit_t, slot), [1, 1])
            accepted_vec = tf.tensor_scatter_nd_add(accepted_vec, v_index, [acc])
            tried_vec = tf.tensor_scatter_nd_add(
                tried_vec, v_index, tf.ones([1], tf.int64))
            return k + 1, new_loss, new_y_pred, new_carried, accepted_vec, tried_vec

        zeros = tf.zeros([max(n_vars, 1)], tf.int64)
        _, loss, y_pred, _, accepted_vec, tried_vec = tf.while_loop(
            lambda k, *_: k < n,
            body,
            (tf.constant(0, tf.int64), loss0, y_pred0, carried0, zeros, zeros),
        )
        accepted = tf.reduce_sum(accepted_vec)
        if opt.bn_refresh and self.ev.batchnorms:
            # The cycle ends with this step: make BN's moving statistics the
            # batch statistics of the final weights (see `RSO`). The forward
            # pass runs only then; the write is unconditional (a no-op
            # otherwise) so that it stays outside control flow.
            ends_cycle = tf.logical_and(n > 0, position + n >= self.total)
            with tf.control_dependencies([loss]):
                refreshed = tf.cond(
                    ends_cycle, lambda: self._refreshed_statistics(
                        x if forward_x is None else forward_x),
                    lambda: [tf.convert_to_tensor(v.value)
                             for v in self.ev.state_variables])
            self._write_state(ends_cycle, refreshed, skip=seeds)
        if seeds:
            with tf.control_dependencies([loss]):
                self._write_state(good, updated, only=seeds)
        distribution.assign_add(opt.position, n)
        distribution.assign_add(opt.trials, n)
        distribution.assign_add(opt.weight_updates, accepted)
        distribution.assign_add(opt.trials_per_variable, tried_vec)
        distribution.assign_add(opt.updates_per_variable, accepted_vec)
        one = tf.constant(1, tf.int64)
        distribution.assign_add(opt.iterations, tf.where(
            replaying, tf.constant(0, tf.int64), one))
        if self.replay_steps is not None:
            distribution.assign_add(self.replay_steps, tf.where(
                replaying, -one, tf.constant(0, tf.int64)))
        return StepResult(loss, y_pred, n, accepted, replaying)

    def _decayed_mapping(self, current, position, n, perm):
        """`current` with the step's one trial weight decayed, if it has a
        trial (`decay_in_base`)."""
        slot, j = self._locate(self.step_trials(position, tf.maximum(n, 1), perm)[0])
        chosen = tf.where(n > 0, tf.gather(self.visit_t, slot), tf.constant(-1, tf.int64))
        mapped = []
        for v, (var, value) in enumerate(current):
            if not self.decays[v]:
                mapped.append((var, value))
                continue
            size = int(np.prod(var.shape))
            decayed = _decayed(value, tf.minimum(j, size - 1), self.opt.weight_decay)
            mapped.append((var, tf.where(tf.equal(chosen, v), decayed, value)))
        return mapped

    def _decay(self, var, v, j, fixed, carried, x, y, sample_weight):
        """Shrinks weight `j` of `var` by `RSO(weight_decay=...)` and returns
        the loss, predictions and caches at the decayed weight.

        The decayed value is evaluated as a trial's `w + dw` candidate with
        `dw = -weight_decay * w` and committed whatever the trial then
        decides, as the authors' code does.
        """
        value = tf.convert_to_tensor(var.value)
        w = tf.gather(tf.reshape(value, [-1]), j)
        shrink = -w * tf.cast(self.opt.weight_decay, value.dtype)
        decayed = self.ev.trial(v, j, shrink, fixed, carried, x, y, sample_weight)
        plus = tf.constant(False)
        distribution.assign(var, _decayed(value, j, self.opt.weight_decay))
        return (distribution.cross_replica_sum(decayed.loss_plus), decayed.y_pred(plus),
                decayed.merge(decayed.entries(plus)))

    def _write_state(self, condition, values, skip=frozenset(), only=None):
        """Writes new state-variable values where `condition` holds.

        Replicas' BatchNorm statistics are averaged first, so the copies of
        a non-synchronized BN layer stay identical across replicas.
        Variables whose id is in `skip`, or (if given) not in `only`, are
        left alone.
        """
        for v, value in zip(self.ev.state_variables, values):
            if id(v) in skip or (only is not None and id(v) not in only):
                continue
            if value.dtype.is_floating:
                value = distribution.cross_replica_mean(value)
            old = tf.convert_to_tensor(v.value)
            distribution.assign(v, tf.where(condition, tf.cast(value, old.dtype), old))


def _decayed(value, j, weight_decay: float) -> tf.Tensor:
    """`value` with its flat element `j` shrunk by the fraction `weight_decay`."""
    value = tf.convert_to_tensor(value)
    w = tf.gather(tf.reshape(value, [-1]), j)
    return replace_scalar(value, j, w - w * tf.cast(weight_decay, value.dtype))


def _paper_kernel_order(shape) -> np.ndarray:
    """Flat (Keras) indices of a variable's scalars in the authors' order.

    A kernel's last axis is its output, the one before its input, any
    others spatial (Keras' layout): the authors visit output, then input,
    then the spatial axes in order. Variables with fewer than 2 axes keep
    their order.
    """
    shape = tuple(int(d) for d in shape)
    flat = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    if len(shape) < 2:
        return flat.reshape(-1)
    axes = (len(shape) - 1, len(shape) - 2) + tuple(range(len(shape) - 2))
    return np.transpose(flat, axes).reshape(-1)


def _current_or(scope, variable):
    """The value a stateless scope holds for `variable`, else its own."""
    value = scope.get_current_value(variable)
    return value if value is not None else tf.convert_to_tensor(variable.value)


def _count_non_finite(inputs) -> tf.Tensor:
    """Number of NaN/inf values in the floating-point tensors of `inputs`."""
    counts = [tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(t)), tf.float32))
              for t in tf.nest.flatten(inputs) if t.dtype.is_floating]
    return tf.add_n(counts) if counts else tf.constant(0.0)
