"""The plan of an RSO cycle: which scalar each trial visits, and in which step.

A cycle tries every searched scalar once (plus the output layer's scalars
once per `RSO(output_passes=...)`). Its plan has three parts, all decided
here and nowhere else:

* the *visit list*: the searched variables in the order the cycle takes
  them (`visit_order`, `output_pass_visits`), fixed for the whole fit;
* the *breaks*: trial numbers where a step must start on a fresh batch,
  so that no step spans two parts of the cycle;
* the *steps*: up to `weights_per_batch` consecutive trials share one
  mini-batch (`CycleSchedule.step_length`), so a cycle takes
  `sum(ceil(n / K))` steps over its parts (`count_steps`), and within a
  step the trials run from the output side first (`step_trials`), which
  keeps the fast evaluators' caches exact. Under `order="random"` the
  trials follow a fresh permutation each cycle (`permutation`).

`RSOModel` plans with these functions (eagerly, in Python); `TrialLoop`
follows a `CycleSchedule` inside the traced train step.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_rso.evaluators.topology import feeding_kernel


def visit_order(order: str, searched: Sequence[int], owners: Sequence,
                variables: Sequence[keras.Variable],
                layer_of: Optional[Sequence[int]] = None) -> List[int]:
    """The searched variables in the order a cycle visits them.

    Args:
        order: `RSO(order=...)`.
        searched: Positions of the searched variables in `variables`, in
            the model's (input-to-output) order.
        owners: For each variable, the layer that owns it, or None
            (`topology.owner_layers`).
        variables: The trainable variables.
        layer_of: A fast evaluator's layer index of each variable, or None:
            a fast path visits its layers from the input to the output
            (within a layer, first variable first).

    Every order but `"output_to_input"` lists the variables input to
    output: a step runs its trials from the output side (`step_trials`),
    so the cycle follows the order from one batch to the next.
    """
    index = list(searched)
    if layer_of is not None:
        index.sort(key=lambda i: (layer_of[i], i))
    if order == "output_to_input":
        index.reverse()
    elif order == "paper":
        index = _paper_order(index, owners, variables)
    return index


def _paper_order(index: List[int], owners: Sequence, variables) -> List[int]:
    """The authors' visiting order of an input-to-output `index`.

    Layers from the output to the input, as `"output_to_input"`, but a
    BatchNormalization's variables come after the kernel before them in
    model order, beta before gamma: dense, then for each convolution from
    the last, its kernel, beta, gamma.
    """
    bn = [isinstance(layer, keras.layers.BatchNormalization) for layer in owners]
    position = {id(variables[i]): i for i in index}
    groups: dict = {}
    last = None
    for i in index:
        if not bn[i]:
            groups.setdefault(i, []).append(i)
            last = i
            continue
        # A BatchNormalization joins the kernel that feeds it in the graph
        # (through pooling or a merge's first input), else the kernel
        # before it in model order.
        kernel = feeding_kernel(owners[i])
        key = position.get(id(kernel)) if kernel is not None else None
        key = key if key is not None else last
        groups.setdefault(key if key is not None else i, []).append(i)
    order = []
    for key in sorted(groups, reverse=True):
        group = groups[key]
        order += [i for i in group if not bn[i]] + [i for i in reversed(group) if bn[i]]
    return order


def output_pass_visits(visit: Sequence[int], layer_ids: Sequence[int],
                       passes: int) -> List[int]:
    """The visits `RSO(output_passes=P)` adds after the sweep: `P` times the
    variables of the layer that owns the last searched variable in model
    order, in the order the sweep visits them."""
    if not passes or not visit:
        return []
    output_layer = layer_ids[max(visit)]
    return [i for i in visit if layer_ids[i] == output_layer] * passes


def trial_count(variables: Sequence[keras.Variable], visit: Sequence[int]) -> int:
    """Trials of a visit list: one per scalar."""
    return int(sum(math.prod(variables[i].shape) for i in visit))


def cycle_parts(variables: Sequence[keras.Variable], searched: Sequence[int],
                layer_ids: Sequence[int], passes: int) -> List[int]:
    """Trials in each part of a cycle that starts on a fresh batch: the
    sweep over every searched scalar, then the output passes (if any)."""
    sweep = trial_count(variables, searched)
    extra = trial_count(variables, output_pass_visits(searched, layer_ids, passes))
    return [sweep, extra] if extra else [sweep]


def count_steps(edges: Sequence[int], weights_per_batch: int) -> int:
    """Train steps that cover trials `edges[0]..edges[-1]`, a step never
    crossing an edge: `sum(ceil(n / K))` over the parts. The traced
    counterpart is `CycleSchedule.step_length`."""
    return sum(math.ceil((b - a) / weights_per_batch) for a, b in zip(edges, edges[1:]))


class CycleSchedule:
    """A cycle's trials, as the traced train step follows them.

    Args:
        variables: The trainable variables (an evaluator's `variables`).
        visit: Indices into `variables`, in the order the cycle visits them
            (`visit_order` + `output_pass_visits`).
        optimizer: The `RSO` whose `weights_per_batch`, `order`,
            `kernel_order` and `seed` shape the steps.
        breaks: Trial numbers at which a step must start on a fresh batch.
        layer_of: A fast evaluator's layer index of each variable, or None
            (ranks the variables for `order="paper"`).

    Trials are numbered `0..total - 1` in visiting order (the *global*
    index `g`); `locate` maps `g` to the variable's slot in `visit` and the
    scalar's flat index inside it.
    """

    def __init__(self, variables: Sequence[keras.Variable], visit: Sequence[int], optimizer,
                 breaks: Sequence[int] = (), layer_of: Optional[Sequence[int]] = None):
        self.visit = list(visit)
        self.weights_per_batch = optimizer.weights_per_batch
        self.order = optimizer.order
        self.seed = optimizer.seed
        sizes = [int(np.prod(variables[v].shape)) for v in self.visit]
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
            key = (lambda v: (layer_of[v], v)) if layer_of is not None else (lambda v: v)
            rank = {v: r for r, v in enumerate(sorted(set(self.visit), key=key))}
            self.rank_of_g = tf.constant(np.repeat([rank[v] for v in self.visit], sizes),
                                         tf.int64)
        # `kernel_order="paper"`: the flat index of the n-th scalar a trial
        # visits inside each variable (`paper_kernel_order`).
        self.flat_of_g = None
        if optimizer.kernel_order == "paper":
            self.flat_of_g = tf.constant(np.concatenate(
                [paper_kernel_order(tuple(variables[v].shape)) for v in self.visit]),
                tf.int64)
        self.breaks = sorted({int(b) for b in breaks if 0 < b < self.total})
        self.step_ends = tf.constant(self.breaks + [self.total], tf.int64)

    @property
    def edges(self) -> List[int]:
        """`[0, *breaks, total]`: the parts no step crosses."""
        return [0] + self.breaks + [self.total]

    def trial_steps(self) -> int:
        """Steps that make the trials of one cycle (`count_steps`)."""
        return count_steps(self.edges, self.weights_per_batch)

    def locate(self, g):
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
        return tf.clip_by_value(end - position, 0, self.weights_per_batch)

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

    def permutation(self, cycle):
        """The random visiting permutation of a cycle, or `None` unless
        `order="random"` (the visit list is then followed as it is).

        Only the sweep over every weight is shuffled; trials after the
        first break (the output-layer passes) keep their place at the end.
        """
        if self.order != "random":
            return None
        swept = self.breaks[0] if self.breaks else self.total
        shuffled = tf.random.experimental.stateless_shuffle(
            tf.range(swept, dtype=tf.int64),
            seed=tf.stack([tf.constant(self.seed, tf.int64) + 1,
                           tf.cast(cycle, tf.int64)]))
        return tf.concat([shuffled, tf.range(swept, self.total, dtype=tf.int64)], 0)

    def trials(self, cycle):
        """`(slot in visit, flat index)` arrays of every trial of a cycle,
        in the order the steps run them (eager; for inspection)."""
        perm = self.permutation(cycle)
        position, parts = tf.constant(0, tf.int64), []
        while int(position) < self.total:
            n = self.step_length(position)
            parts.append(self.step_trials(position, n, perm))
            position += n
        return self.locate(tf.concat(parts, 0))


def paper_kernel_order(shape) -> np.ndarray:
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
