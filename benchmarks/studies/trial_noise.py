#!/usr/bin/env python
"""How often does one mini-batch make the same trial decision as more data?

For a saved model of the paper's MNIST net, this picks random scalar weights
in every kernel, draws `dw ~ N(0, sigma)` for each (sigma = the He-normal
std of the layer's initialisation times `--sigma-scale`, the paper's sigma
without `SigmaBalancing`'s factors), and evaluates the training loss at
`w - dw`, `w` and `w + dw` on `--batches` disjoint training batches of
`--batch-size` images, with BatchNormalization in training mode as RSO
evaluates it. For each batch it compares the batch's decision (the argmin of
the three losses, as RSO takes it) with the decision of the other batches
pooled (7 x 2048 = 14,336 images by default).

Per variable it reports:
  * `agreement`: the fraction of batch decisions equal to the pooled one;
  * `move_rate_batch` / `move_rate_pooled`: how often the batch, and the
    pooled data, pick `w - dw` or `w + dw` over `w` (the accept rate);
  * `snr`: |mean| / std over batches of `L(w + dw) - L(w - dw)`, averaged
    over the sampled weights.

Low agreement with a high move rate means that the trials at this sigma and
batch size are mostly decided by the batch's noise.

It also reports what a trial gains on data it did not see: for the decision
of batch `b` (or of `b` and the next batch pooled, i.e. twice the batch), the
change of the loss of the other batches between the chosen candidate and `w`
(`held_out_gain`, negative is better), for the paper's argmin and for the
`RSO(tolerance=...)` values given with `--tolerances`. The raw losses are
kept in the output file.

The loss is the cross-entropy of the model's output: from logits when its
last layer has no softmax (the paper's nets, the binary net), else from
probabilities.

Example:
    python -m benchmarks.studies.trial_noise mnist.keras --sigma-scale 1 --validation-size 10000 \
        --output noise.json
"""

import argparse
import json
import os

import keras
import numpy as np
import tensorflow as tf

import keras_rso  # noqa: F401  (registers the saved classes)
from keras_rso import datasets
from examples.experiment import provenance, write_json
from keras_rso.trial_rules import KEEP, choose


def he_std(variable) -> float:
    """The std He-normal initialisation gives a kernel of this shape."""
    fan_in = int(np.prod(variable.shape[:-1]))
    return float(np.sqrt(2.0 / fan_in))


def measure(model: keras.Model, x_train: np.ndarray, y_train: np.ndarray,
            sigma_scale: float, weights: int, batches: int, batch_size: int,
            seed: int, tolerances=(), flip: bool = False) -> dict:
    # Every trial restores the weight it changed, so one model serves all
    # sigma scales; the same seed gives each scale the same batches and
    # scalars.
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))[:batches * batch_size]
    data = [(tf.constant(x_train[i]), tf.constant(y_train[i]))
            for i in np.split(order, batches)]
    # The paper's nets end in logits (`paper_mnist_net`, the binary net);
    # `mnist_paper_net` ends in a softmax.
    from_logits = getattr(model.layers[-1], "activation", None) is not keras.activations.softmax
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)

    @tf.function
    def loss(x, y):
        return loss_fn(y, model(x, training=True))

    base = np.array([float(loss(x, y)) for x, y in data])
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    results = {}
    for variable in kernels:
        sigma = he_std(variable) * sigma_scale
        flat = variable.numpy().reshape(-1)
        agree, moved_batch, moved_pooled, snr, raw = [], [], [], [], []
        for j in rng.choice(flat.size, size=min(weights, flat.size), replace=False):
            dw = rng.normal(0.0, sigma)

            def losses_at(value):
                trial = flat.copy()
                trial[j] = value
                variable.assign(trial.reshape(variable.shape))
                return np.array([float(loss(x, y)) for x, y in data])

            if flip:
                # A binary weight has one other value: both slots hold the
                # flip, so `decide` takes it iff it lowers the loss.
                flipped = losses_at(-flat[j])
                losses = [flipped, base, flipped]
            else:
                losses = [losses_at(flat[j] - dw), base, losses_at(flat[j] + dw)]
            variable.assign(flat.reshape(variable.shape))
            stacked = np.stack(losses)  # (3 candidates, batches)
            raw.append(stacked.tolist())
            for b in range(batches):
                pooled = np.delete(stacked, b, axis=1).mean(axis=1)
                mine, ref = decide(stacked[:, b]), decide(pooled)
                agree.append(mine == ref)
                moved_batch.append(mine != 1)
                moved_pooled.append(ref != 1)
            diff = stacked[2] - stacked[0]
            snr.append(abs(diff.mean()) / max(diff.std(ddof=1), 1e-12))
        results[variable.path] = row = {
            "sigma": sigma, "weights": len(snr),
            "agreement": float(np.mean(agree)),
            "move_rate_batch": float(np.mean(moved_batch)),
            "move_rate_pooled": float(np.mean(moved_pooled)),
            "snr": float(np.mean(snr)),
        }
        row.update(held_out_gains(np.array(raw), tolerances))
        print(variable.path, {k: round(v, 7) if isinstance(v, float) else v
                              for k, v in row.items()}, flush=True)
        row["losses"] = raw
    return results


