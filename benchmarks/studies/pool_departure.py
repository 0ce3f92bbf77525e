#!/usr/bin/env python
"""The layer-input pool against the authors' activation cache, measured
without training.

keras_rso's pool (`RSO(pool_size=P)`, on under `--preset paper`) and the
authors' `train.py` both compute a layer's input once for many training
images and run each trial from that layer on. They compute it differently:

* **the authors** run the layers before it with BatchNormalization in
  inference mode, on statistics set from the first 2,000 training images
  (`reset_bn_param` before `cache_activations`);
* **keras_rso** runs them in training mode on each fill batch (the fit's
  batch size), so each fill batch is normalized by its own statistics.

This study takes a trained `paper_mnist_net` (`--model`, a saved `.keras`
file that takes raw pixels), builds both caches of the same `--pool-images`
training images, and for `--trials-per-layer` random kernel scalars of each
layer that has a pool (conv2-conv6 and the classifier) draws
`dw ~ N(0, sigma)` (the authors' sigma: the He std times the schedule's
multiplier at `--cycle`) and `--batch-size` pool rows, evaluates
`w - dw`, `w`, `w + dw` from the layer on (training-mode BatchNorm, the
authors' float64 summed loss, as a trial does) on each cache's rows of the
same images, and counts the trials whose two caches take different
candidates. For scale, each trial is also decided on the authors' cache of
a second, independent batch (drawn from its own generator, so the first
comparison does not depend on it): how often two fresh batches disagree is
the noise every decision already carries.

Example:
    python -m benchmarks.studies.pool_departure \\
        --model docs/results/models/mnist_paper_preset_c5_of50_seed0.keras \\
        --output docs/results/pool_departure.json
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from keras_rso import datasets, models

SEARCHED = ("conv2", "conv3", "conv4", "conv5", "conv6", "classifier")


def _run(layers, h, training: bool):
    for layer in layers:
        h = layer(h, training=training)
    return h


def _set_statistics_from(layers, x) -> None:
    """Sets every BatchNormalization's moving statistics in `layers` to
    its input's batch statistics on `x` (training mode before it), as the
    authors' `reset_bn_param` does with momentum 0."""
    h = tf.convert_to_tensor(x)
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, variance = tf.nn.moments(tf.cast(h, "float32"), axes=[0, 1, 2])
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        h = layer(h, training=True)


def caches(model: keras.Model, name: str, images: np.ndarray, first: np.ndarray,
           fill_batch: int) -> tuple:
    """The input of layer `name` for `images`: (keras_rso's pool, the authors' cache)."""
    index = [layer.name for layer in model.layers].index(name)
    before = model.layers[:index]
    prefix = tf.function(lambda h, training: _run(before, h, training), autograph=False,
                         reduce_retracing=True)
    pool = np.concatenate([prefix(images[i:i + fill_batch], True).numpy()
                           for i in range(0, len(images), fill_batch)])
    # Set here, for each layer, and not once per study: every training-mode
    # pass (the pool above, each trial's tail) moves the moving statistics.
    _set_statistics_from(before, first)
    authors = np.concatenate([prefix(images[i:i + fill_batch], False).numpy()
                              for i in range(0, len(images), fill_batch)])
    return pool, authors


