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
trial. Layers that mix samples (BatchNormalization and anything unknown) are
called once per candidate, so each candidate keeps its own batch statistics.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

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


def _flat_update(value: tf.Tensor, j: tf.Tensor, new: tf.Tensor) -> tf.Tensor:
    flat = tf.reshape(value, [-1])
    flat = tf.tensor_scatter_nd_update(flat, tf.reshape(j, [1, 1]),
                                       tf.reshape(new, [1]))
    return tf.reshape(flat, tf.shape(value))


def candidate_values(var: keras.Variable, j: tf.Tensor, dw: tf.Tensor
                     ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Returns `(w_j, W + dw e_j, W - dw e_j)` for variable `var`."""
    value = tf.convert_to_tensor(var.value)
    w = tf.gather(tf.reshape(value, [-1]), j)
    dw = tf.cast(dw, value.dtype)
    return w, _flat_update(value, j, w + dw), _flat_update(value, j, w - dw)


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

    def _forward(self, x):
        return self.model(x, training=True)

    def begin(self, x, y, sample_weight):
        """Base loss with the current weights; updates moving statistics."""
        y_pred = self._forward(x)
        return self.loss_fn(y, y_pred, sample_weight), y_pred, (), ()

    def trial(self, v: int, j, dw, fixed, carried, x, y, sample_weight):
        var = self.variables[v]
        _, plus, minus = candidate_values(var, j, dw)
        results = []
        for value in (plus, minus):
            # The scope substitutes the candidate for the variable and
            # swallows every state update (BN moving statistics, seeds).
            with keras.StatelessScope(state_mapping=[(var, value)]):
                y_pred = self._forward(x)
                loss = self.loss_fn(y, y_pred, sample_weight)
            results.append((loss, y_pred))
        (lp, yp), (lm, ym) = results
        return lp, yp, lm, ym, carried, carried


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


def _rank_one_kind(layer, var) -> Optional[str]:
    """Names the rank-one rule for `var` in `layer`, or None."""
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return None
    if type(layer) is keras.layers.Dense:
        if var is layer.kernel:
            return "dense_kernel"
        if layer.use_bias and var is layer.bias:
            return "dense_bias"
    if (type(layer) is keras.layers.Conv2D and layer.groups == 1
            and layer.data_format == "channels_last"):
        if var is layer.kernel:
            return "conv_kernel"
        if layer.use_bias and var is layer.bias:
            return "conv_bias"
    return None


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


def _rank_one_delta(kind: str, layer, x, j, shape):
    """Change of the layer's pre-activation output per unit change of w_j."""
    if kind == "dense_kernel":
        n_in, n_out = shape
        cin, cout = j // n_out, j % n_out
        column = tf.gather(x, cin, axis=-1)[..., None]
        return column * tf.one_hot(cout, n_out, dtype=x.dtype)
    if kind in ("dense_bias", "conv_bias"):
        return tf.one_hot(j, shape[0], dtype=x.dtype)
    # conv_kernel, shape (KH, KW, Cin, Cout): w_j adds its input channel,
    # shifted by the tap (kh, kw), to output channel cout. A 1-in/1-out
    # convolution with a one-hot filter gives exactly that shifted slice
    # with the layer's strides, padding and dilation.
    kh_, kw_, c_in, c_out = shape
    cout = j % c_out
    cin = (j // c_out) % c_in
    tap = j // (c_out * c_in)
    channel = tf.gather(x, cin, axis=-1)[..., None]
    onehot = tf.reshape(tf.one_hot(tap, kh_ * kw_, dtype=x.dtype), (kh_, kw_, 1, 1))
    contribution = layer.convolution_op(channel, onehot)
    return contribution * tf.one_hot(cout, c_out, dtype=x.dtype)


class ChainEvaluator:
    """Evaluates candidates by re-running only the layers downstream.

    Valid only while trials within a batch move from the output towards the
    input (`order="output_to_input"`): then the activation entering the
    perturbed layer cannot have changed since the batch began.

    Args:
        layers: The chain, from `chain_layers`.
        variables: The searched variables; each must belong to one layer.
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
        self.kind = [_rank_one_kind(self.layers[i], v)
                     for i, v in zip(self.layer_of, self.variables)]
        # Layers whose pre-activation output is cached for rank-one updates.
        self.pre_layers = sorted({i for i, k in zip(self.layer_of, self.kind) if k})
        self.per_sample = [type(l) in PER_SAMPLE_LAYERS for l in self.layers]

    @staticmethod
    def supports(variables, layers) -> bool:
        ids = {id(v) for l in layers for v in l.trainable_variables}
        return all(id(v) in ids for v in variables)

    def begin(self, x, y, sample_weight):
        """Runs the chain once, caching the input of every layer.

        Called outside any stateless scope: this is the one pass per batch
        that updates BatchNormalization's moving statistics.
        """
        inputs, pre = [], []
        h = x
        for i, layer in enumerate(self.layers):
            inputs.append(h)
            if i in self.pre_layers:
                p = _pre_activation(layer, h)
                pre.append(p)
                h = _activate(layer, p)
            else:
                h = layer(h, training=True)
        return self.loss_fn(y, h, sample_weight), h, tuple(inputs), tuple(pre)

    def _downstream(self, start: int, h, batch):
        """Runs layers `start..` on two candidates stacked along axis 0."""
        for layer, per_sample in zip(self.layers[start:], self.per_sample[start:]):
            if per_sample:
                h = layer(h, training=True)
            else:
                h = tf.concat([layer(h[:batch], training=True),
                               layer(h[batch:], training=True)], axis=0)
        return h

    def trial(self, v: int, j, dw, fixed, carried, x, y, sample_weight):
        inputs, pre = fixed, carried
        i = self.layer_of[v]
        layer, var, kind = self.layers[i], self.variables[v], self.kind[v]
        h_in = inputs[i]
        batch = tf.shape(h_in)[0]
        with keras.StatelessScope():
            if kind is not None:
                k = self.pre_layers.index(i)
                delta = _rank_one_delta(kind, layer, h_in, j, tuple(var.shape))
                step = tf.cast(dw, delta.dtype) * delta
                p_plus, p_minus = pre[k] + step, pre[k] - step
                h = _activate(layer, tf.concat([p_plus, p_minus], axis=0))
                pre_plus = pre[:k] + (p_plus,) + pre[k + 1:]
                pre_minus = pre[:k] + (p_minus,) + pre[k + 1:]
            else:
                _, plus, minus = candidate_values(var, j, dw)
                outs = []
                for value in (plus, minus):
                    with keras.StatelessScope(state_mapping=[(var, value)]):
                        outs.append(layer(h_in, training=True))
                h = tf.concat(outs, axis=0)
                pre_plus = pre_minus = pre
            y_pred = self._downstream(i + 1, h, batch)
            yp, ym = y_pred[:batch], y_pred[batch:]
            lp = self.loss_fn(y, yp, sample_weight)
            lm = self.loss_fn(y, ym, sample_weight)
        return lp, yp, lm, ym, pre_plus, pre_minus
