"""Which layers the fast paths understand, and how a model's layers connect."""

from typing import Dict, List, Optional, Sequence

import keras

from keras_rso import _compat

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


def chain_layers(model: keras.Model) -> Optional[List[keras.layers.Layer]]:
    """Returns the model's layers in order if they form a simple chain.

    A chain is a Sequential model, or a functional model with one input and
    one output in which every layer is called once, on the output of the
    layer before it. Returns `None` for anything else.
    """
    if isinstance(model, keras.Sequential):
        layers = list(model.layers)
    elif _compat.is_functional(model):
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            return None
        layers = []
        tensor = model.outputs[0]
        input_tensor = model.inputs[0]
        while tensor is not input_tensor:
            history = _compat.keras_history(tensor)
            if history is None:
                return None
            op, node_index, _ = history
            node = _compat.inbound_node(op, node_index)
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


def _is_plain_batchnorm(layer) -> bool:
    """BatchNormalization that `_candidates_batchnorm` reproduces exactly."""
    return (type(layer) is keras.layers.BatchNormalization
            and layer.axis in (-1, len(layer.input.shape) - 1)
            and not layer.synchronized and not getattr(layer, "renorm", False)
            and layer.compute_dtype in ("float32", "float64", "bfloat16", "float16"))


def owner_layers(model: keras.Model, variables: Sequence[keras.Variable]
                 ) -> List[Optional[keras.layers.Layer]]:
    """For each of `variables`, the innermost layer of `model` that holds it
    as its own weight (the first in `model`'s depth-first layer order), or
    None."""
    owner = {}
    for layer in _compat.flatten_layers(model, include_self=False):
        for v in _compat.own_trainable_variables(layer):
            owner.setdefault(id(v), layer)
    return [owner.get(id(v)) for v in variables]


def feeding_kernel(layer, depth: int = 32) -> Optional[keras.Variable]:
    """The kernel of the nearest layer upstream of `layer`, walking each
    layer's first input (a merge's main path), or None."""
    for _ in range(depth):
        inputs = _compat.node_input_tensors(layer, 0) if layer is not None else None
        if not inputs:
            return None
        history = _compat.keras_history(inputs[0])
        if history is None:
            return None
        layer = history[0]
        kernel = getattr(layer, "kernel", None)
        if isinstance(kernel, keras.Variable):
            return kernel
    return None


def layer_positions(layers, unique: bool = False) -> Optional[Dict[int, int]]:
    """Maps each trainable variable's id to the index in `layers` of the
    first layer that holds it.

    With `unique`, returns None if a variable belongs to two layers.
    """
    owner: Dict[int, int] = {}
    for k, layer in enumerate(layers):
        for var in getattr(layer, "trainable_variables", []):
            if id(var) in owner and owner[id(var)] != k:
                if unique:
                    return None
                continue
            owner[id(var)] = k
    return owner


def owning_layers(layers, variables, where: str) -> List[int]:
    """The index in `layers` of the layer holding each of `variables`;
    raises a ValueError naming those outside them (`where`: "chain",
    "graph")."""
    owner = layer_positions(layers)
    missing = [v.path for v in variables if id(v) not in owner]
    if missing:
        raise ValueError(f"Variables outside the {where}'s layers: {missing}")
    return [owner[id(v)] for v in variables]
