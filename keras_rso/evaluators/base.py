"""The evaluator protocol: what a trial returns, and the candidates it evaluates.

An evaluator has `variables`, `layer_of` (fast paths), `batchnorms`,
`state_variables`, `seed_states`, `fast`, and three methods:
`forward(x)` (a training-mode pass), `begin(x, y, sample_weight)` (the
base loss and the caches a batch starts from: `(loss, y_pred, fixed,
carried)`) and `trial(v, j, dw, fixed, carried, x, y, sample_weight)`
(a `Trial`).
"""

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf

from keras_rso import _compat, constraints

LossFn = Callable[[object, object, object], tf.Tensor]

class Trial(NamedTuple):
    """What an evaluator returns for one trial.

    The caches an evaluator carries between trials (`carried`) can be large,
    so a trial names only the entries a candidate would change: `kept`
    holds their current values, `entries(minus)` builds them for the
    candidate `w - dw` where the boolean tensor `minus` holds, else for
    `w + dw` (only the accepted candidate's are ever built, inside the
    caller's switch), and `merge(entries)` returns the whole carried state
    with those entries replaced. Passing only the changed entries through
    the accept/reject switch keeps the traced step small, and one builder
    for both candidates puts one copy of that code in it, not two.
    """

    loss_plus: tf.Tensor
    y_plus: object
    loss_minus: tf.Tensor
    y_minus: object
    kept: tuple
    entries: Callable[[tf.Tensor], tuple]
    merge: Callable[[tuple], object]

    def y_pred(self, minus: tf.Tensor):
        """The predictions of `w - dw` where `minus` holds, else of `w + dw`."""
        return tf.nest.map_structure(lambda p, m: tf.where(minus, m, p),
                                     self.y_plus, self.y_minus)


def replace_scalar(value: tf.Tensor, j: tf.Tensor, new: tf.Tensor) -> tf.Tensor:
    """`value` with its flat element `j` set to `new`."""
    flat = tf.reshape(value, [-1])
    flat = tf.tensor_scatter_nd_update(flat, tf.reshape(j, [1, 1]),
                                       tf.reshape(new, [1]))
    return tf.reshape(flat, tf.shape(value))


def cached_trial(loss_plus, y_plus, loss_minus, y_minus, new: dict, caches: dict) -> Trial:
    """A fast evaluator's `Trial`, whose cache entries are built lazily.

    Args:
        new: `{(part, slot): fn(minus) -> tensor}`: the cache entries the
            trial changes, built for the candidate `minus` names.
        caches: `{part: tuple of the current cache tensors}`; `merge`
            returns one tuple per part, in this order.
    """
    keys = sorted(new)
    kept = tuple(caches[part][s] for part, s in keys)

    def entries(minus):
        # ensure_shape keeps the loop variables' static shapes.
        return tuple(tf.ensure_shape(new[key](minus), t.shape) for key, t in zip(keys, kept))

    def merge(entries):
        value = dict(zip(keys, entries))
        return tuple(tuple(value.get((part, s), t) for s, t in enumerate(tensors))
                     for part, tensors in caches.items())

    return Trial(loss_plus, y_plus, loss_minus, y_minus, kept, entries, merge)


def split_offsets(dw) -> Tuple[tf.Tensor, tf.Tensor]:
    """`(d_plus, d_minus)` of a trial's offset: its candidates are
    `w + d_plus` and `w - d_minus`. `dw` is one tensor (the symmetric
    trial, `d_plus = d_minus = dw`) or a pair (a trial inside a weight
    domain, `keras_rso.constraints`)."""
    if isinstance(dw, (tuple, list)):
        return dw[0], dw[1]
    return dw, dw


def rank_one_candidates(base_c, delta, dw, single: bool = False) -> List[tf.Tensor]:
    """The candidates' values of the one channel a rank-one weight changes:
    `base_c + d_plus * delta` and `base_c - d_minus * delta` (`dw` as
    `split_offsets` takes it), or with `single` the one `base_c + dw *
    delta` (`SingleCandidates`)."""
    # `delta` comes from the layer's input, which under a mixed precision
    # policy may be in another dtype than the layer computes in.
    delta = tf.cast(delta, base_c.dtype)
    if single:
        return [base_c + tf.cast(dw, base_c.dtype) * delta]
    d_plus, d_minus = (tf.cast(d, base_c.dtype) for d in split_offsets(dw))
    return [base_c + d_plus * delta, base_c - d_minus * delta]


def is_local(var) -> bool:
    """True if a candidate of `var` differs from `W` only at the perturbed
    scalar: no constraint, or one that acts element by element (a fast
    path's rank-one update stays valid)."""
    constraint = constraints.of(var)
    return constraint is None or constraints.is_elementwise(constraint)