def decisions(model: keras.Model, x: np.ndarray, y: np.ndarray, trials_per_layer: int,
              batch_size: int, pool_images: int, multiplier: float, seed: int) -> dict:
    """Per searched layer: how often the two caches take different candidates."""
    rng = np.random.default_rng(seed)
    other_rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(x))[:pool_images]
    images, targets = x[order], y[order]
    loss = models.paper_loss()
    rows, per_layer = [], {}
    for name in SEARCHED:
        layer = model.get_layer(name)
        index = model.layers.index(layer)
        after = model.layers[index:]
        tail = tf.function(lambda h: _run(after, h, True), autograph=False)
        pool, authors = caches(model, name, images, x[:2000], batch_size)
        kernel = layer.kernel
        w = kernel.numpy()
        sigma = multiplier * (2.0 / np.prod(w.shape[:-1])) ** 0.5
        differ = batch_differ = 0
        for _ in range(trials_per_layer):
            j = int(rng.integers(w.size))
            dw = float(rng.normal(0.0, sigma))
            pick = rng.choice(len(images), batch_size, replace=False)
            other = other_rng.choice(len(images), batch_size, replace=False)
            rows_of = {"pool": (pool[pick], targets[pick]),
                       "authors": (authors[pick], targets[pick]),
                       "other_batch": (authors[other], targets[other])}
            losses = {k: [] for k in rows_of}
            for value in (w.flat[j] - dw, w.flat[j], w.flat[j] + dw):
                trial = w.copy()
                trial.flat[j] = value
                kernel.assign(trial)
                for which, (h, t) in rows_of.items():
                    losses[which].append(float(loss(t, tail(h))))
            kernel.assign(w)
            choice = {k: int(np.argmin(v)) for k, v in losses.items()}
            differ += choice["pool"] != choice["authors"]
            batch_differ += choice["other_batch"] != choice["authors"]
            gaps = sorted(losses["authors"])
            rows.append({"variable": kernel.path, "index": j, "dw": dw, **{
                f"{k}_choice": c for k, c in choice.items()},
                "smallest_gap_summed": gaps[1] - gaps[0]})
        per_layer[name] = {"trials": trials_per_layer, "different_choices": differ,
                           "other_batch_different_choices": batch_differ,
                           "largest_input_difference": float(np.max(np.abs(pool - authors))),
                           "mean_input_difference": float(np.mean(np.abs(pool - authors)))}
        print(f"{name:10s} {differ} of {trials_per_layer} trials differ (another batch: "
              f"{batch_differ}); |pool - authors| "
              f"mean {per_layer[name]['mean_input_difference']:.4f}, "
              f"max {per_layer[name]['largest_input_difference']:.3f}", flush=True)
        del pool, authors
    total = sum(v["different_choices"] for v in per_layer.values())
    batches = sum(v["other_batch_different_choices"] for v in per_layer.values())
    trials = trials_per_layer * len(SEARCHED)
    return {"trials": trials, "different_choices": total, "agreement": 1.0 - total / trials,
            "other_batch_different_choices": batches,
            "other_batch_agreement": 1.0 - batches / trials,
            "batch_size": batch_size, "pool_images": pool_images, "sigma_multiplier": multiplier,
            "per_layer": per_layer, "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a saved paper_mnist_net (.keras, raw pixels in)")
    parser.add_argument("--trials-per-layer", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=5000,
                        help="images per trial, and per fill batch of keras_rso's pool")
    parser.add_argument("--pool-images", type=int, default=20000,
                        help="training images both caches hold (the authors': all 60,000)")
    parser.add_argument("--cycle", type=int, default=5,
                        help="0-based cycle of the authors' 50-cycle schedule whose sigma to use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    if args.pool_images < args.batch_size:
        parser.error(f"--pool-images ({args.pool_images}) must hold at least one "
                     f"--batch-size ({args.batch_size})")
    model = keras.models.load_model(args.model)
    (x, y), _ = datasets.load_mnist(raw=True)
    # The training split the validated runs use: the last 10,000 are held out.
    x, y = x[:50000], y[:50000]
    start = time.time()
    result = decisions(model, x, y, args.trials_per_layer, args.batch_size, args.pool_images,
                       0.1 + 0.9 * (50 - args.cycle) / 50, args.seed)
    print(f"pool against the authors' cache: {result['different_choices']} of "
          f"{result['trials']} trials take a different candidate (agreement "
          f"{result['agreement']:.4f}); two independent batches of the authors' cache: "
          f"{result['other_batch_different_choices']} (agreement "
          f"{result['other_batch_agreement']:.4f}); {time.time() - start:.0f} s")
    from examples.experiment import provenance, write_or_print
    out = {**provenance(args), "pool_decisions": result}
    write_or_print(out, args.output, {k: v for k, v in result.items() if k != "rows"})
    return out


if __name__ == "__main__":
    main()
