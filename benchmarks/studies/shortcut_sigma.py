#!/usr/bin/env python
"""The shortcut's sigma on the paper's CIFAR-10 net, measured on trained weights.

The authors' code searches the 1x1 projection shortcut of
`paper_cifar10_net` (512 weights) with the sigma of its block's 3x3
convolution, sqrt(2 / (9 x 32)) = 0.083 (`models.paper_sigmas`, on under
`--preset paper`); `sigma_rule="he"` alone would give it its own He std,
sqrt(2 / 16) = 0.354. This study runs one pass of the search over the
shortcut kernel alone (every other weight fixed) from a trained model
(`--model`, a committed `paper_cifar10_net`), once with each sigma and the
same seeds (so the same batches and perturbation draws up to the scale),
and records the accepted changes and the validation accuracy and loss
(the last `--validation-size` training images; the test set is not read)
before and after.

Example:
    python -m benchmarks.studies.shortcut_sigma \\
        --model docs/results/models/cifar10_paper_net_b512_k64_balanced_random_seed0.keras \\
        --seeds 0 1 2 --batch-size 500 --output docs/results/shortcut_sigma_b500.json
"""

import argparse
import json
import statistics
from typing import Dict, Sequence

import keras
import numpy as np

import keras_rso
from keras_rso import datasets, models


def _shortcut(model: keras.Model) -> keras.Variable:
    """The shortcut kernel: the one variable `models.paper_sigmas` names."""
    (path,) = models.paper_sigmas(model)
    return next(v for v in model.trainable_variables if v.path == path)


def _score(model: keras.Model, x: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    """Accuracy and mean cross-entropy (inference-mode BatchNorm)."""
    logits = model.predict(x, batch_size=1000, verbose=0).astype("float64")
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return {"accuracy": float(np.mean(np.argmax(logits, 1) == y)),
            "loss": float(-np.mean(log_p[np.arange(len(y)), y]))}


def one_pass(path: str, sigma_of, seed: int, train, validation, batch_size: int,
             weights_per_batch: int) -> dict:
    """One cycle of RSO over the shortcut kernel of the model at `path`,
    with `sigma_of(model)` as its sigma."""
    model = keras.models.load_model(path)
    kernel = _shortcut(model)
    sigma = float(sigma_of(model))
    before = _score(model, *validation)
    trainer = keras_rso.RSOModel(model, variables=[kernel])
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=weights_per_batch, seed=seed,
                                            sigma_overrides={kernel.path: sigma}),
                    loss=models.paper_loss())
    start = kernel.numpy().copy()
    keras.utils.set_random_seed(seed)
    trainer.fit(*train, batch_size=batch_size, epochs=1, verbose=0)
    after = _score(model, *validation)
    return {"seed": seed, "sigma": sigma, "scalars": int(start.size),
            "accepted": int(trainer.optimizer.weight_updates.numpy()),
            "mean_abs_change": float(np.mean(np.abs(kernel.numpy() - start))),
            "validation_before": before, "validation_after": after}


def _mean_sd(values: Sequence[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved paper_cifar10_net (.keras)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=2500)
    parser.add_argument("--weights-per-batch", type=int, default=64)
    parser.add_argument("--validation-size", type=int, default=5000)
    parser.add_argument("--output", default=None, help="write the runs as JSON here")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("--seeds needs at least two seeds (the summary is a mean ± sd)")
    (x, y), _ = datasets.load_cifar10(raw=True)
    n = len(x) - args.validation_size
    train, validation = (x[:n], y[:n]), (x[n:], y[n:])
    rules = {
        "authors (block's 3x3 He std)": lambda m: models.paper_sigmas(m)[_shortcut(m).path],
        "he alone (its own He std)": lambda m: np.sqrt(2.0 / np.prod(_shortcut(m).shape[:-1])),
    }
    runs = {name: [] for name in rules}
    for seed in args.seeds:
        for name, rule in rules.items():
            run = one_pass(args.model, rule, seed, train, validation, args.batch_size,
                           args.weights_per_batch)
            runs[name].append(run)
            print(name, json.dumps(run), flush=True)
    print("| sigma | value | accepted of 512 | validation accuracy after (before "
          f"{100 * runs[next(iter(runs))][0]['validation_before']['accuracy']:.2f}%) "
          "| validation loss after |")
    print("|---|---|---|---|---|")
    for name, rs in runs.items():
        print(f"| {name} | {rs[0]['sigma']:.3f} | {_mean_sd([r['accepted'] for r in rs])} | "
              f"{_mean_sd([100 * r['validation_after']['accuracy'] for r in rs])}% | "
              f"{_mean_sd([r['validation_after']['loss'] for r in rs])} |")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
