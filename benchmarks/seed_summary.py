#!/usr/bin/env python
"""Summarize the seeds of one configuration: final accuracies, mean ± sd,
and when each seed first reached a target validation accuracy.

Reads results JSON files written by the examples (`--results`), one per
seed of the same command, and prints a markdown table: per seed, the
validation accuracy after every cycle, the final model's test accuracy,
the recorded wall-clock seconds (cumulative, as the file records them),
the first cycle whose validation accuracy reaches `--target` and the
seconds to the end of that cycle, and the CPU; then the mean ± sample sd
(ddof=1) of the final validation and test accuracies and of the recorded
seconds over the finished seeds (with a warning when they ran on
different CPUs, whose seconds do not average). The headline numbers are
the last cycle's (not the best one's).

Example:
    python -m benchmarks.seed_summary \\
        docs/results/mnist_val10k_b2048_k64_c5_s3_ff033_balanced_random_parabolic_seed*.json
"""

import argparse
import re
import statistics
from typing import List, Optional, Sequence

from benchmarks.run_labels import read_results


def first_reaching(rows: Sequence[dict], target: float) -> Optional[dict]:
    """The first per-cycle row whose `val_accuracy` is at least `target`."""
    return next((row for row in rows if row.get("val_accuracy", 0.0) >= target), None)


def mean_sd(values: Sequence[float]) -> str:
    """`"mean ± sd"` in percent (sample sd, ddof=1), or the one value."""
    if len(values) == 1:
        return f"{100 * values[0]:.2f}% (one seed)"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}%"


def seconds_mean_sd(values: Sequence[float]) -> str:
    """`"mean ± sd s (minutes)"` of wall-clock seconds, or the one value."""
    if len(values) == 1:
        return f"{values[0]:,.0f} s (one seed)"
    mean = statistics.mean(values)
    return f"{mean:,.0f} ± {statistics.stdev(values):,.0f} s ({mean / 60:.1f} min)"


def summarize(results: List[dict], target: float) -> str:
    """The markdown table for `results` (one results dictionary per seed)."""
    lines = ["| seed | validation accuracy per cycle (%) | test accuracy | seconds "
             f"| first cycle at ≥ {100 * target:g}% validation (seconds) | CPU |",
             "|---|---|---|---|---|---|"]
    finals, tests, seconds = [], [], []
    for r in results:
        rows = r["per_cycle"]
        vals = " / ".join(f"{100 * row['val_accuracy']:.2f}" for row in rows)
        test = r.get("test_accuracy")
        complete = r.get("complete", True)
        took = r.get("seconds", rows[-1]["seconds"])
        if complete and test is not None:
            finals.append(rows[-1]["val_accuracy"])
            tests.append(test)
            seconds.append(took)
        reached = first_reaching(rows, target)
        reached = (f"{reached['epoch']} ({reached['seconds']:,.0f})" if reached
                   else "not reached")
        cpu = r.get("machine", {}).get("cpu") or "not recorded"
        lines.append(f"| {r['args'].get('seed')} | {vals}"
                     f"{'' if complete else ' (running)'} "
                     f"| {'-' if test is None else f'{100 * test:.2f}%'} "
                     f"| {took:,.0f} | {reached} | {cpu} |")
    if tests:
        lines.append(f"| mean ± sd ({len(tests)} finished) | {mean_sd(finals)} after the last "
                     f"cycle | {mean_sd(tests)} | {seconds_mean_sd(seconds)} | | |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results JSON files, one per seed")
    parser.add_argument("--target", type=float, default=0.98,
                        help="validation accuracy to report the first cycle reaching it")
    args = parser.parse_args(argv)
    results = read_results(args.results)
    commands = {re.sub(r"seed[ _]?\d+", "seedN", r["command"]) for r in results if "command" in r}
    print(summarize(results, args.target))
    if len(commands) > 1:
        print("\nWarning: the files come from different commands (seed aside).")
    cpus = {r.get("machine", {}).get("cpu") for r in results}
    if len(cpus) > 1:
        print("\nWarning: the files come from different CPUs; their seconds do not average.")


if __name__ == "__main__":
    main()
