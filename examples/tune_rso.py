#!/usr/bin/env python
"""Tune RSO's hyperparameters with KerasTuner, on validation data only.

Searches batch size, weights per batch (K), sigma scale and final fraction,
visiting order, sigma balancing and the step rule (`keras_rso.tuning.
RSOHyperModel`) for the paper's MNIST network. The objective is the
validation accuracy after the last cycle (the last `--validation-size`
training images are held out); the test set is read once, for the chosen
configuration only, after the search. With --logdir, every trial shows in
TensorBoard's HParams dashboard (`tensorboard --logdir <logdir>`).

Needs `pip install keras-tuner` (in the `test` and `examples` extras).

Example:
    python examples/tune_rso.py --max-trials 12 --cycles 2 --limit 20000 \\
        --directory runs/tuning --logdir runs/tuning/tb --results docs/results/tuning.json
"""

import argparse
import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF start-up logs

import keras
import keras_tuner

from keras_rso import datasets, models
from experiment import provenance, split_validation, write_json
from keras_rso.tuning import DEFAULT_SPACE, RSOHyperModel


def _values(text: str, kind):
    return [kind(v) if kind is not bool else v.lower() in ("1", "true", "yes")
            for v in text.split(",")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-trials", type=int, default=12)
    parser.add_argument("--cycles", type=int, default=2, help="RSO cycles per trial")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--validation-size", type=int, default=10000)
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N training images only")
    parser.add_argument("--directory", default="runs/tuning",
                        help="KerasTuner's directory (a rerun resumes the search)")
    parser.add_argument("--project-name", default="mnist_rso")
    parser.add_argument("--logdir", default=None, help="TensorBoard log directory (HParams)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=None, help="write the trials as JSON here")
    types = {"batch_size": int, "weights_per_batch": int, "sigma_scale": float,
             "final_fraction": float, "order": str, "balance_sigma": bool, "step_rule": str}
    for key, values in DEFAULT_SPACE.items():
        parser.add_argument("--" + key.replace("_", "-"), default=None,
                            help=f"comma-separated values to try (default: "
                                 f"{','.join(map(str, values))})")
    args = parser.parse_args(argv)
    space = {k: _values(getattr(args, k), types[k]) for k in DEFAULT_SPACE
             if getattr(args, k) is not None}

    train, validation, test = split_validation(datasets.load_mnist(), args.validation_size,
                                               args.limit)
    hypermodel = RSOHyperModel(functools.partial(models.mnist_paper_net, filters=args.filters),
                               space=space, seed=args.seed)
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective="val_accuracy", max_trials=args.max_trials, seed=args.seed,
        directory=args.directory, project_name=args.project_name)
    callbacks = [keras.callbacks.TensorBoard(args.logdir)] if args.logdir else []
    tuner.search(*train, epochs=args.cycles, validation_data=validation,
                 callbacks=callbacks, verbose=0)

    trials = [{"trial": t.trial_id, "hyperparameters": t.hyperparameters.values,
               "val_accuracy": t.score}
              for t in tuner.oracle.get_best_trials(num_trials=args.max_trials)]
    for t in trials:
        print(f"trial {t['trial']}: val_accuracy {t['val_accuracy']:.4f}  {t['hyperparameters']}")
    # The test set, read once, for the configuration the validation chose.
    best = tuner.get_best_models(1)[0].model
    best.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, test_acc = best.evaluate(*test, batch_size=1000, verbose=0)
    print(f"chosen on validation: {trials[0]['hyperparameters']}; "
          f"its test accuracy: {test_acc:.4f}")
    results = provenance(args)
    results.update({"objective": "val_accuracy", "trials": trials,
                    "chosen": trials[0], "chosen_test_accuracy": float(test_acc)})
    write_json(results, args.results)
    return results


if __name__ == "__main__":
    main()
