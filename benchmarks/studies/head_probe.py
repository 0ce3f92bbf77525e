#!/usr/bin/env python
"""Are an RSO-trained model's features or its classifier the bottleneck?

Keeps every layer of a saved model of the paper's MNIST net frozen (BatchNorm
with its moving statistics, as at test time), computes the globally pooled
16-channel features once, and refits only the Dense classifier on them with
Adam until its training loss stops falling. If the refitted head scores much
higher than the saved one, the search left the classifier behind; if not,
the convolutional features themselves limit the accuracy.

The head is refit from the saved classifier's weights, so the probe reports
what the same features can support, not a different model.

Example:
    python -m benchmarks.head_probe mnist.keras --output docs/results/head_probe.json
"""

import argparse
import os

import keras
import numpy as np

import keras_rso  # noqa: F401  (registers the saved classes)
from keras_rso import datasets
from examples.experiment import provenance, write_json


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and mean cross-entropy of predicted class probabilities."""
    picked = probabilities[np.arange(len(labels)), labels]
    return {"accuracy": float(np.mean(probabilities.argmax(-1) == labels)),
            "loss": float(-np.mean(np.log(np.maximum(picked, 1e-7))))}


def features_and_head(model: keras.Model):
    """The model up to global average pooling, and its classifier layer."""
    pooled = model.get_layer("gap").output
    return keras.Model(model.inputs, pooled), model.get_layer("classifier")


def probe(path: str, epochs: int, batch_size: int, seed: int) -> dict:
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = datasets.load_mnist()
    model = keras.saving.load_model(path)
    saved = score(model.predict(x_test, batch_size=1000, verbose=0), y_test)
    extractor, classifier = features_and_head(model)
    f_train = extractor.predict(x_train, batch_size=1000, verbose=0)
    f_test = extractor.predict(x_test, batch_size=1000, verbose=0)
    head = keras.Sequential([keras.Input(f_train.shape[1:]),
                             keras.layers.Dense(classifier.units, activation="softmax")])
    head.layers[-1].set_weights(classifier.get_weights())
    head.compile(optimizer=keras.optimizers.Adam(1e-2),
                 loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=3, min_delta=1e-4)
    history = head.fit(f_train, y_train, epochs=epochs, batch_size=batch_size,
                       callbacks=[stop], verbose=0)
    refit = score(head.predict(f_test, batch_size=1000, verbose=0), y_test)
    train = score(head.predict(f_train, batch_size=1000, verbose=0), y_train)
    return {"saved_test_accuracy": saved["accuracy"], "saved_test_loss": saved["loss"],
            "refit_test_accuracy": refit["accuracy"], "refit_test_loss": refit["loss"],
            "refit_train_accuracy": train["accuracy"], "refit_train_loss": train["loss"],
            "refit_epochs": len(history.history["loss"]),
            "feature_std": float(np.std(f_train))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help=".keras files of the paper's MNIST net")
    parser.add_argument("--epochs", type=int, default=100,
                        help="most epochs of the head refit (early stopping ends it sooner)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = {}
    for path in args.models:
        results[os.path.basename(path)] = row = probe(path, args.epochs, args.batch_size,
                                                      args.seed)
        print(f"{os.path.basename(path)}: saved head {row['saved_test_accuracy']:.4f}, "
              f"refit head {row['refit_test_accuracy']:.4f} "
              f"(train {row['refit_train_accuracy']:.4f}, {row['refit_epochs']} epochs)")
    write_json({**provenance(args), "models": results}, args.output)


if __name__ == "__main__":
    main()