def candidate_values(var: keras.Variable, j: tf.Tensor, dw
                     ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Returns `(w_j, W + d_plus e_j, W - d_minus e_j)` for variable `var`
    (`split_offsets`), each candidate projected by the variable's
    constraint where that constraint acts on the whole variable."""
    value = tf.convert_to_tensor(var.value)
    w = tf.gather(tf.reshape(value, [-1]), j)
    d_plus, d_minus = (tf.cast(d, value.dtype) for d in split_offsets(dw))
    plus, minus = replace_scalar(value, j, w + d_plus), replace_scalar(value, j, w - d_minus)
    if not is_local(var):
        plus, minus = var.constraint(plus), var.constraint(minus)
    return w, plus, minus


class OneOf(NamedTuple):
    """Names, in a trial, one of several parameters of one layer, chosen by a tensor.

    A BatchNormalization layer's gamma and beta are searched by the same
    code but for the parameter perturbed. `TrialLoop` traces one trial for
    the pair, with the parameter as a tensor, where it would trace one per
    parameter: fewer branches in the step's graph, so less to trace and to
    optimise when a fit starts. An evaluator's `trial` takes a `OneOf`
    where it takes a variable's index.

    Attributes:
        indices: The parameters' indices in the evaluator's `variables`:
            all of one layer, of one shape and dtype, without constraints.
        chosen: Scalar int tensor: the position in `indices` of the
            parameter the trial perturbs; the others keep their values.
    """

    indices: Tuple[int, ...]
    chosen: tf.Tensor


VariableChoice = Union[int, OneOf]


def indices_of(v: VariableChoice) -> Tuple[int, ...]:
    """The variable indices a trial's `v` (an index or a `OneOf`) may perturb."""
    return tuple(v.indices) if isinstance(v, OneOf) else (v,)


def candidate_mapping(variables: Sequence[keras.Variable], v: VariableChoice, j: tf.Tensor,
                      dw) -> List[Tuple[keras.Variable, tf.Tensor, tf.Tensor]]:
    """`[(variable, value for w + d_plus, value for w - d_minus), ...]` for
    every variable `v` names (`candidate_values`): under a `OneOf`, the
    parameters not chosen map to their current values."""
    if not isinstance(v, OneOf):
        _, plus, minus = candidate_values(variables[v], j, dw)
        return [(variables[v], plus, minus)]
    mapping = []
    for k, index in enumerate(v.indices):
        var = variables[index]
        value = tf.convert_to_tensor(var.value)
        _, plus, minus = candidate_values(var, j, dw)
        chosen = tf.equal(v.chosen, k)
        mapping.append((var, tf.where(chosen, plus, value), tf.where(chosen, minus, value)))
    return mapping


def seed_states(variables: Sequence[keras.Variable]) -> List[keras.Variable]:
    """The `keras.random.SeedGenerator` states among `variables`.

    A random layer draws from its seed generator, which advances its state
    on every call. `TrialLoop` advances these states once per batch, after
    the trials, so that the base pass and every candidate of the batch read
    the same state and draw the same mask (common random numbers): a trial
    then compares weights, not noise. Each candidate evaluation runs in a
    `keras.StatelessScope` of its own, which keeps an earlier call's advance
    from reaching the next candidate.
    """
    # SeedGenerator names its state variable so (Keras 3); a layer's
    # generators are otherwise reachable only through private attributes.
    return [v for v in variables if v.name == "seed_generator_state"]


class SingleCandidates:
    """What a fast evaluator adds to run one candidate alone.

    A weight with the rank-one update (`kind[v]` set by the evaluator) can
    be tried as `w + dw` alone, at about half the cost of the stacked pair:
    a binary weight's trial, whose other candidate would be `w` itself
    (`trial(..., single=True)`, chosen by `TrialLoop`). The `Trial`'s
    `w - dw` then has an infinite loss.
    """

    variables: Sequence[keras.Variable]
    kind: Sequence[Optional[str]]
    loss_fn: LossFn

    def single_candidate(self, v: int) -> bool:
        """True if `trial(..., single=True)` can evaluate variable `v`'s
        candidate `w + dw` alone (a weight with the rank-one update)."""
        return self.kind[v] is not None

    def candidates(self, v: VariableChoice, single: bool) -> int:
        """How many candidates the trial of `v` stacks: 1 with `single`,
        else 2. Raises a ValueError if `v` cannot run one alone."""
        if single and (isinstance(v, OneOf) or not self.single_candidate(v)):
            raise ValueError(f"A trial of {self.variables[indices_of(v)[0]].path} evaluates "
                             "two candidates: it has no rank-one update (single_candidate).")
        return 1 if single else 2

    def candidate_losses(self, y_pred, batch, y, sample_weight, single: bool):
        """`(loss_plus, y_plus, loss_minus, y_minus)` of the `y_pred` the
        candidates stacked; with `single` the one candidate is `w + dw`,
        and `w - dw` gets an infinite loss."""
        yp = y_pred[:batch]
        lp = self.loss_fn(y, yp, sample_weight)
        if single:
            return lp, yp, tf.constant(float("inf"), lp.dtype), yp
        ym = y_pred[batch:]
        return lp, yp, self.loss_fn(y, ym, sample_weight), ym


def batchnorm_layers(model) -> List[keras.layers.Layer]:
    """Every BatchNormalization layer inside `model`."""
    return [l for l in _compat.flatten_layers(model, include_self=True)
            if isinstance(l, keras.layers.BatchNormalization)]
