"""Loss evaluation for RSO trials: a general path and a fast path for chains.

A trial needs the loss at `W + dw e_j` and `W - dw e_j` for one scalar `j`
of one variable. Two evaluators provide it inside the traced train step:

* `FullForwardEvaluator` works for any model (subclassed, branching
  functional graphs, nested models): it runs the whole model once per
  candidate, with the candidate value substituted for the variable through
  `keras.StatelessScope`, so nothing is written to any variable.
* `ChainEvaluator` is used when the model is a chain of layers (Sequential,
  or a functional model whose layers each feed only the next). It caches the
  activation entering every layer once per batch and, for a trial in layer
  `i`, runs only layers `i..n` on both candidates stacked along the batch
  axis. For `Dense` and `Conv2D` weights the perturbed layer is not even
  recomputed: a single weight changes one output channel by `dw` times a
  slice of the input (a rank-one update), added to the cached
  pre-activation.

Both evaluators apply BatchNormalization's moving-statistics update exactly
once per batch (in `begin`, with the accepted weights) and never during a
trial. Random layers (Dropout, GaussianNoise, SpatialDropout, random
augmentation) draw the same numbers in every evaluation of a batch (common
random numbers): the base pass and both candidates of every trial see one
mask, drawn afresh for each batch, as they see the same images; see
`seed_states`. Layers that mix samples keep each candidate's batch statistics
apart: a plain BatchNormalization is computed directly on both stacked
candidates, each normalised by its own statistics, and anything unknown is
called once per candidate.
"""


from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from keras_rso import constraints, distribution

LossFn = Callable[[object, object, object], tf.Tensor]

# Layers that treat every sample independently: both candidates can be run
# through them in one call, stacked along the batch axis. Exact types only,
# since a subclass may override `call` with something that mixes samples.
_L = keras.layers
PER_SAMPLE_LAYERS = tuple(
    getattr(_L, name)
    for name in (
        "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D",
        "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
        "SeparableConv2D", "Conv1DTranspose", "Conv2DTranspose",
        "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D",
        "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
        "GlobalMaxPooling3D", "Flatten", "Reshape", "Permute",
        "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D",
        "UpSampling1D", "UpSampling2D", "Rescaling", "LayerNormalization",
        "Identity",
    )
    if hasattr(_L, name)
)


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


def split_offsets(dw) -> Tuple[tf.Tensor, tf.Tensor]:
    """`(d_plus, d_minus)` of a trial's offset: its candidates are
    `w + d_plus` and `w - d_minus`. `dw` is one tensor (the symmetric
    trial, `d_plus = d_minus = dw`) or a pair (a trial inside a weight
    domain, `keras_rso.constraints`)."""
    if isinstance(dw, (tuple, list)):
        return dw[0], dw[1]
    return dw, dw


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


class FullForwardEvaluator:
    """Evaluates candidates with one full forward pass each (any model).

    Args:
        model: The Keras model being trained.
        variables: The searched variables.
        loss_fn: `loss_fn(y, y_pred, sample_weight) -> scalar`.
    """

    fast = False

    def __init__(self, model: keras.Model, variables: Sequence[keras.Variable],
                 loss_fn: LossFn):
        self.model = model
        self.variables = list(variables)
        self.loss_fn = loss_fn
        self.batchnorms = batchnorm_layers(model)
        self.state_variables = list(model.non_trainable_variables)
        self.seed_states = seed_states(self.state_variables)

    def forward(self, x):
        """A training-mode pass (its state updates apply unless in a scope)."""
        return self.model(x, training=True)

    def begin(self, x, y, sample_weight):
        """Base loss with the current weights (the caller keeps its updates)."""
        y_pred = self.forward(x)
        return self.loss_fn(y, y_pred, sample_weight), y_pred, (), ()

    def trial(self, v: int, j, dw, fixed, carried, x, y, sample_weight):
        var = self.variables[v]
        _, plus, minus = candidate_values(var, j, dw)
        results = []
        for value in (plus, minus):
            # The scope substitutes the candidate for the variable and
            # swallows every state update (BN moving statistics, seeds).
            # Every trainable variable is mapped, so that weight regularizers
            # (which read variables through the scope) see the candidate.
            mapping = [(w, value if w is var else tf.convert_to_tensor(w.value))
                       for w in self.variables]
            with keras.StatelessScope(state_mapping=mapping):
                y_pred = self.forward(x)
                loss = self.loss_fn(y, y_pred, sample_weight)
            results.append((loss, y_pred))
        (lp, yp), (lm, ym) = results
        return Trial(lp, yp, lm, ym, (), lambda _: (), lambda _: carried)


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


