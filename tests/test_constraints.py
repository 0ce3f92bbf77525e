"""Weight domains: `constraints.Discrete`, Keras constraints, `ties="move"`."""

import os

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_rso
from testing_utils import fit_rso
from keras_rso.constraints import Discrete
from keras_rso.evaluators import ChainEvaluator, FullForwardEvaluator, GraphEvaluator

L = keras.layers


def test_discrete_projects_to_the_nearest_value_and_round_trips():
    c = Discrete([0.5, -1.0, 2.0])
    assert c.values == (-1.0, 0.5, 2.0)
    # -0.25 is halfway between -1 and 0.5: it goes to the lower value.
    w = np.array([[-3.0, -0.25, -0.24], [1.25, 1.3, 9.0]], "float32")
    np.testing.assert_array_equal(c(keras.ops.convert_to_tensor(w)).numpy(),
                                  [[-1.0, -1.0, 0.5], [0.5, 2.0, 2.0]])
    again = keras.constraints.deserialize(keras.constraints.serialize(c))
    assert isinstance(again, Discrete) and again.values == c.values
    assert Discrete.binary(0.5).values == (-0.5, 0.5)
    assert Discrete.ternary().values == (-1.0, 0.0, 1.0)
    assert Discrete.integer(3, 0.25).values == tuple(np.arange(-4, 4) * 0.25)


@pytest.mark.parametrize("values", [[1.0], [0.0, np.nan], [1.0, 1.0, 2.0]])
def test_discrete_rejects_bad_values(values):
    with pytest.raises(ValueError, match="Discrete"):
        Discrete(values)


def test_rso_rejects_an_unknown_tie_rule():
    with pytest.raises(ValueError, match="ties"):
        keras_rso.RSO(ties="random")


def _net(kernel_constraint=None, dense_constraint=None, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(6, 3, padding="same", use_bias=False, kernel_constraint=kernel_constraint),
        L.BatchNormalization(), L.ReLU(), L.AveragePooling2D(2),
        L.Conv2D(6, 3, padding="same", use_bias=False, kernel_constraint=kernel_constraint),
        L.BatchNormalization(), L.GlobalAveragePooling2D(),
        L.Dense(3, use_bias=False, kernel_constraint=dense_constraint),
    ])


def _train(model, x, y, fast=True, epochs=2, k=32, strategy=None, **rso):
    fitted = fit_rso(model, x, y, strategy=strategy, fast_path=fast,
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     metrics=["accuracy"], batch_size=64, epochs=epochs,
                     weights_per_batch=k, seed=1, **rso)
    return fitted.trainer, fitted.history


def _kernels(model):
    return [v for v in model.trainable_variables if "kernel" in v.path]


@pytest.mark.parametrize("residual", [False, True], ids=["chain", "graph"])
def test_binary_weights_stay_binary_on_one_device_and_two_replicas(toy_data, strategy,
                                                                   residual):
    x, y = toy_data
    with strategy.scope():
        model = (_residual_net(Discrete.binary()) if residual
                 else _net(Discrete.binary(), Discrete.binary()))
    trainer, _ = _train(model, x, y, epochs=1, strategy=strategy)
    assert trainer.distribute_strategy is strategy
    assert isinstance(trainer._plan()[0], GraphEvaluator if residual else ChainEvaluator)
    for v in _kernels(model):
        assert set(np.unique(v.numpy())) <= {-1.0, 1.0}, v.path
    assert int(trainer.optimizer.weight_updates.numpy()) > 0


def test_binary_weights_stay_binary_and_learn(toy_data):
    x, y = toy_data
    model = _net(Discrete.binary(), Discrete.binary())
    trainer = keras_rso.RSOModel(model)
    trainer.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"], optimizer=keras_rso.RSO())
    acc0 = trainer.evaluate(x, y, verbose=0)[1]
    trainer, history = _train(model, x, y, epochs=3)
    assert isinstance(trainer._plan()[0], ChainEvaluator)
    for v in _kernels(model):
        assert set(np.unique(v.numpy())) <= {-1.0, 1.0}, v.path
    acc = history.history["accuracy"][-1]
    assert acc > max(acc0 + 0.15, 0.6), (acc0, acc)


@pytest.mark.parametrize("constraint", [Discrete.integer(3, 0.1), keras.constraints.NonNeg()],
                         ids=["int3", "nonneg"])
