"""Weight domains for RSO, declared the Keras way: as weight constraints.

A gradient optimizer applies a layer's `kernel_constraint` after every
update; RSO goes further and never evaluates a weight outside it: each
trial's candidates are built inside the variable's domain (see
`keras_rso.RSO`, "Constraints"). `Discrete` restricts a weight to a finite
set of values (binary, ternary, k-bit integer weights), which a gradient
cannot search at all: a step of `lr * grad` leaves the set, and projecting
back undoes it.
"""

from typing import List, Optional, Sequence

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="keras_rso")
class Discrete(keras.constraints.Constraint):
    """Restricts a weight to a finite, sorted set of values.

    As a Keras constraint it maps every element to the nearest allowed value
    (halfway between two values goes to the lower one), which is what a
    gradient optimizer that applies it gets. RSO searches such a variable
    by levels: a trial proposes the values a random number of levels above
    and below the current one (at least one level, clipped to the ends of
    the set), so a binary weight's trial is its flip.

    Args:
        values: The allowed values: at least two distinct finite numbers.

    Example:

    ```python
    layer = keras.layers.Conv2D(16, 3, use_bias=False,
                                kernel_constraint=keras_rso.constraints.Discrete.binary())
    ```
    """

    def __init__(self, values: Sequence[float]):
        array = np.asarray(values, dtype="float64").reshape(-1)
        if array.size < 2 or not np.all(np.isfinite(array)):
            raise ValueError(
                "`Discrete(values)` needs at least two finite values. "
                f"Received: values={list(values)}")
        unique = np.unique(array)
        if unique.size != array.size:
            raise ValueError(
                f"`Discrete(values)` needs distinct values. Received: values={list(values)}")
        self.values = tuple(float(v) for v in unique)

    @classmethod
    def binary(cls, scale: float = 1.0) -> "Discrete":
        """`{-scale, +scale}`."""
        return cls([-scale, scale])

    @classmethod
    def ternary(cls, scale: float = 1.0) -> "Discrete":
        """`{-scale, 0, +scale}`."""
        return cls([-scale, 0.0, scale])

    @classmethod
    def integer(cls, bits: int, scale: float = 1.0) -> "Discrete":
        """Signed `bits`-bit integers times `scale`: `-2**(bits-1) .. 2**(bits-1) - 1`."""
        if int(bits) != bits or not 1 < bits <= 16:
            raise ValueError(f"`bits` must be an integer in [2, 16]. Received: bits={bits}")
        half = 2 ** (int(bits) - 1)
        return cls(np.arange(-half, half) * float(scale))

    @property
    def spacing(self) -> float:
        """The median gap between neighbouring values: one level."""
        return float(np.median(np.diff(self.values)))

    def index(self, w):
        """The index of the allowed value nearest to each element of `w`."""
        values = keras.ops.convert_to_tensor(self.values, dtype=w.dtype)
        midpoints = (values[1:] + values[:-1]) / 2
        flat = keras.ops.reshape(w, (-1,))
        # side="left": a value exactly halfway goes to the lower level.
        return keras.ops.reshape(keras.ops.searchsorted(midpoints, flat, side="left"),
                                 keras.ops.shape(w))

    def __call__(self, w):
        values = keras.ops.convert_to_tensor(self.values, dtype=w.dtype)
        return keras.ops.take(values, self.index(w))

    def get_config(self) -> dict:
        return {"values": list(self.values)}


# Constraints that act on every element alone, so that projecting a
# candidate changes only the perturbed scalar (RSO's fast paths keep their
# rank-one update). Any other constraint (MaxNorm, UnitNorm, MinMaxNorm, a
# user's own) is applied to the whole candidate variable, on the full path
# of that layer.
ELEMENTWISE = (Discrete, keras.constraints.NonNeg)


def of(variable) -> Optional[keras.constraints.Constraint]:
    """The constraint of a Keras variable, or None."""
    return getattr(variable, "constraint", None)


def is_elementwise(constraint) -> bool:
    """True if `constraint` maps each element independently (`ELEMENTWISE`)."""
    return type(constraint) in ELEMENTWISE


def discrete_variables(model: keras.Model) -> List[keras.Variable]:
    """The trainable variables of `model` whose constraint is `Discrete`.

    Setting their `trainable` to False leaves RSO (and any Keras optimizer)
    the real-valued variables only, for example the BatchNormalization
    gamma and beta of a binary network whose kernels have settled.

    Example:

    ```python
    for variable in keras_rso.constraints.discrete_variables(model):
        variable.trainable = False
    ```
    """
    return [v for v in model.trainable_variables if isinstance(of(v), Discrete)]
