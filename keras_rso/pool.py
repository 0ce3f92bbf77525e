"""The layer-input pool: a layer's input, cached for many training samples.

The authors' code decides every weight on a fresh batch of 5,000 images,
and does not pay a forward pass of the whole network for it: when the
search reaches a layer, it computes that layer's input once for the whole
training set, and each trial draws its batch from that cache and runs the
network from the layer on. `RSO(pool_size=P)` does the same inside the
Keras fit loop:

* The cycle is cut into *segments*: runs of trials that start from the same
  layer input (the segment's *anchor*: the input of the nearest `Dense` or
  `Conv2D` at or before the searched layer, so a BatchNormalization's
  trials reuse the pool of the convolution before it, as in the authors'
  code). The layers before an anchor do not change during its segment,
  because each segment only searches layers at or after it.
* In a chain the anchor's input is one tensor. In a graph that branches
  and merges (`GraphEvaluator`: a residual net) it is every value the
  nodes from the anchor on read from before it: the main path's input and
  each skip that crosses the anchor (`GraphEvaluator.pool_inputs`). The
  pool holds them all, row by row, so a pooled batch is the same images on
  every path.
* The first `ceil(P / batch)` steps of a segment *fill* the pool: each runs
  the layers before the anchor on the step's mini-batch from the data
  stream (training mode) and stores the result, with the batch's targets.
  These steps make no trial.
* Every later step of the segment takes the next batch of a shuffled walk
  through the pool (the fit's batch size; a new shuffle per segment and
  cycle) and runs the network from the anchor on, for the base loss and
  for every candidate.

Under `MirroredStrategy` every replica keeps the whole pool: a fill step
gathers the replicas' shards of the global batch (in replica order) and
each replica stores all of it; a trial step's pooled batch is the same
shuffled walk as on one device, each replica taking its own shard of it.
So the replicas see exactly the batches one device would see, and the
decisions (taken on the replica-summed losses) are the same.

Memory: `P` rows for each distinct anchor-input width, per replica, in the model's
compute dtype (the paper's MNIST net at `P=50,000`: widths 784, 3,136,
12,544 and 16, 3.3 GB in float32), plus the targets; an anchor whose
segment needs several tensors (a residual net's skips) holds one buffer per
tensor (`LayerInputPool.nbytes` gives the total). A pool larger than the
memory the machine has available is refused with an error before it is
allocated. The pool's contents are not saved: a fit resumed from a
backup refills it by replaying the segment's fill steps on the same
batches (see `TrialLoop`).
"""

from __future__ import annotations

import math
from typing import List, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from keras_rso import distribution
from keras_rso.memory import available_memory


class Segment(NamedTuple):
    """A run of a cycle's trials that start from one anchor's input."""

    start: int   # first trial (within the cycle)
    end: int     # one past the last trial
    anchor: int  # index, in the chain, of the layer whose input is pooled


def anchor_of(evaluator, layer: int) -> int:
    """The chain index whose input a trial in `layer` starts from: the
    nearest mixer (`Dense`/`Conv2D`) at or before `layer`, else 0."""
    return max((m for m in evaluator.mixers if m <= layer), default=0)


def segments(evaluator, visit: Sequence[int]) -> List[Segment]:
    """Splits a cycle's visits into segments of one anchor each."""
    found: List[Segment] = []
    position = 0
    for v in visit:
        size = int(np.prod(evaluator.variables[v].shape))
        anchor = anchor_of(evaluator, evaluator.layer_of[v])
        if found and found[-1].anchor == anchor and found[-1].end == position:
            found[-1] = found[-1]._replace(end=position + size)
        else:
            found.append(Segment(position, position + size, anchor))
        position += size
    return found


