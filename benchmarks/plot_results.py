#!/usr/bin/env python
"""Plot results JSON files written by the example scripts.

Draws test accuracy against cycle/epoch and against the number of weight
updates, one line per results file.

Example:
    python -m benchmarks.plot_results docs/results/mnist_rso_b256_k16_c5.json \
        docs/results/mnist_sgd.json --output docs/results/mnist.png
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from benchmarks.run_labels import rso_settings  # noqa: E402


def label(r):
    a = r["args"]
    if r["method"] == "rso":
        return (f"RSO (batch {a['batch_size']}, K={a['weights_per_batch']}, "
                f"{rso_settings(a)} over {a['cycles']} cycles)")
    decay = ", cosine decay" if a.get("decay", "none") != "none" else ""
    return f"{r['method'].upper()} (batch {a['batch_size']}, lr {a['learning_rate']}{decay})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results JSON files")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5.5))
    # The default cycle repeats after 10 colours; tab20 keeps runs apart.
    colors = plt.cm.tab20.colors if len(args.results) > 10 else plt.cm.tab10.colors
    for n, path in enumerate(args.results):
        with open(path) as f:
            r = json.load(f)
        rows = r["per_cycle"]
        x = [row["epoch"] for row in rows]
        acc = [100 * row["val_accuracy"] for row in rows]
        # Gradient baselines dashed, so they read apart from RSO runs.
        style = dict(marker="o", color=colors[n % len(colors)], label=label(r),
                     linestyle="-" if r["method"] == "rso" else "--")
        ax1.plot(x, acc, **style)
        # Partial files of older runs may lack the count: left panel only.
        counted = [(row["weight_updates"], a) for row, a in zip(rows, acc)
                   if "weight_updates" in row]
        if counted:
            ax2.plot(*zip(*counted), **style)
    ax1.set_xlabel("cycle (RSO) / epoch (gradient)")
    ax1.set_ylabel("test accuracy (%)")
    ax2.set_xlabel("weight updates")
    ax2.set_xscale("log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    # One legend under both panels: inside them it hid data points.
    handles, labels = ax1.get_legend_handles_labels()
    columns = 2 if len(labels) > 4 else 1
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
