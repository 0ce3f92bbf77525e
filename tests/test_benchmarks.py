"""Benchmark helpers whose numbers go into docs/results.md."""

import tensorflow as tf

from benchmarks.flop_limit import counted_ops, limit_seconds


def test_flops_are_counted_from_static_shapes():
    @tf.function
    def work(x, k, a, b):
        return tf.nn.conv2d(x, k, strides=2, padding="SAME"), tf.matmul(a, b, transpose_b=True)

    spec = [tf.TensorSpec((4, 8, 8, 3)), tf.TensorSpec((3, 3, 3, 5)),
            tf.TensorSpec((6, 7)), tf.TensorSpec((2, 7))]
    ops = counted_ops(work.get_concrete_function(*spec).graph)
    assert sorted(kind for kind, *_ in ops) == ["Conv2D", "MatMul"]
    flops = {kind: f for kind, _, _, f in ops}
    # Output 4 x 4 x 4 x 5, each 3 x 3 x 3 multiply-adds; (6 x 7) @ (7 x 2).
    assert flops["Conv2D"] == 2 * (4 * 4 * 4 * 5) * (3 * 3 * 3)
    assert flops["MatMul"] == 2 * 6 * 2 * 7
    cache = {}
    assert limit_seconds(ops, tf.float32, repeats=2, cache=cache) > 0 and len(cache) == 2
