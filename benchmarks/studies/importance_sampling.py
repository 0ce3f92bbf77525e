#!/usr/bin/env python
"""Could a trial decide on fewer images if it picked the hard ones?

A trial's decision is the sign of a mean paired loss difference (candidate
minus `w`, image by image). Once a model classifies most training images
with confidence, their losses hardly move when one weight does, and the
difference is carried by a few images near the decision boundary. Drawing
the batch with probability `q_i` that favours them, and weighting each
drawn image by `1 / (N q_i)`, keeps the mean unbiased and can shrink its
variance: this measures by how much, on the per-sample losses that
`benchmarks/studies/sequential_decisions.py` records (`w`, `w + dw`,
`w - dw` on a decision batch of `N` images and a held-out batch,
BatchNormalization in training mode with the decision batch's statistics).

Proposals: `q_i = lam / N + (1 - lam) * l_i^a / sum(l^a)`, with `l_i` the
current model's loss on image `i` (`w`'s), `a` in `--powers` and the
uniform share `lam` in `--uniform-shares` (it bounds every weight by
`1 / lam`). For each proposal and each trial it reports:

* `variance_gain`: the variance of the uniform estimate of the decisive
  difference (the whole batch's best option minus its runner-up) over that
  of the weighted estimate, per image drawn: how many times more images a
  uniform batch needs for the same noise (median and quartiles over trials);
* for every `n` in `--sizes`, by `--draws` Monte Carlo batches per trial,
  uniform (without replacement) and weighted (with replacement):
  `agreement`, how often the decision on `n` images equals the whole
  batch's, and `held_out_change`, the held-out loss change of those
  decisions (negative is better).

What it does not measure: in training, BatchNormalization would normalise
with the statistics of the drawn batch, which this study holds at the
whole batch's (the hard images would shift them unless the statistics are
weighted too).

Example:
    python -m benchmarks.studies.importance_sampling model.keras --raw --trials 150 \\
        --losses losses.npz --output importance.json
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.studies.sequential_decisions import _decide, losses_from_args
from examples.experiment import provenance, write_json
from keras_rso.sampling import loss_probabilities


def _decisive(losses: np.ndarray) -> np.ndarray:
    """Per-image difference between the whole batch's best option and its
    runner-up (for `w` kept: `w` minus the better candidate)."""
    means = losses.mean(axis=1)
    best = _decide(means)
    runner = min((i for i in range(3) if i != best), key=lambda i: means[i])
    return losses[best] - losses[runner]


def variance_gain(diff: np.ndarray, q: np.ndarray) -> float:
    """Per-draw variance of the uniform mean of `diff` over that of the
    weighted one under `q` (with replacement, both)."""
    n = diff.size
    mean = diff.mean()
    uniform = np.mean(diff ** 2) - mean ** 2
    weighted = np.sum(diff ** 2 / (n ** 2 * q)) - mean ** 2
    return float(uniform / weighted) if weighted > 0 else float("inf")


def monte_carlo(decision: np.ndarray, held_out: np.ndarray, q, n: int, draws: int,
                rng: np.random.Generator) -> dict:
    """Agreement with the whole batch's decision, and held-out change, of
    decisions on `n` images drawn uniformly (`q` None) or under `q`."""
    full_n = decision.shape[2]
    held = held_out.mean(axis=2)
    agree, change = [], []
    for t, losses in enumerate(decision):
        truth = _decide(losses.mean(axis=1))
        for _ in range(draws):
            if q is None:
                pick = rng.choice(full_n, n, replace=False)
                means = losses[:, pick].mean(axis=1)
            else:
                pick = rng.choice(full_n, n, replace=True, p=q)
                means = (losses[:, pick] / (full_n * q[pick])).mean(axis=1)
            choice = _decide(means)
            agree.append(choice == truth)
            change.append(held[t, choice] - held[t, 0])
    return {"agreement": float(np.mean(agree)),
            "held_out_change": [float(np.mean(change)),
                                float(np.std(change, ddof=1) / np.sqrt(len(change)))]}


def analyse(decision: np.ndarray, held_out: np.ndarray, sizes, powers, uniform_shares,
            draws: int, seed: int) -> dict:
    """The statistics above for every proposal; `decision` and `held_out`
    are per-sample losses `(trials, 3, N)`, options `w`, `w + dw`, `w - dw`."""
    rng = np.random.default_rng(seed)
    current = decision[0, 0]  # `w`'s losses: the same images in every trial
    diffs = [_decisive(t) for t in decision]
    share = np.sort(current)[::-1]
    out = {"trials": int(decision.shape[0]), "batch": int(decision.shape[2]),
           "current_loss": {"mean": float(current.mean()),
                            "share_of_loss_in_top_10pct": float(
                                share[:share.size // 10].sum() / share.sum())},
           "uniform": {str(n): monte_carlo(decision, held_out, None, n, draws, rng)
                       for n in sizes},
           "proposals": {}}
    for power in powers:
        for lam in uniform_shares:
            q = loss_probabilities(current, power, lam)
            gains = np.array([variance_gain(d, q) for d in diffs])
            out["proposals"][f"power{power:g}_uniform{lam:g}"] = {
                "variance_gain": {"median": float(np.median(gains)),
                                  "quartiles": [float(np.percentile(gains, 25)),
                                                float(np.percentile(gains, 75))],
                                  "below_1": float(np.mean(gains < 1))},
                "by_size": {str(n): monte_carlo(decision, held_out, q, n, draws, rng)
                            for n in sizes}}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help=".keras file of the paper's MNIST net")
    parser.add_argument("--raw", action="store_true",
                        help="feed raw pixels (0-255): the committed models standardize inside")
    parser.add_argument("--reanalyse", metavar="NPZ",
                        help="recompute the statistics from losses stored with --losses")
    parser.add_argument("--losses", metavar="NPZ", help="store the per-sample losses here")
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--sigma-scale", type=float, default=0.775,
                        help="sigma as a multiple of each kernel's std")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--powers", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--uniform-shares", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--draws", type=int, default=40, help="Monte Carlo batches per trial")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    for name in ("trials", "batch_size", "draws"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if any(not 0 < lam <= 1 for lam in args.uniform_shares):
        parser.error("--uniform-shares must lie in (0, 1]: a share of 0 leaves weights unbounded")
    out = provenance(args)
    decision, held_out = losses_from_args(parser, args, out)
    out.update(analyse(decision, held_out, args.sizes, args.powers, args.uniform_shares,
                       args.draws, args.seed))
    print(f"current loss {out['current_loss']}")
    for n, row in out["uniform"].items():
        print(f"uniform n={n}: {row}")
    for name, p in out["proposals"].items():
        print(f"{name}: variance gain {p['variance_gain']}")
        for n, row in p["by_size"].items():
            print(f"  n={n}: {row}")
    write_json(out, args.output)


if __name__ == "__main__":
    main()
