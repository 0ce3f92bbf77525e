#!/usr/bin/env python
"""Would TensorFlow's fused BatchNormalization kernel make a trial's tail faster?

The shared tails of the fast path normalise two stacked candidates, each
with its own batch statistics, with `tf.nn.moments` and
`tf.nn.batch_normalization` (`keras_rso.evaluators.rank_one._candidates_batchnorm`,
which this times as it is),
the ops Keras' own BatchNormalization runs, so that the fast path matches
full forward passes bit for bit. TensorFlow's fused kernel
(`FusedBatchNormV3`) computes the statistics and normalises in fewer passes
over memory, but rounds differently. This times both on random activations
of the shapes the tails of `--preset fastest` carry (two candidates at
batch 2048, 14x14 and 7x7, 16 channels): the fused kernel on each half,
then a concat, as a tail would have to call it. It reports the median of
`--repeats` calls and the largest difference between the two outputs.

Example:
    python -m benchmarks.studies.fused_batchnorm --batch-size 2048
"""

import argparse

import keras
import numpy as np
import tensorflow as tf

from benchmarks.flop_limit import _seconds
from keras_rso.evaluators.rank_one import _candidates_batchnorm


def compare(batch: int, size: int, channels: int, repeats: int) -> dict:
    """Milliseconds per call of both ways, and their largest difference, for
    two candidates of `batch` activations of shape `size x size x channels`."""
    rng = np.random.default_rng(0)
    h = tf.constant(rng.standard_normal((2 * batch, size, size, channels)), tf.float32)
    layer = keras.layers.BatchNormalization()
    layer.build(h.shape)
    layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
    layer.beta.assign(rng.standard_normal(channels))

    @tf.function
    def moments():
        return _candidates_batchnorm(layer, h, batch)

    @tf.function
    def fused():
        halves = [tf.compat.v1.nn.fused_batch_norm(
            h[k * batch:(k + 1) * batch], layer.gamma, layer.beta,
            epsilon=layer.epsilon, is_training=True)[0] for k in range(2)]
        return tf.concat(halves, 0)

    return {"shape": [2 * batch, size, size, channels],
            "moments_ms": 1000 * _seconds(moments, repeats),
            "fused_ms": 1000 * _seconds(fused, repeats),
            "max_abs_difference": float(tf.reduce_max(tf.abs(moments() - fused())))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2048, help="images per candidate")
    parser.add_argument("--sizes", type=int, nargs="+", default=[14, 7],
                        help="spatial sizes of the activations (--preset fastest: 14 7)")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per side")
    args = parser.parse_args(argv)
    for size in args.sizes:
        r = compare(args.batch_size, size, args.channels, args.repeats)
        print(f"{r['shape']}: moments + batch_normalization {r['moments_ms']:.1f} ms, "
              f"fused per candidate + concat {r['fused_ms']:.1f} ms "
              f"({r['moments_ms'] / r['fused_ms']:.2f}x); "
              f"largest difference {r['max_abs_difference']:.2e}")


if __name__ == "__main__":
    main()