def batchnorm_layers(model) -> List[keras.layers.Layer]:
    """Every BatchNormalization layer inside `model`."""
    return [l for l in model._flatten_layers(include_self=True)
            if isinstance(l, keras.layers.BatchNormalization)]


def chain_layers(model: keras.Model) -> Optional[List[keras.layers.Layer]]:
    """Returns the model's layers in order if they form a simple chain.

    A chain is a Sequential model, or a functional model with one input and
    one output in which every layer is called once, on the output of the
    layer before it. Returns `None` for anything else.
    """
    if isinstance(model, keras.Sequential):
        layers = list(model.layers)
    elif getattr(model, "_is_graph_network", False) or hasattr(model, "_operations"):
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            return None
        layers = []
        tensor = model.outputs[0]
        input_tensor = model.inputs[0]
        while tensor is not input_tensor:
            history = getattr(tensor, "_keras_history", None)
            if history is None:
                return None
            op, node_index, _ = history
            node = op._inbound_nodes[node_index]
            if isinstance(op, keras.layers.InputLayer):
                break
            extra = [v for v in node.arguments.kwargs.values() if v is not None]
            if len(node.input_tensors) != 1 or extra:
                return None
            layers.append(op)
            tensor = node.input_tensors[0]
        layers.reverse()
        others = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
        if len(others) != len(layers) or set(map(id, others)) != set(map(id, layers)):
            return None
    else:
        return None
    if len(set(map(id, layers))) != len(layers):
        return None  # a shared layer appears twice
    return layers


def flat_biases(layers: Sequence[keras.layers.Layer]) -> List[keras.Variable]:
    """Biases that the BatchNormalization right after their layer removes.

    In training mode BatchNormalization subtracts each channel's batch mean,
    so a per-channel bias added just before it, with no activation between,
    does not change the output: the loss is flat along it, a trial there
    only costs time, and float rounding decides whether the weight moves.
    Only the unambiguous case is reported: a linear layer whose 1-D bias is
    on the last axis, followed by a trainable BatchNormalization over the
    last axis.
    """
    found = []
    for layer, after in zip(layers, layers[1:]):
        bias = getattr(layer, "bias", None)
        if (bias is not None and bias.trainable and len(bias.shape) == 1
                and getattr(layer, "activation", None) is keras.activations.linear
                and getattr(layer, "data_format", "channels_last") == "channels_last"
                and isinstance(after, keras.layers.BatchNormalization)
                and after.trainable and after.axis == -1):
            found.append(bias)
    return found


def _is_mixer(layer) -> bool:
    """Plain Dense/Conv2D: its pre-activation output is cached and updated."""
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return False
    if type(layer) is keras.layers.Dense:
        return True
    return (type(layer) is keras.layers.Conv2D and layer.groups == 1
            and layer.data_format == "channels_last")


def _rank_one_kind(layer, var) -> Optional[str]:
    """Names the rank-one rule for `var` in `layer`, or None."""
    if not _is_mixer(layer):
        return None
    prefix = "dense" if type(layer) is keras.layers.Dense else "conv"
    if var is layer.kernel:
        return f"{prefix}_kernel"
    if layer.use_bias and var is layer.bias:
        return f"{prefix}_bias"
    return None


# Activations that act on each element alone (by function name: Keras'
# activations and the `keras.ops` of the same name). The step-shaped ones
# (sign, round, floor, ceil, threshold) have no useful gradient; RSO trains
# through them on the fast path all the same.
_ELEMENTWISE = ("relu", "linear", "sigmoid", "tanh", "elu", "selu", "gelu",
                "silu", "swish", "softplus", "softsign", "leaky_relu",
                "relu6", "hard_sigmoid", "hard_silu", "mish", "exponential",
                "hard_tanh", "hard_shrink", "soft_shrink", "tanh_shrink", "squareplus",
                "sparse_plus", "log_sigmoid", "celu", "threshold",
                "sign", "round", "floor", "ceil")


def _elementwise_activation(fn) -> bool:
    return fn is None or getattr(fn, "__name__", "") in _ELEMENTWISE


def _is_channelwise(layer) -> bool:
    """True if output channel c depends only on input channel c."""
    t = type(layer)
    if t is keras.layers.BatchNormalization:
        return _is_plain_batchnorm(layer)
    if t in (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU):
        return True
    if t is keras.layers.Activation:
        return _elementwise_activation(layer.activation)
    if t in (keras.layers.AveragePooling2D, keras.layers.MaxPooling2D,
             keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D):
        return layer.data_format == "channels_last"
    return False


