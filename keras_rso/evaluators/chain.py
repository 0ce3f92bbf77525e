"""The fast path for layer chains (Sequential, or functional without branches)."""

from typing import Optional, Sequence

import keras
import tensorflow as tf

from keras_rso import distribution
from keras_rso.evaluators.base import (LossFn, OneOf, SingleCandidates, VariableChoice,
                                       batchnorm_layers,
                                       cached_trial, candidate_mapping, indices_of, is_local,
                                       rank_one_candidates, seed_states)
from keras_rso.evaluators.rank_one import (_activate, _candidates_batchnorm, _channel,
                                           _channel_delta, _half, _input_channel_delta,
                                           _output_channel, _pre_activation, _replace_channel,
                                           channel_layer)
from keras_rso.evaluators.topology import (PER_SAMPLE_LAYERS, _elementwise_activation,
                                           _is_channelwise, _is_mixer, _is_plain_batchnorm,
                                           _rank_one_kind, owning_layers)


class ChainEvaluator(SingleCandidates):
    """Evaluates candidates by re-running only what a weight can change.

    For a trial in layer `i`, only layers `i..n` run, on both candidates
    stacked along the batch axis. For a weight of a plain `Dense`/`Conv2D`
    (a *mixer*) the work shrinks further: the weight changes one output
    channel `c` by `dw` times a slice of the input, so that channel is
    updated in the cached pre-activation; while the next layers act per
    channel (BatchNormalization, ReLU, pooling), only channel `c` is carried
    through them; and at the next mixer the change enters as a
    one-input-channel convolution added to that mixer's cached
    pre-activation. Everything after that mixer runs in full.

    Caches (the input and pre-activation of every mixer) are kept current
    as candidates are accepted. This is valid while trials within a batch
    move from the output towards the input: a trial can only change what
    lies downstream of the perturbed layer, and later trials in the batch
    lie upstream of it. `TrialLoop` runs every step that way, whatever
    `RSO(order=...)` says about the order from one batch to the next.

    Args:
        layers: The chain, from `chain_layers`.
        variables: The model's trainable variables, each owned by one layer.
        loss_fn: `loss_fn(y, y_pred, sample_weight) -> scalar`.
    """

    fast = True
    # XLA for the shared tail functions. Off: on CPU it measured within a
    # few percent of the plain kernels, slower on the deep layers
    # (docs/results.md, "XLA for the tails"); `benchmarks/step_time.py
    # --jit-tails` measures it again.
    jit_tails = False

    def __init__(self, layers: Sequence[keras.layers.Layer],
                 variables: Sequence[keras.Variable], loss_fn: LossFn):
        self.layers = list(layers)
        self.variables = list(variables)
        self.loss_fn = loss_fn
        self.layer_of = owning_layers(self.layers, self.variables, "chain")
        self.kind = [_rank_one_kind(self.layers[i], v) if is_local(v) else None
                     for i, v in zip(self.layer_of, self.variables)]
        n = len(self.layers)
        self.mixers = [i for i, l in enumerate(self.layers) if _is_mixer(l)]
        self.slot = {m: k for k, m in enumerate(self.mixers)}
        # next_mixer[i]: first mixer after layer i (None if none).
        self.next_mixer = [next((m for m in self.mixers if m > i), None) for i in range(n)]
        # sparse_to[i]: for a mixer i whose output feeds only channel-wise
        # layers up to the next mixer m, that m; else None.
        self.sparse_to = {}
        for i in self.mixers:
            m = self.next_mixer[i]
            if (m is not None and _elementwise_activation(self.layers[i].activation)
                    and all(_is_channelwise(l) for l in self.layers[i + 1:m])):
                self.sparse_to[i] = m
        self.per_sample = [type(l) in PER_SAMPLE_LAYERS for l in self.layers]
        self.plain_bn = [_is_plain_batchnorm(l) for l in self.layers]
        self.batchnorms = [b for l in self.layers for b in batchnorm_layers(l)]
        self.state_variables = [v for l in self.layers for v in l.non_trainable_variables]
        self.seed_states = seed_states(self.state_variables)
        self._tails = {}  # (start layer, candidates) -> shared tail function (`_tail`)

    def forward(self, x):
        """A training-mode pass that applies state updates (BN statistics)."""
        h = x
        for layer in self.layers:
            h = layer(h, training=True)
        return h

    @staticmethod
    def supports(variables, layers) -> bool:
        ids = {id(v) for l in layers for v in l.trainable_variables}
        return all(id(v) in ids for v in variables)

    def upstream(self, start: int, x) -> tuple:
        """What `begin(..., start=start)` takes for the model input `x`: a
        one-tuple of layer `start`'s input (training mode, state updates
        discarded), for a layer-input pool (`keras_rso.pool`)."""
        h = x
        with keras.StatelessScope():
            for layer in self.layers[:start]:
                h = layer(h, training=True)
        return (h,)

    def begin(self, x, y, sample_weight, start: int = 0):
        """Runs the chain once, caching every layer's input.

        This is the one pass per batch whose BatchNormalization updates are
        kept (the caller applies them once the loss is known to be finite).

        Args:
            x, y, sample_weight: The batch.
            start: Index of the layer whose input `x` is (a layer-input
                pool's anchor, `keras_rso.pool`), given as `upstream`
                returns it; the layers before it are not run, and their
                cache entries are empty placeholders that only trials of
                earlier layers would read.

        Returns:
            `(loss, y_pred, fixed, carried)`: `fixed` holds every layer's
            input; `carried` holds `(inputs of mixers, pre-activations of
            mixers)`, which trials update.
        """
        inputs, pre = [], []
        h = x[0] if isinstance(x, tuple) else x
        dtype = self.layers[start].compute_dtype if start < len(self.layers) else None
        if dtype and h.dtype.is_floating and h.dtype != dtype:
            # As a Keras layer autocasts its input: the mixers' cached
            # pre-activations are computed from `h` directly.
            h = tf.cast(h, dtype)
        for i, layer in enumerate(self.layers):
            if i < start:
                inputs.append(None)
                if i in self.slot:
                    pre.append(tf.zeros([0]))
                continue
            inputs.append(h)
            if i in self.slot:
                p = _pre_activation(layer, h)
                pre.append(p)
                h = _activate(layer, p)
            else:
                h = layer(h, training=True)
        mix_in = tuple(tf.zeros([0]) if inputs[m] is None else inputs[m]
                       for m in self.mixers)
        return self.loss_fn(y, h, sample_weight), h, tuple(inputs), (mix_in, tuple(pre))

    def _run(self, start: int, h, batch, record: Optional[int], n: int = 2):
        """Runs layers `start..` on `n` stacked candidates (two, or a flip's one).

        If `record` is a mixer index, also returns that mixer's stacked
        input and pre-activation.
        """
        seen = (None, None)
        if record is not None:
            h = self._layers(start, record, h, batch, n)
            p = _pre_activation(self.layers[record], h)
            seen = (h, p)
            h = _activate(self.layers[record], p)
            start = record + 1
        return self._tail(start, h, batch, n), seen

    def _layers(self, start: int, stop: int, h, batch, n: int = 2):
        """Layers `start..stop - 1` on `n` stacked candidates."""
        for i in range(start, stop):
            layer = self.layers[i]
            if self.per_sample[i]:
                h = layer(h, training=True)
            elif self.plain_bn[i]:
                h = _candidates_batchnorm(layer, h, batch)
            else:
                # A scope per candidate: a random layer advances its seed
                # state in the scope, and the second candidate must draw
                # from the same state as the first (see `seed_states`).
                halves = []
                for half in (h[k * batch:(k + 1) * batch] for k in range(n)):
                    with keras.StatelessScope():
                        halves.append(layer(half, training=True))
                h = tf.concat(halves, axis=0)
        return h

    def _tail(self, start: int, h, batch, n: int = 2):
        """Layers `start..` on `n` stacked candidates, through shared functions.

        Every searched variable's trial ends by running the rest of the
        network, and each trial is a branch of the step's graph, so inline
        tails would put one copy of the network's end in the graph per
        variable. Instead the tail is cut after each mixer, and each piece
        is a `tf.function`, traced once and called by every trial that
        reaches it. Under several replicas the pieces stay inline: their
        collective ops (synchronized BatchNormalization) must not be shared
        between call sites.
        """
        end = len(self.layers)
        if start >= end:
            return h
        stop = next((m + 1 for m in self.mixers if m >= start), end)

        def piece(h, batch):
            return self._tail(stop, self._layers(start, stop, h, batch, n), batch, n)

        if distribution.num_replicas() > 1:
            return piece(h, batch)
        if (start, n) not in self._tails:
            self._tails[start, n] = tf.function(piece, autograph=False,
                                                jit_compile=self.jit_tails)
        return self._tails[start, n](h, batch)

    def _whole_layer(self, v: VariableChoice, j, dw, h_in, batch, m):
        """Trial of a weight without a rank-one rule (`v`: an index or a
        `OneOf`): the owning layer runs on both candidates (stacked), then
        the layers after it."""
        i = self.layer_of[indices_of(v)[0]]
        layer = self.layers[i]
        mapping = candidate_mapping(self.variables, v, j, dw)
        outs = []
        for half in (1, 2):  # w + d_plus, then w - d_minus
            with keras.StatelessScope(state_mapping=[(c[0], c[half]) for c in mapping]):
                outs.append(layer(h_in, training=True))
        return self._run(i + 1, tf.concat(outs, 0), batch, m)

    def _channel_candidates(self, v: int, j, dw, h_in, pre, new, single: bool = False):
        """The rank-one update: the two candidates' pre-activation of the one
        output channel `c` weight `j` feeds (with `single`, of the one
        candidate `w + dw`). Registers the cache entry of the layer's
        pre-activation in `new`; returns `c` and the candidates' tuple."""
        i = self.layer_of[v]
        layer, var, kind = self.layers[i], self.variables[v], self.kind[v]
        k = self.slot[i]
        shape = tuple(var.shape)
        c = _output_channel(kind, j, shape)
        base_c = _channel(pre[k], c)
        delta = _channel_delta(kind, layer, h_in, j, shape, pre[k])
        p_c = rank_one_candidates(base_c, delta, dw, single)
        if single:
            new[("pre", k)] = lambda minus: _replace_channel(pre[k], c, p_c[0])
            return c, p_c
        new[("pre", k)] = lambda minus: _replace_channel(
            pre[k], c, tf.where(minus, p_c[1], p_c[0]))
        return c, p_c

    def _channel_to_next_mixer(self, i: int, m: int, c, p_c, mix_in, pre, batch, new):
        """Carries channel `c` alone through the channel-wise layers after
        layer `i`, then adds its change to the next mixer's pre-activation
        as a one-channel delta; runs the rest in full. Registers the next
        mixer's input and pre-activation in `new`; returns the predictions."""
        n = len(p_c)
        hc = _activate(self.layers[i], tf.concat(p_c, 0))
        for l in range(i + 1, m):
            hc = channel_layer(self.layers[l], hc, c, batch)
        km = self.slot[m]
        base_in = _channel(mix_in[km], c)
        diff = hc - tf.concat([base_in] * n, 0)
        mixer = self.layers[m]
        dpre = _input_channel_delta(mixer, diff, c)
        p_m = tf.concat([pre[km]] * n, 0) + dpre
        new[("in", km)] = lambda minus: _replace_channel(mix_in[km], c, _half(hc, minus, batch))
        new[("pre", km)] = lambda minus: _half(p_m, minus, batch)
        y_pred, _ = self._run(m + 1, _activate(mixer, p_m), batch, None, n)
        return y_pred

    def trial(self, v: VariableChoice, j, dw, fixed, carried, x, y, sample_weight,
              single: bool = False):
        """The `Trial` of scalar `j` of variable `v` (an index, or a `OneOf`
        of whole-layer parameters) at offset `dw`.

        With `single`, `dw` is one offset and only `w + dw` is evaluated
        (`SingleCandidates`)."""
        self.candidates(v, single)  # refuses `single` where it cannot apply
        inputs = fixed
        mix_in, pre = carried
        i = self.layer_of[indices_of(v)[0]]
        h_in = mix_in[self.slot[i]] if i in self.slot else inputs[i]
        batch = tf.shape(h_in)[0]
        m = self.next_mixer[i]
        # Cache slot -> function building that slot's value for the
        # candidate `minus` names (see `Trial`). Only the accepted
        # candidate's are ever built (lazily, in the caller's switch), so
        # full-size cache tensors are not rewritten for rejected candidates.
        new = dict()
        seen = None
        with keras.StatelessScope():
            if isinstance(v, OneOf) or self.kind[v] is None:
                y_pred, seen = self._whole_layer(v, j, dw, h_in, batch, m)
            else:
                c, p_c = self._channel_candidates(v, j, dw, h_in, pre, new, single)
                if i in self.sparse_to:
                    y_pred = self._channel_to_next_mixer(i, m, c, p_c, mix_in, pre, batch, new)
                else:
                    h = _activate(self.layers[i], tf.concat(
                        [_replace_channel(pre[self.slot[i]], c, p) for p in p_c], 0))
                    y_pred, seen = self._run(i + 1, h, batch, m, len(p_c))
            if m is not None and ("pre", self.slot[m]) not in new:
                km = self.slot[m]
                new[("in", km)] = lambda minus: _half(seen[0], minus, batch)
                new[("pre", km)] = lambda minus: _half(seen[1], minus, batch)
            lp, yp, lm, ym = self.candidate_losses(y_pred, batch, y, sample_weight, single)

        return cached_trial(lp, yp, lm, ym, new, {"in": mix_in, "pre": pre})