# `choose` numbers `w` as KEEP and the candidates in the order a trial passes
# them, `w + dw` then `w - dw`; map that to positions in `(w - dw, w, w + dw)`.
_POSITION = {KEEP: 1, 1: 2, 2: 0}


def decide(losses, tolerance: float = 0.0) -> int:
    """RSO's own choice (`keras_rso.search.choose`) among `(w - dw, w, w + dw)`,
    as an index into them: 1 keeps `w` (ties too)."""
    minus, loss0, plus = (tf.constant(v, tf.float64) for v in losses)
    return _POSITION[int(choose(loss0, [plus, minus], tolerance))]


def held_out_gains(raw: np.ndarray, tolerances) -> dict:
    """Mean held-out loss change of a trial's decision, per decision rule.

    Args:
        raw: Losses, shape `(weights, 3 candidates, batches)`.
        tolerances: `RSO(tolerance=...)` values to evaluate besides 0.
    """
    n_batches = raw.shape[2]
    out = {}
    for tol in [0.0, *tolerances]:
        for width in (1, 2):  # decide on one batch, or on two pooled
            per_weight = []
            for losses in raw:
                gains = []
                for b in range(0, n_batches - width + 1, width):
                    seen = list(range(b, b + width))
                    choice = decide(losses[:, seen].mean(axis=1), tol)
                    rest = np.delete(losses, seen, axis=1).mean(axis=1)
                    gains.append(rest[choice] - rest[1])
                per_weight.append(np.mean(gains))
            key = f"held_out_gain_tol{tol:g}_x{width}"
            out[key] = float(np.mean(per_weight))
            # Over weights: the batches of one weight share its dw.
            out[key + "_se"] = (float(np.std(per_weight, ddof=1) / np.sqrt(len(per_weight)))
                                if len(per_weight) > 1 else float("nan"))
    best = raw.mean(axis=2)  # the oracle: decided on all batches
    # In-sample (decided and scored on all batches): an optimistic bound.
    out["in_sample_gain_all_batches"] = float(np.mean(
        [b[decide(b)] - b[1] for b in best]))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help=".keras file of the paper's MNIST net, or with "
                        "--reanalyse a JSON this script wrote")
    parser.add_argument("--reanalyse", action="store_true",
                        help="recompute the held-out gains from the losses stored in a "
                             "JSON this script wrote (e.g. for other --tolerances)")
    parser.add_argument("--sigma-scale", type=float, nargs="+", default=[1.0],
                        help="sigma as a multiple of the He-normal std (several allowed)")
    parser.add_argument("--weights", type=int, default=20,
                        help="sampled scalars per kernel")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerances", type=float, nargs="*", default=[1e-4, 3e-4, 1e-3, 3e-3],
                        help="RSO(tolerance=...) values whose held-out gain to report")
    parser.add_argument("--flip", action="store_true",
                        help="the kernels are binary (+-1): the trial is the sign flip "
                             "(examples/binary_mnist.py); --sigma-scale is then unused")
    parser.add_argument("--raw", action="store_true",
                        help="feed raw pixels (0-255), for models that standardize "
                             "inside: the paper preset's and examples/binary_mnist.py's")
    parser.add_argument("--validation-size", type=int, default=0,
                        help="leave out the last N training images, the examples' "
                             "validation split (0: use all 60,000)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    out = provenance(args)
    if args.reanalyse:
        with open(args.model) as f:
            stored = json.load(f)
        out["reanalysed"] = {"file": os.path.basename(args.model),
                             "command": stored["command"]}
        out["model"] = stored["model"]
        out["by_sigma_scale"] = {
            scale: {path: reanalyse(row, args.tolerances) for path, row in rows.items()}
            for scale, rows in stored["by_sigma_scale"].items()}
    else:
        out["model"] = os.path.basename(args.model)
        (x_train, y_train), _ = datasets.load_mnist(raw=args.raw)
        if args.validation_size:
            # The examples' training split: their validation images stay unseen.
            x_train, y_train = x_train[:-args.validation_size], y_train[:-args.validation_size]
        model = keras.saving.load_model(args.model)
        out["by_sigma_scale"] = {
            str(s): measure(model, x_train, y_train, s, args.weights, args.batches,
                            args.batch_size, args.seed, args.tolerances, args.flip)
            for s in args.sigma_scale}
    write_json(out, args.output)


def reanalyse(row: dict, tolerances) -> dict:
    """A stored variable's row with its gains recomputed from its losses."""
    fresh = {k: v for k, v in row.items() if not k.startswith(("held_out", "in_sample"))}
    fresh.update(held_out_gains(np.array(row["losses"]), tolerances))
    return fresh


if __name__ == "__main__":
    main()
