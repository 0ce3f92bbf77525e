"""Objectives that gradients cannot follow, for RSO to optimise directly.

RSO compares loss values and never differentiates them, so a count-based
metric can be the loss itself: a candidate is taken when it classifies
more of the batch correctly. Such a loss is flat almost everywhere in any
one weight, so most trials tie; `RSO(ties="move")` walks across those
plateaus, and `smoothing` adds a small multiple of cross-entropy that
breaks the ties instead (the metric still dominates: with
`smoothing * cross-entropy` below one sample's share of the error, no
trade of the metric for the smooth term can win).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_rso")
class ErrorRate(keras.losses.Loss):
    """The classification error rate of a batch, optionally class-balanced.

    `y_true` holds integer labels, `y_pred` one score per class (the
    predicted class is the arg-max). The per-sample values are scaled so
    that the mean over the batch is:

    * `balanced=False`: the fraction of misclassified samples;
    * `balanced=True`: the balanced error rate, the mean over the classes
      present in the batch of each class's error rate (one minus its
      recall), which an imbalanced task cannot meet by always predicting
      the majority class.

    Plus `smoothing` times the mean sparse categorical cross-entropy.

    Args:
        balanced: Weight each class equally (see above).
        smoothing: Weight of the cross-entropy tie-breaker (0: none).
        from_logits: Whether `y_pred` holds logits (for the cross-entropy).
        name: Loss name.

    Example:

    ```python
    trainer.compile(optimizer=keras_rso.RSO(ties="move"),
                    loss=keras_rso.losses.ErrorRate(balanced=True, smoothing=1e-3))
    ```
    """

    def __init__(self, balanced: bool = False, smoothing: float = 0.0,
                 from_logits: bool = True, name: str = "error_rate", **kwargs):
        if not smoothing >= 0.0:
            raise ValueError(f"`smoothing` must be >= 0. Received: smoothing={smoothing}")
        super().__init__(name=name, **kwargs)
        self.balanced = bool(balanced)
        self.smoothing = float(smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        classes = ops.shape(y_pred)[-1]
        wrong = ops.cast(ops.not_equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), labels),
                         y_pred.dtype)
        if self.balanced:
            onehot = ops.one_hot(labels, classes, dtype=y_pred.dtype)
            count = ops.sum(onehot, axis=0)                       # samples per class
            present = ops.sum(ops.cast(count > 0, y_pred.dtype))  # classes in the batch
            n = ops.cast(ops.shape(labels)[0], y_pred.dtype)
            # mean_i(wrong_i * n / (count_c(i) * present)) = mean over the
            # present classes of their error rates.
            wrong = wrong * n / (ops.take(count, labels) * present)
        if self.smoothing:
            wrong = wrong + self.smoothing * keras.losses.sparse_categorical_crossentropy(
                labels, y_pred, from_logits=self.from_logits)
        return wrong

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"balanced": self.balanced, "smoothing": self.smoothing,
                       "from_logits": self.from_logits})
        return config
