#!/usr/bin/env python
"""Print markdown tables from results JSON files (for docs/results.md).

Example:
    python -m benchmarks.results_table docs/results/*.json docs/results/sweep/*.json
"""

import argparse
import json

from benchmarks.run_labels import is_paper_settings, rso_settings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+")
    args = parser.parse_args(argv)
    print("| run | method | batch | K | cycles/epochs | test acc. per cycle/epoch (%) "
          "| weight updates | wall-clock (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.results:
        with open(path) as f:
            r = json.load(f)
        if "per_cycle" not in r:
            continue
        a = r["args"]
        accs = " / ".join(f"{100 * row['val_accuracy']:.1f}" for row in r["per_cycle"])
        k = a.get("weights_per_batch", "-")
        extra = " (no BN refresh)" if a.get("no_bn_refresh") else ""
        if r["method"] == "rso" and not is_paper_settings(a):
            extra += f" ({rso_settings(a)})"
        cycles = str(len(r["per_cycle"]))
        if r.get("complete") is False:
            cycles += f" of {a.get('cycles', a.get('epochs'))} (stopped)"
        updates = r.get("weight_updates", r["per_cycle"][-1].get("weight_updates", 0))
        print(f"| `{path.split('/')[-1]}` | {r['method']}{extra} | {a['batch_size']} | {k} "
              f"| {cycles} | {accs} | {int(updates):,} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
