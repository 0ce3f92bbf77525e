#!/usr/bin/env python
"""Which layers' changes in the last RSO cycle help on held-out data?

A cycle searches the layers from the output to the input, so the changes of
the layers nearest the input come last, after the layers above them were
tuned to the features they replace. This takes a trained model and the
backup of the same run written when its last cycle began (the
`latest.weights.h5` of `--backup-dir`, copied before the run ended), and
evaluates the final model on the test set (or, with `--validation-size`, on
the examples' validation split) with one layer at a time put back
to its weights at the start of that cycle. If putting a layer back lowers
the test loss, its last-cycle changes hurt.

Every variant, the unchanged final model included, is evaluated with its
BatchNorm statistics recomputed over the first `--bn-images` training
images (`precise_bn.set_population_statistics`), so that the rows differ by
their weights only.

Example:
    python -m benchmarks.last_cycle_ablation mnist.keras cycle_start.weights.h5 --output docs/results/last_cycle_ablation.json
"""

import argparse
import contextlib
from typing import Dict, Iterator, List, Sequence

import keras
import numpy as np

import keras_rso  # noqa: F401  (registers the saved classes)
from keras_rso import datasets
from examples.experiment import RAW_PIXELS_SUFFIX, provenance, split_validation, write_json
from benchmarks.studies.head_probe import score
from benchmarks.studies.precise_bn import set_population_statistics


def layer_groups(model: keras.Model) -> Dict[str, List[int]]:
    """Indices into `model.trainable_variables`, by the layer that owns them."""
    groups: Dict[str, List[int]] = {}
    for i, v in enumerate(model.trainable_variables):
        groups.setdefault(v.path.split("/")[-2], []).append(i)
    return groups


@contextlib.contextmanager
def reverted(model: keras.Model, start: Sequence[np.ndarray],
             indices: Sequence[int]) -> Iterator[None]:
    """Inside the block the chosen trainable variables hold their `start`
    values, and the BatchNorm statistics may be changed freely; on exit
    every variable of the model is as it was."""
    saved = [v.numpy() for v in model.variables]
    try:
        for i in indices:
            model.trainable_variables[i].assign(start[i])
        yield
    finally:
        for v, value in zip(model.variables, saved):
            v.assign(value)


def trained_network(path: str) -> keras.Model:
    """The network saved at `path`: the model itself, or, for a model an
    example saved to take raw pixels (`examples.experiment.raw_pixel_model`),
    the network behind its standardizing layer, which takes the
    standardized images this study feeds and is what the run's backups hold."""
    saved = keras.saving.load_model(path)
    if saved.name.endswith(RAW_PIXELS_SUFFIX):
        return saved.layers[-1]
    return saved


def scoring_data(validation_size: int, bn_images: int):
    """MNIST images for the BatchNorm statistics, the `(x, y)` to score on,
    and the name of that split: the test set, or with `validation_size` > 0
    the last `validation_size` training images (the examples' validation
    split, `split_validation`), the BatchNorm images then coming from the
    training images before them, so that nothing is read from the test set."""
    data = datasets.load_mnist()
    if not validation_size:
        return data[0][0][:bn_images], data[1], "test"
    (x_train, _), validation, _ = split_validation(data, validation_size)
    return x_train[:bn_images], validation, "validation"


def evaluate(model, x_bn, x_score, y_score) -> dict:
    set_population_statistics(model, x_bn)
    return score(model.predict(x_score, batch_size=2000, verbose=0), y_score)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="trained .keras model (end of its last cycle)")
    parser.add_argument("cycle_start", help="weights of the same run when its last cycle began "
                                            "(a `--backup-dir` latest.weights.h5)")
    parser.add_argument("--bn-images", type=int, default=20000,
                        help="training images for the BatchNorm statistics of every variant")
    parser.add_argument("--validation-size", type=int, default=0,
                        help="score on the last N training images (the examples' "
                             "validation split) instead of the test set, for choosing "
                             "a setting; the BatchNorm images then come from before them")
    parser.add_argument("--output", default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    x_bn, (x_score, y_score), scored_on = scoring_data(args.validation_size, args.bn_images)

    model = trained_network(args.model)
    start_model = trained_network(args.model)
    # The backup holds the `RSOModel` that trained the net (and its
    # optimizer, which is not needed here): load it through the same wrapper.
    trainer = keras_rso.RSOModel(start_model)
    trainer(x_score[:1])  # builds the wrapper, which load_weights requires
    trainer.load_weights(args.cycle_start, skip_mismatch=True)
    start = [v.numpy() for v in start_model.trainable_variables]
    # skip_mismatch also skips layers that do not match: catch a wrong file.
    if all(np.array_equal(a, v.numpy()) for a, v in zip(start, model.trainable_variables)):
        raise ValueError(f"{args.cycle_start} did not load into {args.model}'s network "
                         "(or holds its final weights): nothing to compare.")
    groups = layer_groups(model)

    rows = {"final": evaluate(model, x_bn, x_score, y_score)}
    with reverted(model, start, [i for idx in groups.values() for i in idx]):
        rows["all layers at cycle start"] = evaluate(model, x_bn, x_score, y_score)
    for layer, indices in groups.items():
        with reverted(model, start, indices):
            rows[f"{layer} at cycle start"] = evaluate(model, x_bn, x_score, y_score)
    base = rows["final"]["loss"]
    print(f"| variant | {scored_on} accuracy (%) | {scored_on} loss | loss - final |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        r["loss_minus_final"] = r["loss"] - base
        print(f"| {name} | {100 * r['accuracy']:.2f} | {r['loss']:.4f} | "
              f"{r['loss_minus_final']:+.4f} |")
    write_json({**provenance(args), "scored_on": scored_on, "rows": rows}, args.output)


if __name__ == "__main__":
    main()
