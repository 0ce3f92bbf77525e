#!/usr/bin/env python
"""Three departures from the authors' code, measured without training.

The README's Fidelity table lists where keras_rso's defaults depart from the
authors' `train.py`. Three of them can be measured on the paper's MNIST net
without a training run:

* **sigma** (`sigma_rule`): the sigma each searched variable of
  `paper_mnist_net` (seed `--seed`) gets at the start under keras_rso's
  default (`"std"`: its measured std; a zero-std BatchNormalization gamma or
  beta takes the median of the others) and under the authors' rule
  (`"he"`: sqrt(2 / fan_in) per kernel, 0.167 for gamma and beta).
* **loss** (`paper_loss()`): which candidate a trial takes under keras_rso's
  default loss (softmax cross-entropy averaged over the batch in float32)
  and under the authors' (summed in float64). From the weights of a
  `--preset paper` backup (`--weights`, the RSOModel's `latest.weights.h5`),
  `--trials` random kernel scalars each get `dw ~ N(0, sigma)` (the authors'
  sigma of the layer) and a fresh training batch of `--batch-size` images;
  the logits at `w - dw`, `w` and `w + dw` (BatchNormalization in training
  mode, as a trial evaluates) go through both losses, and the two argmins are
  compared. The logits are the same float32 numbers for both: only the
  reduction's precision differs.
* **weight decay** (`weight_decay`): in the same trials, which candidate the
  authors' loss takes around `w` (keras_rso's default, no decay) and around
  `w * (1 - --weight-decay)` (the authors' code decays the weight before
  building its three candidates), compared by position (-, 0, +).

Example:
    python -m benchmarks.studies.paper_departures \\
        --weights docs/results/backups/mnist_paper_preset_seed0/latest.weights.h5 \\
        --trials 300 --output docs/results/paper_departures.json
"""

import argparse
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

import keras_rso
from keras_rso import datasets, models


def _trainer(sigma_rule: str, seed: int) -> keras_rso.RSOModel:
    keras.utils.set_random_seed(seed)
    trainer = keras_rso.RSOModel(models.paper_mnist_net())
    trainer.compile(optimizer=keras_rso.RSO.paper(seed=seed, sigma_rule=sigma_rule),
                    loss=models.paper_loss())
    trainer(np.zeros((1, 28, 28, 1), "uint8"))
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def sigmas(seed: int) -> dict:
    """Each variable's starting sigma under both rules."""
    table = {}
    for rule in ("std", "he"):
        trainer = _trainer(rule, seed)
        trainer._initialize_sigmas()
        for v, s in zip(trainer.trainable_variables, trainer.optimizer.sigmas.numpy()):
            table.setdefault(v.path, {})[rule] = float(s)
    return table


def _losses(logits: tf.Tensor, y: np.ndarray) -> tuple:
    """(keras_rso's default loss, the authors') of one candidate's logits."""
    default = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    return float(default), float(models.paper_loss()(y, logits))


def decisions(weights: str, trials: int, batch_size: int, seed: int,
              weight_decay: float = 1e-4) -> dict:
    """How often the two losses, and decay or none, take different candidates."""
    trainer = _trainer("he", seed)
    with tempfile.TemporaryDirectory() as tmp:
        # A copy: the running fit may rewrite its backup at any moment.
        copy = os.path.join(tmp, "w.weights.h5")
        shutil.copy(weights, copy)
        trainer.load_weights(copy)
    model = trainer.model
    (x, y), _ = datasets.load_mnist(raw=True)
    x, y = x[:50000], y[:50000]
    kernels = [v for v in model.trainable_variables if len(v.shape) >= 2]
    sizes = np.array([int(np.prod(v.shape)) for v in kernels], float)
    he = {v.path: (2.0 / np.prod(v.shape[:-1])) ** 0.5 for v in kernels}
    rng = np.random.default_rng(seed)
    forward = tf.function(lambda images: model(images, training=True), autograph=False)
    rows, differ, decay_differ = [], 0, 0
    for _ in range(trials):
        var = kernels[rng.choice(len(kernels), p=sizes / sizes.sum())]
        j = int(rng.integers(int(np.prod(var.shape))))
        dw = float(rng.normal(0.0, he[var.path]))
        pick = rng.choice(len(x), batch_size, replace=False)
        xb, yb = x[pick], y[pick]
        w = var.numpy()
        flat = w.reshape(-1).copy()

        def evaluate(center):
            losses = []
            for value in (center - dw, center, center + dw):
                trial = flat.copy()
                trial[j] = value
                var.assign(trial.reshape(w.shape))
                losses.append(_losses(forward(xb), yb))
            return losses

        losses = evaluate(flat[j])
        # The authors' decay, in float32 as their weights are.
        decayed = evaluate(np.float32(flat[j] * np.float32(1.0 - weight_decay)))
        var.assign(w)
        default = int(np.argmin([a for a, _ in losses]))
        authors = int(np.argmin([b for _, b in losses]))
        with_decay = int(np.argmin([b for _, b in decayed]))
        differ += default != authors
        decay_differ += with_decay != authors
        gaps = sorted(b for _, b in losses)
        rows.append({"variable": var.path, "index": j, "dw": dw,
                     "default_choice": default, "authors_choice": authors,
                     "decayed_choice": with_decay, "weight": float(flat[j]),
                     "smallest_gap_summed": gaps[1] - gaps[0]})
    return {"trials": trials, "batch_size": batch_size, "different_choices": int(differ),
            "agreement": 1.0 - differ / trials, "weight_decay": weight_decay,
            "decay_different_choices": int(decay_differ),
            "decay_agreement": 1.0 - decay_differ / trials, "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True,
                        help="an RSOModel weights file of paper_mnist_net (a --preset paper backup)")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=1e-4,
                        help="the authors' per-trial decay factor (default 1e-4)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    table = sigmas(args.seed)
    for path, s in table.items():
        print(f"{path:32s} std {s['std']:.4f}  he {s['he']:.4f}")
    result = decisions(args.weights, args.trials, args.batch_size, args.seed,
                       args.weight_decay)
    print(f"loss: {result['different_choices']} of {result['trials']} trials take a "
          f"different candidate (agreement {result['agreement']:.4f})")
    print(f"weight decay {args.weight_decay:g}: {result['decay_different_choices']} of "
          f"{result['trials']} trials take a different candidate "
          f"(agreement {result['decay_agreement']:.4f})")
    from examples.experiment import provenance, write_or_print
    out = {**provenance(args), "sigmas": table, "loss_decisions": result}
    write_or_print(out, args.output, {k: v for k, v in out.items() if k != "loss_decisions"})
    return out


if __name__ == "__main__":
    main()
