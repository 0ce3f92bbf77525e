"""The fast path for functional models that branch and merge (residual nets).

(Longer than its siblings because one class holds the node caches, the
three recompute modes and the write-back, which only make sense together.)

`ChainEvaluator` needs every layer to feed only the next one. Residual and
Inception-style models do not: a layer's output can feed several layers
(the main path and a skip), and `Add`/`Concatenate` layers merge them
again. `GraphEvaluator` serves those models the same way the chain does:

* `begin` runs the graph once per batch and caches the output of every
  node (and the pre-activation of every plain `Dense`/`Conv2D`).
* A trial of a weight in node `i` recomputes node `i` for both candidates,
  stacked along the batch axis (for a `Dense`/`Conv2D` weight, as a
  rank-one update of one channel of the cached pre-activation; a binary
  weight's trial runs its flip alone, `trial(..., single=True)`), and then
  only the nodes *downstream* of `i`, in topological order. A downstream
  node whose other inputs are untouched reads them from the cache (the
  unchanged skip of a residual block, say), doubled to match the stacked
  candidates.
* An accepted candidate writes its half of every recomputed node back to
  the cache. The trials of a step run from the output side towards the
  input (`TrialLoop`), in topological order reversed, so every cached value
  a trial reads is current: it can only have been changed by an earlier
  trial of the step upstream of it, which wrote it back.

The part downstream of each searched node is traced once, as a
`tf.function` shared by all of that node's variables (inline under several
replicas, as the chain's tails).
"""

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from keras_rso import _compat, distribution
from keras_rso.evaluators.base import (LossFn, OneOf, SingleCandidates, VariableChoice,
                                       batchnorm_layers,
                                       cached_trial, candidate_mapping, indices_of, is_local,
                                       rank_one_candidates, seed_states)
from keras_rso.evaluators.rank_one import (_activate, _candidates_batchnorm, _channel,
                                           _channel_delta, _half, _input_channel_delta,
                                           _output_channel, _pre_activation, _replace_channel,
                                           channel_layer)
from keras_rso.evaluators.topology import (PER_SAMPLE_LAYERS, _elementwise_activation,
                                           _is_channelwise, _is_plain_batchnorm,
                                           _rank_one_kind, layer_positions,
                                           owning_layers)

MODEL_INPUT = -1  # the `inputs` index that names the model's input
SPARSE, DELTA, FULL = "sparse", "delta", "full"  # see `GraphEvaluator._modes`

# Merges that combine their inputs element by element (or along a
# non-batch axis): both candidates can go through them stacked.
_ELEMENTWISE_MERGES = tuple(
    getattr(keras.layers, name)
    for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
)


class GraphNode(NamedTuple):
    """One call of a layer in a functional model's graph.

    Attributes:
        layer: The layer (or Keras operation) called.
        inputs: For each tensor argument, in call order, the index of the
            node that produced it, or `MODEL_INPUT`.
        call: The Keras node; `call.arguments.fill_in` rebuilds the call's
            arguments from the input values.
    """

    layer: object
    inputs: Tuple[int, ...]
    call: object


def graph_nodes(model: keras.Model) -> Optional[List[GraphNode]]:
    """The nodes of a functional model in topological order, or None.

    Returns None unless the model is functional with one input and one
    output, and every operation in it is called exactly once and returns one
    tensor (a layer shared between two calls would make one variable change
    two places of the graph). The order is the model's own operation order
    (deepest first), which is topological and the order of
    `model.trainable_variables`.
    """
    operations = _compat.functional_operations(model)
    if (isinstance(model, keras.Sequential) or operations is None
            or len(model.inputs) != 1 or len(model.outputs) != 1):
        return None
    # The nodes of this model: walk back from its output (an operation may
    # also have nodes in other models).
    found: Dict[int, object] = {}
    stack = [model.outputs[0]]
    while stack:
        tensor = stack.pop()
        history = _compat.keras_history(tensor)
        if history is None:
            return None
        op, node_index, _ = history
        if isinstance(op, keras.layers.InputLayer):
            if tensor is not model.inputs[0]:
                return None
            continue
        node = _compat.inbound_node(op, node_index)
        if id(op) in found:
            if found[id(op)] is not node:
                return None  # the same operation called twice
            continue
        if len(node.outputs) != 1:
            return None
        found[id(op)] = node
        stack.extend(node.input_tensors)
    ops = [op for op in operations if id(op) in found]
    if len(ops) != len(found):
        return None
    index_of_output = {id(found[id(op)].outputs[0]): k for k, op in enumerate(ops)}
    index_of_output[id(model.inputs[0])] = MODEL_INPUT
    nodes = []
    for k, op in enumerate(ops):
        node = found[id(op)]
        inputs = tuple(index_of_output.get(id(t)) for t in node.input_tensors)
        if any(i is None or i >= k for i in inputs):
            return None  # not topological, or an input from outside the graph
        nodes.append(GraphNode(op, inputs, node))
    if index_of_output[id(model.outputs[0])] != len(nodes) - 1:
        return None
    return nodes


