#!/usr/bin/env python
"""Plot results JSON files written by the example scripts.

Draws the accuracy each run reports after every cycle/epoch (on its
validation split, or on the test set for the runs made before the examples
held one out) against cycle/epoch and against the number of weight
updates, one line per results file; `--reference` adds a horizontal line
(a number from the paper, say).

Example:
    python -m benchmarks.plot_results docs/results/mnist_rso_b256_k16_c5.json \
        docs/results/mnist_sgd.json --output docs/results/mnist.png
    python -m benchmarks.plot_results docs/results/mnist_paper_preset_c5_of50_seed0.json \
        --reference 98 "paper, after 5 cycles" --output docs/results/paper_preset.png
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from benchmarks.run_labels import read_results, rso_settings  # noqa: E402


def held_out(r) -> str:
    """Which data a run's per-cycle accuracy is measured on."""
    return "validation" if r["args"].get("validation_size") else "test"


def label(r, mixed: bool = False):
    """A run's legend entry; `mixed`: also say which held-out data it uses."""
    a = r["args"]
    seed = f", seed {a['seed']}" if "seed" in a else ""
    if r["method"] == "rso" and a.get("preset") == "paper":
        text = (f"RSO, paper preset (batch {a['batch_size']}, K={a['weights_per_batch']}, "
                f"{a['cycles']} cycles of a {a.get('schedule_cycles') or a['cycles']}-cycle "
                f"schedule{seed})")
    elif r["method"] == "rso":
        text = (f"RSO (batch {a['batch_size']}, K={a['weights_per_batch']}, "
                f"{rso_settings(a)} over {a['cycles']} cycles{seed})")
    else:
        decay = ", cosine decay" if a.get("decay", "none") != "none" else ""
        text = (f"{r['method'].upper()} (batch {a['batch_size']}, lr {a['learning_rate']}"
                f"{decay}{seed})")
    return f"{text} [{held_out(r)}]" if mixed else text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results JSON files")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--title", default=None)
    parser.add_argument("--reference", nargs=2, action="append", default=[],
                        metavar=("PERCENT", "LABEL"),
                        help="a horizontal line at PERCENT accuracy (repeatable)")
    args = parser.parse_args(argv)
    runs = read_results(args.results)
    kinds = {held_out(r) for r in runs}
    mixed = len(kinds) > 1
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5.5))
    # The default cycle repeats after 10 colours; tab20 keeps runs apart.
    colors = plt.cm.tab20.colors if len(args.results) > 10 else plt.cm.tab10.colors
    for n, r in enumerate(runs):
        rows = r["per_cycle"]
        x = [row["epoch"] for row in rows]
        acc = [100 * row["val_accuracy"] for row in rows]
        # Gradient baselines dashed, so they read apart from RSO runs.
        style = dict(marker="o", color=colors[n % len(colors)], label=label(r, mixed),
                     linestyle="-" if r["method"] == "rso" else "--")
        ax1.plot(x, acc, **style)
        # Partial files of older runs may lack the count: left panel only.
        counted = [(row["weight_updates"], a) for row, a in zip(rows, acc)
                   if "weight_updates" in row]
        if counted:
            ax2.plot(*zip(*counted), **style)
    ax1.set_xlabel("cycle (RSO) / epoch (gradient)")
    for value, text in args.reference:
        for ax in (ax1, ax2):
            ax.axhline(float(value), color="grey", linestyle=":", linewidth=1.2,
                       label=text if ax is ax1 else None)
    ax1.set_ylabel("held-out accuracy (%), see legend" if mixed
                   else f"{kinds.pop()} accuracy (%)")
    ax2.set_xlabel("weight updates")
    ax2.set_xscale("log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    # One legend under both panels: inside them it hid data points.
    handles, labels = ax1.get_legend_handles_labels()
    # Two columns unless a label is too long to share the figure's width.
    columns = 2 if len(labels) > 4 and max(map(len, labels)) <= 90 else 1
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8,
               frameon=False)
    if args.title:
        fig.suptitle(args.title)
    legend_rows = -(-len(labels) // columns)
    fig.tight_layout(rect=(0, 0.036 * legend_rows + 0.01, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