def test_elementwise_domains_fast_path_matches_full_path_and_holds(toy_data, constraint):
    x, y = toy_data
    weights = {}
    for fast in (True, False):
        model = _net(constraint)
        trainer, _ = _train(model, x, y, fast=fast, epochs=1)
        assert isinstance(trainer._plan()[0], ChainEvaluator if fast else FullForwardEvaluator)
        weights[fast] = [v.numpy() for v in model.trainable_variables]
        for v in _kernels(model)[:2]:
            value = v.numpy()
            np.testing.assert_array_equal(value, constraint(v.value).numpy())
        assert trainer.optimizer.weight_updates.numpy() > 0
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_norm_constraint_holds_after_every_step(toy_data):
    x, y = toy_data
    constraint = keras.constraints.UnitNorm(axis=[0, 1, 2])
    model = _net(constraint)
    norms = []

    class Norms(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            norms.append([np.sqrt((v.numpy() ** 2).sum(axis=(0, 1, 2)))
                          for v in _kernels(model)[:2]])

    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=32, seed=1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[Norms()])
    assert trainer.optimizer.weight_updates.numpy() > 0
    for step in norms:
        for n in step:
            np.testing.assert_allclose(n, 1.0, rtol=1e-5)


def test_ties_move_walks_a_plateau_that_ties_keep_freezes(toy_data):
    # The error rate changes only when a prediction flips: in one weight it
    # is flat almost everywhere, so most trials tie with w.
    x, y = toy_data
    updates = {}
    for ties in ("keep", "move"):
        model = _net(Discrete.binary(), Discrete.binary(), seed=3)
        trainer = keras_rso.RSOModel(model)
        trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=64, seed=1, ties=ties),
                        loss=keras_rso.losses.ErrorRate())
        trainer.fit(x, y, batch_size=64, epochs=1, verbose=0)
        updates[ties] = int(trainer.optimizer.weight_updates.numpy())
    assert updates["move"] > 2 * updates["keep"], updates


def test_error_rate_and_its_balanced_form():
    y = np.array([0, 0, 0, 1])
    logits = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], "float32")
    plain = keras_rso.losses.ErrorRate()(y, logits)
    balanced = keras_rso.losses.ErrorRate(balanced=True)(y, logits)
    np.testing.assert_allclose(plain, 2 / 4)
    np.testing.assert_allclose(balanced, (1 / 3 + 1 / 1) / 2, rtol=1e-6)
    smooth = keras_rso.losses.ErrorRate(smoothing=0.1)(y, logits)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    np.testing.assert_allclose(smooth, 0.5 + 0.1 * ce, rtol=1e-6)
    config = keras_rso.losses.ErrorRate(balanced=True, smoothing=0.1).get_config()
    assert config["balanced"] and config["smoothing"] == 0.1


def test_binary_model_saves_and_reloads(toy_data, tmp_path):
    x, y = toy_data
    model = _net(Discrete.binary(), Discrete.binary())
    _train(model, x, y, epochs=1)
    path = os.path.join(tmp_path, "binary.keras")
    model.save(path)
    again = keras.models.load_model(path)
    for v in _kernels(again):
        assert set(np.unique(v.numpy())) <= {-1.0, 1.0}
    assert isinstance(again.layers[0].kernel.constraint, Discrete)
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))


def _residual_net(kernel_constraint, seed=0):
    """`_net`'s layers with a skip: the graph fast path (`GraphEvaluator`)."""
    keras.utils.set_random_seed(seed)
    conv = lambda: L.Conv2D(6, 3, padding="same", use_bias=False,  # noqa: E731
                            kernel_constraint=kernel_constraint)
    inputs = keras.Input((8, 8, 1))
    a = L.BatchNormalization()(conv()(inputs))
    b = L.BatchNormalization()(conv()(L.ReLU()(a)))
    h = L.AveragePooling2D(2)(L.ReLU()(L.Add()([a, b])))
    h = L.BatchNormalization()(conv()(h))
    outputs = L.Dense(3, use_bias=False, kernel_constraint=kernel_constraint)(
        L.GlobalAveragePooling2D()(h))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("evaluator, build", [
    (ChainEvaluator, lambda: _net(Discrete.binary(), Discrete.binary())),
    (GraphEvaluator, lambda: _residual_net(Discrete.binary())),
], ids=["chain", "graph"])
def test_a_binary_trial_evaluates_only_the_flip_and_decides_as_the_pair(
        toy_data, float64, monkeypatch, evaluator, build):
    # The fast path runs a binary weight's flip alone (its other candidate
    # is w itself); the decisions, and so the weights, are those of the
    # stacked pair whose second candidate gets an infinite loss. In float64:
    # in float32 the flip's loss computed alone can differ from the pair's
    # in its last bit, which could decide an exact near-tie otherwise.
    x, y = toy_data
    x = x.astype("float64")
    calls = []
    trial = evaluator.trial

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("single", False))
        return trial(self, *args, **kwargs)

    monkeypatch.setattr(evaluator, "trial", spy)
    weights = {}
    for flip_alone in (True, False):
        if not flip_alone:
            monkeypatch.setattr(evaluator, "single_candidate", lambda self, v: False)
        calls.clear()
        model = build()
        trainer, _ = _train(model, x, y, epochs=2)
        assert isinstance(trainer._plan()[0], evaluator)
        # Binary kernels through the flip alone; BatchNorm's real gamma and
        # beta through the pair.
        assert set(calls) == ({True, False} if flip_alone else {False}), set(calls)
        weights[flip_alone] = [v.numpy() for v in model.weights]
        assert trainer.optimizer.weight_updates.numpy() > 0
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("build", [lambda: _net(Discrete.binary(), Discrete.binary()),
                                   lambda: _residual_net(Discrete.binary())],
                         ids=["chain", "graph"])
