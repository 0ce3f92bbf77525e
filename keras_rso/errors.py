"""Errors raised by keras_rso."""


class NonFiniteLossError(ValueError):
    """A batch's inputs, or the loss of the current weights on it, are NaN/inf.

    RSO cannot compare candidates against a non-finite base loss, so it
    stops before touching any weight: the model keeps the weights of the
    last good step. Inputs are checked as well as the loss, because a NaN
    input does not always make the loss NaN (a fused BatchNormalization +
    ReLU in a graph can turn it into 0). The message says which it was.
    """
