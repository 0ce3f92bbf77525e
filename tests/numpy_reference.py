"""Plain numpy layers for the tests that check keras_rso against a
transcription of the authors' code (no keras_rso or Keras inside)."""

import numpy as np


def conv_same(x, k):
    """'Same' convolution, stride 1, NHWC input and HWIO kernel."""
    kh, kw = k.shape[:2]
    pad = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros(x.shape[:3] + (k.shape[3],))
    for dy in range(kh):
        for dx in range(kw):
            out += pad[:, dy:dy + x.shape[1], dx:dx + x.shape[2], :] @ k[dy, dx]
    return out


def batchnorm(x, gamma, beta, eps=1e-3):
    """Training-mode BatchNorm: this batch's statistics (MXNet's too)."""
    m, v = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return (x - m) / np.sqrt(v + eps) * gamma + beta


def avg_pool2(x):
    """2x2 average pooling, stride 2."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