def test_a_single_candidate_trial_needs_the_rank_one_update(build):
    # BatchNorm's gamma has no rank-one update: its trial is always a pair.
    model = build()
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(), loss="sparse_categorical_crossentropy")
    evaluator, _ = trainer._plan()
    gamma = next(i for i, v in enumerate(evaluator.variables) if v.path.endswith("gamma"))
    kernel = next(i for i, v in enumerate(evaluator.variables) if v.path.endswith("kernel"))
    assert evaluator.single_candidate(kernel) and not evaluator.single_candidate(gamma)
    with pytest.raises(ValueError, match="gamma.*rank-one"):
        evaluator.trial(gamma, 0, 0.1, None, None, None, None, None, single=True)


def test_discrete_variables_frozen_leave_the_search_to_the_rest(toy_data):
    # A binary net whose discrete kernels are set not trainable: RSO searches
    # BatchNormalization's gamma and beta only, and no kernel moves.
    x, y = toy_data
    model = _net(Discrete.binary(), Discrete.binary())
    frozen = keras_rso.constraints.discrete_variables(model)
    assert [v.path for v in frozen] == [v.path for v in _kernels(model)] and len(frozen) == 3
    for variable in frozen:
        variable.trainable = False
    kernels = [v.numpy() for v in frozen]
    gammas = [v.numpy() for v in model.variables if v.path.endswith("gamma")]
    # Gamma (ones) and beta (zeros) have no spread: the authors' sigma rule.
    trainer, _ = _train(model, x, y, epochs=2, k=8, sigma_rule="he")
    assert trainer.trials_per_cycle == 2 * 2 * 6
    for variable, before in zip(frozen, kernels):
        np.testing.assert_array_equal(variable.numpy(), before, err_msg=variable.path)
    after = [v.numpy() for v in model.variables if v.path.endswith("gamma")]
    assert any(not np.array_equal(a, b) for a, b in zip(after, gammas))


@st.composite
def _domains(draw):
    """A weight domain, a network shape and search options (plain data only)."""
    scale = draw(st.sampled_from([0.05, 1.0, 3.0]))
    kind = draw(st.sampled_from(["binary", "ternary", "integer", "uneven"]))
    if kind == "integer":
        values = Discrete.integer(draw(st.integers(2, 4)), scale).values
    elif kind == "uneven":
        gaps = draw(st.lists(st.sampled_from([0.1, 0.5, 2.0]), min_size=2, max_size=4))
        values = tuple(np.cumsum([-1.0] + gaps) * scale)
    else:
        values = getattr(Discrete, kind)(scale).values
    return dict(values=values, conv=draw(st.booleans()), width=draw(st.integers(2, 4)),
                k=draw(st.integers(1, 40)), order=draw(st.sampled_from(keras_rso.optimizer.ORDERS)),
                step_rule=draw(st.sampled_from(keras_rso.optimizer.STEP_RULES)),
                ties=draw(st.sampled_from(["keep", "move"])), fast=draw(st.booleans()),
                sigma_scale=draw(st.sampled_from([0.5, 3.0])), seed=draw(st.integers(0, 1000)))


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(_domains())
def test_discrete_weights_never_leave_their_set(domain):
    # Over sets (even and uneven spacing), shapes, orders and step and tie
    # rules: every element of every discrete variable is one of its values
    # after a cycle, and the search did move some of them.
    keras.utils.set_random_seed(domain["seed"])
    constraint = Discrete(domain["values"])
    width = domain["width"]
    layers = ([L.Conv2D(width, 3, padding="same", use_bias=False, kernel_constraint=constraint),
               L.BatchNormalization(), L.ReLU(), L.GlobalAveragePooling2D()]
              if domain["conv"] else
              [L.Flatten(), L.Dense(width, kernel_constraint=constraint,
                                    bias_constraint=constraint), L.ReLU()])
    model = keras.Sequential([keras.Input((6, 6, 1)), *layers,
                              L.Dense(3, kernel_constraint=constraint)])
    rng = np.random.default_rng(domain["seed"])
    x = rng.normal(size=(48, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, size=48).astype("int32")
    trainer, _ = _train(model, x, y, fast=domain["fast"], epochs=1, k=domain["k"],
                        order=domain["order"], step_rule=domain["step_rule"],
                        ties=domain["ties"], sigma_scale=domain["sigma_scale"])
    allowed = np.asarray(domain["values"], "float32")
    discrete = keras_rso.constraints.discrete_variables(model)
    assert len(discrete) == (3 if not domain["conv"] else 2)
    for v in discrete:
        assert np.all(np.isin(v.numpy(), allowed)), (v.path, np.unique(v.numpy()), allowed)
    assert int(trainer.optimizer.weight_updates.numpy()) > 0
