"""Benchmark helpers whose numbers go into docs/results.md."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import raw_pixel_models
from benchmarks.flop_limit import counted_ops, limit_seconds
from benchmarks.pool_speed import time_keras_rso
from keras_rso import constraints, datasets, models


def test_flops_are_counted_from_static_shapes():
    @tf.function
    def work(x, k, a, b):
        return tf.nn.conv2d(x, k, strides=2, padding="SAME"), tf.matmul(a, b, transpose_b=True)

    spec = [tf.TensorSpec((4, 8, 8, 3)), tf.TensorSpec((3, 3, 3, 5)),
            tf.TensorSpec((6, 7)), tf.TensorSpec((2, 7))]
    ops = counted_ops(work.get_concrete_function(*spec).graph)
    assert sorted(kind for kind, *_ in ops) == ["Conv2D", "MatMul"]
    flops = {kind: f for kind, _, _, f in ops}
    # Output 4 x 4 x 4 x 5, each 3 x 3 x 3 multiply-adds; (6 x 7) @ (7 x 2).
    assert flops["Conv2D"] == 2 * (4 * 4 * 4 * 5) * (3 * 3 * 3)
    assert flops["MatMul"] == 2 * 6 * 2 * 7
    cache = {}
    assert limit_seconds(ops, tf.float32, repeats=2, cache=cache) > 0 and len(cache) == 2


def test_raw_pixel_models_resaves_a_standardized_model_and_refuses_twice(tmp_path):
    # A model that takes standardized MNIST arrays, and its results file.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    _, (x_std, y) = datasets.load_mnist(limit=1)
    recorded = float(np.mean(np.argmax(model.predict(x_std, verbose=0), -1) == y))
    path, results = str(tmp_path / "m.keras"), tmp_path / "r.json"
    model.save(path)
    results.write_text(json.dumps({"test_accuracy": recorded}))

    raw_pixel_models.main(["--dataset", "mnist", path, str(results)])
    resaved = keras.models.load_model(path)
    _, (x_raw, _) = datasets.load_mnist(limit=1, raw=True)
    accuracy = float(np.mean(np.argmax(resaved.predict(x_raw, verbose=0), -1) == y))
    written = json.loads(results.read_text())
    assert written["saved_model_inputs"] == "raw pixels"
    assert written["saved_model_test_accuracy"] == accuracy == pytest.approx(recorded, abs=3e-4)
    with pytest.raises(SystemExit):  # it already takes raw pixels
        raw_pixel_models.main(["--dataset", "mnist", path, str(results)])


def test_pool_speed_times_every_variable_and_the_pool_fills():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, (64,))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    paths = [v.path for v in models.paper_mnist_net().trainable_variables]
    pooled = time_keras_rso(ds, 1, 32)  # (without a pool it is the same loop, minus fills)
    assert sorted(pooled.per_step) == sorted(paths)
    assert all(t > 0 for t in pooled.per_step.values())
    assert all(len(w) == 1 for w in pooled.warm.values())
    assert pooled.fills == 2 and pooled.segments >= 1  # 32 pooled rows, batches of 16
    assert pooled.fill_seconds == pytest.approx(pooled.fill_step * 2 * pooled.segments)
    assert pooled.fill_seconds > 0


def test_plots_say_which_held_out_data_each_run_is_measured_on(tmp_path):
    from benchmarks import plot_results

    def run(method, **args):
        rows = [{"epoch": 1, "val_accuracy": 0.9, "weight_updates": 10},
                {"epoch": 2, "val_accuracy": 0.95, "weight_updates": 20}]
        return {"method": method, "per_cycle": rows,
                "args": {"batch_size": 5000, "weights_per_batch": 1, "cycles": 5, "seed": 1,
                         "learning_rate": 0.01, **args}}

    paper = run("rso", preset="paper", schedule_cycles=50, validation_size=10000)
    older = run("rso", sigma_scale=3.0, final_fraction=0.3333)  # validated on the test set
    assert plot_results.held_out(paper) == "validation"
    assert plot_results.held_out(older) == "test"
    assert plot_results.label(paper) == (
        "RSO, paper preset (batch 5000, K=1, 5 cycles of a 50-cycle schedule, seed 1)")
    assert plot_results.label(older, mixed=True).endswith("seed 1) [test]")
    files = []
    for n, r in enumerate((paper, older)):
        files.append(tmp_path / f"{n}.json")
        files[-1].write_text(json.dumps(r))
    png = tmp_path / "p.png"
    plot_results.main([str(f) for f in files] + ["--reference", "98", "paper",
                                                 "--output", str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):  # a reference needs its label
        plot_results.main([str(files[0]), "--reference", "98", "--output", str(png)])


def test_seed_summary_reports_the_last_cycle_and_when_the_target_was_reached(tmp_path, capsys):
    from benchmarks import seed_summary

    def result(seed, vals, test, complete=True, cpu="a CPU"):
        rows = [{"epoch": i + 1, "seconds": (100.0 + seed) * (i + 1), "val_accuracy": v}
                for i, v in enumerate(vals)]
        r = {"command": f"python examples/mnist_rso.py --seed {seed} --results r_seed{seed}.json",
             "args": {"seed": seed}, "per_cycle": rows, "complete": complete,
             "seconds": rows[-1]["seconds"], "machine": {"cpu": cpu}}
        if complete:
            r["test_accuracy"] = test
        path = tmp_path / f"r{seed}.json"
        path.write_text(json.dumps(r))
        return str(path)

    # Seed 0 reaches 98% at cycle 2 and falls back: the final cycle counts.
    paths = [result(0, [0.97, 0.981, 0.975], 0.978), result(1, [0.96, 0.979, 0.982], 0.984),
             result(2, [0.95, 0.985], None, complete=False)]
    seed_summary.main(paths)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "| 0 | 97.00 / 98.10 / 97.50 | 97.80% | 300 | 2 (200) | a CPU |" in lines
    assert "| 1 | 96.00 / 97.90 / 98.20 | 98.40% | 303 | 3 (303) | a CPU |" in lines
    assert "| 2 | 95.00 / 98.50 (running) | - | 204 | 2 (204) | a CPU |" in lines
    # Mean ± sample sd of the two finished seeds' last cycles and seconds.
    assert lines[-1] == ("| mean ± sd (2 finished) | 97.85 ± 0.49% after the last cycle "
                         "| 98.10 ± 0.42% | 302 ± 2 s (5.0 min) | | |")
    assert "different commands" not in out and "different CPUs" not in out
    seed_summary.main(paths[:2] + [result(3, [0.98], 0.98, cpu="another CPU")])
    assert "different CPUs; their seconds do not average" in capsys.readouterr().out


def test_pool_departure_caches_differ_only_by_the_batchnorm_statistics():
    # The authors' cache (inference-mode BatchNorm on the first images'
    # statistics) and keras_rso's pool (training mode per fill batch) are
    # the same numbers when the fill batch *is* those first images, and
    # differ when it is not.
    from benchmarks.studies import pool_departure
    keras.utils.set_random_seed(0)
    model = models.paper_mnist_net()
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, size=(64, 28, 28, 1)).astype("uint8")
    other = rng.integers(0, 128, size=(64, 28, 28, 1)).astype("uint8")
    pool, authors = pool_departure.caches(model, "conv4", first, first, fill_batch=64)
    assert pool.shape == authors.shape == (64, 14, 14, 16)
    np.testing.assert_allclose(pool, authors, atol=2e-5)
    pool, authors = pool_departure.caches(model, "conv4", other, first, fill_batch=64)
    assert np.max(np.abs(pool - authors)) > 0.1


def test_paper_ablation_reads_changes_and_summarizes_paired_seeds(tmp_path, capsys):
    from benchmarks.studies import paper_ablation
    assert paper_ablation.parse_setting("kernel_order=keras") == {"kernel_order": "keras"}
    assert paper_ablation.parse_setting("weight_decay=0") == {"weight_decay": 0}
    assert paper_ablation.parse_setting("pool_size=0") == {"pool_size": None}
    with pytest.raises(Exception, match="expected KEY=VALUE"):
        paper_ablation.parse_setting("kernel_order")
    runs = [{"variant": v, "seed": s, "validation_accuracy": a}
            for v, s, a in (("paper", 0, 0.60), ("kernel_order=keras", 0, 0.62),
                            ("paper", 1, 0.64), ("kernel_order=keras", 1, 0.61))]
    summary = paper_ablation.summarize(runs)
    assert list(summary) == ["paper", "kernel_order=keras"]
    assert summary["paper"]["mean"] == pytest.approx(0.62)
    assert summary["paper"]["sd"] == pytest.approx(0.0282843, rel=1e-5)
    # Files from two cores combine; a run in both, or other settings, is refused.
    args = {"batch_size": 500, "cycles": 1, "base": [], "validation_size": 10000, "limit": None}
    paths = []
    for i, part in enumerate((runs[:2], runs[2:])):
        paths.append(tmp_path / f"part{i}.json")
        paths[-1].write_text(json.dumps({"args": args, "runs": part}))
    assert paper_ablation.main(["--summarize", *map(str, paths)])["summary"] == summary
    assert "paper                    62.00 ± 2.83% validation over 2 seed(s)" in capsys.readouterr().out
    twice = tmp_path / "twice.json"
    twice.write_text(paths[0].read_text())
    with pytest.raises(SystemExit):
        paper_ablation.main(["--summarize", str(paths[0]), str(twice)])
    assert "runs appear twice: kernel_order=keras seed 0, paper seed 0" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"args": {**args, "batch_size": 5000}, "runs": runs[2:]}))
    with pytest.raises(SystemExit):
        paper_ablation.main(["--summarize", str(paths[0]), str(other)])
    assert "the files ran different settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        paper_ablation.main(["--changes-only"])
    assert "--changes-only needs at least one --change" in capsys.readouterr().err


def test_fit_first_calls_separates_the_traced_call_from_the_later_ones():
    from benchmarks.fit_first_calls import FitTimes
    import keras_rso

    original = (keras_rso.RSOModel.fit, keras_rso.RSOModel.make_train_function)
    times = FitTimes()
    times.install()
    try:
        keras.utils.set_random_seed(0)
        trainer = keras_rso.RSOModel(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=4, seed=0),
                        loss="sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 2, 32)
        times.key = "fit"
        trainer.fit(x, y, batch_size=8, epochs=2, verbose=0)  # 10 weights: 3 steps a cycle
    finally:
        times.uninstall()
    assert (keras_rso.RSOModel.fit, keras_rso.RSOModel.make_train_function) == original
    row = times.per_key["fit"]
    assert row["fits"] == 1 and row["later_calls"] == 2 * 3 - 1
    assert 0 < row["later_call_seconds"] < row["first_call_seconds"]
    assert row["first_call_seconds"] + row["later_call_seconds"] < row["fit_seconds"]
    assert times.totals()["fits"] == 1


@pytest.mark.parametrize("argv", [["--paths", "fast,pair"], ["--paths", "fast,slow", "--binary"]])
def test_graph_speed_refuses_paths_it_cannot_time(argv, capsys):
    from benchmarks import graph_speed

    with pytest.raises(SystemExit) as exit_info:
        graph_speed.main(argv)
    assert exit_info.value.code == 2
    assert "--paths takes fast, full and pair (pair with --binary)" in capsys.readouterr().err


def test_trajectory_average_votes_binary_kernels_and_averages_real_weights():
    from benchmarks.studies.trajectory_average import averaged, position

    binary = keras.Variable(np.ones((2, 2), "float32"))
    binary.constraint = constraints.Discrete.binary()  # as `Layer.add_weight` sets it
    real = keras.Variable(np.zeros(2, "float32"))
    snaps = [[np.array([[1, 1], [-1, 1]], "float32"), np.array([0.0, 1.0], "float32")],
             [np.array([[1, -1], [-1, -1]], "float32"), np.array([1.0, 1.0], "float32")],
             [np.array([[-1, -1], [1, 1]], "float32"), np.array([2.0, 4.0], "float32")]]
    votes, means = averaged(snaps, [binary, real])
    np.testing.assert_array_equal(votes, [[1, -1], [-1, 1]])  # majority of three
    np.testing.assert_allclose(means, [1.0, 2.0])
    # Two snapshots that disagree tie: the newer value stays.
    votes, _ = averaged(snaps[1:], [binary, real])
    np.testing.assert_array_equal(votes, [[-1, -1], [1, 1]])
    assert position("x/seed0_11_124.weights.h5") == (11, 124)
    with pytest.raises(ValueError, match="_<epoch>_<batch>"):
        position("latest.weights.h5")


def test_half_precision_copies_the_model_and_reads_its_decisions():
    from benchmarks.studies import half_precision

    keras.utils.set_random_seed(0)
    model = models.mnist_paper_net(input_shape=(8, 8, 1), filters=4)
    copy = half_precision.half_copy(model, "mixed_bfloat16")
    assert [l.compute_dtype for l in copy.layers[:-1]] == ["bfloat16"] * (len(copy.layers) - 1)
    assert copy.layers[-1].compute_dtype == "float32"
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), copy.get_weights()))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(64, 8, 8, 1)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, 64))
    before = [v.numpy() for v in model.trainable_variables + copy.trainable_variables]
    out = half_precision.decisions(model, {"mixed_bfloat16": copy}, x, y, weights=2,
                                   sigma_scale=1.0, seed=0)
    kernels = [v.path for v in model.trainable_variables if v.path.endswith("kernel")]
    assert out["trials"] == 2 * len(kernels)
    assert sorted({r["variable"] for r in out["rows"]}) == sorted(kernels)
    # Every trial restored the weight it changed (training-mode passes do
    # move the BatchNormalization statistics, which trials do not read).
    after = [v.numpy() for v in model.trainable_variables + copy.trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert 0.5 <= out["mixed_bfloat16"]["agreement"] <= 1.0


def test_fused_batchnorm_study_normalizes_each_candidate_like_the_tails():
    from benchmarks.studies.fused_batchnorm import compare

    # Two candidates of 8 images: the fused kernel, called on each half,
    # normalizes like the tails' moments, up to rounding.
    r = compare(batch=8, size=3, channels=4, repeats=2)
    assert r["shape"] == [16, 3, 3, 4]
    assert r["moments_ms"] > 0 and r["fused_ms"] > 0
    assert r["max_abs_difference"] < 1e-4


def test_importance_sampling_weights_the_hard_images_without_bias():
    from benchmarks.studies import importance_sampling as study
    rng = np.random.default_rng(0)
    n = 400
    current = np.where(np.arange(n) < 40, 2.0, 0.01)  # 40 hard images, the rest easy
    q = study.loss_probabilities(current, power=1.0, uniform_share=0.2)
    assert q.sum() == pytest.approx(1.0) and q.min() >= 0.2 / n  # weights bounded by 1/0.2
    # The candidate's loss moves only on the hard images: a weighted batch
    # sees that difference with far less noise than a uniform one.
    diff = np.where(current > 1, rng.normal(-0.01, 0.05, n), 0.0)
    assert study.variance_gain(diff, q) > 3
    assert study.variance_gain(diff, study.loss_probabilities(current, 1.0, 1.0)) == pytest.approx(1.0)
    # Options w, w + dw, w - dw on a decision and a held-out batch: w + dw
    # better everywhere. Weighted batches of 20 find it more often than
    # uniform ones, and the whole batch always does.
    decision = np.stack([current, current + diff - 0.002 * (current > 1), current + 0.01])[None]
    held_out = decision.copy()
    uniform = study.monte_carlo(decision, held_out, None, 20, 200, rng)
    weighted = study.monte_carlo(decision, held_out, q, 20, 200, rng)
    assert weighted["agreement"] > uniform["agreement"]
    assert study.monte_carlo(decision, held_out, None, n, 3, rng)["agreement"] == 1.0
    out = study.analyse(decision, held_out, [20], [1.0], [0.2], draws=5, seed=0)
    assert out["current_loss"]["share_of_loss_in_top_10pct"] > 0.9
    assert set(out["proposals"]) == {"power1_uniform0.2"}
