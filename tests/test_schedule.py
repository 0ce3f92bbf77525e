"""`keras_rso.schedule`: the cycle's plan, one rule each."""

import math
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rso import schedule
from keras_rso.evaluators.topology import owner_layers

L = keras.layers


def _opt(**kw):
    base = dict(weights_per_batch=4, order="output_to_input", kernel_order="keras", seed=0)
    base.update(kw)
    return SimpleNamespace(**base)


def _conv_bn_dense():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6, 6, 1)),
                             L.Conv2D(2, 3, use_bias=False, name="conv"),
                             L.BatchNormalization(name="bn"), L.Flatten(),
                             L.Dense(3, use_bias=False, name="dense")])


def test_visit_orders():
    model = _conv_bn_dense()
    variables = model.trainable_variables
    paths = [v.path.split("/")[-2] + "/" + v.name for v in variables]
    assert paths == ["conv/kernel", "bn/gamma", "bn/beta", "dense/kernel"]
    owners = owner_layers(model, variables)
    index = [0, 1, 2, 3]
    order = lambda o: schedule.visit_order(o, index, owners, variables)  # noqa: E731
    assert order("output_to_input") == [3, 2, 1, 0]
    assert order("input_to_output") == [0, 1, 2, 3]
    assert order("random") == [0, 1, 2, 3]  # shuffled per cycle by `permutation`
    # The authors': dense, then the convolution's kernel, beta, gamma.
    assert order("paper") == [3, 0, 2, 1]
    # A fast path groups by its layer index first.
    assert schedule.visit_order("input_to_output", [3, 0], owners, variables,
                                layer_of=[1, 2, 2, 0]) == [3, 0]


def test_output_passes_and_cycle_parts():
    model = _conv_bn_dense()
    variables = model.trainable_variables
    layer_ids = [id(layer) for layer in owner_layers(model, variables)]
    visit = [3, 2, 1, 0]
    assert schedule.output_pass_visits(visit, layer_ids, 0) == []
    assert schedule.output_pass_visits(visit, layer_ids, 2) == [3, 3]
    sweep = 18 + 2 + 2 + 32 * 3
    assert schedule.trial_count(variables, visit) == sweep
    assert schedule.cycle_parts(variables, visit, layer_ids, 0) == [sweep]
    assert schedule.cycle_parts(variables, visit, layer_ids, 2) == [sweep, 2 * 96]


@pytest.mark.parametrize("k", [1, 3, 4, 64])
@pytest.mark.parametrize("breaks", [[], [7], [5, 6, 20]])
def test_step_lengths_cover_the_cycle_and_never_cross_a_break(k, breaks):
    variables = [keras.Variable(np.zeros((5, 5))), keras.Variable(np.zeros(7))]
    plan = schedule.CycleSchedule(variables, [0, 1], _opt(weights_per_batch=k), breaks)
    position, lengths = 0, []
    while position < plan.total:
        n = int(plan.step_length(tf.constant(position, tf.int64)))
        assert 0 < n <= k
        assert not any(position < b < position + n for b in breaks)
        lengths.append(n)
        position += n
    assert position == plan.total == 32
    # The static count is the same rule.
    assert len(lengths) == plan.trial_steps() == schedule.count_steps(plan.edges, k)
    assert plan.trial_steps() == sum(math.ceil((b - a) / k)
                                     for a, b in zip(plan.edges, plan.edges[1:]))


def test_trials_visit_every_scalar_once_output_side_first_within_a_step():
    variables = [keras.Variable(np.zeros((2, 3))), keras.Variable(np.zeros(4))]
    for order in ("input_to_output", "random"):
        plan = schedule.CycleSchedule(variables, [0, 1], _opt(order=order, weights_per_batch=4))
        slots, flat = (t.numpy() for t in plan.trials(cycle=0))
        assert sorted(zip(slots, flat)) == [(0, j) for j in range(6)] + [(1, j) for j in range(4)]
        # Within each step of 4, global indices run downward (output first).
        g = np.where(slots == 0, flat, 6 + flat)
        for step in np.split(g, [4, 8]):
            assert list(step) == sorted(step, reverse=True)


def test_random_permutation_is_fresh_per_cycle_and_reproducible():
    variables = [keras.Variable(np.zeros(50))]
    plan = schedule.CycleSchedule(variables, [0], _opt(order="random", seed=3))
    p0, p1 = plan.permutation(0).numpy(), plan.permutation(1).numpy()
    assert sorted(p0) == list(range(50)) and not np.array_equal(p0, p1)
    np.testing.assert_array_equal(p0, plan.permutation(0).numpy())
    # The output passes after the first break keep their place.
    plan = schedule.CycleSchedule(variables + [keras.Variable(np.zeros(5))], [0, 1],
                                  _opt(order="random"), breaks=[50])
    assert list(plan.permutation(0).numpy()[50:]) == list(range(50, 55))
    assert schedule.CycleSchedule(variables, [0], _opt()).permutation(0) is None


def test_paper_kernel_order_is_output_input_row_column():
    order = schedule.paper_kernel_order((2, 2, 3, 4))  # (rows, cols, in, out)
    flat = np.arange(48).reshape(2, 2, 3, 4)
    assert list(order[:4]) == [flat[0, 0, 0, 0], flat[0, 1, 0, 0], flat[1, 0, 0, 0],
                               flat[1, 1, 0, 0]]
    assert order[4] == flat[0, 0, 1, 0]  # then the next input channel
    assert order[12] == flat[0, 0, 0, 1]  # the next output channel last
    assert sorted(order) == list(range(48))
    assert list(schedule.paper_kernel_order((5,))) == list(range(5))
