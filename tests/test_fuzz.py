"""Property tests: random small models and options keep RSO's invariants.

For every drawn model and setting, on a fixed batch:
* the batch loss never rises from one step to the next (without a random
  layer, whose noise changes the loss from one batch draw to the next);
* no weight becomes non-finite;
* exactly the accepted scalars changed (each is tried once per cycle), so
  every rejected candidate left its weight bit-identical.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_rso

L = keras.layers

# CI runs a small fixed set of examples; `benchmarks/fuzz.py` sets
# KERAS_RSO_FUZZ_EXAMPLES to run many fresh random ones.
FUZZ_EXAMPLES = int(os.environ.get("KERAS_RSO_FUZZ_EXAMPLES", "0"))


@st.composite
def setups(draw):
    # Only plain data is drawn here; the layers are built in the test, since
    # building them inside a strategy consumes Python's global `random`.
    kind = draw(st.sampled_from(["dense", "conv"]))
    return dict(
        kind=kind,
        size=draw(st.integers(4, 7)),
        bn=draw(st.booleans()),
        act=draw(st.sampled_from(["relu", "tanh", None])),
        width=draw(st.integers(2, 4)),
        use_bias=kind == "conv" and draw(st.booleans()),
        pool=kind == "conv" and draw(st.booleans()),
        hidden=draw(st.sampled_from([0, 3])),
        dropout=draw(st.sampled_from([0.0, 0.0, 0.3])),
        k=draw(st.integers(1, 40)),
        order=draw(st.sampled_from(["output_to_input", "input_to_output", "random"])),
        step_rule=draw(st.sampled_from(["argmin", "argmin", "parabolic", "vertex"])),
        output_passes=draw(st.sampled_from([0, 0, 2])),
        fast=draw(st.booleans()),
        scale=draw(st.sampled_from([0.1, 1.0, 10.0])),
        batch=draw(st.sampled_from([8, 24])),
        seed=draw(st.integers(0, 1000)),
    )


def build_model(setup):
    bn, act, width = setup["bn"], setup["act"], setup["width"]
    layers = [keras.Input((setup["size"], setup["size"], 1))]
    if setup["kind"] == "conv":
        layers.append(L.Conv2D(width, 3, activation=None if bn else act,
                               use_bias=setup["use_bias"], padding="same"))
        if bn:
            layers += [L.BatchNormalization(), L.Activation(act or "linear")]
        if setup["pool"]:
            layers.append(L.AveragePooling2D(2))
        layers.append(L.GlobalAveragePooling2D())
    else:
        layers += [L.Flatten(), L.Dense(width, activation=None if bn else act)]
        if bn:
            layers += [L.BatchNormalization(), L.Activation(act or "linear")]
    if setup["hidden"]:
        layers.append(L.Dense(setup["hidden"], activation="relu"))
    if setup["dropout"]:
        layers.append(L.Dropout(setup["dropout"]))
    layers.append(L.Dense(3, activation="softmax"))
    return keras.Sequential(layers)


@settings(max_examples=FUZZ_EXAMPLES or 6, deadline=None, derandomize=not FUZZ_EXAMPLES,
          suppress_health_check=[HealthCheck.too_slow])
@given(setups())
def test_invariants_hold_for_random_models_and_options(setup):
    keras.utils.set_random_seed(setup["seed"])
    rng = np.random.default_rng(setup["seed"])
    n, size = setup["batch"], setup["size"]
    x = rng.normal(size=(n, size, size, 1)).astype("float32")
    y = rng.integers(0, 3, size=n).astype("int32")
    model = build_model(setup)
    before = [v.numpy().copy() for v in model.trainable_variables]
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    losses = []

    class Track(keras.callbacks.Callback):
        def _record(self):
            with keras.StatelessScope():
                losses.append(float(loss_fn(y, model(x, training=True))))

        def on_train_begin(self, logs=None):
            self._record()

        def on_train_batch_end(self, batch, logs=None):
            self._record()

    trainer = keras_rso.RSOModel(model, fast_path=setup["fast"])
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=setup["k"], seed=setup["seed"],
                                            order=setup["order"], sigma_scale=setup["scale"],
                                            step_rule=setup["step_rule"],
                                            output_passes=setup["output_passes"]),
                    loss="sparse_categorical_crossentropy")
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    trainer.fit(ds, epochs=1, verbose=0, callbacks=[Track()])

    losses = np.array(losses)
    assert np.all(np.isfinite(losses))
    if not setup["dropout"]:
        assert np.all(np.diff(losses) <= 1e-5 * np.abs(losses[:-1]) + 1e-7), losses
    after = [v.numpy() for v in model.trainable_variables]
    assert all(np.all(np.isfinite(a)) for a in after)
    changed = sum(int(np.sum(a != b)) for a, b in zip(before, after))
    if setup["output_passes"]:
        # A classifier weight may change again, or back, in a later pass.
        assert changed <= int(trainer.optimizer.weight_updates.numpy())
    else:
        assert changed == int(trainer.optimizer.weight_updates.numpy())
