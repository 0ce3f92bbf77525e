"""How much memory a fast-path train step needs, known before it runs.

The fast paths (`keras_rso.evaluators.ChainEvaluator`,
`keras_rso.evaluators.GraphEvaluator`) cache the activations of
the whole batch once per step, and a trial carries both candidates, stacked
along the batch axis, through everything downstream of its weight. At large
batches that is most of a fit's memory (5,000 CIFAR-10 images through
`paper_cifar10_net` make 4.7 GB of activations), and when it does not fit,
the operating system kills the process and the fit with it.
`RSOModel.fit` calls `check_step_memory` before its first step: a batch
whose cache alone exceeds the available memory is refused with an error
that names the batch size; one that would need more than the typical step
gets a warning.
"""

import warnings
from typing import List, Optional, Sequence

import keras
import numpy as np

from keras_rso.evaluators.topology import _is_mixer

# What a step's peak grows by per row of the batch, in multiples of the
# row's cached activations, measured 1.50x on `paper_mnist_net` (chain)
# and 2.91x on `paper_cifar10_net` (graph): `benchmarks/step_memory.py`,
# docs/results.md "Memory of a step".
TYPICAL_STEP_ACTIVATIONS = 3.0


def available_memory() -> Optional[int]:
    """Bytes of memory available to new allocations (Linux `MemAvailable`),
    or None where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _row_bytes(tensor) -> int:
    shape = tuple(tensor.shape)[1:]
    if any(d is None for d in shape):
        raise ValueError(f"unknown shape {tensor.shape}")
    itemsize = np.dtype(keras.backend.standardize_dtype(tensor.dtype)).itemsize
    return int(np.prod(shape)) * itemsize


def activation_bytes(layers: Sequence) -> Optional[List[int]]:
    """Bytes per example that the fast path caches for each layer.

    Args:
        layers: The layers (or Keras operations) a fast-path evaluator runs,
            each called once, in order (its `layers`).

    Returns:
        For each layer, its output, plus the pre-activation of a plain
        `Dense`/`Conv2D` whose activation is not the identity (with the
        identity the two are one tensor); None if a shape is not static.
    """
    sizes = []
    for layer in layers:
        try:
            out = _row_bytes(layer.output)
        except (AttributeError, ValueError):
            return None
        separate_pre = _is_mixer(layer) and layer.activation not in (
            None, keras.activations.linear)
        sizes.append(out * (2 if separate_pre else 1))
    return sizes


def cache_bytes(evaluator, batch_size: int, start: int = 0) -> Optional[int]:
    """Bytes of the activations a fast-path step caches for `batch_size`
    rows: those of `evaluator.layers[start:]` (a step without a layer-input
    pool caches from the input on; with one, from the anchor of the segment,
    which is at or before the first searched layer).

    Returns None for the full forward path (`fast_path=False`) or a model
    whose activation shapes are not static.
    """
    if not getattr(evaluator, "fast", False):
        return None
    sizes = activation_bytes(evaluator.layers)
    if sizes is None:
        return None
    return sum(sizes[start:]) * int(batch_size)


def check_step_memory(evaluator, batch_size: int, start: int = 0) -> None:
    """Refuses a batch whose step cannot fit in the available memory.

    Args:
        evaluator: The fit's evaluator (its `layers`).
        batch_size: Rows of a training batch.
        start: The first layer a step caches (see `cache_bytes`).

    Raises:
        ValueError: if the activations the step caches (`cache_bytes`)
            exceed the memory available now (a layer-input pool, created
            before, already counts against it): the step would be killed.
    Warns:
        RuntimeWarning: if they fit but `TYPICAL_STEP_ACTIVATIONS` times
            them does not: the step is likely to be killed.
    """
    cached = cache_bytes(evaluator, batch_size, start)
    free = available_memory()
    if cached is None or free is None:
        return
    per_row = cached / batch_size
    typical = TYPICAL_STEP_ACTIVATIONS * cached
    advice = (f"Use a batch below {int(free // (TYPICAL_STEP_ACTIVATIONS * per_row)):,} "
              "rows.")
    if cached > free:
        raise ValueError(
            f"A batch of {batch_size:,} rows caches {cached / 1e9:.2f} GB of "
            f"activations in each RSO step ({per_row / 1e6:.3f} MB per row), and a "
            f"step typically needs about {TYPICAL_STEP_ACTIVATIONS:g}x that, but this "
            f"machine has {free / 1e9:.2f} GB available. " + advice)
    if typical > free:
        warnings.warn(
            f"A batch of {batch_size:,} rows caches {cached / 1e9:.2f} GB of "
            f"activations in each RSO step; a step typically needs about "
            f"{typical / 1e9:.2f} GB, and this machine has {free / 1e9:.2f} GB "
            "available: the operating system may kill the process. " + advice,
            RuntimeWarning, stacklevel=3)
