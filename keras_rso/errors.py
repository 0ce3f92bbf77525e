"""Errors raised by keras_rso."""


class NonFiniteLossError(ValueError):
    """A batch's inputs, or the loss of the current weights on it, are NaN/inf.

    RSO cannot compare candidates against a non-finite base loss, so it
    stops before touching any weight: the model keeps the weights of the
    last good step. Inputs are checked as well as the loss, because a NaN
    input does not always make the loss NaN (a fused BatchNormalization +
    ReLU in a graph can turn it into 0). The message says which it was.
    """

    @classmethod
    def at(cls, step: int, cycle: int, trial: int, trials: int, variable: str,
           inputs: bool) -> "NonFiniteLossError":
        """The error for train `step`, stopped before `trial` (of `trials`)
        of `cycle`, whose next variable is `variable`; `inputs` says whether
        the batch's inputs, or else the loss, were non-finite."""
        if inputs:
            problem = ("the inputs of this batch contain NaN or infinite "
                       "values, so no loss on it means anything")
            advice = "Clean or drop those samples (e.g. `np.isfinite(x)`)."
        else:
            problem = ("the loss of the current weights on this batch is NaN "
                       "or infinite, so no candidate can be compared")
            advice = ("Check the targets and sample weights for NaN/inf "
                      "values and that the loss is defined for them.")
        return cls(
            f"RSO stopped at train step {step} (cycle {cycle}, "
            f"trial {trial} of {trials}, next variable '{variable}'): {problem}. "
            "No weight was changed by that step; the model holds the "
            f"weights of the last good step. {advice}")
