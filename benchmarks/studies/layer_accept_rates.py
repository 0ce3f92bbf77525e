#!/usr/bin/env python
"""Per-variable accept rates of a run, read back from its TensorBoard logs.

`examples/*_rso.py --logdir DIR` writes each searched variable's accept rate
per cycle (`keras_rso.callbacks.LayerAcceptRates`, tags
`accept_rate/<variable path>` in `DIR/train`). This prints them as a
markdown table, one row per variable in the order they are searched
(output to input) and one column per cycle, and can keep them as JSON.

Example:
    python -m benchmarks.layer_accept_rates logs/mnist --output docs/results/accept_rates.json
"""

import argparse
import glob
import os
from collections import defaultdict

import tensorflow as tf

from examples.experiment import provenance, write_json

PREFIX = "accept_rate/"


def read_rates(logdir: str) -> dict:
    """`{variable path: {cycle (1-based): rate}}` from every event file."""
    rates = defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(logdir, "train", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith(PREFIX):
                    rate = float(tf.make_ndarray(value.tensor))
                    rates[value.tag[len(PREFIX):]][event.step + 1] = rate
    return dict(rates)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", help="the --logdir of an example run")
    parser.add_argument("--output", default=None, help="write the rates as JSON here")
    args = parser.parse_args(argv)
    rates = read_rates(args.logdir)
    if not rates:
        parser.error(f"no '{PREFIX}*' scalars under {os.path.join(args.logdir, 'train')}")
    cycles = sorted({c for per_cycle in rates.values() for c in per_cycle})
    print("| variable | " + " | ".join(f"cycle {c}" for c in cycles) + " |")
    print("|---" + "|---:" * len(cycles) + "|")
    # Searched from the output to the input: reverse of the model's order,
    # which is the order the tags were first written in.
    for name in reversed(list(rates)):
        print(f"| `{name}` | " + " | ".join(
            f"{rates[name][c]:.2f}" if c in rates[name] else "" for c in cycles) + " |")
    write_json({**provenance(args), "accept_rates": rates}, args.output)


if __name__ == "__main__":
    main()
