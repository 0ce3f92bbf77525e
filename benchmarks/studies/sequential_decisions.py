#!/usr/bin/env python
"""How many images does a trial's decision need? Paired per-sample losses.

For a model of the paper's MNIST net, this draws `--trials` random scalar
weights of the kernels, with `dw ~ N(0, sigma)` (sigma: the searched
variable's std, as `RSO(sigma_rule="std")` measures it, times
`--sigma-scale`), and records the per-sample training loss of `w - dw`, `w`
and `w + dw` on a *decision batch* of `--batch-size` images and on a
*held-out batch* of as many others (BatchNormalization in training mode,
with each batch's own statistics, as RSO evaluates it).

From the paired differences (candidate minus `w`, image by image) of the
first `n` images of the decision batch, for `n` in `--chunks`, it reports:

* `clear_at_full_batch`: the fraction of trials whose best option beats the
  runner-up by `z > --z` on the whole decision batch (z = mean paired
  difference / its standard error);
* `agreement`: how often the decision on the first `n` images equals the
  decision on the whole batch;
* `held_out_change_fixed`: the held-out loss change of the plain decision
  on the first `n` images (a fixed batch of `n`), the baseline at equal
  images;
* for each stopping rule, the mean number of images it evaluates, the
  saving against the whole batch, the agreement with the whole-batch
  decision, and the held-out loss change of its decisions (negative is
  better, with its standard error over trials; the whole-batch decision's
  is given for reference):
  - `plain`: stop at the first chunk where the decision is clear (z > `--z`),
    else decide on the whole batch;
  - `indifference_keep` / `indifference_best` (with `--deltas`): stop also
    as soon as the difference between the two best options is confidently
    smaller than delta (|mean| + z * SE < delta), a near-tie that cannot
    matter; there `_keep` keeps `w`, `_best` takes the option that looks
    best so far.

`--losses FILE.npz` keeps the per-sample losses (about 18 MB at the
defaults); `--reanalyse FILE.npz` reads them back for other settings.

Example:
    python -m benchmarks.studies.sequential_decisions model.keras --trials 150 \\
        --sigma-scale 0.775 --output sequential.json
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np
import tensorflow as tf

from examples.experiment import provenance, write_json
from keras_rso import datasets


def _decide(means) -> int:
    """Index (0: `w`, 1: `w + dw`, 2: `w - dw`) RSO keeps: strictly lower
    than `w`'s, the first candidate winning a tie between candidates."""
    best = 0
    for i in (1, 2):
        if means[i] < means[best]:
            best = i
    return best


def _runner_up_gap(losses: np.ndarray, n: int):
    """Decision on the first `n` images, and the mean and standard error of
    the paired difference between its option and the next best option."""
    part = losses[:, :n]
    means = part.mean(axis=1)
    best = _decide(means)
    others = [i for i in range(3) if i != best]
    runner = min(others, key=lambda i: means[i])
    diff = part[best] - part[runner]
    return best, float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(n))


def analyse(decision: np.ndarray, held_out: np.ndarray, chunks, z: float, deltas) -> dict:
    """Statistics of the stopping rules.

    Args:
        decision: Per-sample losses `(trials, 3, N)` on the decision batch,
            options ordered `w`, `w + dw`, `w - dw`.
        held_out: The same on the held-out batch.
        chunks: Increasing image counts at which a rule may stop; the last
            is `N`.
    """
    n_full = decision.shape[2]
    chunks = [c for c in chunks if c < n_full] + [n_full]
    trials = decision.shape[0]
    full = [_runner_up_gap(t, n_full) for t in decision]
    truth = [d for d, _, _ in full]
    held = held_out.mean(axis=2)  # (trials, 3)

    def held_out_change(choices):
        """Mean over trials of the held-out loss change, and its standard error."""
        changes = [held[t, c] - held[t, 0] for t, c in enumerate(choices)]
        return [float(np.mean(changes)), float(np.std(changes, ddof=1) / np.sqrt(len(changes)))]

    out = {
        "trials": trials, "batch": n_full, "chunks": chunks, "z": z,
        "clear_at_full_batch": float(np.mean([-m / s > z if s > 0 else m < 0
                                              for _, m, s in full])),
        "moved_at_full_batch": float(np.mean([d != 0 for d in truth])),
        "agreement": {str(n): float(np.mean([_runner_up_gap(t, n)[0] == truth[i]
                                              for i, t in enumerate(decision)]))
                      for n in chunks},
        "held_out_change_full_batch": held_out_change(truth),
        # The plain argmin on a fixed batch of the first n images: the
        # baseline a stopping rule must beat at the images it spends.
        "held_out_change_fixed": {str(n): held_out_change(
            [_runner_up_gap(t, n)[0] for t in decision]) for n in chunks},
        "rules": {},
    }
    rules = {"plain": None}
    for delta in deltas:
        rules[f"indifference_keep_{delta:g}"] = ("keep", delta)
        rules[f"indifference_best_{delta:g}"] = ("best", delta)
    for name, rule in rules.items():
        used, choices = [], []
        for t in decision:
            for n in chunks:
                best, mean, se = _runner_up_gap(t, n)
                clear = se > 0 and -mean / se > z
                if clear or n == n_full:
                    choices.append(best)
                    break
                if rule is not None and abs(mean) + z * se < rule[1]:
                    choices.append(0 if rule[0] == "keep" else best)
                    break
            used.append(n)
        out["rules"][name] = {
            "mean_images": float(np.mean(used)),
            "saving": float(n_full / np.mean(used)),
            "agreement": float(np.mean([c == d for c, d in zip(choices, truth)])),
            "moved": float(np.mean([c != 0 for c in choices])),
            "held_out_change": held_out_change(choices),
        }
    return out