class LayerInputPool:
    """Storage for one anchor's input over `size` samples, with their targets.

    Args:
        evaluator: The fast-path evaluator (`ChainEvaluator` or
            `GraphEvaluator`): it says which tensors a pass from an anchor
            needs (`pool_inputs`) and computes them (`upstream`).
        anchors: Indices (layers of a chain, nodes of a graph) whose inputs
            may be pooled.
        size: Number of samples `P` the pool holds.
        batch_size: The data stream's batch size; a segment fills the pool
            in `ceil(size / batch_size)` steps.
        sample_x: A batch of model inputs (at least one sample), to find
            every anchor's input shapes.
        sample_y: The matching targets, for the targets' shape and dtype.
    """

    def __init__(self, evaluator, anchors: Sequence[int], size: int, batch_size: int,
                 sample_x, sample_y):
        self.evaluator = evaluator
        self.anchors = sorted(set(int(a) for a in anchors))
        self.size = int(size)
        self.fill_steps = math.ceil(self.size / int(batch_size))
        self.shapes, self.dtypes = self._anchor_specs(sample_x[:1])
        # One buffer per distinct width (and dtype), per tensor of an anchor:
        # anchors of equal width (in the paper's MNIST net conv1, conv5 and
        # conv6; conv3 and conv4) share it, since only one segment's pool is
        # live at a time; two tensors of one anchor (a residual net's main
        # path and skip) each have their own.
        self.key = {}
        for a in self.anchors:
            keys = []
            for shape, dtype in zip(self.shapes[a], self.dtypes[a]):
                width = int(np.prod(shape))
                keys.append((width, dtype, sum(k[:2] == (width, dtype) for k in keys)))
            self.key[a] = tuple(keys)
        buffer_keys = sorted({k for keys in self.key.values() for k in keys})
        y = tf.convert_to_tensor(sample_y)
        # Bytes of one pooled sample: a row of every buffer, and its target.
        self.row_bytes = (sum(w * tf.as_dtype(d).size for w, d, _ in buffer_keys)
                          + y.dtype.size * int(np.prod(y.shape[1:])))
        self._check_memory()
        # Under a strategy every replica holds the whole pool (the variables
        # are per-replica, `ON_READ`): a fill step gathers the global batch
        # to every replica, and each replica draws its shard of a pooled
        # batch from its own copy, as one device would (`fill`, `draw`).
        self.buffers = {}
        for w, dtype, n in buffer_keys:
            name = f"pool_{w}" if n == 0 else f"pool_{w}_{n}"
            self.buffers[w, dtype, n] = distribution.replica_variable(
                tf.zeros([self.size, w], dtype), name)
        self.targets = distribution.replica_variable(
            tf.zeros([self.size] + y.shape[1:].as_list(), y.dtype), "pool_targets")
        # Rows filled so far in the live segment (not saved; see module doc).
        self.rows = distribution.replica_variable(tf.constant(0, tf.int64), "pool_rows")

    def _check_memory(self) -> None:
        """Refuses a pool that cannot fit in the memory this machine has
        free, before any of it is allocated: past that point the kernel's
        out-of-memory killer would end the process and lose the fit."""
        row = self.row_bytes
        replicas = distribution.num_replicas()
        needed = replicas * self.size * row
        free = available_memory()
        if free is not None and needed > free:
            fits = max(int(free // (replicas * row)), 0)
            raise ValueError(
                f"RSO(pool_size={self.size}) needs {needed / 1e9:.2f} GB for its "
                f"layer-input pool ({row:,} bytes per row x {self.size:,} rows"
                + (f" x {replicas} replicas" if replicas > 1 else "")
                + f"), but this machine has {free / 1e9:.2f} GB available. "
                f"Use a pool_size below {fits:,} (the trials also need memory "
                "for the batch's activations), or pool_size=None.")

    @property
    def nbytes(self) -> int:
        """Bytes the pool's buffers hold (per replica)."""
        return self.size * self.row_bytes

    def _anchor_specs(self, x):
        """Each anchor's input shapes (without the batch axis) and dtypes,
        one per tensor a pass from the anchor needs."""
        shapes, dtypes, x = {}, {}, tf.convert_to_tensor(x)
        for a in self.anchors:
            h = self.evaluator.upstream(a, x)
            shapes[a] = tuple(tuple(t.shape[1:]) for t in h)
            dtypes[a] = tuple(t.dtype.name for t in h)
        return shapes, dtypes

    def fill(self, anchor: int, x, y, fill_index):
        """Stores the anchor's input of batch `x` (and `y`) as the pool's
        next rows (the first rows when `fill_index` is 0).

        Under a strategy, `x` is this replica's shard of the global batch;
        the shards are gathered, and every replica stores the global batch.

        Returns:
            `(h, y)`: the anchor's inputs for the batch (a tuple, one per
            tensor), and its targets, for the step's base pass.
        """
        h = tuple(tf.cast(t, d) for t, d in
                  zip(self.evaluator.upstream(anchor, x), self.dtypes[anchor]))
        targets = distribution.local(self.targets)
        labels = distribution.all_gather(tf.cast(y, self.targets.dtype))
        start = tf.where(tf.equal(fill_index, 0), tf.constant(0, tf.int64), self.rows)
        n = tf.minimum(tf.shape(labels, out_type=tf.int64)[0], self.size - start)
        writes = [targets[start:start + n].assign(labels[:n])]
        for t, key in zip(h, self.key[anchor]):
            flat = distribution.all_gather(tf.reshape(t, [-1, key[0]]))
            writes.append(distribution.local(self.buffers[key])[start:start + n].assign(flat[:n]))
        with tf.control_dependencies(writes):
            distribution.assign(self.rows, start + n)
        return h, y

    def draw(self, anchor: int, count, seed, step):
        """`count` samples of the pool for the segment's `step`-th trial
        step: the next rows of a shuffled walk through the filled rows
        (wrapping around), shuffled by `seed`. Under a strategy each
        replica takes its own `count` rows of the step's global batch.

        Returns:
            `(h, y)`: the anchor's inputs of those rows (a tuple, one per
            tensor) and their targets.
        """
        rows = tf.maximum(self.rows, 1)
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(rows, dtype=tf.int64), seed=seed)
        before, total = distribution.replica_rows(count)
        offset = tf.cast(step, tf.int64) * total + before
        at = (offset + tf.range(tf.cast(count, tf.int64))) % rows
        index = tf.gather(perm, at)
        h = tuple(tf.reshape(distribution.local(self.buffers[key]).sparse_read(index),
                             [-1, *shape])
                  for key, shape in zip(self.key[anchor], self.shapes[anchor]))
        return h, distribution.local(self.targets).sparse_read(index)
