"""One RSO step: up to `weights_per_batch` weight trials on one mini-batch.

Everything here is traced into the train function: the position in the
cycle, the random draw and the accept/reject decision are tensors, and the
per-variable code is selected with `tf.switch_case`, so no Python runs per
weight.

Why this module is long: one step touches the base pass and its
non-finite checks, the trials, the layer-input pool and the end-of-cycle
BatchNorm refresh, all in one traced function whose parts must be written
in a fixed order (state writes outside control flow, replica sums at the
same place on every replica). Each part is a named method of `TrialLoop`;
what a cycle visits comes from `schedule`, what a trial proposes and keeps
from `trial_rules`.
"""


from typing import NamedTuple, Optional

import keras
import numpy as np
import tensorflow as tf

from keras_rso import _compat, constraints, distribution
from keras_rso.evaluators import OneOf, replace_scalar, split_offsets
from keras_rso.optimizer import RSO
from keras_rso.pool import anchor_of as pool_anchor_of
from keras_rso.pool import segments as pool_segments
from keras_rso.schedule import CycleSchedule
from keras_rso.trial_rules import KEEP, choose, domain_offsets, parabolic_offset

class StepResult(NamedTuple):
    loss: tf.Tensor         # loss of the accepted weights on this batch
    y_pred: object          # predictions of the accepted weights
    trials: tf.Tensor       # trials made in this step
    accepted: tf.Tensor     # trials whose candidate was accepted
    replayed: tf.Tensor     # True for a step a resumed fit only replays
    # What `y_pred` is for: the batch's targets and sample weights, or the
    # batch drawn from a layer-input pool, or a replayed step's first row.
    targets: object
    sample_weight: object


def _first_row_if(condition, nested):
    """`nested` (a structure of batches) cut to its first row where
    `condition` holds, else as it is. Left whole if any part is not a dense
    tensor (a sparse or ragged input cannot be cut the same way)."""
    leaves = [t for t in tf.nest.flatten(nested) if t is not None]
    if not all(isinstance(t, tf.Tensor) for t in leaves):
        return nested

    def cut(t):
        if t is None:
            return None
        return t[:tf.where(condition, tf.minimum(tf.shape(t)[0], 1), tf.shape(t)[0])]
    return tf.nest.map_structure(cut, nested)


class _StepInputs(NamedTuple):
    """What every trial of a step reads: the batch, the evaluator's fixed
    caches of it, and the optimizer state at the step's start."""
    x: object
    y: object
    sample_weight: object
    fixed: object
    first_trial: tf.Tensor  # `RSO.trials` before the step: keys the draws
    sigmas: tf.Tensor
    scale: tf.Tensor
    frozen: Optional[tf.Tensor]  # `TrialLoop.frozen` read once per step, or None


