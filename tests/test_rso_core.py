"""Behaviour of one RSO cycle: coverage, order, acceptance, BN, sigma, seeds."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_rso
from testing_utils import fit_rso, weights_of
from conftest import deeper_convnet, small_convnet


def _trainer(model, k=4, seed=0, order="output_to_input", fast_path=True, **kw):
    trainer = keras_rso.RSOModel(model, fast_path=fast_path)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=k, seed=seed, order=order, **kw),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return trainer


class StepRecorder(keras.callbacks.Callback):
    def __init__(self, fn):
        super().__init__()
        self.fn, self.values = fn, []

    def on_train_begin(self, logs=None):
        self.values.append(self.fn(self.model))

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(self.fn(self.model))


def test_cycle_tries_every_scalar_once_output_to_input(toy_data):
    x, y = toy_data
    model = small_convnet()
    trainer = _trainer(model, k=7)
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    opt = trainer.optimizer
    sizes = [int(np.prod(v.shape)) for v in trainer.trainable_variables]
    # Every variable was tried exactly as many times as it has scalars ...
    np.testing.assert_array_equal(opt.trials_per_variable.numpy(), sizes)
    assert int(opt.trials.numpy()) == sum(sizes) == trainer.trials_per_cycle
    # ... and the schedule driving the step visits each scalar exactly once,
    # layers from the output to the input.
    schedule = trainer.visit_schedule()
    assert len(schedule) == len(set(schedule)) == sum(sizes)
    depth = {v.path: i for i, l in enumerate(model.layers) for v in l.trainable_variables}
    layer_seq = [depth[path] for path, _ in schedule]
    assert layer_seq[0] == len(model.layers) - 1
    assert all(a >= b for a, b in zip(layer_seq, layer_seq[1:]))
    # One epoch == one cycle: ceil(trials / K) steps.
    assert trainer.steps_per_cycle() == -(-sum(sizes) // 7)


@pytest.mark.parametrize("order", ["output_to_input", "random"])
def test_output_passes_search_the_output_layer_again_after_the_sweep(toy_data, order):
    x, y = toy_data
    model = small_convnet()
    trainer = _trainer(model, k=7, order=order, output_passes=2)
    hist = trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    sizes = [int(np.prod(v.shape)) for v in trainer.trainable_variables]
    head = {v.path for v in model.layers[-1].trainable_variables}
    head_size = sum(n for v, n in zip(trainer.trainable_variables, sizes) if v.path in head)
    # The output layer's scalars are tried 1 + 2 times, every other once.
    np.testing.assert_array_equal(
        trainer.optimizer.trials_per_variable.numpy(),
        [3 * n if v.path in head else n for v, n in zip(trainer.trainable_variables, sizes)])
    assert trainer.trials_per_cycle == sum(sizes) + 2 * head_size
    assert hist.history["trials"] == [trainer.trials_per_cycle]
    schedule = trainer.visit_schedule()
    sweep, passes = schedule[:sum(sizes)], schedule[sum(sizes):]
    assert len(set(sweep)) == sum(sizes)
    head_trials = [t for t in sweep if t[0] in head]
    assert sorted(passes) == sorted(head_trials * 2)
    if order == "output_to_input":
        assert passes == head_trials * 2
    # The passes start on a fresh batch: the sweep's last step is cut short.
    assert trainer.steps_per_cycle() == -(-sum(sizes) // 7) + -(-2 * head_size // 7)
    assert int(trainer.optimizer.iterations.numpy()) == trainer.steps_per_cycle()


def test_output_passes_must_be_a_non_negative_int():
    with pytest.raises(ValueError, match="output_passes"):
        keras_rso.RSO(output_passes=-1)
    for bad in (1.5, True):  # wrong type, as for weights_per_batch
        with pytest.raises(TypeError, match="output_passes"):
            keras_rso.RSO(output_passes=bad)
    opt = keras_rso.RSO(output_passes=3)
    assert keras_rso.RSO.from_config(opt.get_config()).output_passes == 3


@pytest.mark.parametrize("order", ["input_to_output", "random"])
def test_other_orders_cover_every_scalar(toy_data, order):
    x, y = toy_data
    model = small_convnet()
    k = 5
    trainer = _trainer(model, k=k, order=order)
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    sizes = [int(np.prod(v.shape)) for v in trainer.trainable_variables]
    np.testing.assert_array_equal(trainer.optimizer.trials_per_variable.numpy(), sizes)
    schedule = trainer.visit_schedule()
    assert len(set(schedule)) == sum(sizes)
    depth = {v.path: i for i, l in enumerate(model.layers) for v in l.trainable_variables}
    seq = [depth[p] for p, _ in schedule]
    steps = [seq[i:i + k] for i in range(0, len(seq), k)]
    # The trials sharing a batch run from the output side first ...
    assert all(a >= b for step in steps for a, b in zip(step, step[1:]))
    if order == "input_to_output":
        # ... while the cycle moves from the input to the output, batch by
        # batch: a batch straddling two layers is the only overlap.
        assert all(max(a) <= min(b) for a, b in zip(steps, steps[1:]))
        assert seq[0] == min(seq) and seq[-1] == max(seq)
    else:
        assert [min(s) for s in steps] != sorted(min(s) for s in steps)
        assert schedule != trainer.visit_schedule(cycle=1)  # fresh each cycle


def test_rejected_candidates_leave_weights_bit_identical(toy_data, strategy):
    x, y = toy_data
    with strategy.scope():
        model = small_convnet()
    before = [v.numpy().copy() for v in model.trainable_variables]
    trainer = fit_rso(model, x, y, strategy=strategy, weights_per_batch=1).trainer
    after = [v.numpy() for v in model.trainable_variables]
    changed = sum(int(np.sum(a != b)) for a, b in zip(before, after))
    accepted = int(trainer.optimizer.weight_updates.numpy())
    # Each scalar is tried once per cycle: exactly the accepted ones moved,
    # every rejected one is bit-identical.
    assert 0 < accepted < trainer.trials_per_cycle
    assert changed == accepted
    np.testing.assert_array_equal(
        trainer.optimizer.updates_per_variable.numpy(),
        [int(np.sum(a != b)) for a, b in zip(before, after)])


@pytest.mark.parametrize("fast_path,build,rule", [(True, small_convnet, "argmin"),
                                                  (False, small_convnet, "argmin"),
                                                  (True, deeper_convnet, "argmin"),
                                                  (True, deeper_convnet, "parabolic")])
def test_loss_on_a_fixed_batch_never_increases(toy_data, fast_path, build, rule):
    x, y = toy_data
    xb, yb = x[:48], y[:48]
    model = build()
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def batch_loss(trainer):
        with keras.StatelessScope():  # batch statistics, no BN update
            return float(loss_fn(yb, model(xb, training=True)))

    trainer = _trainer(model, k=16, fast_path=fast_path, step_rule=rule)
    rec = StepRecorder(batch_loss)
    ds = tf.data.Dataset.from_tensors((xb, yb)).repeat()
    trainer.fit(ds, epochs=1, verbose=0, callbacks=[rec])
    losses = np.array(rec.values)
    assert len(losses) == trainer.steps_per_cycle() + 1
    assert np.all(np.diff(losses) <= 1e-6 * losses[:-1])
    assert losses[-1] < 0.9 * losses[0]


def test_trials_never_touch_batchnorm_moving_statistics(toy_data):
    x, y = toy_data
    xb, yb = x[:32], y[:32]
    model = small_convnet()
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    trainer = _trainer(model, k=64)
    ds = tf.data.Dataset.from_tensors((xb, yb)).repeat()
    trainer.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)
    assert int(trainer.optimizer.weight_updates.numpy()) > 10
    # The moving statistics saw exactly one update, from the weights the
    # step started with: as if the reference ran one training forward pass.
    reference(xb, training=True)
    bn, bn_ref = model.layers[1], reference.layers[1]
    np.testing.assert_allclose(bn.moving_mean.numpy(), bn_ref.moving_mean.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn.moving_variance.numpy(), bn_ref.moving_variance.numpy(), rtol=1e-6)


def _deeper_convnet_with_frozen_bn():
    # A frozen BatchNormalization normalises with its moving statistics even
    # in training mode; the fast path's own BN code must do the same.
    model = deeper_convnet()
    model.layers[5].trainable = False
    return model


def _small_convnet_without_flat_bias():
    return small_convnet(first_bias=False)


# The frozen-BN case is also the K=64 case of `deeper_convnet` (its first
# BatchNormalization stays trainable): a separate unfrozen run at K=64 took
# the same paths and 12 s of the suite. Output passes run in the random
# order's two cycles (a separate run in the default order took 15 s).
@pytest.mark.parametrize("build,k,passes,order", [
    (_small_convnet_without_flat_bias, 8, 0, "output_to_input"),
    (_deeper_convnet_with_frozen_bn, 64, 0, "output_to_input"),
    (deeper_convnet, 16, 0, "input_to_output"), (deeper_convnet, 16, 3, "random")])
def test_fast_path_matches_full_forward_path(toy_data, float64, build, k, passes, order):
    # In float64, and a candidate must beat w by a relative 1e-10: losses
    # equal to within rounding (a unit dead on the batch ties exactly) were
    # taken as better on one path only, in float32 and in float64, on an
    # AMD EPYC with AVX-512; with the margin every decision agreed.
    x, y = toy_data
    x = x.astype("float64")
    weights = {}
    for fast in (True, False):
        model = build()
        trainer = _trainer(model, k=k, seed=3, fast_path=fast, output_passes=passes,
                           order=order, tolerance=1e-10)
        # Two cycles where the order changes from one cycle to the next.
        trainer.fit(x, y, batch_size=32, epochs=2 if order == "random" else 1,
                    shuffle=False, verbose=0)
        assert trainer._plan()[0].fast == fast
        weights[fast] = weights_of(model)
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # The search moved weights (the comparison is not of two untouched nets).
    assert any(np.any(a != b) for a, b in zip(weights[True], weights_of(build())))


@pytest.fixture
def traced_loops(monkeypatch):
    """Every `TrialLoop` the RSO step calls while tracing, in order."""
    loops = []
    original = keras_rso.search.TrialLoop.__call__

    def recording(self, *args, **kwargs):
        loops.append(self)
        # The graph the step is traced into, for tests of its structure.
        self.traced_graph = tf.compat.v1.get_default_graph()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras_rso.search.TrialLoop, "__call__", recording)
    return loops


def test_fit_traces_the_search_step_once(toy_data, traced_loops):
    # Tracing an RSO step is slow (tens of seconds for a 10-layer net), so
    # the compiled metrics must exist before the first trace: variables
    # created inside it make tf.function trace everything a second time.
    x, y = toy_data
    trainer = _trainer(small_convnet(), k=64)
    trainer.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert len(traced_loops) == 1


def test_trials_share_tail_pieces_and_batchnorm_branches(toy_data, traced_loops):
    # Every variable's trial runs the rest of the network; the fast path
    # traces that tail once per piece (cut after each mixer) and calls it
    # from every variable's branch, instead of one inline copy per variable.
    x, y = toy_data
    model = deeper_convnet()
    before = weights_of(model)
    trainer = _trainer(model, k=64)
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    (loop,) = traced_loops
    ev = loop.ev
    assert ev.fast
    # Mixers at layers 0, 4, 7, 10, 11: the pieces start after 4, 7 and 10.
    # None starts after mixer 0 (its trials carry their change into mixer
    # 4's cached pre-activation and go on from there), and nothing follows
    # the last.
    # (Keyed by start and number of stacked candidates: two here; one only
    # for a binary weight's flip.)
    assert sorted(ev._tails) == [(m + 1, 2) for m in ev.mixers[1:-1]] == [(5, 2), (8, 2), (11, 2)]
    assert [p.experimental_get_tracing_count() for p in ev._tails.values()] == [1, 1, 1]
    # A BatchNormalization's gamma and beta share one trial branch: the
    # step's switch over variables has 10 branches for 12 variables.
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    paths = [[loop.variables[k].path for k in group] for group in loop.groups]
    assert len(loop.visit) == 12 and len(paths) == 10
    for bn in bns:
        assert [bn.gamma.path, bn.beta.path] in paths
    library = loop.traced_graph.as_graph_def().library.function
    branches = [len(node.attr["branches"].list.func) for f in library for node in f.node_def
                if node.op in ("Case", "StatelessCase")]
    assert max(branches) == 10
    # ... and both parameters of each pair are searched through it.
    after = weights_of(model)
    for bn in bns:
        for var in (bn.gamma, bn.beta):
            k = next(i for i, w in enumerate(model.weights) if w is var)
            assert not np.array_equal(before[k], after[k]), var.path


def test_sigma_annealing_reaches_final_fraction_on_last_epoch(toy_data):
    x, y = toy_data
    trainer = _trainer(small_convnet(), k=64)
    hist = trainer.fit(x, y, batch_size=32, epochs=3, verbose=0,
                       callbacks=[keras_rso.callbacks.SigmaAnnealing(final_fraction=0.1)])
    np.testing.assert_allclose(hist.history["sigma_scale"], [1.0, 0.55, 0.1], rtol=1e-6)
    assert float(trainer.optimizer.sigma_scale.numpy()) == pytest.approx(0.1)


def test_sigma_annealing_starts_from_the_optimizers_initial_scale(toy_data):
    # RSO(sigma_scale=2) must not be silently reset to 1 by the callback.
    x, y = toy_data
    trainer = _trainer(small_convnet(), k=64, sigma_scale=2.0)
    hist = trainer.fit(x, y, batch_size=32, epochs=3, verbose=0,
                       callbacks=[keras_rso.callbacks.SigmaAnnealing(final_fraction=0.1)])
    np.testing.assert_allclose(hist.history["sigma_scale"], [2.0, 1.1, 0.2], rtol=1e-6)


def test_sigma_annealing_follows_the_papers_rule_over_a_longer_schedule(toy_data):
    # The first cycles of the authors' 50-cycle schedule: 0.1 + 0.9 (50 - e) / 50,
    # continued by a second fit from where the first stopped.
    x, y = toy_data
    trainer = _trainer(small_convnet(), k=64)
    anneal = keras_rso.callbacks.SigmaAnnealing(0.1, rule="paper", total_cycles=50)
    first = trainer.fit(x, y, batch_size=32, epochs=2, steps_per_epoch=1, verbose=0,
                        callbacks=[anneal])
    more = trainer.fit(x, y, batch_size=32, epochs=4, initial_epoch=2, steps_per_epoch=1,
                       verbose=0, callbacks=[anneal])
    np.testing.assert_allclose(first.history["sigma_scale"] + more.history["sigma_scale"],
                               [1.0, 0.982, 0.964, 0.946], rtol=1e-6)
    linear = keras_rso.callbacks.SigmaAnnealing(0.1, total_cycles=10)
    hist = trainer.fit(x, y, batch_size=32, epochs=2, steps_per_epoch=1, verbose=0,
                       callbacks=[linear])
    np.testing.assert_allclose(hist.history["sigma_scale"], [1.0, 0.9], rtol=1e-6)
    with pytest.raises(ValueError, match="rule"):
        keras_rso.callbacks.SigmaAnnealing(rule="cosine")
    with pytest.raises(ValueError, match="total_cycles"):
        keras_rso.callbacks.SigmaAnnealing(total_cycles=0)


def test_sigma_annealing_holds_its_floor_after_a_shorter_schedule(toy_data):
    # `--cycles 4 --schedule-cycles 2`: the schedule ends, the search goes on
    # at the last scale (the first cycles are those of the 2-cycle run).
    x, y = toy_data
    for rule, expected in (("linear", [1.0, 0.1, 0.1, 0.1]), ("paper", [1.0, 0.55, 0.1, 0.1])):
        trainer = _trainer(small_convnet(), k=64)
        anneal = keras_rso.callbacks.SigmaAnnealing(0.1, rule=rule, total_cycles=2)
        hist = trainer.fit(x, y, batch_size=32, epochs=4, steps_per_epoch=1, verbose=0,
                           callbacks=[anneal])
        np.testing.assert_allclose(hist.history["sigma_scale"], expected, rtol=1e-6)


def test_custom_sigma_schedule_is_used(toy_data):
    x, y = toy_data
    trainer = _trainer(small_convnet(), k=64)
    hist = trainer.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[
        keras_rso.callbacks.SigmaAnnealing(schedule=lambda epoch, s: 0.5 ** epoch)])
    np.testing.assert_allclose(hist.history["sigma_scale"], [1.0, 0.5])


def test_sigma_is_std_at_start_with_fallback_for_zero_std(toy_data):
    x, y = toy_data
    model = small_convnet()
    stds = [float(np.std(v.numpy())) for v in model.trainable_variables]
    trainer = _trainer(model, k=64)
    trainer.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=1, verbose=0)
    sigmas = trainer.optimizer.sigmas.numpy()
    paths = [v.path for v in model.trainable_variables]
    for path, s, sd in zip(paths, sigmas, stds):
        assert s > 0
        if sd > 0:
            assert s == pytest.approx(sd, rel=1e-6)
    # A zero-initialised conv bias borrows its kernel's std.
    kernel, bias = paths.index(model.layers[0].kernel.path), paths.index(model.layers[0].bias.path)
    assert sigmas[bias] == pytest.approx(stds[kernel], rel=1e-6)


class CycleEndStds(keras.callbacks.Callback):
    """Each trainable variable's std when every epoch (cycle) ends."""

    def __init__(self):
        super().__init__()
        self.stds = []

    def on_epoch_end(self, epoch, logs=None):
        self.stds.append([float(np.std(v.numpy())) for v in self.model.trainable_variables])


