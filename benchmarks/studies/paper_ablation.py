#!/usr/bin/env python
"""The paper preset with one ingredient changed, trained and scored on
validation data.

The README's Fidelity table lists where keras_rso's defaults depart from
the authors' `train.py`. Some departures only change which candidate a
trial takes, and `paper_departures` measures those without training. Others
change the path a whole cycle takes: the order of the scalars inside a
kernel, the sigma rule, the layer-input pool. Only training measures them.

This study trains `paper_mnist_net` as `--preset paper` does
(`RSO.paper()`, a layer-input pool of the whole training split, the
authors' float64 summed loss, their sigma schedule over 50 cycles) for
`--cycles` cycles at `--batch-size` images per weight (the authors use
5,000; a smaller batch makes several seeds affordable), once as the preset
and once per `--change`: one `RSO.paper` argument set to another value,
such as `kernel_order=keras` (keras_rso's default), `sigma_rule=std` or
`pool_size=0` (no pool). `--base` sets an argument for every run alike.
Each run holds out the last `--validation-size` training images and
reports its accuracy on them; the test set is not read. Every run is
written to `--output` as it ends, with mean ± sd per variant.

Example:
    python -m benchmarks.studies.paper_ablation --batch-size 500 --cycles 1 \\
        --seeds 0 1 2 --change kernel_order=keras --change sigma_rule=std \\
        --output docs/results/paper_ablation_b500_c1.json
"""

import argparse
import json
import statistics
import time
from typing import Dict, List, Optional

import keras
import numpy as np

import keras_rso
from keras_rso import datasets, models
from keras_rso.callbacks import SigmaAnnealing


def parse_setting(text: str) -> Dict[str, object]:
    """`"key=value"` as `{key: value}`, the value read as JSON when it is
    JSON (`1e-4`, `true`, `null`) and as a string otherwise (`keras`).
    `pool_size=0` means no pool."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if key == "pool_size" and parsed == 0:
        parsed = None
    return {key: parsed}


def train_once(split, seed: int, batch_size: int, cycles: int,
               settings: Dict[str, object]) -> dict:
    """One run of the preset with `settings` over it; its validation scores."""
    (x, y), (x_val, y_val) = split
    keras.utils.set_random_seed(seed)
    model = models.paper_mnist_net()
    trainer = keras_rso.RSOModel(model)
    arguments = {"seed": seed, "pool_size": len(x), **settings}
    trainer.compile(optimizer=keras_rso.RSO.paper(**arguments), loss=models.paper_loss(),
                    metrics=["accuracy"])
    start = time.time()
    trainer.fit(x, y, batch_size=batch_size, epochs=cycles, verbose=0,
                callbacks=[SigmaAnnealing(0.1, rule="paper", total_cycles=50)])
    seconds = time.time() - start
    predicted = np.argmax(model.predict(x_val, batch_size=1000, verbose=0), -1)
    optimizer = trainer.optimizer
    config = optimizer.get_config()
    return {"seed": seed, "validation_accuracy": float(np.mean(predicted == y_val)),
            "weight_updates": int(optimizer.weight_updates.numpy()),
            "trials": int(optimizer.trials.numpy()), "seconds": round(seconds, 1),
            "rso": {k: config[k] for k in
                    sorted(set(arguments) | {"kernel_order", "sigma_rule", "weight_decay"})}}


def summarize(runs: List[dict]) -> dict:
    """Mean and sample sd of the validation accuracy, per variant."""
    out = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        values = [r["validation_accuracy"] for r in runs if r["variant"] == name]
        out[name] = {"runs": len(values), "mean": statistics.mean(values),
                     "sd": statistics.stdev(values) if len(values) > 1 else None}
    return out


def _print_summary(summary: dict) -> None:
    for name, s in summary.items():
        sd = f" ± {100 * s['sd']:.2f}" if s["sd"] is not None else ""
        print(f"{name:24s} {100 * s['mean']:.2f}{sd}% validation over {s['runs']} seed(s)")


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--change", type=parse_setting, action="append", default=[],
                        help="KEY=VALUE: an RSO.paper argument changed in one variant "
                             "(repeat for more variants)")
    parser.add_argument("--base", type=parse_setting, action="append", default=[],
                        help="KEY=VALUE: an RSO.paper argument set in every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--validation-size", type=int, default=10000)
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N training images only (smoke runs)")
    parser.add_argument("--changes-only", action="store_true",
                        help="train only the --change variants, not the preset itself "
                             "(its runs for these seeds are in another --output file)")
    parser.add_argument("--output", default=None)
    parser.add_argument("--summarize", nargs="+", metavar="FILE", default=None,
                        help="print mean ± sd per variant over the runs of these "
                             "--output files (studies split across machines or cores), "
                             "and train nothing")
    args = parser.parse_args(argv)
    if args.summarize:
        files = {path: json.load(open(path)) for path in args.summarize}
        same = ("batch_size", "cycles", "base", "validation_size", "limit")
        settings = {json.dumps({k: f["args"][k] for k in same}) for f in files.values()}
        if len(settings) > 1:
            parser.error(f"--summarize: the files ran different settings ({', '.join(same)}): "
                         f"{sorted(settings)}")
        runs = [r for f in files.values() for r in f["runs"]]
        seen = [(r["variant"], r["seed"]) for r in runs]
        twice = sorted({f"{v} seed {s}" for v, s in seen if seen.count((v, s)) > 1})
        if twice:
            parser.error(f"--summarize: runs appear twice: {', '.join(twice)}")
        summary = summarize(runs)
        _print_summary(summary)
        return {"runs": runs, "summary": summary}
    if args.changes_only and not args.change:
        parser.error("--changes-only needs at least one --change")
    if args.validation_size <= 0:
        parser.error("--validation-size must be positive: the study scores on it")
    for change in args.change:
        key = next(iter(change))
        if any(key in base for base in args.base):
            parser.error(f"{key} is both a --base and a --change")
    from examples.experiment import provenance, split_validation, write_json
    train, validation, _ = split_validation(datasets.load_mnist(raw=True),
                                            args.validation_size, args.limit)
    base = {k: v for b in args.base for k, v in b.items()}
    variants = [] if args.changes_only else [("paper", {})]
    variants += [
        ("{}={}".format(*next(iter(c.items()))), c) for c in args.change]
    out = {**provenance(args), "runs": []}
    for seed in args.seeds:
        for name, change in variants:
            run = {"variant": name, **train_once((train, validation), seed, args.batch_size,
                                                 args.cycles, {**base, **change})}
            out["runs"].append(run)
            out["summary"] = summarize(out["runs"])
            print(f"seed {seed} {name:24s} validation {run['validation_accuracy']:.4f} "
                  f"({run['weight_updates']} accepted, {run['seconds']:.0f} s)", flush=True)
            write_json(out, args.output, announce=False)
    _print_summary(out["summary"])
    if args.output:
        print(f"Results written to {args.output}")
    return out


if __name__ == "__main__":
    main()