def measure(model: keras.Model, x: np.ndarray, y: np.ndarray, trials: int,
            sigma_scale: float, batch_size: int, seed: int):
    """Per-sample losses `(trials, 3, batch)` on a decision and a held-out
    batch, and the `(variable path, flat index, dw)` of every trial."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))[:2 * batch_size]
    batches = [(tf.constant(x[i]), tf.constant(y[i])) for i in np.split(order, 2)]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)

    @tf.function
    def per_sample(xb, yb):
        return loss_fn(yb, model(xb, training=True))

    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    sizes = np.array([int(np.prod(v.shape)) for v in kernels])
    base = [per_sample(xb, yb).numpy() for xb, yb in batches]
    losses = [np.zeros((trials, 3, batch_size)) for _ in batches]
    picked = []
    for t in range(trials):
        # Kernels in proportion to their size, as a cycle visits them.
        k = int(rng.choice(len(kernels), p=sizes / sizes.sum()))
        var = kernels[k]
        flat = var.numpy().reshape(-1)
        j = int(rng.integers(flat.size))
        dw = float(rng.normal(0.0, float(np.std(flat)) * sigma_scale))
        picked.append((var.path, j, dw))
        for slot, step in ((1, dw), (2, -dw)):
            trial = flat.copy()
            trial[j] += step
            var.assign(trial.reshape(var.shape))
            for b, (xb, yb) in enumerate(batches):
                losses[b][t, slot] = per_sample(xb, yb).numpy()
        var.assign(flat.reshape(var.shape))
        for b in range(2):
            losses[b][t, 0] = base[b]
    return losses[0], losses[1], picked


def losses_from_args(parser, args, out: dict):
    """The per-sample losses `(decision, held_out)` the flags ask for: read
    back from `--reanalyse`, or measured on `args.model` (and kept in
    `--losses`); notes their origin in `out`. `args.raw` (if the script has
    it) feeds raw pixels, for models that standardize inside."""
    if args.reanalyse:
        stored = np.load(args.reanalyse)
        out["reanalysed"] = os.path.basename(args.reanalyse)
        return stored["decision"], stored["held_out"]
    if args.model is None:
        parser.error("give a model, or --reanalyse NPZ")
    (x, y), _ = datasets.load_mnist(raw=getattr(args, "raw", False))
    model = keras.saving.load_model(args.model)
    out["model"] = os.path.basename(args.model)
    decision, held_out, out["picked"] = measure(model, x, y, args.trials, args.sigma_scale,
                                                args.batch_size, args.seed)
    if args.losses:
        np.savez_compressed(args.losses, decision=decision, held_out=held_out)
    return decision, held_out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help=".keras file of the paper's MNIST net "
                        "(standardized inputs, as examples/mnist_rso.py trains it)")
    parser.add_argument("--reanalyse", metavar="NPZ",
                        help="recompute the statistics from losses stored with --losses")
    parser.add_argument("--losses", metavar="NPZ", help="store the per-sample losses here")
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--sigma-scale", type=float, default=0.775,
                        help="sigma as a multiple of each kernel's std (0.775: cycle 2 of "
                             "the 5-cycle schedule 1x -> 0.1x)")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--z", type=float, nargs="+", default=[3.0, 2.0])
    parser.add_argument("--deltas", type=float, nargs="*", default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    out = provenance(args)
    decision, held_out = losses_from_args(parser, args, out)
    out["by_z"] = {str(z): analyse(decision, held_out, args.chunks, z, args.deltas)
                   for z in args.z}
    for z, result in out["by_z"].items():
        print(f"z > {z}: clear at full batch {result['clear_at_full_batch']:.0%}, "
              f"agreement {result['agreement']}")
        for name, rule in result["rules"].items():
            print(f"  {name}: {rule}")
        print(f"  fixed batches: {result['held_out_change_fixed']}")
    write_json(out, args.output)


if __name__ == "__main__":
    main()
