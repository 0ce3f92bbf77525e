#!/usr/bin/env python
"""FLOPs a trial needs, and how close keras_rso's fast path gets to this CPU's limit.

For every searched variable of the paper's MNIST net
(`keras_rso.models.mnist_paper_net`, standardized inputs), this traces one
trial of the fast path's evaluator (`RSOModel`'s own: both candidates'
losses, from the caches of a base pass on one batch) as a `tf.function` on
a batch of `--batch-size` images, and then, in the same run:

* counts the trial's FLOPs analytically from the static shapes of the
  convolutions and matrix products in its graph (2 x multiply-adds; the
  element-wise work, gathers and scatters around them are not counted);
* times the trial (`--repeats` calls after a warm-up): the *achieved* time;
* times each of those convolutions and products alone, on random inputs of
  the same shapes (this machine's throughput on exactly that work), and
  adds them up: the *limit* time, what the trial would take if it did
  nothing but its counted FLOPs at the machine's own rate.

Per variable it reports FLOPs per trial, achieved and limit time, the
achieved FLOP rate, and `achieved / limit` (limit time / achieved time: 1
means the trial does nothing but its matrix work). The base pass of a step
(`evaluator.begin`) is measured the same way. Per cycle, each variable's
times are multiplied by its scalar count, the base pass by the steps of a
cycle at `--weights-per-batch`.

Example:
    python -m benchmarks.flop_limit --batch-size 2048 --output docs/results/flop_limit_b2048.json
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Dict, List, Tuple

import keras
import numpy as np
import tensorflow as tf

import keras_rso
from examples.experiment import provenance, write_json
from keras_rso import datasets

_COUNTED = ("Conv2D", "MatMul", "BatchMatMulV2", "DepthwiseConv2dNative")


def _op_flops(op) -> int:
    """2 x multiply-adds of a convolution or matrix product, from static shapes."""
    if op.type in ("Conv2D", "DepthwiseConv2dNative"):
        out = op.outputs[0].shape.as_list()
        kh, kw, cin, mult = op.inputs[1].shape.as_list()
        per_output = kh * kw * (cin if op.type == "Conv2D" else 1)
        return 2 * math.prod(out) * per_output
    a, b = (t.shape.as_list() for t in op.inputs[:2])
    if op.type == "MatMul":
        m = a[1] if op.get_attr("transpose_a") else a[0]
        k = a[0] if op.get_attr("transpose_a") else a[1]
        n = b[0] if op.get_attr("transpose_b") else b[1]
        return 2 * m * n * k
    out = op.outputs[0].shape.as_list()  # BatchMatMulV2
    k = a[-2] if op.get_attr("adj_x") else a[-1]
    return 2 * math.prod(out) * k


def counted_ops(graph) -> List[Tuple[str, tuple, dict, int]]:
    """`(type, input shapes, attributes, FLOPs)` of every counted op in
    `graph` and in the functions it calls."""
    found = []
    graphs = [graph] + [f.graph for f in getattr(graph, "_functions", {}).values()
                        if hasattr(f, "graph")]
    for g in graphs:
        for op in g.get_operations():
            if op.type not in _COUNTED:
                continue
            shapes = tuple(tuple(t.shape.as_list()) for t in op.inputs[:2])
            if any(d is None for s in shapes for d in s):
                raise ValueError(f"{op.name}: shapes not static {shapes}")
            attrs = {}
            if op.type in ("Conv2D", "DepthwiseConv2dNative"):
                attrs = {k: op.get_attr(k) for k in ("strides", "padding", "dilations")}
                if attrs["padding"] == b"EXPLICIT" or attrs["padding"] == "EXPLICIT":
                    attrs["explicit_paddings"] = op.get_attr("explicit_paddings")
            elif op.type == "MatMul":
                attrs = {k: op.get_attr(k) for k in ("transpose_a", "transpose_b")}
            else:
                attrs = {k: op.get_attr(k) for k in ("adj_x", "adj_y")}
            found.append((op.type, shapes, attrs, _op_flops(op)))
    return found


def _standalone(kind: str, shapes: tuple, attrs: dict, dtype) -> callable:
    rng = np.random.default_rng(0)
    a, b = (tf.constant(rng.standard_normal(s), dtype) for s in shapes)
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
    if kind == "Conv2D":
        fn = tf.function(lambda: tf.raw_ops.Conv2D(input=a, filter=b, **attrs))
    elif kind == "DepthwiseConv2dNative":
        fn = tf.function(lambda: tf.raw_ops.DepthwiseConv2dNative(input=a, filter=b, **attrs))
    elif kind == "MatMul":
        fn = tf.function(lambda: tf.raw_ops.MatMul(a=a, b=b, **attrs))
    else:
        fn = tf.function(lambda: tf.raw_ops.BatchMatMulV2(x=a, y=b, **attrs))
    return fn


def _seconds(fn, repeats: int) -> float:
    """Median seconds of one call, after a warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def limit_seconds(ops, dtype, repeats: int, cache: Dict) -> float:
    """Sum over `ops` of each one's time alone on random inputs of its shapes."""
    total = 0.0
    for kind, shapes, attrs, _ in ops:
        key = (kind, shapes, repr(sorted(attrs.items())))
        if key not in cache:
            cache[key] = _seconds(_standalone(kind, shapes, attrs, dtype), repeats)
        total += cache[key]
    return total


