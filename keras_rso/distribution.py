"""Cross-replica sums and replica-local writes for the traced trial loop.

RSO decides every trial on the loss of the whole global batch, so under a
`tf.distribute` strategy each replica evaluates the candidates on its shard
and the scalar losses are summed across replicas before the decision. The
decision then is the same on every replica, and so is every write: each
replica applies it to its own copy of a variable, and the copies never
diverge.

Why not `ReplicaContext.all_reduce` and `Variable.assign`: on CPU (and any
non-XLA) `MirroredStrategy` and `MultiWorkerMirroredStrategy` implement both
with `merge_call`, which TensorFlow forbids inside `tf.while_loop`/`tf.cond`
in a replica function, and the trial loop is a while loop. A collective
all-reduce op is an ordinary op and runs inside control flow (the collective
runtime keys each execution by loop frame and iteration), and writing a
replica's own component of a mirrored variable is a plain assign.

On one device every function here is the identity or a plain assign.
"""

from __future__ import annotations

import collections
import contextlib
import itertools

import tensorflow as tf

from keras_rso import _compat

# Collective keys live in their own range so that they never meet the keys
# the strategies allocate for themselves (those count up from 1).
_GROUP_KEY_BASE = 0x52534F00  # "RSO\0"
_INSTANCE_KEY_BASE = 1 << 28
# One counter per replica: replicas trace the same code in the same order,
# so their n-th collective op gets the same instance key, which is how the
# runtime pairs them up (also across worker processes).
_instance_keys = collections.defaultdict(lambda: itertools.count(_INSTANCE_KEY_BASE))


def num_replicas() -> int:
    """Replicas taking part in the current step (1 off any strategy)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context
        return tf.distribute.get_strategy().num_replicas_in_sync
    return ctx.num_replicas_in_sync


def _replica_id() -> int:
    ctx = tf.distribute.get_replica_context()
    rid = tf.get_static_value(ctx.replica_id_in_sync_group) if ctx is not None else 0
    return int(rid) if rid is not None else 0


def is_multi_worker() -> bool:
    """True under a strategy whose replicas span several worker processes."""
    strategy = tf.distribute.get_strategy()
    return _compat.num_workers(strategy) > 1


def cross_replica_sum(value: tf.Tensor) -> tf.Tensor:
    """Sums `value` over all replicas; usable inside `tf.while_loop`/`tf.cond`.

    The replicas' values are gathered in replica order and summed locally,
    so every replica gets a bit-identical sum (an all-reduce may add in a
    different order on each replica, and one rounding difference would let
    two replicas decide differently). Must be called at the same place in
    the traced code on every replica; the trial loop guarantees this, as
    all replicas take the same branches.
    """
    n = num_replicas()
    if n == 1:
        return value
    value = tf.convert_to_tensor(value)
    gathered = all_gather(tf.expand_dims(value, 0))
    return tf.reduce_sum(tf.reshape(gathered, tf.concat([[n], tf.shape(value)], 0)), axis=0)


def replica_rows(count) -> tuple:
    """Where this replica's `count` rows sit in the global batch.

    Returns `(before, total)`: the rows of the replicas before this one (in
    replica order, the order in which a strategy splits a global batch),
    and the rows of all replicas. On one device: `(0, count)`.
    """
    count = tf.cast(count, tf.int64)
    n = num_replicas()
    if n == 1:
        return tf.zeros_like(count), count
    rows = all_gather(tf.reshape(count, [1]))
    return tf.reduce_sum(rows[:_replica_id()]), tf.reduce_sum(rows)


def even_replica_rows(count) -> tuple:
    """`replica_rows` when every replica holds `count` rows: no collective
    (a global batch that the strategy split evenly)."""
    count = tf.cast(count, tf.int64)
    return count * _replica_id(), count * num_replicas()


def all_gather(value: tf.Tensor) -> tf.Tensor:
    """Every replica's `value` (equal shapes), concatenated along axis 0 in
    replica order; usable inside control flow, as `cross_replica_sum`."""
    n = num_replicas()
    if n == 1:
        return value
    group_key = _GROUP_KEY_BASE + 2 * n + int(is_multi_worker())
    instance_key = next(_instance_keys[_replica_id()])
    return tf.raw_ops.CollectiveGatherV2(
        input=tf.convert_to_tensor(value),
        group_size=n,
        group_key=group_key,
        instance_key=instance_key,
        ordering_token=[],
        communication_hint="auto")


def cross_replica_mean(value: tf.Tensor) -> tf.Tensor:
    """Mean of `value` over replicas (BatchNorm statistics of the shards)."""
    n = num_replicas()
    if n == 1:
        return value
    return cross_replica_sum(value) / tf.cast(n, value.dtype)


def replica_variable(initial_value, name: str) -> tf.Variable:
    """A non-trainable variable with one copy per replica (inside a
    strategy's scope; a plain variable outside any). Assigned outside the
    replicas, it sets every copy."""
    return tf.Variable(initial_value, trainable=False, name=name,
                       synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def local(var):
    """This replica's own copy of `var`; `var` itself off any strategy."""
    copy = _compat.local_variable(var)
    return var if copy is None else copy


def assign(var, value):
    """`var.assign(value)` that is legal inside control flow on any replica."""
    target = local(var)
    return target.assign(tf.cast(value, target.dtype))


def assign_add(var, delta):
    """`var.assign_add(delta)`, replica-locally (see `assign`)."""
    target = local(var)
    return target.assign_add(tf.cast(delta, target.dtype))


def _synchronized_moments(layer, inputs, mask):
    """BatchNormalization moments over the global batch, via `cross_replica_sum`."""
    if mask is not None:
        return _compat.batchnorm_moments(layer, inputs, mask)
    x = tf.cast(inputs, tf.float32)
    axes = _compat.batchnorm_reduction_axes(layer)
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), tf.float32)
    total = cross_replica_sum(tf.stack([
        tf.reduce_sum(x, axis=axes),
        tf.reduce_sum(tf.square(x), axis=axes),
        tf.broadcast_to(count, tf.shape(tf.reduce_sum(x, axis=axes)))]))
    mean = tf.math.divide_no_nan(total[0], total[2])
    variance = tf.maximum(tf.math.divide_no_nan(total[1], total[2]) - tf.square(mean), 0.0)
    return tf.cast(mean, inputs.dtype), tf.cast(variance, inputs.dtype)


@contextlib.contextmanager
def collective_batchnorm(layers):
    """While tracing, synchronized BatchNormalization uses `cross_replica_sum`.

    Keras computes synchronized moments with `ReplicaContext.all_reduce`,
    which cannot run inside the trial loop (see the module docstring). The
    override is an instance attribute, removed on exit, and it computes the
    same quantities (sum, sum of squares and count over the global batch).
    """
    synced = [l for l in layers if getattr(l, "synchronized", False)]
    if num_replicas() == 1 or not synced:
        yield
        return
    with _compat.batchnorm_moments_replaced(synced, _synchronized_moments):
        yield
