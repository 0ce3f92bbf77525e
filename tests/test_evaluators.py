"""The fast path's building blocks against the plain TensorFlow ops they replace."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rso.evaluators.rank_one import _half, _replace_channel, _tap_shift


@pytest.mark.parametrize("kernel,strides,padding,dilation,size", [
    (3, 1, "same", 1, (8, 8)), (3, 2, "same", 1, (7, 9)), (3, 2, "valid", 1, (9, 8)),
    ((2, 4), (1, 3), "same", 1, (6, 10)), (4, 2, "same", 1, (9, 9)),
    (3, 1, "same", 2, (9, 9)), (3, 1, "valid", 2, (9, 7)), ((3, 1), (2, 2), "valid", 1, (8, 8))])
def test_tap_shift_equals_the_one_hot_convolution(kernel, strides, padding, dilation, size):
    layer = keras.layers.Conv2D(3, kernel, strides=strides, padding=padding,
                                dilation_rate=dilation)
    x = np.random.default_rng(0).normal(size=(2, *size, 1)).astype("float32")
    layer.build(x.shape)
    out_size = layer.compute_output_shape(x.shape)[1:3]
    kh, kw = layer.kernel_size
    for tap in range(kh * kw):
        onehot = tf.reshape(tf.one_hot(tap, kh * kw), (kh, kw, 1, 1))
        want = layer.convolution_op(x, onehot).numpy()
        assert want.any()  # every tap sees some of the input
        got = _tap_shift(layer, tf.constant(x), tf.constant(tap), (kh, kw), out_size)
        np.testing.assert_array_equal(got.numpy(), want, err_msg=f"tap {tap}")
        # Unknown sizes take the convolution itself.
        unknown = _tap_shift(layer, tf.constant(x), tf.constant(tap), (kh, kw), (None, None))
        np.testing.assert_array_equal(unknown.numpy(), want)


def test_replace_channel_changes_that_channel_only():
    t = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 3, 4)
    new = -np.ones((2, 3, 1), dtype="float32")
    got = _replace_channel(tf.constant(t), tf.constant(2), tf.constant(new)).numpy()
    want = t.copy()
    want[..., 2] = -1
    np.testing.assert_array_equal(got, want)


def test_half_picks_the_named_candidate_of_two_stacked():
    # Candidates are stacked as [w + dw; w - dw] along the batch axis.
    stacked = np.arange(4 * 2 * 3, dtype="float32").reshape(4, 2, 3)
    batch = tf.constant(2)
    for minus, want in ((False, stacked[:2]), (True, stacked[2:])):
        got = _half(tf.constant(stacked), tf.constant(minus), batch)
        np.testing.assert_array_equal(got.numpy(), want)
