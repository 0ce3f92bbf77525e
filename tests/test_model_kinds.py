"""RSO trains Sequential, functional (with a skip) and subclassed models."""

import keras
import numpy as np

import keras_rso
from conftest import mnist_subset, small_convnet
from testing_utils import fit_rso
from keras_rso.evaluators import chain_layers


def _fit(model, x, y, epochs=2, k=8):
    """`fit_rso`, with the model's loss and accuracy before and after."""
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before = model.evaluate(x, y, verbose=0)
    fitted = fit_rso(model, x, y, metrics=["accuracy"], batch_size=64, epochs=epochs,
                     weights_per_batch=k)
    return fitted.trainer, before, model.evaluate(x, y, verbose=0), fitted.history


def skip_model():
    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    r = keras.layers.Conv2D(4, 3, padding="same")(h)
    r = keras.layers.BatchNormalization()(r)
    h = keras.layers.ReLU()(keras.layers.Add()([h, r]))
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax")(h)
    return keras.Model(inp, out)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.out = keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.out(self.pool(self.conv(x)))


def test_functional_model_with_skip_connection_trains(toy_data):
    x, y = toy_data
    model = skip_model()
    assert chain_layers(model) is None  # not a chain: the general path runs
    _, (loss0, acc0), (loss1, acc1), _ = _fit(model, x, y)
    assert loss1 < loss0 and acc1 > max(acc0, 0.5)


def test_subclassed_model_trains(toy_data):
    x, y = toy_data
    keras.utils.set_random_seed(3)
    model = Subclassed()
    model(x[:1])
    _, (loss0, acc0), (loss1, acc1), _ = _fit(model, x, y)
    assert loss1 < loss0 and acc1 > max(acc0, 0.5)


def test_functional_chain_uses_fast_path(toy_data):
    seq = small_convnet()
    inp = keras.Input((8, 8, 1))
    h = inp
    for layer in seq.layers:
        h = layer(h)
    functional = keras.Model(inp, h)
    assert [l.name for l in chain_layers(functional)] == [l.name for l in seq.layers]


def test_unbuilt_sequential_is_built_from_the_data(toy_data):
    x, y = toy_data
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    trainer, (loss0, _), (loss1, _), _ = _fit(model, x, y, epochs=1)
    assert trainer.trials_per_cycle == 64 * 3 + 3 and loss1 < loss0


def test_generator_and_dataset_inputs_are_repeated_for_a_whole_cycle(toy_data):
    import tensorflow as tf
    x, y = toy_data
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)  # only 3 batches
    model = small_convnet()
    trainer, _, _, hist = _fit(model, ds, None, epochs=1, k=2)
    assert trainer.steps_per_cycle() > 3
    assert hist.history["trials"] == [trainer.trials_per_cycle]


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return self.x[i * 64:(i + 1) * 64], self.y[i * 64:(i + 1) * 64]


def test_py_dataset_and_generator_inputs(toy_data):
    x, y = toy_data

    def forever():
        while True:
            for i in range(3):
                yield x[i * 64:(i + 1) * 64], y[i * 64:(i + 1) * 64]

    for data in (Batches(x, y), forever()):  # 3 batches < the 27 steps of a cycle
        trainer = keras_rso.RSOModel(small_convnet())
        trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=8),
                        loss="sparse_categorical_crossentropy")
        hist = trainer.fit(data, epochs=1, verbose=0)
        assert trainer.steps_per_cycle() > 3
        assert hist.history["trials"] == [trainer.trials_per_cycle]


def test_real_mnist_subset_accuracy_rises_well_above_chance():
    # Real MNIST images from the Keras cache; a logistic regression on 7x7
    # pooled pixels (500 weights), so six cycles take seconds.
    (x, y), (xt, yt) = mnist_subset(n_train=1024, n_test=1000)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.AveragePooling2D(4),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax", kernel_initializer="he_normal"),
    ])
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=32, seed=0),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, acc0 = model.evaluate(xt, yt, verbose=0)
    hist = trainer.fit(x, y, batch_size=256, epochs=6, verbose=0,
                       validation_data=(xt, yt),
                       callbacks=[keras_rso.callbacks.SigmaAnnealing(0.3)])
    accs = hist.history["val_accuracy"]
    assert acc0 < 0.2
    assert accs[-1] > 0.6 and accs[-1] > accs[0] + 0.15, (acc0, accs)


def test_weight_regularizer_sees_the_candidate(toy_data):
    x, y = toy_data
    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(),
        keras.layers.Dense(3, activation="softmax",
                           kernel_regularizer=keras.regularizers.L2(100.0))])
    norm0 = float(np.sum(model.layers[-1].kernel.numpy() ** 2))
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=16, seed=0),
                    loss="sparse_categorical_crossentropy")
    trainer.fit(x, y, batch_size=64, epochs=2, verbose=0)
    # The heavy L2 term dominates the loss: RSO must shrink the kernel.
    assert float(np.sum(model.layers[-1].kernel.numpy() ** 2)) < 0.5 * norm0
