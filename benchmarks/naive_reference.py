"""A deliberately naive RSO trial, the baseline of `bench_speed.py`.

Per trial: three full forward passes (W, W + dw e_j, W - dw e_j) of the
whole model on the batch, inside one `tf.function`, then an assignment. No
caching, no stacking. It shares no code with keras_rso's train step.
"""

import keras
import tensorflow as tf


class NaiveRSO:
    """Runs naive RSO trials on one variable of `model`."""

    def __init__(self, model: keras.Model, loss_fn, seed: int = 0):
        self.model, self.loss_fn, self.seed = model, loss_fn, seed
        self.counter = tf.Variable(0, dtype=tf.int64)

    def _loss(self, x, y, var=None, value=None):
        mapping = [(var, value)] if var is not None else None
        with keras.StatelessScope(state_mapping=mapping):
            return self.loss_fn(y, self.model(x, training=True))

    def make_trial(self, var, sigma: float):
        @tf.function
        def trial(x, y, j):
            dw = sigma * tf.random.stateless_normal(
                [], seed=tf.stack([tf.constant(self.seed, tf.int64), self.counter]))
            self.counter.assign_add(1)
            flat = tf.reshape(var.value, [-1])
            w = flat[j]
            cands = [tf.reshape(tf.tensor_scatter_nd_update(flat, [[j]], [w + s * dw]), var.shape)
                     for s in (1.0, -1.0)]
            l0 = self._loss(x, y)
            lp = self._loss(x, y, var, cands[0])
            lm = self._loss(x, y, var, cands[1])
            best = tf.argmin(tf.stack([l0, lp, lm]))
            new = tf.switch_case(tf.cast(best, tf.int32),
                                 [lambda: tf.convert_to_tensor(var.value),
                                  lambda: cands[0], lambda: cands[1]])
            var.assign(new)
            return best

        return trial
