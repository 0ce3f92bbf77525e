"""Fits a small functional model (Dense, BatchNormalization, ReLU, an Add
skip) with Adam or with RSO, as a new user would; for the quiet-log test."""

import sys

import keras
import numpy as np

inputs = keras.Input((8,))
h = keras.layers.Dense(8, use_bias=False)(inputs)
h = keras.layers.BatchNormalization()(h)
h = keras.layers.ReLU()(h)
h = keras.layers.Add()([h, keras.layers.Dense(8)(h)])
model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
rng = np.random.default_rng(0)
x, y = rng.normal(size=(128, 8)).astype("float32"), rng.integers(0, 3, 128)
if sys.argv[1] == "adam":
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=2, validation_data=(x, y), verbose=2)
else:
    import keras_rso

    trainer = keras_rso.RSOModel(model)
    trainer.compile(keras_rso.RSO(weights_per_batch=16), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    trainer.fit(x, y, batch_size=32, epochs=2, validation_data=(x, y), verbose=2)
