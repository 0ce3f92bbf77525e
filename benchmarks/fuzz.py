#!/usr/bin/env python
"""Fuzzes the search's invariants: many fresh random models and options.

Runs `tests/test_fuzz.py` with `--examples` random examples (CI runs a small
fixed set) and a chosen Hypothesis seed, and records how many examples ran,
whether every one kept the invariants, and the first falsifying example.

Example:
    python -m benchmarks.fuzz --examples 300 --seed 1 --results docs/results/fuzz.json
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

from examples.experiment import provenance, write_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed")
    parser.add_argument("--results", default=None)
    args = parser.parse_args(argv)
    env = dict(os.environ, KERAS_RSO_FUZZ_EXAMPLES=str(args.examples), TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-n", "0", "-q", "-p",
         "no:cacheprovider", f"--hypothesis-seed={args.seed}",
         "--hypothesis-show-statistics"],
        cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    text = out.stdout + out.stderr
    passing = re.search(r"(\d+) passing examples?", text)
    falsifying = re.search(r"Falsifying example:.*?(?=\n\n|\Z)", text, re.S)
    results = provenance(args)
    results.update({
        "passed": out.returncode == 0,
        "passing_examples": int(passing.group(1)) if passing else None,
        "falsifying_example": falsifying.group(0) if falsifying else None,
        "seconds": round(seconds, 1),
    })
    print({k: results[k] for k in ("passed", "passing_examples", "seconds")})
    if results["falsifying_example"]:
        print(results["falsifying_example"])
    write_json(results, args.results)
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
