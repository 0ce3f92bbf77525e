#!/usr/bin/env python
"""Plot the "beyond gradients" demonstrations from their results JSON files.

Three panels: validation accuracy per cycle of binary-weight RSO runs
(`examples/binary_mnist.py`) beside the straight-through baseline's;
validation accuracy per cycle/epoch of the sign-activation network
(`examples/sign_activations.py`) under RSO, SGD and the straight-through
estimator; and the test balanced error of the imbalanced task
(`examples/imbalanced_objective.py`), RSO on the metric against Adam on
cross-entropy with a validation-chosen threshold, one bar per seed.

Example:
    python -m benchmarks.plot_beyond_gradients \\
        --binary docs/results/binary_mnist_rso_b*_seed0.json docs/results/binary_mnist_ste_lr0.01_seed*.json \\
        --sign docs/results/sign_mnist_*_seed*.json \\
        --imbalanced docs/results/fmnist_shirt_rso_smooth_c10_b4096_seed*.json \\
                     docs/results/fmnist_shirt_adam_seed*.json \\
        --output docs/results/beyond_gradients.png
"""

import argparse
import json
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _load(paths: List[str]) -> List[dict]:
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    return runs


_NAMES = {"ste": "straight-through", "sgd": "SGD", "adam": "Adam"}


def _method(run: dict) -> str:
    """The script's `--method` (`run["method"]` names the optimizer)."""
    return run["args"].get("method", run["method"])


def _label(run: dict) -> str:
    a = run["args"]
    if _method(run) == "rso":
        # `--batch-schedule 4096:10,8192:4` runs its cycles at those batches.
        batch = (" → ".join(str(b) for b, _ in a["batch_schedule"])
                 if a.get("batch_schedule") else a["batch_size"])
        if a.get("freeze_discrete"):
            # A warm start that searches only the real-valued variables.
            return (f"RSO, gamma/beta only, batch {batch}, cycles "
                    f"{a['initial_cycle'] + 1}-{a['cycles']}, seed {a['seed']}")
        return f"RSO, batch {batch}, {a['cycles']} cycles, seed {a['seed']}"
    return f"{_NAMES.get(_method(run), _method(run))}, seed {a['seed']}"


def _curves(ax, runs: List[dict], title: str) -> None:
    """Validation accuracy per cycle (RSO) or epoch (gradients), one line each."""
    for run in runs:
        rows = run["per_cycle"]
        xs = [r["epoch"] for r in rows]
        ys = [100 * r["val_accuracy"] for r in rows]
        style = "-o" if _method(run) == "rso" else "--"
        ax.plot(xs, ys, style, markersize=3, label=_label(run))
    ax.set_xlabel("cycle (RSO) / epoch (gradients)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def _balanced_errors(ax, runs: List[dict]) -> None:
    """Test balanced error of each run, grouped by method."""
    groups: Dict[str, List[float]] = {}
    for run in runs:
        groups.setdefault(_method(run), []).append(
            100 * run["objective"]["test"]["balanced_error"])
    names = {"rso": "RSO on the\nbalanced error", "adam": "Adam on cross-entropy,\nthreshold on validation"}
    for k, (method, errors) in enumerate(sorted(groups.items(), reverse=True)):
        xs = [k + 0.25 * (i - (len(errors) - 1) / 2) for i in range(len(errors))]
        ax.bar(xs, errors, width=0.22)
        for x, e in zip(xs, errors):
            ax.text(x, e, f"{e:.1f}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([names.get(m, m) for m in sorted(groups, reverse=True)], fontsize=7)
    ax.set_ylabel("test balanced error (%), one bar per seed")
    ax.set_title("Fashion-MNIST shirt vs rest (1:9)")
    ax.grid(alpha=0.3, axis="y")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", nargs="+", required=True, help="binary_mnist.py results")
    parser.add_argument("--sign", nargs="+", required=True, help="sign_activations.py results")
    parser.add_argument("--imbalanced", nargs="+", required=True,
                        help="imbalanced_objective.py results")
    parser.add_argument("--output", required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    _curves(axes[0], _load(args.binary), "MNIST, paper net, kernels in {-1, +1}")
    _curves(axes[1], _load(args.sign), "MNIST, sign activations")
    _balanced_errors(axes[2], _load(args.imbalanced))
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