def _pre_activation(layer, x):
    """Dense/Conv2D output before the activation, computed as `call` does."""
    if type(layer) is keras.layers.Dense:
        out = keras.ops.matmul(x, layer.kernel)
        if layer.bias is not None:
            out = keras.ops.add(out, layer.bias)
        return out
    out = layer.convolution_op(x, layer.kernel)
    if layer.use_bias:
        bias = keras.ops.reshape(layer.bias, (1,) * (layer.rank + 1) + (layer.filters,))
        out = keras.ops.add(out, bias)
    return out


def _activate(layer, out):
    return layer.activation(out) if layer.activation is not None else out


def _output_channel(kind: str, j, shape):
    return j % shape[-1] if kind.endswith("kernel") else j


def _channel(x, i):
    """Channel `i` (a scalar tensor) of `x`, keeping the last axis.

    A strided slice: on the CPU it is faster than `tf.gather` on the
    last axis.
    """
    return tf.ensure_shape(x[..., i:i + 1], x.shape[:-1].concatenate([1]))


def _channel_delta(kind: str, layer, x, j, shape, like):
    """d(pre-activation[..., c]) / d(w_j), with c the output channel of w_j.

    Shape `like[..., :1]`: a single channel. For a conv kernel weight
    (kh, kw, cin, cout) it is input channel `cin` shifted by the tap
    (kh, kw), with the layer's strides, padding and dilation: what a
    1-in/1-out convolution with a one-hot filter computes (`_tap_shift`).
    """
    if kind == "dense_kernel":
        return _channel(x, j // shape[1])
    if kind in ("dense_bias", "conv_bias"):
        return tf.ones_like(like[..., :1])
    kh_, kw_, c_in, c_out = shape
    cin = (j // c_out) % c_in
    tap = j // (c_out * c_in)
    return _tap_shift(layer, _channel(x, cin), tap, (kh_, kw_), like.shape[1:3])


def _tap_shift(layer, channel, tap, kernel_size, out_size):
    """`channel` as a Conv2D layer sees it through kernel tap `tap`.

    Equal to `layer.convolution_op(channel, onehot(tap))`, computed as a
    zero-pad and a strided slice. TensorFlow's CPU convolution is slow for
    one input and one output channel: at a batch of 512 28x28 images the
    slice is about 15x faster, and this runs once per trial. Falls back to
    the convolution where the sizes are not static.
    """
    in_size = channel.shape[1:3]
    if None in tuple(in_size) or None in tuple(out_size):
        onehot = tf.one_hot(tap, kernel_size[0] * kernel_size[1], dtype=channel.dtype)
        return layer.convolution_op(channel, tf.reshape(onehot, (*kernel_size, 1, 1)))
    tap = tf.cast(tap, tf.int32)  # a weight index may be int64
    taps = (tap // kernel_size[1], tap % kernel_size[1])
    pads, begin, end = [[0, 0]], [0], [tf.shape(channel)[0]]
    for n, out, k, s, d, t in zip(in_size, out_size, kernel_size, layer.strides,
                                  layer.dilation_rate, taps):
        # TensorFlow's "SAME" padding: the total needed, the smaller half first.
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0) if layer.padding == "same" else 0
        pads.append([total // 2, total - total // 2])
        begin.append(t * d)
        end.append(t * d + (out - 1) * s + 1)
    padded = tf.pad(channel, pads + [[0, 0]])
    out = tf.strided_slice(padded, tf.stack(begin + [0]), tf.stack(end + [1]),
                           strides=[1, *layer.strides, 1])
    return tf.ensure_shape(out, [None, *out_size, 1])


def _is_plain_batchnorm(layer) -> bool:
    """BatchNormalization that `_candidates_batchnorm` reproduces exactly."""
    return (type(layer) is keras.layers.BatchNormalization
            and layer.axis in (-1, len(layer.input.shape) - 1)
            and not layer.synchronized and not getattr(layer, "renorm", False)
            and layer.compute_dtype in ("float32", "float64"))


def _candidates_batchnorm(layer, h, batch, channel=None):
    """Training-mode BatchNormalization of two stacked candidates.

    `h` holds the two candidates' activations along the batch axis; each
    half is normalised with its own batch statistics, as calling the layer
    on each half would do, but without building the moving-statistics
    update that a trial throws away. The layers between a variable and the
    next mixer are copied into that variable's branch of the step's graph,
    so the ops saved here are saved many times over in tracing and graph
    optimisation. `channel`
    picks one channel of the layer's parameters when `h` carries only it.
    """
    def param(v):
        return tf.gather(v, channel) if channel is not None else tf.convert_to_tensor(v)

    gamma = param(layer.gamma) if layer.scale else None
    beta = param(layer.beta) if layer.center else None
    if not layer.trainable:
        # A frozen BatchNormalization uses its moving statistics even in
        # training mode, so it treats samples independently.
        return tf.nn.batch_normalization(h, param(layer.moving_mean),
                                         param(layer.moving_variance),
                                         beta, gamma, layer.epsilon)
    two = tf.reshape(h, tf.concat([[2, batch], tf.shape(h)[1:]], 0))
    mean, var = tf.nn.moments(two, axes=list(range(1, len(h.shape))), keepdims=True)
    out = tf.nn.batch_normalization(two, mean, var, beta, gamma, layer.epsilon)
    return tf.ensure_shape(tf.reshape(out, tf.shape(h)), h.shape)


def channel_layer(layer, h, c, batch):
    """Applies a channel-wise layer (`_is_channelwise`) to channel `c` only,
    for two stacked candidates; `h` holds that channel of its input."""
    if type(layer) in (keras.layers.AveragePooling2D, keras.layers.MaxPooling2D):
        # TensorFlow's CPU pooling is slow on a single channel; with the
        # samples moved to the channel axis it is one vectorised pass
        # (about 3x faster at a batch of 512).
        swap = [3, 1, 2, 0]
        return tf.transpose(layer(tf.transpose(h, swap)), swap)
    if type(layer) is not keras.layers.BatchNormalization:
        return layer(h, training=True)
    return _candidates_batchnorm(layer, h, batch, channel=c)


def _half(stacked, minus, batch):
    """One candidate's half of two stacked candidates (`w + dw` first):
    the second half where the boolean tensor `minus` holds, else the first."""
    start = tf.where(minus, batch, 0)
    return stacked[start:start + batch]


def _replace_channel(t, c, new):
    """`t` with channel `c` (last axis) replaced by `new` (one channel).

    A select that broadcasts `new`: on the CPU 1.4-2x as fast as mixing
    `t` and `new` with a one-hot mask (batch 512, 28x28x16).
    """
    c = tf.convert_to_tensor(c)
    channels = tf.range(tf.shape(t, out_type=c.dtype)[-1], dtype=c.dtype)
    return tf.where(tf.equal(channels, c), new, t)


class ChainEvaluator:
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

    def __init__(self, layers: Sequence[keras.layers.Layer],
                 variables: Sequence[keras.Variable], loss_fn: LossFn):
        self.layers = list(layers)
        self.variables = list(variables)
        self.loss_fn = loss_fn
        owner = {}
        for i, layer in enumerate(self.layers):
            for var in layer.trainable_variables:
                owner.setdefault(id(var), i)
        missing = [v.path for v in self.variables if id(v) not in owner]
        if missing:
            raise ValueError(f"Variables outside the chain's layers: {missing}")
        self.layer_of = [owner[id(v)] for v in self.variables]
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
        self._tails = {}  # start layer -> shared tail function (`_tail`)

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

    def begin(self, x, y, sample_weight, start: int = 0):
        """Runs the chain once, caching every layer's input.

        This is the one pass per batch whose BatchNormalization updates are
        kept (the caller applies them once the loss is known to be finite).

        Args:
            x, y, sample_weight: The batch.
            start: Index of the layer whose input `x` is (a layer-input
                pool's anchor, `keras_rso.pool`); the layers before it are
                not run, and their cache entries are empty placeholders
                that only trials of earlier layers would read.

        Returns:
            `(loss, y_pred, fixed, carried)`: `fixed` holds every layer's
            input; `carried` holds `(inputs of mixers, pre-activations of
            mixers)`, which trials update.
        """
        inputs, pre = [], []
        h = x
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

    def _run(self, start: int, h, batch, record: Optional[int]):
        """Runs layers `start..` on two stacked candidates.

        If `record` is a mixer index, also returns that mixer's stacked
        input and pre-activation.
        """
        seen = (None, None)
        if record is not None:
            h = self._layers(start, record, h, batch)
            p = _pre_activation(self.layers[record], h)
            seen = (h, p)
            h = _activate(self.layers[record], p)
            start = record + 1
        return self._tail(start, h, batch), seen

    def _layers(self, start: int, stop: int, h, batch):
        """Layers `start..stop - 1` on two stacked candidates."""
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
                for half in (h[:batch], h[batch:]):
                    with keras.StatelessScope():
                        halves.append(layer(half, training=True))
                h = tf.concat(halves, axis=0)
        return h

    def _tail(self, start: int, h, batch):
        """Layers `start..` on two stacked candidates, through shared functions.

        Every searched variable's trial ends by running the rest of the
        network, and each trial is a branch of the step's graph, so inline
        tails would put one copy of the network's end in the graph per
        variable. Instead the tail is cut after each mixer, and each piece
        is a `tf.function`, traced once and called by every trial that
        reaches it. Under several replicas the pieces stay inline: their
        collective ops (synchronized BatchNormalization) must not be shared
        between call sites.
        """
        n = len(self.layers)
        if start >= n:
            return h
        stop = next((m + 1 for m in self.mixers if m >= start), n)

        def piece(h, batch):
            return self._tail(stop, self._layers(start, stop, h, batch), batch)

        if distribution.num_replicas() > 1:
            return piece(h, batch)
        if start not in self._tails:
            self._tails[start] = tf.function(piece, autograph=False)
        return self._tails[start](h, batch)

    def trial(self, v: int, j, dw, fixed, carried, x, y, sample_weight):
        inputs = fixed
        mix_in, pre = carried
        i = self.layer_of[v]
        layer, var, kind = self.layers[i], self.variables[v], self.kind[v]
        h_in = mix_in[self.slot[i]] if i in self.slot else inputs[i]
        batch = tf.shape(h_in)[0]
        m = self.next_mixer[i]
        # Cache slot -> function building that slot's value for the
        # candidate `minus` names (see `Trial`). Only the accepted
        # candidate's are ever built (lazily, in the caller's switch), so
        # full-size cache tensors are not rewritten for rejected candidates.
        new = dict()
        with keras.StatelessScope():
            if kind is not None:
                k = self.slot[i]
                shape = tuple(var.shape)
                c = _output_channel(kind, j, shape)
                base_c = _channel(pre[k], c)
                delta = _channel_delta(kind, layer, h_in, j, shape, pre[k])
                d_plus, d_minus = (tf.cast(d, base_c.dtype) for d in split_offsets(dw))
                p_c = (base_c + d_plus * delta, base_c - d_minus * delta)
                new[("pre", k)] = lambda minus: _replace_channel(
                    pre[k], c, tf.where(minus, p_c[1], p_c[0]))
                if i in self.sparse_to:
                    hc = _activate(layer, tf.concat(p_c, 0))
                    for l in range(i + 1, m):
                        hc = channel_layer(self.layers[l], hc, c, batch)
                    km = self.slot[m]
                    base_in = _channel(mix_in[km], c)
                    diff = hc - tf.concat([base_in, base_in], 0)
                    mixer = self.layers[m]
                    if type(mixer) is keras.layers.Dense:
                        dpre = tf.matmul(diff, tf.gather(mixer.kernel, [c], axis=0))
                    else:
                        dpre = mixer.convolution_op(
                            diff, tf.gather(mixer.kernel, [c], axis=2))
                    p_m = tf.concat([pre[km], pre[km]], 0) + dpre
                    new[("in", km)] = lambda minus: _replace_channel(
                        mix_in[km], c, _half(hc, minus, batch))
                    new[("pre", km)] = lambda minus: _half(p_m, minus, batch)
                    y_pred, _ = self._run(m + 1, _activate(mixer, p_m), batch, None)
                else:
                    h = _activate(layer, tf.concat(
                        [_replace_channel(pre[k], c, p) for p in p_c], 0))
                    y_pred, seen = self._run(i + 1, h, batch, m)
            else:
                _, plus, minus = candidate_values(var, j, dw)
                outs = []
                for value in (plus, minus):
                    with keras.StatelessScope(state_mapping=[(var, value)]):
                        outs.append(layer(h_in, training=True))
                y_pred, seen = self._run(i + 1, tf.concat(outs, 0), batch, m)
            if m is not None and ("pre", self.slot[m]) not in new:
                km = self.slot[m]
                new[("in", km)] = lambda minus: _half(seen[0], minus, batch)
                new[("pre", km)] = lambda minus: _half(seen[1], minus, batch)
            yp, ym = y_pred[:batch], y_pred[batch:]
            lp = self.loss_fn(y, yp, sample_weight)
            lm = self.loss_fn(y, ym, sample_weight)

        keys = sorted(new)
        kept = tuple((mix_in if part == "in" else pre)[s] for part, s in keys)

        def entries(minus):
            # ensure_shape keeps the loop variables' static shapes.
            return tuple(tf.ensure_shape(new[key](minus), t.shape)
                         for key, t in zip(keys, kept))

        def merge(entries):
            value = dict(zip(keys, entries))
            return (tuple(value.get(("in", s), t) for s, t in enumerate(mix_in)),
                    tuple(value.get(("pre", s), t) for s, t in enumerate(pre)))

        return Trial(lp, yp, lm, ym, kept, entries, merge)