@pytest.mark.parametrize("remeasure", [False, True])
def test_sigma_is_remeasured_at_each_cycle_start_only_when_asked(toy_data, remeasure):
    x, y = toy_data
    model = small_convnet()
    initial = [float(np.std(v.numpy())) for v in model.trainable_variables]
    trainer = _trainer(model, k=64, remeasure_sigma=remeasure)
    ends = CycleEndStds()
    trainer.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[ends])
    sigmas = trainer.optimizer.sigmas.numpy()
    # Cycle 2 searched with the sigmas set when it began: the stds the
    # weights had at the end of cycle 1 if re-measured, else the initial ones.
    expected = ends.stds[0] if remeasure else initial
    for s, sd, sd0 in zip(sigmas, expected, initial):
        if sd0 > 0:
            assert s == pytest.approx(sd, rel=1e-5)
    # Cycle 1 did change the stds, so the two cases tell different sigmas.
    assert any(abs(a - b) > 1e-3 * b for a, b in zip(ends.stds[0], initial) if b > 0)
    assert keras_rso.RSO.from_config(trainer.optimizer.get_config()).remeasure_sigma is remeasure


class SigmasAndRates(keras.callbacks.Callback):
    """Sigmas and per-variable accept rates at epoch end, before balancing."""

    def __init__(self, rates):
        super().__init__()
        self.layer_rates, self.seen = rates, []

    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        self.seen.append((opt.sigmas.numpy().copy(),
                          opt.trials_per_variable.numpy().copy(),
                          self.layer_rates.rates()))