class TrialLoop:
    """Builds the traced trial loop for a fixed list of searched variables.

    Args:
        optimizer: The built `RSO` instance holding state and settings.
        evaluator: An evaluator (`keras_rso.evaluators`).
        schedule: The cycle's `keras_rso.schedule.CycleSchedule`: which
            scalar each trial visits, and where each step starts and ends.
        replay_steps: Optional int64 variable; while it is positive, a step
            only counts it down (no trial, no state change, `iterations`
            unchanged). A fit resumed mid-epoch uses it to consume the
            batches the interrupted epoch had already used.
        pool: A `keras_rso.pool.LayerInputPool` for `RSO(pool_size=...)`,
            or None. The schedule's breaks must then include every
            segment's start.

    A step runs `schedule.step_length` trials on one mini-batch, in the
    order `schedule.step_trials` gives (output side first, which keeps the
    fast evaluators' caches exact); the full-forward evaluator runs the same
    schedule, so every evaluator gives the same weights.
    """

    def __init__(self, optimizer: RSO, evaluator, schedule: CycleSchedule,
                 replay_steps: Optional[tf.Variable] = None, pool=None,
                 frozen: Optional[tf.Variable] = None):
        self.opt = optimizer
        self.replay_steps = replay_steps
        # One bool per variable (`RSOModel.freeze`): a frozen variable's
        # trials are skipped, and still numbered, so every other trial
        # draws the perturbation it would draw without the freeze. None:
        # nothing can be frozen (no extra control flow in the step).
        self.frozen = frozen
        self.ev = evaluator
        self.schedule = schedule
        self.visit = schedule.visit
        self.variables = evaluator.variables
        self.total = schedule.total
        self.visit_t = schedule.visit_t
        # At one trial per batch, the weight decay of `RSO(weight_decay=...)`
        # is applied to the base pass itself, which then gives the decayed
        # weight's loss (the authors' three evaluations per trial), instead
        # of an extra evaluation of the decayed weight (`_decay`).
        self.decay_in_base = bool(optimizer.weight_decay) and optimizer.weights_per_batch == 1
        # A constraint defines a variable's domain (`keras_rso.constraints`):
        # its trials stay inside it, and weight decay, which would leave a
        # discrete set or a unit sphere, does not apply to it.
        self.constrained = [constraints.of(var) for var in self.variables]
        # A binary weight's trial has one candidate, its flip (the other is
        # `w` itself): where the evaluator can run one candidate alone, it
        # does, at about half the cost of the stacked pair.
        self.single = [bool(getattr(evaluator, "single_candidate", lambda v: False)(v))
                       for v in range(len(self.variables))]
        self.flip_only = [
            isinstance(c, constraints.Discrete) and len(c.values) == 2 and self.single[v]
            for v, c in enumerate(self.constrained)]
        # One `tf.switch_case` branch per group of visit slots whose trials
        # share their code (see `trial_groups`).
        self.groups, self.group_of_slot, self.member_of_slot = trial_groups(
            evaluator, self.visit, self.constrained)
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

    def __call__(self, x, y, sample_weight) -> StepResult:
        step = self._pool_step if self.pool is not None else self._step
        if distribution.num_replicas() > 1:
            # Collective ops inside a while loop pair up across replicas by
            # the loop's frame name, and node names differ between the
            # replicas of one graph. Each replica's step therefore becomes
            # its own function, not inlined, whose nodes carry the same
            # names on every replica.
            step = _compat.noinline_function(step)
            with distribution.collective_batchnorm(self.ev.batchnorms):
                return step(x, y, sample_weight)
        return step(x, y, sample_weight)

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
                    lambda: pool.draw(a, count, seed, trial_steps))
                h = tuple(tf.ensure_shape(t, [None, *shape])
                          for t, shape in zip(h, pool.shapes[a]))
                return self._step(h, targets, None, start=a, slots=self.anchor_slots[a],
                                  fill=fill, forward_x=x)
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
            opt.set_pool_fills(tf.where(done, tf.zeros_like(filled), filled))
        return result

    def _step(self, x, y, sample_weight, start: int = 0, slots=None, fill=None,
              forward_x=None) -> StepResult:
        """One step on the batch `(x, y)`.

        Under a pool (see `_pool_step`), `x` is the input of layer `start`
        (the tuple of tensors the evaluator's `upstream` gives),
        only the visit `slots` of that anchor are searched, a `fill` step
        makes no trial, and `forward_x` is the step's batch from the data
        (for the end-of-cycle BatchNorm refresh).
        """
        opt = self.opt
        replaying = (tf.convert_to_tensor(self.replay_steps) > 0
                     if self.replay_steps is not None else tf.constant(False))
        if self.replay_steps is not None:
            # A replayed step makes no trial and writes nothing; its base
            # pass only feeds metrics that are put back afterwards. One row
            # is enough for that, and a resume then costs little more than
            # reading the replayed batches (and refilling the pool).
            x, y, sample_weight = _first_row_if(replaying, (x, y, sample_weight))
        position = tf.convert_to_tensor(opt.position)
        stopped = tf.convert_to_tensor(opt.nonfinite_step) >= 0
        n = self.schedule.step_length(position)
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
        perm = self.schedule.permutation(tf.convert_to_tensor(opt.cycle))
        frozen = None if self.frozen is None else tf.convert_to_tensor(self.frozen)
        if self.decay_in_base:
            current = self._decayed_mapping(current, position, n, perm, frozen)
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
        active = tf.logical_and(tf.logical_not(stopped), tf.logical_not(replaying))
        good = tf.logical_and(finite, active)
        # Seed states are written after the trials, so that every candidate
        # of this batch draws the base pass's random numbers.
        seeds = {id(v) for v in self.ev.seed_states}
        self._write_state(good, updated, skip=seeds)
        n = tf.where(good, n, tf.constant(0, tf.int64))
        first_bad = tf.logical_and(tf.logical_not(finite), active)
        opt.record_nonfinite(first_bad, bad_inputs)

        ctx = _StepInputs(x, y, sample_weight, fixed,
                          first_trial=tf.convert_to_tensor(opt.trials),
                          sigmas=tf.convert_to_tensor(opt.sigmas),
                          scale=tf.convert_to_tensor(opt.sigma_scale), frozen=frozen)
        step_g = self.schedule.step_trials(position, n, perm)

        def body(k, loss, y_pred, carried, accepted_vec, tried_vec):
            return self._trial(ctx, step_g, slots, k, loss, y_pred, carried,
                               accepted_vec, tried_vec)

        zeros = tf.zeros([max(len(self.variables), 1)], tf.int64)
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
        opt.record_step(n, accepted, tried_vec, accepted_vec, replaying)
        # The trials made: a frozen variable's were skipped (the position
        # moves past them all the same).
        made = n if frozen is None else tf.reduce_sum(tried_vec)
        one = tf.constant(1, tf.int64)
        if self.replay_steps is not None:
            distribution.assign_add(self.replay_steps, tf.where(
                replaying, -one, tf.constant(0, tf.int64)))
        return StepResult(loss, y_pred, made, accepted, replaying, y, sample_weight)

    def _trial(self, ctx, step_g, slots, k, loss, y_pred, carried, accepted_vec, tried_vec):
        """The step's `k`-th trial: one weight, its candidates, the choice.

        The loop state is the loss, predictions and evaluator caches of the
        current weights, and per-variable counts of trials and accepts.
        """
        slot, j = self.schedule.locate(step_g[k])
        # Keyed on the trial number, so every replica (and a resumed run)
        # draws the same perturbation.
        noise = tf.random.stateless_normal(
            [], seed=tf.stack([tf.constant(self.opt.seed, tf.int64), ctx.first_trial + k]),
            dtype=tf.float32)
        state = (loss, y_pred, carried)
        # The branches of the groups this step can visit (all, or those of
        # a pool anchor's `slots`), in the order of their first slot.
        here = list(range(len(self.visit))) if slots is None else list(slots)
        groups = list(dict.fromkeys(self.group_of_slot[s] for s in here))
        local = np.zeros(len(self.visit), np.int64)
        local[here] = [groups.index(self.group_of_slot[s]) for s in here]
        branch_index = tf.gather(tf.constant(local), slot)
        member = tf.gather(tf.constant(self.member_of_slot, tf.int64), slot)
        branches = [self._variable_trial(ctx, self.groups[g], member, j, noise, state)
                    for g in groups]
        v = tf.gather(self.visit_t, slot)

        def search():
            return tf.switch_case(tf.cast(branch_index, tf.int32), branches)

        if ctx.frozen is None:
            new_loss, new_y_pred, new_carried, acc = search()
            tried = tf.ones([1], tf.int64)
        else:
            searched = tf.logical_not(tf.gather(ctx.frozen, v))
            new_loss, new_y_pred, new_carried, acc = tf.cond(
                searched, search,
                lambda: (tf.identity(loss), y_pred, carried, tf.constant(0, tf.int64)))
            tried = tf.reshape(tf.cast(searched, tf.int64), [1])
        v_index = tf.reshape(v, [1, 1])
        accepted_vec = tf.tensor_scatter_nd_add(accepted_vec, v_index, [acc])
        tried_vec = tf.tensor_scatter_nd_add(tried_vec, v_index, tried)
        return k + 1, new_loss, new_y_pred, new_carried, accepted_vec, tried_vec

    def _variable_trial(self, ctx, group, member, j, noise, state):
        """The trial of scalar `j` of the variable of `group` (a tuple of
        variable indices, `trial_groups`) that `member` (an int tensor)
        names, as a `tf.switch_case` branch: decay, candidates, losses,
        choice, commit."""
        opt = self.opt
        v = group[0] if len(group) == 1 else OneOf(group, member)
        constraint = self.constrained[group[0]]

        def branch():
            loss, y_pred, carried = state
            if len(group) == 1:
                sigma = ctx.sigmas[group[0]]
            else:
                sigma = tf.gather(ctx.sigmas, tf.gather(tf.constant(group, tf.int64), member))
            dw = noise * sigma * ctx.scale
            loss_w, y_pred_w, carried_w = loss, y_pred, carried
            if constraint is None and self.decay_in_base:
                # The base pass already ran at the decayed weight
                # (`_decayed_mapping`); commit it.
                self._assign(v, lambda value: _decayed(value, j, opt.weight_decay))
            elif constraint is None and opt.weight_decay:
                loss_w, y_pred_w, carried_w = self._decay(
                    v, j, ctx.fixed, carried, ctx.x, ctx.y, ctx.sample_weight)
            if constraint is None:
                offsets = dw  # the symmetric trial
                differs = (tf.constant(True), tf.constant(True))
            else:
                offsets, differs = domain_offsets(self.variables[v], j, dw)
            if len(group) == 1 and self.flip_only[v]:
                pairs = [self._flip(ctx, v, j, offsets, carried_w, differs, loss.dtype)]
            else:
                pairs = [self._candidates(ctx, v, j, offsets, carried_w, differs, loss.dtype)]
            if opt.step_rule in ("parabolic", "vertex") and constraint is None:
                t = parabolic_offset(loss_w, pairs[0][2], pairs[0][3], dw)
                # At t == 0 both candidates are w itself, and rounding could
                # make w look better than w.
                usable = tf.not_equal(t, 0.0)
                if opt.step_rule == "parabolic":
                    pairs.append(self._candidates(ctx, v, j, t, carried_w, (usable, usable),
                                                  loss.dtype))
                elif len(group) == 1 and self.single[v]:
                    pairs.append(self._single(ctx, v, j, t, carried_w, usable, loss.dtype))
                else:
                    # No single-candidate evaluation here: the pair is
                    # evaluated and its mirror `w - t` never taken, so every
                    # path makes the same choice.
                    pairs.append(self._candidates(ctx, v, j, t, carried_w,
                                                  (usable, tf.constant(False)), loss.dtype))
            choice = choose(loss_w, [l for p in pairs for l in p[2:]], opt.tolerance,
                            opt.ties)

            def keep():
                return tf.identity(loss_w), y_pred_w, pairs[0][0].kept

            # Only the chosen candidate's cache entries are built. Both
            # trials of a weight name the same entries, so `trial.merge`
            # also takes the second trial's.
            new_loss, new_y_pred, entries = tf.switch_case(
                (choice + 1) // 2, [keep] + [self._commit(v, j, choice, *p) for p in pairs])
            return (new_loss, new_y_pred, pairs[0][0].merge(entries),
                    tf.cast(choice != KEEP, tf.int64))

        return branch

    def _candidates(self, ctx, v, j, offsets, carried, differs, dtype):
        """Evaluates the candidates `w + d_plus` and `w - d_minus` of scalar
        `j` of variable `v`.

        Returns `(trial, (d_plus, d_minus), loss of w + d_plus, loss of
        w - d_minus)`, the losses summed over replicas. A candidate that is
        `w` itself (`differs` is False: a domain's end, or a parabolic step
        of 0) gets an infinite loss, so it is never taken.
        """
        trial = self.ev.trial(v, j, offsets, ctx.fixed, carried, ctx.x, ctx.y,
                              ctx.sample_weight)
        inf = tf.constant(np.inf, dtype)
        loss_plus = tf.where(differs[0], distribution.cross_replica_sum(trial.loss_plus), inf)
        loss_minus = tf.where(differs[1], distribution.cross_replica_sum(trial.loss_minus), inf)
        return trial, split_offsets(offsets), loss_plus, loss_minus

    def _flip(self, ctx, v, j, offsets, carried, differs, dtype):
        """`_candidates` for a binary weight: of `w + d_plus` and
        `w - d_minus`, exactly one differs from `w` (the flip); only it is
        evaluated, as the pair's `w + d_plus`, and `w - d_minus` gets an
        infinite loss. The same choice as the pair's, half the work."""
        d_plus, d_minus = split_offsets(offsets)
        flip = tf.where(differs[0], d_plus, -d_minus)
        return self._single(ctx, v, j, flip, carried, None, dtype)

    def _single(self, ctx, v, j, offset, carried, differs, dtype):
        """`_candidates` for one candidate, `w + offset`, evaluated alone
        (the evaluator's `single_candidate`), as the pair's `w + d_plus`;
        `w - d_minus` gets an infinite loss, and so does `w + offset` where
        `differs` (a bool tensor, or None for always) is False."""
        trial = self.ev.trial(v, j, offset, ctx.fixed, carried, ctx.x, ctx.y,
                              ctx.sample_weight, single=True)
        inf = tf.constant(np.inf, dtype)
        loss = distribution.cross_replica_sum(trial.loss_plus)
        if differs is not None:
            loss = tf.where(differs, loss, inf)
        return trial, (offset, offset), loss, inf

    def _commit(self, v, j, choice, trial, offset, loss_plus, loss_minus):
        """The `tf.switch_case` branch that writes a pair's chosen candidate
        of variable `v` (an index or a `OneOf`).

        `choose` numbers pair i's candidates 2i + 1 (`w + d_plus`) and
        2i + 2 (`w - d_minus`): one branch per pair, not per candidate,
        halves the traced code. Returns the branch.
        """
        constraint = None if isinstance(v, OneOf) else self.constrained[v]

        def apply():
            minus = tf.equal(choice % 2, 0)

            # Later trials read the committed weight: the next iteration
            # runs on this switch's outputs.
            def candidate(value):
                w = tf.gather(tf.reshape(value, [-1]), j)
                step = tf.cast(tf.where(minus, -offset[1], offset[0]), value.dtype)
                new = replace_scalar(value, j, w + step)
                if constraint is not None:
                    # The value evaluated (projected as the evaluator did; a
                    # discrete level exactly).
                    new = constraint(new)
                return new

            self._assign(v, candidate)
            return (tf.where(minus, loss_minus, loss_plus), trial.y_pred(minus),
                    trial.entries(minus))

        return apply

    def _assign(self, v, new_value):
        """Writes `new_value(current value)` to the variable `v` names (an
        index, or a `OneOf`, whose other parameters are written back
        unchanged: a write under a tensor's choice)."""
        if not isinstance(v, OneOf):
            var = self.variables[v]
            distribution.assign(var, new_value(tf.convert_to_tensor(var.value)))
            return
        for k, index in enumerate(v.indices):
            var = self.variables[index]
            value = tf.convert_to_tensor(var.value)
            distribution.assign(var, tf.where(tf.equal(v.chosen, k), new_value(value), value))

    def _decayed_mapping(self, current, position, n, perm, frozen):
        """`current` with the step's one trial weight decayed, if it has a
        trial (`decay_in_base`) and its variable is not `frozen`."""
        slot, j = self.schedule.locate(self.schedule.step_trials(position, tf.maximum(n, 1), perm)[0])
        chosen = tf.where(n > 0, tf.gather(self.visit_t, slot), tf.constant(-1, tf.int64))
        if frozen is not None:
            # A frozen weight's trial is skipped, so it is not decayed either.
            chosen = tf.where(tf.gather(frozen, tf.maximum(chosen, 0)),
                              tf.constant(-1, tf.int64), chosen)
        mapped = []
        for v, (var, value) in enumerate(current):
            if self.constrained[v] is not None:
                mapped.append((var, value))
                continue
            size = int(np.prod(var.shape))
            decayed = _decayed(value, tf.minimum(j, size - 1), self.opt.weight_decay)
            mapped.append((var, tf.where(tf.equal(chosen, v), decayed, value)))
        return mapped

    def _decay(self, v, j, fixed, carried, x, y, sample_weight):
        """Shrinks weight `j` of the variable `v` names (an index or a
        `OneOf`) by `RSO(weight_decay=...)` and returns the loss,
        predictions and caches at the decayed weight.

        The decayed value is evaluated as a trial's `w + dw` candidate with
        `dw = -weight_decay * w` and committed whatever the trial then
        decides, as the authors' code does.
        """
        if isinstance(v, OneOf):
            value = tf.gather(tf.stack([tf.convert_to_tensor(self.variables[k].value)
                                        for k in v.indices]), v.chosen)
        else:
            value = tf.convert_to_tensor(self.variables[v].value)
        w = tf.gather(tf.reshape(value, [-1]), j)
        shrink = -w * tf.cast(self.opt.weight_decay, value.dtype)
        decayed = self.ev.trial(v, j, shrink, fixed, carried, x, y, sample_weight)
        plus = tf.constant(False)
        self._assign(v, lambda value: _decayed(value, j, self.opt.weight_decay))
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


def trial_groups(evaluator, visit, constrained):
    """Groups the visit slots whose trials share one traced branch.

    Each searched variable needs its own trial code in the step's graph, a
    `tf.switch_case` branch, and a step's start-up (tracing and graph
    optimisation) grows with their number. A BatchNormalization layer's
    gamma and beta differ only in the parameter perturbed, so when both are
    searched and neither is constrained they share one branch, in which the
    parameter is a tensor (`keras_rso.evaluators.OneOf`); a variable visited
    twice (output passes) has one branch.

    Args:
        evaluator: The evaluator (its `variables` and `batchnorms`).
        visit: The variable index of each visit slot (`keras_rso.schedule.CycleSchedule`).
        constrained: Each variable's constraint, or None.

    Returns:
        `(groups, group_of_slot, member_of_slot)`: the groups (tuples of
        variable indices), each slot's group and its position in it.
    """
    index = {id(var): k for k, var in enumerate(evaluator.variables)}
    visited = set(visit)
    group_of_variable = {}
    for bn in evaluator.batchnorms:
        if not (bn.scale and bn.center):
            continue
        pair = tuple(index.get(id(p)) for p in (bn.gamma, bn.beta))
        if (None in pair or not visited.issuperset(pair)
                or any(constrained[k] is not None for k in pair)
                or bn.gamma.shape != bn.beta.shape or bn.gamma.dtype != bn.beta.dtype):
            continue
        for k in pair:
            group_of_variable[k] = pair
    groups = list(dict.fromkeys(group_of_variable.get(v, (v,)) for v in visit))
    group_of_slot = [groups.index(group_of_variable.get(v, (v,))) for v in visit]
    member_of_slot = [groups[g].index(v) for g, v in zip(group_of_slot, visit)]
    return groups, group_of_slot, member_of_slot


def _decayed(value, j, weight_decay: float) -> tf.Tensor:
    """`value` with its flat element `j` shrunk by the fraction `weight_decay`."""
    value = tf.convert_to_tensor(value)
    w = tf.gather(tf.reshape(value, [-1]), j)
    return replace_scalar(value, j, w - w * tf.cast(weight_decay, value.dtype))


def _current_or(scope, variable):
    """The value a stateless scope holds for `variable`, else its own."""
    value = scope.get_current_value(variable)
    return value if value is not None else tf.convert_to_tensor(variable.value)


def _count_non_finite(inputs) -> tf.Tensor:
    """Number of NaN/inf values in the floating-point tensors of `inputs`."""
    counts = [tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(t)), tf.float32))
              for t in tf.nest.flatten(inputs) if t.dtype.is_floating]
    return tf.add_n(counts) if counts else tf.constant(0.0)
