#!/usr/bin/env python
"""RSO on the paper's MNIST net in half precision: faster steps, other decisions?

A Keras mixed precision policy (`mixed_bfloat16`, `mixed_float16`) keeps
the variables in float32 and computes in half precision. Where the CPU has
half-precision instructions (AVX512_BF16, AMX) TensorFlow's oneDNN
convolutions run faster; but RSO decides a trial by the sign of a small
loss difference, which half precision rounds. This measures both sides in
one process:

  * speed: the search step of `mnist_paper_net` built under each policy in
    `--policies` (batch `--batch-size`, K=`--weights-per-batch`), seconds
    per step over `--steps` steps starting at the first scalar of each of
    `--variables` (as `benchmarks/step_time.py` times them);
  * decisions: for a trained model (`--model`, a `.keras` file of the
    paper's MNIST net) and a copy of it under each half-precision policy
    (same weights; the classifier stays float32, as Keras' mixed precision
    guide advises), `--weights` random scalars of every kernel, each tried
    at `w - dw`, `w`, `w + dw` (`dw ~ N(0, He std x --sigma-scale)`) on the
    same `--batch-size` training images with BatchNormalization in training
    mode, as a trial evaluates them; reports how often the half-precision
    copy makes the float32 model's decision (`trial_noise.decide`), overall
    and among the trials whose float32 decision is clear (the two best
    losses further apart than the median gap).

Example:
    python -m benchmarks.studies.half_precision \\
      docs/results/models/mnist_val10k_b2048_k64_balanced_random_parabolic_seed0.keras \\
      --raw --output half_precision.json
"""

import argparse
import os
import time

import keras
import numpy as np
import tensorflow as tf

from benchmarks.bench_speed import start_at, traced_search
from benchmarks.step_time import add_step_arguments
from benchmarks.studies.trial_noise import decide, he_std
from examples.experiment import provenance, write_json
from keras_rso import datasets

HALF = ("mixed_bfloat16", "mixed_float16")


def time_steps(policy: str, x, y, batch_size: int, k: int, variables, steps: int,
               step_rule: str = "argmin", pool_after=(2, 4)) -> dict:
    """Seconds per search step of `mnist_paper_net` built under `policy`,
    and the dtype its convolutions compute in."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model, trainer, ds, start = traced_search(k, x, y, batch_size, step_rule,
                                                  pool_after=tuple(pool_after))
    finally:
        keras.config.set_dtype_policy(previous)
    dtype = model.get_layer("block1_conv").compute_dtype
    seconds, each = {}, {}
    for name in variables:
        path = start_at(model, trainer, start, name)
        ends = []  # the first step's start, then every step's end

        def first_start(batch, logs=None):
            if not ends:
                ends.append(time.perf_counter())

        clock = keras.callbacks.LambdaCallback(
            on_train_batch_begin=first_start,
            on_train_batch_end=lambda batch, logs=None: ends.append(time.perf_counter()))
        trainer.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
        each[path] = np.diff(ends).tolist()
        seconds[path] = float(np.median(each[path]))
        print(f"{policy} (convolutions in {dtype}) {path}: {seconds[path]:.3f} s/step "
              f"(median; each: {', '.join(f'{t:.2f}' for t in each[path])})", flush=True)
    return {"compute_dtype": dtype, "seconds": seconds, "seconds_each_step": each}


def half_copy(model: keras.Model, policy: str) -> keras.Model:
    """`model` rebuilt with every layer but the last under `policy`, holding
    the same weights."""
    last = model.layers[-1].name

    def clone(layer):
        config = layer.get_config()
        if layer.name != last:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def decisions(reference: keras.Model, others: dict, x, y, weights: int,
              sigma_scale: float, seed: int) -> dict:
    """Decisions of `reference` (float32) and of each model in `others`
    (policy -> model with the same weights) on the same trials."""
    rng = np.random.default_rng(seed)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    models = {"float32": reference, **others}
    losses = {name: tf.function(lambda m=m: loss_fn(y, tf.cast(m(x, training=True), "float32")))
              for name, m in models.items()}
    # The copies are clones: their variables come in the reference's order.
    variables = {name: list(m.trainable_variables) for name, m in models.items()}
    kernels = [k for k, v in enumerate(variables["float32"]) if v.path.endswith("kernel")]
    base = {name: float(f()) for name, f in losses.items()}
    rows = []
    for k in kernels:
        flat = variables["float32"][k].numpy().reshape(-1)
        sigma = he_std(variables["float32"][k]) * sigma_scale
        for j in rng.choice(flat.size, size=min(weights, flat.size), replace=False):
            dw = rng.normal(0.0, sigma)
            row = {"variable": variables["float32"][k].path, "index": int(j)}
            for name in models:
                v = variables[name][k]

                def loss_at(offset):
                    trial = flat.copy()
                    trial[j] += offset
                    v.assign(trial.reshape(v.shape))
                    return float(losses[name]())

                row[name] = [loss_at(-dw), base[name], loss_at(dw)]
                v.assign(flat.reshape(v.shape))
            rows.append(row)
    out = {"base_loss": base, "trials": len(rows)}
    ref = [decide(r["float32"]) for r in rows]
    gaps = np.array([np.diff(np.sort(r["float32"]))[0] for r in rows])
    clear = gaps > np.median(gaps)
    for name in others:
        mine = [decide(r[name]) for r in rows]
        same = np.array([a == b for a, b in zip(mine, ref)])
        out[name] = {"agreement": float(same.mean()),
                     "agreement_clear_half": float(same[clear].mean()),
                     "agreement_near_ties": float(same[~clear].mean()),
                     "move_rate": float(np.mean([d != 1 for d in mine]))}
        print(name, out[name], flush=True)
    out["float32_move_rate"] = float(np.mean([d != 1 for d in ref]))
    out["rows"] = rows
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help=".keras file of a trained paper MNIST net")
    parser.add_argument("--raw", action="store_true",
                        help="feed raw pixels (0-255): the committed models standardize inside")
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"],
                        help="dtype policies to time (the first should be float32)")
    add_step_arguments(parser)
    parser.add_argument("--weights", type=int, default=20, help="sampled scalars per kernel")
    parser.add_argument("--sigma-scale", type=float, default=1.0,
                        help="dw's std as a multiple of the kernel's He-normal std")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    bad = [p for p in args.policies if p not in ("float32",) + HALF]
    if bad:
        parser.error(f"--policies takes float32, {', '.join(HALF)}; got {bad}")
    out = provenance(args)
    out["model"] = os.path.basename(args.model)
    (x_std, y_std), _ = datasets.load_mnist(limit=10 * args.batch_size)
    out["seconds_per_step"] = {
        p: time_steps(p, x_std, y_std, args.batch_size, args.weights_per_batch,
                      args.variables, args.steps, args.step_rule, args.pool_after)
        for p in args.policies}
    (x, y), _ = datasets.load_mnist(raw=args.raw)
    pick = np.random.default_rng(args.seed).permutation(len(x))[:args.batch_size]
    reference = keras.saving.load_model(args.model)
    others = {p: half_copy(reference, p) for p in args.policies if p in HALF}
    out["decisions"] = decisions(reference, others, tf.constant(x[pick]), tf.constant(y[pick]),
                                 args.weights, args.sigma_scale, args.seed)
    write_json(out, args.output)


if __name__ == "__main__":
    main()