def measure(batch: int, repeats: int, k: int, seed: int,
            pool_after: Tuple[int, ...] = (2, 4)) -> dict:
    keras.utils.set_random_seed(seed)
    (x, y), _ = datasets.load_mnist(limit=batch)
    x, y = tf.constant(x[:batch]), tf.constant(y[:batch])
    model = keras_rso.models.mnist_paper_net(pool_after=pool_after)
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=k, seed=seed),
                    loss="sparse_categorical_crossentropy")
    trainer.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=1, verbose=0)
    evaluator, plan = trainer._plan()
    dtype = x.dtype

    @tf.function
    def base():
        with keras.StatelessScope():
            loss, _, fixed, carried = evaluator.begin(x, y, None)
        return loss, fixed, carried

    @tf.function
    def timed_base():
        # The base pass as the step runs it: every cache is computed, but
        # only a scalar leaves the function. Timing `base` itself would also
        # count copying its caches into NumPy (`_seconds` converts what a
        # call returns), which the step never does (docs/results.md, "The
        # limit on both cores of an AVX-512 CPU", a correction).
        loss, fixed, carried = base()
        touched = [tf.reduce_sum(tf.reshape(t, [-1])[:1])
                   for t in tf.nest.flatten((fixed, carried))]
        return loss + 0.0 * tf.add_n(touched)

    cache: Dict = {}
    base_ops = counted_ops(base.get_concrete_function().graph)
    _, fixed, carried = base()
    rows = {"base_pass": {
        "flops": int(sum(f for *_, f in base_ops)),
        "achieved_s": _seconds(timed_base, repeats),
        "limit_s": limit_seconds(base_ops, dtype, repeats, cache)}}
    for v, var in enumerate(evaluator.variables):
        if v not in plan.visit:
            continue

        @tf.function
        def trial(j, dw, v=v):
            t = evaluator.trial(v, j, dw, fixed, carried, x, y, None)
            return t.loss_plus, t.loss_minus

        j, dw = tf.constant(0, tf.int64), tf.constant(0.01, var.dtype)
        ops = counted_ops(trial.get_concrete_function(j, dw).graph)
        rows[var.path] = {
            "scalars": int(np.prod(var.shape)),
            "flops": int(sum(f for *_, f in ops)),
            "achieved_s": _seconds(lambda: trial(j, dw), repeats),
            "limit_s": limit_seconds(ops, dtype, repeats, cache)}
    for row in rows.values():
        row["achieved_gflops"] = row["flops"] / row["achieved_s"] / 1e9
        row["limit_gflops"] = (row["flops"] / row["limit_s"] / 1e9) if row["limit_s"] else None
        row["achieved_over_limit"] = row["limit_s"] / row["achieved_s"]
    steps = plan.trial_steps()
    cycle = {"trials_s": sum(r["scalars"] * r["achieved_s"] for p, r in rows.items()
                             if p != "base_pass"),
             "trials_limit_s": sum(r["scalars"] * r["limit_s"] for p, r in rows.items()
                                   if p != "base_pass"),
             "base_passes_s": steps * rows["base_pass"]["achieved_s"],
             "steps": steps}
    return {"batch": batch, "weights_per_batch": k, "pool_after": list(pool_after),
            "per_variable": rows, "cycle": cycle}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--weights-per-batch", type=int, default=64,
                        help="K: sets the steps (base passes) of a cycle")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-after", type=int, nargs="+", default=[2, 4],
                        help="convolutions followed by 2x2 average pooling (paper: 2 4)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    out = provenance(args)
    out.update(measure(args.batch_size, args.repeats, args.weights_per_batch, args.seed,
                       tuple(args.pool_after)))
    print(f"{'variable':34} {'scalars':>7} {'MFLOP/trial':>11} {'ms':>8} {'limit ms':>8} "
          f"{'GFLOP/s':>8} {'limit':>7} {'ach/lim':>7}")
    for path, r in out["per_variable"].items():
        print(f"{path[-34:]:34} {r.get('scalars', ''):>7} {r['flops'] / 1e6:11.1f} "
              f"{1e3 * r['achieved_s']:8.2f} {1e3 * r['limit_s']:8.2f} "
              f"{r['achieved_gflops']:8.2f} {r['limit_gflops'] or 0:7.2f} "
              f"{r['achieved_over_limit']:7.2f}")
    c = out["cycle"]
    print(f"cycle: trials {c['trials_s']:.0f} s (limit {c['trials_limit_s']:.0f} s), "
          f"base passes {c['base_passes_s']:.0f} s over {c['steps']} steps")
    write_json(out, args.output)


if __name__ == "__main__":
    main()
