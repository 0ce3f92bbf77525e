"""RSO.paper() takes the authors' decisions, weight by weight.

`reference_cycle` below is a deliberately plain numpy transcription of the
per-weight step of the authors' `train.py` (rohun-tripathi/RSO-gradient-free),
written from its semantics with no keras_rso code inside:

* the weights are visited dense first, then each convolution from the last
  to the first: its kernel, then its BatchNorm beta, then gamma; inside a
  convolution kernel output channel, input channel, row, column; inside the
  dense kernel, for each output unit all of its inputs;
* each weight gets a fresh batch; it is first multiplied by 1 - 1e-4, and the
  three candidates are that decayed value and it plus or minus dw, with
  dw = z * sigma, sigma the He std sqrt(2 / fan_in) of a kernel and 0.167
  for gamma and beta (times the schedule's 1.0 at cycle 0);
* the loss is the softmax cross-entropy summed over the batch in float64,
  with BatchNorm on the batch's own statistics; the first lowest loss wins.

Both runs use the same network, batches and standard-normal draws z.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_rso
from numpy_reference import avg_pool2, batchnorm, conv_same

L = keras.layers
BATCH, SEED, DECAY, BN_SIGMA = 32, 3, 1e-4, 0.167


def tiny_paper_net():
    """The paper's building blocks at a tiny size: conv (no bias) ->
    [pool] -> BN, ReLU at the next conv's input, GAP, dense (no bias)."""
    keras.utils.set_random_seed(7)
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        L.Conv2D(2, 3, padding="same", use_bias=False, name="conv1"),
        L.AveragePooling2D(2, name="pool1"), L.BatchNormalization(name="bn1"),
        L.ReLU(name="relu2"),
        L.Conv2D(3, 3, padding="same", use_bias=False, name="conv2"),
        L.BatchNormalization(name="bn2"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(3, use_bias=False, name="classifier"),
    ])


# ----------------------------------------------------------------- numpy
def _loss(w, x, y):
    h = batchnorm(avg_pool2(conv_same(x, w["conv1"])), w["gamma1"], w["beta1"])
    h = batchnorm(conv_same(np.maximum(h, 0), w["conv2"]), w["gamma2"], w["beta2"])
    logits = h.mean(axis=(1, 2)) @ w["dense"]
    logits = logits - logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_softmax[np.arange(len(y)), y].sum()


def _paper_visits(w):
    """(name, index tuple, sigma) of every trial, in the authors' order."""
    visits = []
    fan_dense = w["dense"].shape[0]
    for o in range(w["dense"].shape[1]):
        for i in range(w["dense"].shape[0]):
            visits.append(("dense", (i, o), np.sqrt(2 / fan_dense)))
    for layer in (2, 1):
        k = w[f"conv{layer}"]
        kh, kw, cin, cout = k.shape
        for o in range(cout):
            for i in range(cin):
                for r in range(kh):
                    for c in range(kw):
                        visits.append((f"conv{layer}", (r, c, i, o), np.sqrt(2 / (kh * kw * cin))))
        for name in (f"beta{layer}", f"gamma{layer}"):
            visits += [(name, (c,), BN_SIGMA) for c in range(cout)]
    return visits


def reference_cycle(w, batches, draws, decay=DECAY):
    w = {k: v.astype(np.float64).copy() for k, v in w.items()}
    accepted = {k: 0 for k in w}
    for t, (name, index, sigma) in enumerate(_paper_visits(w)):
        x, y = batches[t]
        decayed = w[name][index] * (1 - decay)
        dw = draws[t] * sigma
        losses = []
        for value in (decayed, decayed + dw, decayed - dw):
            w[name][index] = value
            losses.append(_loss(w, x, y))
        best = int(np.argmin(losses))
        w[name][index] = (decayed, decayed + dw, decayed - dw)[best]
        accepted[name] += best != 0
    return w, accepted


# -------------------------------------------------------------- the test
# The authors' decay, and one large enough that comparing the candidates
# with the loss of the weight before its decay would change decisions.
@pytest.mark.parametrize("decay", [DECAY, 0.05])
def test_paper_preset_takes_the_reference_decisions_over_a_full_cycle(decay):
    model = tiny_paper_net()
    layer = model.get_layer
    start = {"conv1": layer("conv1").kernel.numpy(), "conv2": layer("conv2").kernel.numpy(),
             "dense": layer("classifier").kernel.numpy(),
             "gamma1": layer("bn1").gamma.numpy(), "beta1": layer("bn1").beta.numpy(),
             "gamma2": layer("bn2").gamma.numpy(), "beta2": layer("bn2").beta.numpy()}
    trials = sum(v.size for v in start.values())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(trials * BATCH, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, size=trials * BATCH).astype("int32")
    batches = [(x[t * BATCH:(t + 1) * BATCH].astype(np.float64), y[t * BATCH:(t + 1) * BATCH])
               for t in range(trials)]
    # The draws keras_rso makes: a standard normal keyed on (seed, trial).
    draws = [float(tf.random.stateless_normal([], seed=[SEED, t])) for t in range(trials)]
    expected, expected_accepted = reference_cycle(start, batches, draws, decay)

    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO.paper(seed=SEED, weight_decay=decay),
                    loss=keras_rso.models.paper_loss())
    assert trainer.steps_per_cycle() == trials  # one weight per batch
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    trainer.fit(data, epochs=1, verbose=0, callbacks=[
        keras_rso.callbacks.SigmaAnnealing(0.1, rule="paper", total_cycles=50)])

    got = {"conv1": layer("conv1").kernel, "conv2": layer("conv2").kernel,
           "dense": layer("classifier").kernel, "gamma1": layer("bn1").gamma,
           "beta1": layer("bn1").beta, "gamma2": layer("bn2").gamma, "beta2": layer("bn2").beta}
    opt = trainer.optimizer
    counts = dict(zip([v.path for v in trainer.trainable_variables],
                      opt.updates_per_variable.numpy()))
    for name, var in got.items():
        np.testing.assert_allclose(var.numpy(), expected[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
        assert counts[var.path] == expected_accepted[name], name
    assert int(opt.weight_updates.numpy()) == sum(expected_accepted.values()) > 0
