"""The fast paths' layer math: one weight's change as a change of one channel."""

import keras
import tensorflow as tf


def _weight(layer, value):
    """`value` (a variable of `layer`, a slice of one, or an input) in the
    layer's compute dtype, as `layer.__call__` reads its variables and
    inputs: under a mixed precision policy (`mixed_bfloat16`) the variables
    are float32 and most layers compute in bfloat16."""
    dtype = layer.compute_dtype
    value = tf.convert_to_tensor(value)
    return value if value.dtype == dtype else tf.cast(value, dtype)


def _pre_activation(layer, x):
    """Dense/Conv2D output before the activation, computed as `call` does
    (which casts a floating input to the layer's compute dtype)."""
    x = _weight(layer, x)
    if type(layer) is keras.layers.Dense:
        out = keras.ops.matmul(x, _weight(layer, layer.kernel))
        if layer.bias is not None:
            out = keras.ops.add(out, _weight(layer, layer.bias))
        return out
    out = layer.convolution_op(x, _weight(layer, layer.kernel))
    if layer.use_bias:
        bias = keras.ops.reshape(_weight(layer, layer.bias),
                                 (1,) * (layer.rank + 1) + (layer.filters,))
        out = keras.ops.add(out, bias)
    return out


def _input_channel_delta(layer, diff, c):
    """The change of `layer`'s (a Dense or Conv2D) pre-activation when its
    input channel `c` changes by `diff` (one channel)."""
    diff = _weight(layer, diff)
    if type(layer) is keras.layers.Dense:
        return tf.matmul(diff, _weight(layer, tf.gather(layer.kernel, [c], axis=0)))
    return layer.convolution_op(diff, _weight(layer, tf.gather(layer.kernel, [c], axis=2)))


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


def _candidates_batchnorm(layer, h, batch, channel=None, candidates=None):
    """Training-mode BatchNormalization of two stacked candidates (or one).

    `h` holds the two candidates' activations along the batch axis; each
    half is normalised with its own batch statistics, as calling the layer
    on each half would do, but without building the moving-statistics
    update that a trial throws away. The layers between a variable and the
    next mixer are copied into that variable's branch of the step's graph,
    so the ops saved here are saved many times over in tracing and graph
    optimisation. `channel` picks one channel of the layer's parameters
    when `h` carries only it. `candidates`, a list of `(variable, plus,
    minus)` with each `variable` the layer's gamma or beta
    (`candidate_mapping`), gives those parameters a value per half: the
    first half is normalised with `plus`, the second with `minus`, in one
    pass. Half-precision activations (a mixed precision policy) are
    normalised in float32 and cast back, as the layer does.
    """
    given = {id(c[0]): c for c in candidates or ()}
    # Keras' BatchNormalization upcasts float16/bfloat16 inputs to float32.
    dtype = keras.backend.result_type(h.dtype, "float32")

    def param(v):
        if id(v) in given:
            _, plus, minus = given[id(v)]
            pair = tf.stack([param_of(plus), param_of(minus)])
            # One value per half, broadcast over the `[2, batch, ...]` view.
            return tf.reshape(pair, [2] + [1] * (len(h.shape) - 1)
                              + ([1] if channel is not None else [-1]))
        return param_of(v)

    def param_of(v):
        v = tf.gather(v, channel) if channel is not None else tf.convert_to_tensor(v)
        return tf.cast(v, dtype)

    own = {id(getattr(layer, name, None)) for name in ("gamma", "beta")}
    for var, _, _ in candidates or ():
        if id(var) not in own:
            raise ValueError(f"{var.path} is neither gamma nor beta of {layer.name}.")
    # `[candidates, batch, ...]`: two candidates, or one (a binary weight's flip).
    two = tf.cast(tf.reshape(h, tf.concat([[-1, batch], tf.shape(h)[1:]], 0)), dtype)
    gamma = param(layer.gamma) if layer.scale else None
    beta = param(layer.beta) if layer.center else None
    if not layer.trainable:
        # A frozen BatchNormalization uses its moving statistics even in
        # training mode, so it treats samples independently.
        mean, var = param_of(layer.moving_mean), param_of(layer.moving_variance)
    else:
        mean, var = tf.nn.moments(two, axes=list(range(1, len(h.shape))), keepdims=True)
    out = tf.nn.batch_normalization(two, mean, var, beta, gamma, layer.epsilon)
    out = tf.cast(out, layer.compute_dtype)
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
