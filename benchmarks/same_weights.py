#!/usr/bin/env python
"""Fixed-seed runs whose every weight is saved, to prove a refactor changed nothing.

Runs short fits with the `keras_rso` it imports and writes every
weight to OUTPUT (.npz): a chain at K=16, the parabolic rule, `RSO.paper()`
at K=1, a residual graph with weight decay on the fast path and the same on
the full path; then the paper's MNIST net (`paper_mnist_net`, 200 steps on
MNIST-shaped noise) in each order (`output_to_input`, `random`, `paper`),
on the fast path and the full path, with binary kernels, and under
`RSO(pool_size=...)`; then the chain and the residual graph on two
replicas (`MirroredStrategy` on two logical CPUs, synchronized
BatchNormalization in the chain), with output passes, and the residual
graph from a layer-input pool. Run it on two checkouts and compare:

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before python benchmarks/same_weights.py before.npz
    python benchmarks/same_weights.py after.npz
    python benchmarks/same_weights.py --compare before.npz after.npz

(Run as a script, not with `-m`: PYTHONPATH then comes before the current
directory and the installed package, and the first line printed is the
`keras_rso` that ran.)
"""
import sys

import numpy as np

if sys.argv[1:2] == ["--compare"]:
    a, b = np.load(sys.argv[2]), np.load(sys.argv[3])
    differ = [k for k in a if k not in b or not np.array_equal(a[k], b[k])]
    print(f"{len(a)} arrays; bit-identical: {not differ}; differ: {differ}")
    sys.exit(1 if differ else 0)
if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
    print(__doc__)
    sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
import tensorflow as tf  # noqa: E402

# Two logical CPUs for the two-replica runs (before any op runs).
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras  # noqa: E402
import keras_rso  # noqa: E402

print(keras_rso.__file__)
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8, 8, 1)).astype("float32"); y = rng.integers(0, 3, 256).astype("int32")
L = keras.layers
def chain():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3, padding="same", use_bias=False),
        L.BatchNormalization(), L.ReLU(), L.AveragePooling2D(2), L.Conv2D(5, 3, activation="relu"),
        L.GlobalAveragePooling2D(), L.Dense(3)])
def sync_chain():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3, padding="same", use_bias=False),
        L.BatchNormalization(synchronized=True), L.ReLU(), L.AveragePooling2D(2),
        L.Conv2D(5, 3, activation="relu"), L.GlobalAveragePooling2D(), L.Dense(3)])
def residual():
    keras.utils.set_random_seed(1)
    i = keras.Input((8, 8, 1)); a = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(i))
    b = L.Conv2D(4, 3, padding="same", use_bias=False)(L.ReLU()(a)); h = L.BatchNormalization()(L.Add()([a, b]))
    return keras.Model(i, L.Dense(3)(L.GlobalAveragePooling2D()(h)))
out = {}
for name, build, opt in [("chain_k16", chain, dict(weights_per_batch=16, seed=2)),
                         ("chain_parabolic", chain, dict(weights_per_batch=16, seed=2, step_rule="parabolic")),
                         ("chain_paper_k1", chain, dict()),
                         ("res_k16_decay", residual, dict(weights_per_batch=16, seed=2, weight_decay=1e-3)),
                         ("res_full", residual, dict(weights_per_batch=16, seed=2))]:
    m = build()
    t = keras_rso.RSOModel(m, fast_path=(name != "res_full"))
    o = keras_rso.RSO.paper(seed=3) if name == "chain_paper_k1" else keras_rso.RSO(**opt)
    t.compile(optimizer=o, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    t.fit(x, y, batch_size=64, epochs=1, steps_per_epoch=(40 if name == "chain_paper_k1" else None), verbose=0)
    for k, v in enumerate(m.weights):
        out[f"{name}/{k}"] = v.numpy()

xm = rng.normal(size=(512, 28, 28, 1)).astype("float32"); ym = rng.integers(0, 10, 512).astype("int32")
for order in ("output_to_input", "random", "paper"):
    for fast in (True, False):
        runs = [(f"mnist_{order}_{'fast' if fast else 'full'}", None, {})]
        if fast and order == "random":
            runs.append(("mnist_random_binary", keras_rso.constraints.Discrete.binary(), {}))
        if fast and order == "paper":
            runs.append(("mnist_paper_pool", None, dict(pool_size=256)))
        for name, constraint, extra in runs:
            keras.utils.set_random_seed(4)
            m = keras_rso.models.paper_mnist_net(mean=0.0, kernel_constraint=constraint)
            t = keras_rso.RSOModel(m, fast_path=fast)
            t.compile(optimizer=keras_rso.RSO(weights_per_batch=16, order=order, seed=5,
                                               weight_decay=1e-4, **extra),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            t.fit(xm, ym, batch_size=64, epochs=1, steps_per_epoch=200, verbose=0)
            for k, v in enumerate(m.weights):
                out[f"{name}/{k}"] = v.numpy()

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for name, build, strategy, fast, opt in [
        ("chain_two_replicas", sync_chain, mirrored, True,
         dict(weights_per_batch=16, seed=2, weight_decay=1e-3)),
        ("res_two_replicas_passes", residual, mirrored, True,
         dict(weights_per_batch=16, seed=2, output_passes=1)),
        ("res_full_two_replicas", residual, mirrored, False, dict(weights_per_batch=16, seed=2)),
        ("res_pool_k1_decay", residual, tf.distribute.get_strategy(), True,
         dict(weights_per_batch=1, seed=2, weight_decay=1e-3, pool_size=128, order="paper"))]:
    with strategy.scope():
        m = build()
        t = keras_rso.RSOModel(m, fast_path=fast)
        t.compile(optimizer=keras_rso.RSO(**opt),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    t.fit(x, y, batch_size=64, epochs=1, steps_per_epoch=(120 if "pool" in name else None),
          verbose=0)
    for k, v in enumerate(m.weights):
        out[f"{name}/{k}"] = v.numpy()
np.savez(sys.argv[1], **out)
