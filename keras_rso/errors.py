"""Errors raised by keras_rso."""


class NonFiniteLossError(ValueError):
    """The loss of the current weights on a batch is NaN or infinite.

    RSO cannot compare candidates against a non-finite base loss, so it
    stops before touching any weight: the model keeps the weights of the
    last good step.
    """