@pytest.mark.parametrize("max_factor", [1e6, 4.0])
def test_sigma_balancing_shrinks_sigma_where_few_steps_are_accepted(toy_data, max_factor):
    x, y = toy_data
    model = small_convnet()
    trainer = _trainer(model, k=64)
    rates = keras_rso.callbacks.LayerAcceptRates(None)
    seen = SigmasAndRates(rates)
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[
        rates, seen, keras_rso.callbacks.SigmaBalancing(max_factor=max_factor)])
    before, tried, by_path = seen.seen[0]
    ratio = trainer.optimizer.sigmas.numpy() / before
    rate = np.array([by_path[v.path] for v in trainer.trainable_variables])
    assert rate.min() < rate.max()  # something to balance
    order = np.argsort(rate, kind="stable")
    assert np.all(np.diff(ratio[order]) >= -1e-6)  # lower accept rate, smaller sigma
    assert ratio.min() < 1.0 < ratio.max()
    assert ratio.max() <= max_factor * (1 + 1e-6) and ratio.min() >= 1 / max_factor * (1 - 1e-6)
    if max_factor == 1e6:
        # Unclipped, the overall step size (trial-weighted geometric mean) is kept.
        assert np.exp(np.sum(tried * np.log(ratio)) / np.sum(tried)) == pytest.approx(1.0, rel=1e-5)


