"""Metrics that RSO reports from its train step."""

import keras


class AcceptRate(keras.metrics.Metric):
    """Fraction of weight trials whose candidate was accepted.

    Accumulates over an epoch (Keras resets metrics at each epoch start), so
    the epoch value is accepted trials / trials of that cycle.

    Args:
        name: Metric name (shown in logs and TensorBoard).
    """

    def __init__(self, name: str = "accept_rate", **kwargs):
        super().__init__(name=name, **kwargs)
        self.accepted = self.add_variable((), initializer="zeros", name="accepted")
        self.tried = self.add_variable((), initializer="zeros", name="tried")

    def update_state(self, accepted, trials):
        self.accepted.assign_add(keras.ops.cast(accepted, self.dtype))
        self.tried.assign_add(keras.ops.cast(trials, self.dtype))

    def result(self):
        return keras.ops.divide_no_nan(self.accepted, self.tried)