def _stackable(layer) -> bool:
    """True if both candidates can run through `layer` in one call."""
    t = type(layer)
    if t in PER_SAMPLE_LAYERS or t in _ELEMENTWISE_MERGES:
        return True
    if t is keras.layers.Concatenate:
        return layer.axis != 0 and layer.axis != -len(layer.output.shape)
    return False


def _channelwise(node: GraphNode) -> bool:
    """True if output channel c of the node depends only on input channel c
    of its inputs (a channel-wise layer, or an element-wise merge of inputs
    of the output's shape), so one changed channel stays one."""
    layer = node.layer
    if len(node.inputs) == 1:
        return _is_channelwise(layer)
    shape = tuple(node.call.outputs[0].shape)
    return (type(layer) in _ELEMENTWISE_MERGES
            and all(tuple(t.shape) == shape for t in node.call.input_tensors))


def _is_rank_one_mixer(layer) -> bool:
    return _rank_one_kind(layer, getattr(layer, "kernel", None)) is not None


class GraphEvaluator(SingleCandidates):
    """Evaluates candidates by re-running only the nodes downstream of a weight.

    Args:
        nodes: The model's graph, from `graph_nodes`.
        variables: The model's trainable variables, each owned by one node.
        loss_fn: `loss_fn(y, y_pred, sample_weight) -> scalar`.
    """

    fast = True

    def __init__(self, nodes: Sequence[GraphNode],
                 variables: Sequence[keras.Variable], loss_fn: LossFn):
        self.nodes = list(nodes)
        self.layers = [n.layer for n in self.nodes]
        self.variables = list(variables)
        self.loss_fn = loss_fn
        self.layer_of = owning_layers(self.layers, self.variables, "graph")
        self._mode_cache: Dict[tuple, Dict[int, str]] = {}
        n = len(self.nodes)
        # A mixer's output is its cached pre-activation, activated: a weight
        # of it is a rank-one update of one channel (one input tensor only).
        self.mixers = [i for i, node in enumerate(self.nodes)
                       if len(node.inputs) == 1 and _is_rank_one_mixer(node.layer)]
        self.slot = {m: k for k, m in enumerate(self.mixers)}
        self.kind = [_rank_one_kind(self.layers[i], v) if i in self.slot and is_local(v) else None
                     for i, v in zip(self.layer_of, self.variables)]
        consumers: List[List[int]] = [[] for _ in range(n)]
        for k, node in enumerate(self.nodes):
            for i in node.inputs:
                if i != MODEL_INPUT and k not in consumers[i]:
                    consumers[i].append(k)
        # downstream[i]: every node whose value depends on node i's, in
        # topological order.
        self.downstream = []
        for i in range(n):
            reached = set(consumers[i])
            for k in range(i + 1, n):
                if k in reached:
                    reached.update(consumers[k])
            self.downstream.append(sorted(reached))
        self.stackable = [_stackable(l) for l in self.layers]
        self.plain_bn = [_is_plain_batchnorm(l) for l in self.layers]
        self.channelwise = [_channelwise(node) for node in self.nodes]
        self.batchnorms = [b for l in self.layers if isinstance(l, keras.layers.Layer)
                           for b in batchnorm_layers(l)]
        self.state_variables = [v for l in self.layers
                                for v in getattr(l, "non_trainable_variables", [])]
        self.seed_states = seed_states(self.state_variables)
        self._tails = {}  # node -> shared function for its downstream part

    @staticmethod
    def supports(variables, nodes) -> bool:
        """True if every variable belongs to exactly one node's layer."""
        if nodes is None:
            return False
        owners = layer_positions([n.layer for n in nodes], unique=True)
        return owners is not None and all(id(v) in owners for v in variables)

    def _call(self, k: int, values, training: bool = True):
        """Calls node `k` on `values` (one per entry of its `inputs`)."""
        node = self.nodes[k]
        args, kwargs = node.call.arguments.fill_in(
            {id(t): v for t, v in zip(node.call.input_tensors, values)})
        if training and isinstance(node.layer, keras.layers.Layer):
            kwargs = {**kwargs, "training": True}
        return node.layer(*args, **kwargs)

    def forward(self, x):
        """A training-mode pass that applies state updates (BN statistics)."""
        outputs = []
        for k, node in enumerate(self.nodes):
            values = [x if i == MODEL_INPUT else outputs[i] for i in node.inputs]
            outputs.append(self._call(k, values))
        return outputs[-1]

    def pool_inputs(self, start: int) -> Tuple[int, ...]:
        """The values a pass from node `start` on reads from before it: the
        nodes before `start` (or `MODEL_INPUT`) that feed a node at or after
        it, in order. For a residual net, the main path's input and every
        skip that crosses `start`; what a layer-input pool stores."""
        if start == 0:
            return (MODEL_INPUT,)
        return tuple(sorted({i for node in self.nodes[start:] for i in node.inputs
                             if i < start}))

    def upstream(self, start: int, x) -> tuple:
        """What `begin(..., start=start)` takes for the model input `x`: the
        values of `pool_inputs(start)` (training mode, state updates
        discarded), for a layer-input pool (`keras_rso.pool`)."""
        outputs = []
        with keras.StatelessScope():
            for k in range(start):
                outputs.append(self._call(k, [x if i == MODEL_INPUT else outputs[i]
                                              for i in self.nodes[k].inputs]))
        return tuple(x if i == MODEL_INPUT else outputs[i] for i in self.pool_inputs(start))

    def begin(self, x, y, sample_weight, start: int = 0):
        """Runs the graph once, caching every node's output.

        This is the one pass per batch whose BatchNormalization updates are
        kept (the caller applies them once the loss is known to be finite).

        Args:
            x, y, sample_weight: The batch.
            start: The node from which to run (a layer-input pool's anchor,
                `keras_rso.pool`), with `x` as `upstream(start, ...)` gives
                it (a tuple); the nodes before `start` are not run, and their
                cache entries are those values or empty placeholders, which
                no trial of a node at or after `start` reads.

        Returns:
            `(loss, y_pred, fixed, carried)`: `fixed` holds the model input;
            `carried` holds `(output of every node, pre-activation of every
            mixer)`, which trials update.
        """
        given = {}
        if isinstance(x, tuple):
            given = dict(zip(self.pool_inputs(start), x))
            x = given.get(MODEL_INPUT, tf.zeros([0]))
        first = self.layers[0]
        dtype = getattr(first, "compute_dtype", None)
        if dtype and x.dtype.is_floating and x.dtype != dtype:
            # As a Keras layer autocasts its input (mixers read it directly).
            x = tf.cast(x, dtype)
        outputs, pre = [], []
        for k, node in enumerate(self.nodes):
            if k < start:
                outputs.append(given.get(k, tf.zeros([0])))
                if k in self.slot:
                    pre.append(tf.zeros([0]))
                continue
            values = [x if i == MODEL_INPUT else outputs[i] for i in node.inputs]
            if k in self.slot:
                p = _pre_activation(node.layer, values[0])
                pre.append(p)
                outputs.append(_activate(node.layer, p))
            else:
                outputs.append(self._call(k, values))
        return (self.loss_fn(y, outputs[-1], sample_weight), outputs[-1], (x,),
                (tuple(outputs), tuple(pre)))

    def _modes(self, i: int, sparse: bool) -> Dict[int, str]:
        """How a trial in node `i` recomputes each node downstream of it
        (worked out once per `(i, sparse)`: every trial of a node asks).

        `SPARSE`: only one channel `c` differs from the cache (a channel-wise
        layer or an element-wise merge fed by such channels), and only that
        channel is computed. `DELTA`: a `Dense`/`Conv2D` fed by one sparse
        channel: its cached pre-activation plus that channel's change
        through the kernel's slice `c`. `FULL`: recomputed whole.
        """
        key = (i, bool(sparse))
        if key in self._mode_cache:
            return self._mode_cache[key]
        mode = self._mode_cache[key] = {i: SPARSE if sparse else FULL}
        for k in self.downstream[i]:
            changed = {mode[a] for a in self.nodes[k].inputs if a in mode}
            mode[k] = FULL
            if changed == {SPARSE}:
                if self.channelwise[k]:
                    mode[k] = SPARSE
                elif k in self.slot and _elementwise_activation(self.layers[k].activation):
                    mode[k] = DELTA
        return mode

    def _run_stacked(self, k: int, values, batch, n: int = 2):
        """Node `k` on `n` stacked candidates; `(output, pre-activation)`."""
        layer = self.layers[k]
        if k in self.slot:
            p = _pre_activation(layer, values[0])
            return _activate(layer, p), p
        if self.stackable[k]:
            return self._call(k, values), None
        if self.plain_bn[k]:
            return _candidates_batchnorm(layer, values[0], batch), None
        # A scope per candidate: a random layer advances its seed state in
        # the scope, and the second candidate must draw from the same state
        # as the first (see `evaluators.seed_states`).
        halves = []
        for half in range(n):
            with keras.StatelessScope():
                halves.append(self._call(k, [v[half * batch:(half + 1) * batch]
                                             for v in values]))
        return tf.concat(halves, axis=0), None

    def _downstream(self, i: int, sparse: bool, n: int, stacked, outputs, pre, x, batch, c):
        """Recomputes the nodes downstream of node `i` on `n` stacked
        candidates (two, or a binary weight's flip alone), whose values at
        node `i` are `stacked` (channel `c` only, if `sparse`).

        Returns `(values, pre-activations)`: tuples over `downstream[i]`
        (channel `c` only where `_modes` says `SPARSE`) and over the
        mixers among them.
        """
        mode = self._modes(i, sparse)
        new = {i: stacked}

        def cached(a):
            return x if a == MODEL_INPUT else outputs[a]

        def doubled(t):  # the cached value, once per candidate
            return tf.concat([t] * n, 0)

        def full(a):
            if a not in new:
                return doubled(cached(a))
            if mode[a] == SPARSE:
                return _replace_channel(doubled(cached(a)), c, new[a])
            return new[a]

        def one_channel(a):
            return new[a] if a in new else doubled(_channel(cached(a), c))

        pres = []
        for k in self.downstream[i]:
            node, layer = self.nodes[k], self.layers[k]
            if mode[k] == SPARSE and len(node.inputs) == 1:
                new[k] = channel_layer(layer, new[node.inputs[0]], c, batch)
            elif mode[k] == SPARSE:
                new[k] = self._call(k, [one_channel(a) for a in node.inputs])
            elif mode[k] == DELTA:
                (a,) = node.inputs
                diff = new[a] - doubled(_channel(cached(a), c))
                change = _input_channel_delta(layer, diff, c)
                p = doubled(pre[self.slot[k]]) + change
                pres.append(p)
                new[k] = _activate(layer, p)
            else:
                new[k], p = self._run_stacked(k, [full(a) for a in node.inputs], batch, n)
                if p is not None:
                    pres.append(p)
        last = self.downstream[i][-1]
        return tuple(new[k] for k in self.downstream[i]), tuple(pres), full(last)

    def _tail(self, i: int, sparse: bool, n: int, stacked, outputs, pre, x, batch, c):
        """`_downstream`, traced once per node (start mode and number of
        candidates) and shared by its variables.

        Under several replicas it stays inline: collective ops
        (synchronized BatchNormalization) must not be shared between call
        sites.
        """
        if distribution.num_replicas() > 1:
            return self._downstream(i, sparse, n, stacked, outputs, pre, x, batch, c)
        if (i, sparse, n) not in self._tails:
            self._tails[i, sparse, n] = tf.function(
                lambda *args: self._downstream(i, sparse, n, *args), autograph=False)
        return self._tails[i, sparse, n](stacked, outputs, pre, x, batch, c)

    def _first(self, v: VariableChoice, j, dw, values, pre, single: bool = False):
        """Node `i` of variable `v` (an index, or a `OneOf` of whole-layer
        parameters) for both candidates, stacked (with `single`, for the
        one candidate `w + dw` of a weight with the rank-one update).

        Returns `(stacked, stacked pre-activation or None, c)`, where `c`
        is the one channel that differs from the cache, or None if the
        whole output is given.
        """
        first = indices_of(v)[0]
        i = self.layer_of[first]
        layer, var = self.layers[i], self.variables[first]
        kind = None if isinstance(v, OneOf) else self.kind[v]
        if kind is not None:
            # A weight of a Dense/Conv2D changes one channel of its output.
            k = self.slot[i]
            shape = tuple(var.shape)
            c = _output_channel(kind, j, shape)
            base_c = _channel(pre[k], c)
            delta = _channel_delta(kind, layer, values[0], j, shape, pre[k])
            p_c = rank_one_candidates(base_c, delta, dw, single)
            if _elementwise_activation(layer.activation):
                stacked_c = tf.concat(p_c, 0)
                return _activate(layer, stacked_c), stacked_c, c
            p = tf.concat([_replace_channel(pre[k], c, p) for p in p_c], 0)
            return _activate(layer, p), p, None
        mapping = candidate_mapping(self.variables, v, j, dw)
        if (self.plain_bn[i] and self.channelwise[i] and len(var.shape) == 1
                and all(is_local(c[0]) for c in mapping)):
            # gamma or beta of channel j: only that channel changes.
            h_c = _channel(values[0], j)
            return (_candidates_batchnorm(layer, tf.concat([h_c, h_c], 0), tf.shape(h_c)[0],
                                          channel=j, candidates=mapping), None, j)
        outs, ps = [], []
        for half in (1, 2):  # w + d_plus, then w - d_minus
            with keras.StatelessScope(state_mapping=[(c[0], c[half]) for c in mapping]):
                if i in self.slot:
                    ps.append(_pre_activation(layer, values[0]))
                    outs.append(_activate(layer, ps[-1]))
                else:
                    outs.append(self._call(i, values))
        return tf.concat(outs, 0), (tf.concat(ps, 0) if ps else None), None

    def trial(self, v: VariableChoice, j, dw, fixed, carried, x, y, sample_weight,
              single: bool = False):
        """Tries scalar `j` of variable `v` (an index, or a `OneOf` of
        whole-layer parameters) at offset `dw`, running node `i` and the
        nodes downstream of it; returns the `Trial`. With `single`, `dw` is
        one offset and `w + dw` is the one candidate (`SingleCandidates`)."""
        n = self.candidates(v, single)
        (x,) = fixed
        outputs, pre = carried
        i = self.layer_of[indices_of(v)[0]]
        values = [x if a == MODEL_INPUT else outputs[a] for a in self.nodes[i].inputs]
        batch = tf.shape(values[0])[0]
        with keras.StatelessScope():
            stacked, stacked_pre, c = self._first(v, j, dw, values, pre, single)
            sparse = c is not None
            if self.downstream[i]:
                down, down_pre, y_pred = self._tail(
                    i, sparse, n, stacked, outputs, pre, x, batch,
                    c if sparse else tf.constant(0, tf.int64))
            else:
                down, down_pre = (), ()
                y_pred = (_replace_channel(tf.concat([outputs[i]] * n, 0), c, stacked)
                          if sparse else stacked)
            lp, yp, lm, ym = self.candidate_losses(y_pred, batch, y, sample_weight, single)

        # The cache entries a candidate changes: node i and everything
        # downstream of it, and the pre-activations of the mixers among them.
        mode = self._modes(i, sparse)
        changed = [i] + self.downstream[i]
        values_of = dict(zip(changed, (stacked,) + tuple(down)))
        new = {}
        for k in changed:
            if mode[k] == SPARSE:
                new["out", k] = (lambda k: lambda minus: _replace_channel(
                    outputs[k], c, _half(values_of[k], minus, batch)))(k)
            else:
                new["out", k] = (lambda k: lambda minus: _half(values_of[k], minus, batch))(k)
        pres = ((stacked_pre,) if i in self.slot else ()) + tuple(down_pre)
        for k, p in zip([k for k in changed if k in self.slot], pres):
            if k == i and sparse:
                new["pre", self.slot[k]] = (lambda p: lambda minus: _replace_channel(
                    pre[self.slot[i]], c, _half(p, minus, batch)))(p)
            else:
                new["pre", self.slot[k]] = (lambda p: lambda minus: _half(p, minus, batch))(p)
        return cached_trial(lp, yp, lm, ym, new, {"out": outputs, "pre": pre})