def test_remeasured_sigmas_keep_the_balancing_factors(toy_data):
    x, y = toy_data
    model = small_convnet()
    initial = [float(np.std(v.numpy())) for v in model.trainable_variables]
    trainer = _trainer(model, k=64, remeasure_sigma=True)
    ends = CycleEndStds()
    trainer.fit(x, y, batch_size=32, epochs=2, verbose=0,
                callbacks=[ends, keras_rso.callbacks.SigmaBalancing()])
    opt = trainer.optimizer
    factors = opt.sigma_factors.numpy()
    assert np.any(np.abs(factors - 1.0) > 0.05)  # balancing did rescale
    # Cycle 2 began with the stds of the end of cycle 1 times cycle 1's
    # factors; its own factors then multiplied both.
    for s, sd, f, sd0 in zip(opt.sigmas.numpy(), ends.stds[0], factors, initial):
        if sd0 > 0:
            assert s == pytest.approx(sd * f, rel=1e-5)


def test_same_seed_gives_identical_weights(toy_data):
    x, y = toy_data
    runs = []
    for seed in (5, 5, 6):
        model = small_convnet()
        _trainer(model, k=8, seed=seed).fit(x, y, batch_size=32, epochs=1,
                                            shuffle=False, verbose=0)
        runs.append(weights_of(model))
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(runs[0], runs[2]))


