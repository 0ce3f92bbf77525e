#!/usr/bin/env python
"""Digests of every array the data loaders return, to prove a change to
`keras_rso.datasets` changed no value.

Prints one SHA-256 prefix per loader call (MNIST, Fashion-MNIST and
CIFAR-10; whole, limited, raw) and per `standardization_layer`, over the
arrays' values, dtypes and shapes, and whether the training images are
C-contiguous. Run it on two checkouts and compare:

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before python benchmarks/loader_digest.py > before.txt
    python benchmarks/loader_digest.py > after.txt
    diff before.txt after.txt

(Run as a script, not with `-m`: PYTHONPATH then comes before the current
directory and the installed package; the first line names the `keras_rso`
that ran.)
"""
import argparse
import hashlib
import time

import numpy as np


def digest(*arrays: np.ndarray) -> str:
    """SHA-256 prefix of the arrays' values, dtypes and shapes."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(f"{a.dtype}{a.shape}".encode())
    return h.hexdigest()[:16]


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    import keras_rso
    from keras_rso import datasets

    print("keras_rso:", keras_rso.__file__)
    loaders = {"mnist": datasets.load_mnist,
               "fashion_mnist": lambda **k: datasets.load_mnist(fashion=True, **k),
               "cifar10": datasets.load_cifar10}
    start = time.perf_counter()
    for name, load in loaders.items():
        for kwargs in ({}, {"limit": 300}, {"raw": True}, {"limit": 1000, "raw": True}):
            (x, y), (x_test, y_test) = load(**kwargs)
            print(name, kwargs, digest(x, y, x_test, y_test),
                  "C-contiguous" if x.flags.c_contiguous else "strided")
        layer = datasets.standardization_layer(name)
        print(name, "standardization_layer",
              digest(np.asarray(layer.input_mean), np.asarray(layer.input_variance)))
    print(f"# {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
