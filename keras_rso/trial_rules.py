"""The rules of one trial: which candidates it proposes, and which it keeps.

A trial of scalar `w` evaluates `w + d_plus` and `w - d_minus`
(`domain_offsets`: both `dw` for an unconstrained weight, other values of
its set for a discrete one), optionally a second pair at the vertex of the
parabola through the three losses (`parabolic_offset`,
`RSO(step_rule="parabolic")`; its vertex alone with `"vertex"`), and keeps
the best by `choose`. All three
are traced into the train step.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from keras_rso import constraints

KEEP = 0  # `choose` index of the current weight; candidate i is i + 1


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