def test_variables_option_restricts_the_search(toy_data):
    x, y = toy_data
    model = small_convnet()
    dense = model.layers[-1]
    before = weights_of(model)
    trainer = keras_rso.RSOModel(model, variables=[dense.kernel.path, dense.bias])
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=4), loss="sparse_categorical_crossentropy")
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert trainer.trials_per_cycle == 15
    after = weights_of(model)
    for v, a, b in zip(model.weights, before, after):
        if v is dense.kernel or v is dense.bias:
            assert not np.array_equal(a, b)
        elif v.trainable:
            np.testing.assert_array_equal(a, b)


def test_logs_report_rso_counters(toy_data):
    x, y = toy_data
    trainer = _trainer(small_convnet(), k=16)
    hist = trainer.fit(x, y, batch_size=32, epochs=2, verbose=0, validation_data=(x, y))
    h = hist.history
    n = trainer.trials_per_cycle
    assert h["trials"] == [n, 2 * n]
    assert 0 < h["accept_rate"][0] <= 1
    assert h["weight_updates"][1] == int(trainer.optimizer.weight_updates.numpy())
    assert "val_accept_rate" not in h and "val_accuracy" in h


def test_cycle_end_refreshes_batchnorm_statistics_from_final_weights(toy_data):
    x, y = toy_data
    xb, yb = x[:64], y[:64]
    model = small_convnet()
    trainer = _trainer(model, k=1000)  # the whole cycle in one step
    ds = tf.data.Dataset.from_tensors((xb, yb)).repeat()
    trainer.fit(ds, epochs=1, verbose=0)
    assert trainer.steps_per_cycle() == 1
    # Moving statistics now equal the batch statistics of the final weights.
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    reference.layers[1].momentum = 0.0
    reference(xb, training=True)
    bn = model.layers[1]
    np.testing.assert_allclose(bn.moving_mean.numpy(), reference.layers[1].moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), reference.layers[1].moving_variance.numpy(), rtol=1e-5)
    # So inference on that batch matches training-mode outputs.
    np.testing.assert_allclose(model(xb, training=False), model(xb, training=True), rtol=1e-4, atol=1e-5)


def test_without_refresh_statistics_are_moving_averages(toy_data):
    x, y = toy_data
    xb, yb = x[:64], y[:64]
    model = small_convnet()
    trainer = _trainer(model, k=1000, bn_refresh=False)
    trainer.fit(tf.data.Dataset.from_tensors((xb, yb)).repeat(), epochs=1, verbose=0)
    # One ordinary momentum update from the initial (zero mean) statistics.
    assert np.all(np.abs(model.layers[1].moving_mean.numpy()) < 0.1)
    assert not np.allclose(model(xb, training=False), model(xb, training=True), atol=1e-3)
