"""Smoke runs of the example scripts, as a user runs them (tiny --limit)."""

import argparse
import json
import importlib
import os
import pathlib
import runpy
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from examples.experiment import SPEED_SETTINGS, accuracy as scored_accuracy, add_rso_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]


ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


# A few seconds of RSO on the paper's MNIST net: 128 images, 12 steps a cycle.
_TINY_MNIST = ["--limit", "128", "--validation-size", "32", "--batch-size", "4",
               "--weights-per-batch", "1024", "--test-limit", "500", "--verbose", "0"]


def _run_here(script, *args):
    """Runs `script` as `python script args` does (`__main__`, `sys.argv`),
    inside this process: TensorFlow is already imported, which saves each
    run the seconds a new process takes to import it. (A run that must be a
    process of its own, to be killed, goes through `_kill_after_first_backup`.)"""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [script, *args])
        runpy.run_path(str(ROOT / script), run_name="__main__")


def _scripts():
    """Every runnable script of examples/, benchmarks/ and docs/."""
    found = sorted(ROOT.glob("examples/*.py")) + sorted(ROOT.glob("benchmarks/**/*.py"))
    found.append(ROOT / "docs" / "build_api.py")
    return [p.relative_to(ROOT).as_posix() for p in found
            if 'if __name__ == "__main__"' in p.read_text()]


def test_every_script_has_help(capsys):
    # In-process (TF is already imported): `--help` prints usage and exits 0.
    scripts, failed = _scripts(), []
    assert "examples/mnist_rso.py" in scripts and "benchmarks/studies/trial_noise.py" in scripts
    for script in scripts:
        try:
            _run_here(script, "--help")
            failed.append((script, "did not exit"))
        except SystemExit as exit_info:
            out = capsys.readouterr().out
            if exit_info.code != 0 or not ("usage:" in out or "same_weights" in script and
                                             "PYTHONPATH=" in out):
                failed.append((script, exit_info.code, out[:200]))
    assert not failed


def test_trial_noise_scores_a_decision_on_the_batches_it_did_not_see(monkeypatch):
    trial_noise = importlib.import_module("benchmarks.studies.trial_noise")
    # One weight, 4 batches. Loss at w is 1.0 everywhere; w + dw looks better
    # on batch 0 only (0.9) and is worse on the others (1.2); w - dw is 1.05.
    lucky = np.array([[[1.05] * 4, [1.0] * 4, [0.9, 1.2, 1.2, 1.2]]])
    gains = trial_noise.held_out_gains(lucky, tolerances=[0.2])
    # Batch 0 takes w + dw, which costs 0.2 on batches 1-3; the others keep w.
    assert gains["held_out_gain_tol0_x1"] == pytest.approx(0.2 / 4)
    assert gains["held_out_gain_tol0.2_x1"] == 0.0  # 0.9 is not 20% below 1.0
    assert gains["held_out_gain_tol0_x2"] == 0.0  # pairs of batches keep w
    # A change that is better on every batch gains on held-out data too.
    real = np.array([[[1.05] * 4, [1.0] * 4, [0.9] * 4]])
    assert trial_noise.held_out_gains(real, [])["held_out_gain_tol0_x1"] == pytest.approx(-0.1)
    assert trial_noise.decide([1.0, 1.0, 1.0]) == 1  # ties keep w


def test_trial_noise_scores_logits_as_logits_and_a_flip_once():
    # A net that ends in logits (the binary net, `paper_mnist_net`) is
    # scored with from_logits=True, one that ends in a softmax without; a
    # binary trial's two slots hold the one flip.
    trial_noise = importlib.import_module("benchmarks.studies.trial_noise")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.integers(0, 3, size=16)
    order = np.random.default_rng(0).permutation(16)
    for activation, from_logits in ((None, True), ("softmax", False)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation=activation)])
        out = trial_noise.measure(model, x, y, 1.0, weights=2, batches=2, batch_size=8, seed=0,
                                  flip=True)
        (row,) = out.values()
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        expected = [float(loss(y[i], model(x[i], training=True))) for i in np.split(order, 2)]
        for minus, base, plus in row["losses"]:
            np.testing.assert_allclose(base, expected, rtol=1e-6)
            assert minus == plus and minus != base


def _scalars(logdir):
    tags = {}
    for path in pathlib.Path(logdir).rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


def _backed_up_epochs(backup):
    try:
        return json.loads((backup / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):  # not there yet, or being written
        return 0


def _kill_after_first_backup(script, args, backup, env):
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:
        while _backed_up_epochs(backup) < 1:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "no backup after 300 s"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no clean-up runs, as when a machine goes away
        proc.wait()


def test_mnist_example_end_to_end_through_a_kill_and_resume(tmp_path, monkeypatch, capsys):
    results, saved, logdir = tmp_path / "r.json", tmp_path / "m.keras", tmp_path / "logs"
    backup = tmp_path / "backup"
    # The paper's network at 4 channels (854 weights), 2 cycles on 2048 images,
    # the first on batches of 32 and the second on 64 (--batch-schedule: one
    # fit each), killed once cycle 1 is backed up, then the same command
    # again: it skips the first fit and ends with the weights of a run never
    # interrupted. (Bit-exact resume inside a fit is tested on the API in
    # test_resume.py, with the layer-input pool in test_pool.py.)
    # Small batches: a trial's cost grows with the batch, and tracing the
    # step already takes much of each process's time.
    # Validation on 512 images: 10,000 after each cycle cost more than it checks.
    # Backups every 3 steps (a cycle is 7): none falls on the first fit's end.
    common = ["--batch-schedule", "32:1,64:1", "--limit", "2048", "--filters", "4",
              "--validation-size", "512", "--weights-per-batch", "128", "--verbose", "2",
              "--order", "paper"]
    args = [*common, "--results", str(results), "--save", str(saved), "--logdir", str(logdir),
            "--backup-dir", str(backup), "--backup-every", "3"]
    # Results files record the speed settings they ran with.
    env = {k: v for k, v in ENV.items() if k not in SPEED_SETTINGS}
    env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    _kill_after_first_backup("examples/mnist_rso.py", args, backup, env)
    # The second run in this process (the killed one had to be a process of
    # its own), under the same environment variables.
    for name in SPEED_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "true")
    _run_here("examples/mnist_rso.py", *args)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "Epoch 1/2" not in out, out  # resumed, not restarted
    assert not backup.exists()  # removed when training ended
    # (Its test score is not read: 256 test images.)
    _run_here("examples/mnist_rso.py", *common, "--test-limit", "256",
              "--save", str(tmp_path / "whole.keras"))
    whole = keras.models.load_model(tmp_path / "whole.keras").get_weights()
    resumed = keras.models.load_model(saved).get_weights()
    assert len(whole) == len(resumed)
    assert all(np.array_equal(a, b) for a, b in zip(whole, resumed))

    r = json.loads(results.read_text())
    assert [row["batch_size"] for row in r["per_cycle"]] == [32, 64]
    assert r["args"]["cycles"] == 2
    n = r["trials_per_cycle"]
    assert r["method"] == "rso" and n == 6 * 4 * 2 + 36 + 5 * 144 + 50
    # Rows of both processes; counters continue from the restored state.
    assert [row["epoch"] for row in r["per_cycle"]] == [1, 2]
    assert [row["trials"] for row in r["per_cycle"]] == [n, 2 * n]
    assert r["weight_updates"] == r["per_cycle"][1]["weight_updates"] > r["per_cycle"][0]["weight_updates"]
    assert r["per_cycle"][0]["seconds"] < r["per_cycle"][1]["seconds"]
    # The last cycle's validation pass scored the final model as the final one did.
    assert r["per_cycle"][1]["val_accuracy"] == r["validation_accuracy"]
    # Chance is 0.1; on the 10,000 test images its standard error is 0.003.
    assert r["test_accuracy"] > 0.15
    assert "mnist_rso.py" in r["command"] and r["complete"] is True
    assert r["args"]["order"] == r["optimizer"]["order"] == "paper"
    # Speeds differ several-fold between CPUs, so results name theirs.
    assert r["machine"]["cpu"] and r["machine"]["avx512"] in (True, False, None)
    assert r["machine"]["settings"] == {"TF_CPU_ALLOCATOR_USE_BFC": "true"}  # as run above
    model = keras.models.load_model(saved)
    assert model.count_params() == n + 6 * 4 * 2  # + BN moving statistics
    # It takes raw pixels: its first layer is the loaders' standardization.
    from keras_rso import datasets
    _, (x_raw, y_raw) = datasets.load_mnist(raw=True)
    _, (x_std, _) = datasets.load_mnist()
    np.testing.assert_allclose(model.layers[0](x_raw[:100]), x_std[:100], atol=2e-5)
    accuracy = scored_accuracy(model, x_raw, y_raw)  # as the script scored it
    assert accuracy == r["saved_model_test_accuracy"]
    assert accuracy == pytest.approx(r["test_accuracy"], abs=3e-4)
    # Every row holds each variable's accept rate in that cycle, and they
    # add up to the cycle's accepted changes.
    sizes = {v.path: int(np.prod(v.shape)) for v in model.trainable_variables}
    previous = 0
    for row in r["per_cycle"]:
        # Keys are the trained model's variable paths, which start with the
        # model's name; the reloaded model's paths do not.
        rates = {k.split("/", 1)[1]: a for k, a in row["accept_rate_per_variable"].items()}
        assert set(rates) == set(sizes) and all(0.0 <= a <= 1.0 for a in rates.values())
        accepted = sum(rates[p] * sizes[p] for p in sizes)
        assert accepted == pytest.approx(row["weight_updates"] - previous, abs=1e-3)
        previous = row["weight_updates"]
    tags = _scalars(logdir)
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_accept_rate", "epoch_sigma_scale",
                "epoch_weight_updates", "evaluation_accuracy_vs_iterations"):
        assert tag in tags, sorted(tags)
    assert any(t.startswith("accept_rate/rso_mnist_net/block1_conv") for t in tags)


def test_cifar_example_end_to_end(tmp_path):
    results, saved = tmp_path / "c.json", tmp_path / "c.keras"
    # Scored on 1,000 validation and 2,000 test images: the 5,000 and 10,000
    # of a real run took longer than the training (the default validation
    # size is checked without training, below).
    _run_here("examples/cifar10_rso.py", "--cycles", "1", "--limit", "300", "--filters", "4,4,4",
              "--weights-per-batch", "256", "--batch-size", "16", "--verbose", "0",
              "--validation-size", "1000", "--test-limit", "2000",
              "--output-passes", "2", "--results", str(results), "--save", str(saved))
    r = json.loads(results.read_text())
    # Every weight once, then the Dense 4->10 classifier twice more.
    searched = sum(int(np.prod(v.shape))
                   for v in keras.models.load_model(saved).trainable_variables)
    assert r["per_cycle"][0]["trials"] == r["trials_per_cycle"] == searched + 2 * 50
    assert r["args"]["output_passes"] == 2
    # The saved model takes raw pixels (its first layer standardizes them);
    # its recorded accuracy on the raw test images is what it gives, and
    # agrees with the trained model's on the standardized ones up to images
    # whose top two scores swap under float32 rounding.
    from keras_rso import datasets
    _, (x_test, y_test) = datasets.load_cifar10(raw=True)
    model = keras.models.load_model(saved)
    # As the script scored it: the first 2,000 test images.
    accuracy = scored_accuracy(model, x_test[:2000], y_test[:2000])
    assert r["saved_model_inputs"] == "raw pixels"
    assert r["test_size"] == 2000 and r["validation_size"] == 1000
    assert accuracy == r["saved_model_test_accuracy"]
    assert accuracy == pytest.approx(r["test_accuracy"], abs=1e-3)
    # The cycle's validation pass scored the final model as the final one did.
    assert r["per_cycle"][-1]["val_accuracy"] == r["validation_accuracy"]


def _handed_to_run_rso(monkeypatch, script: str, argv: list) -> dict:
    """What `examples/<script>.py` hands to the training loop (`run_rso`),
    with the model built: the network, data, flags, loss, raw-pixel saving."""
    module = importlib.import_module(f"examples.{script}")
    handed = {}

    def capture(build, data, args, loss, raw_pixels):
        handed.update(model=build(), data=data, args=args, loss=loss, raw_pixels=raw_pixels)

    monkeypatch.setattr(module, "run_rso", capture)
    module.main(argv)
    return handed


def test_cifar_example_trains_the_papers_residual_net_with_chosen_settings(monkeypatch):
    # --net paper: the authors' network (raw pixels in, logits out, their
    # summed float64 loss) under the flags' own search settings. A cycle of
    # its 57,104 weights takes minutes even on tiny data, so this checks what
    # the script hands to `run_rso` (the training loop is the same as for
    # every other net).
    handed = _handed_to_run_rso(monkeypatch, "cifar10_rso", [
        "--net", "paper", "--weights-per-batch", "64", "--batch-size", "512",
        "--sigma-rule", "he", "--order", "random"])
    model, args = handed["model"], handed["args"]
    assert model.name == "paper_cifar10_net"
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 57104
    assert (args.weights_per_batch, args.batch_size, args.order) == (64, 512, "random")
    # The last 5,000 training images are held out; the test set is whole.
    assert (args.validation_size, args.test_limit) == (5000, None)
    assert handed["loss"].get_config()["from_logits"] and handed["loss"].dtype == "float64"
    # Raw pixels go in (the model subtracts the training split's mean), so
    # the saved model needs no standardization in front of it.
    (x_train, _), _ = handed["data"]
    assert x_train.max() > 1 and handed["raw_pixels"] is None


def test_mnist_example_trains_the_papers_net_with_chosen_settings(monkeypatch):
    # --net paper without --preset: the authors' MNIST net under the
    # validated search settings (the networks side by side, issue 24).
    handed = _handed_to_run_rso(monkeypatch, "mnist_rso", [
        "--net", "paper", "--batch-size", "2048", "--sigma-scale", "3", "--order", "random",
        "--balance-sigma"])
    model, args = handed["model"], handed["args"]
    assert model.name == "paper_mnist_net"
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 12016
    assert (args.weights_per_batch, args.batch_size, args.order) == (64, 2048, "random")
    assert args.preset is None and args.balance_sigma
    assert handed["loss"].get_config()["from_logits"] and handed["loss"].dtype == "float64"
    (x_train, _), _ = handed["data"]
    assert x_train.max() > 1 and handed["raw_pixels"] is None
    # Without --net: keras_rso's variant on standardized arrays, saved
    # behind the standardization.
    handed = _handed_to_run_rso(monkeypatch, "mnist_rso", ["--batch-size", "2048"])
    assert handed["model"].name != "paper_mnist_net" and handed["raw_pixels"] is not None


def _optimizer_config(monkeypatch, script: str, argv: list) -> dict:
    """The config of the RSO that `examples/<script>.py` compiles, caught
    where the fit would begin (nothing is trained)."""
    module = importlib.import_module(f"examples.{script}")

    class Caught(Exception):
        pass

    def catch(trainer, *_, **__):
        raise Caught(trainer.optimizer.get_config())

    # The training loop's module, as the script imported it.
    monkeypatch.setattr(sys.modules[module.run_rso.__module__], "_fit", catch)
    with pytest.raises(Caught) as caught:
        module.main(argv)
    return caught.value.args[0]


def test_pool_size_flag_reaches_the_optimizer(monkeypatch):
    limit = ["--limit", "600", "--validation-size", "100"]
    assert _optimizer_config(monkeypatch, "mnist_rso", limit)["pool_size"] is None
    assert _optimizer_config(monkeypatch, "mnist_rso", [*limit, "--pool-size", "256"]
                             )["pool_size"] == 256
    # --preset paper pools the whole training split (the 600 of --limit), as
    # the authors' code does.
    paper = _optimizer_config(monkeypatch, "mnist_rso", [*limit, "--preset", "paper"])
    assert (paper["pool_size"], paper["weights_per_batch"], paper["sigma_rule"]) == (600, 1, "he")


def test_mnist_fastest_preset_is_the_validated_command(monkeypatch):
    # --preset fastest hands the training loop exactly the flags of the
    # validated runs' command (docs/results.md), with the sigma schedule's
    # length fixed at their 4 cycles, so that fewer --cycles stop early on
    # the same schedule.
    validated = ["--cycles", "4", "--batch-size", "1024", "--sigma-scale", "3",
                 "--final-fraction", "0.3333", "--balance-sigma", "--order", "random",
                 "--step-rule", "parabolic", "--pool-after", "1,3", "--sampling", "loss",
                 "--seed", "1", "--validation-size", "10000"]
    preset = _handed_to_run_rso(monkeypatch, "mnist_rso", ["--preset", "fastest", "--seed", "1"])
    explicit = _handed_to_run_rso(monkeypatch, "mnist_rso", validated)
    a, b = vars(preset["args"]), vars(explicit["args"])
    assert (a.pop("preset"), b.pop("preset")) == ("fastest", None)
    assert (a.pop("schedule_cycles"), b.pop("schedule_cycles")) == (4, None)
    assert a == b and a["pool_after"] == (1, 3) and a["sampling"] == "loss"
    assert preset["model"].name == explicit["model"].name == "rso_mnist_net"
    pooled = [layer.name for layer in preset["model"].layers
              if isinstance(layer, keras.layers.AveragePooling2D)]
    assert pooled == ["pool1", "pool3"]
    assert preset["loss"] == explicit["loss"] and preset["raw_pixels"] is not None
    shorter = _handed_to_run_rso(monkeypatch, "mnist_rso", ["--preset", "fastest", "--cycles", "2"])
    assert (shorter["args"].cycles, shorter["args"].schedule_cycles) == (2, 4)


@pytest.mark.parametrize("argv, message", [
    (["--batch-schedule", "512:2,2048"], "expected BATCH:CYCLES pairs"),
    (["--batch-schedule", "512:0"], "batch sizes and cycles must be >= 1"),
    (["--batch-schedule", "512:2,2048:3", "--cycles", "4"],
     "--batch-schedule runs 5 cycles but --cycles is 4"),
    (["--batch-schedule", "512:2", "--batch-size", "256"], "drop --batch-size"),
    (["--batch-schedule", "512:2", "--preset", "fastest"],
     "--preset fastest fixes the batch size"),
    (["--batch-schedule", "512:2", "--pool-size", "1000"], "cannot be combined with --pool-size"),
    (["--batch-schedule", "512:2", "--dataset", "tfds:mnist"], "comes batched at --batch-size"),
])
def test_batch_schedule_rejects_what_contradicts_it(argv, message, capsys):
    module = importlib.import_module("examples.mnist_rso")
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err, err[-2000:]


def test_gradient_baselines_refuse_a_batch_schedule():
    # --batch-schedule is an RSO flag; the STE baseline must not drop it silently.
    module = importlib.import_module("examples.binary_mnist")
    with pytest.raises(ValueError, match="--batch-schedule applies to --method rso"):
        module.main(["--method", "ste", "--batch-schedule", "512:1", "--limit", "64"])


@pytest.mark.parametrize("script, argv, message", [
    ("cifar10_rso.py", ["--preset", "paper", "--net", "cifar10_net"],
     "--preset paper trains the paper's network"),
    ("cifar10_rso.py", ["--net", "paper", "--filters", "8,8,8"],
     "--net paper has the paper's channels"),
    ("mnist_rso.py", ["--net", "paper", "--filters", "8"], "--net paper has the paper's channels"),
    ("mnist_rso.py", ["--preset", "fastest", "--batch-size", "2048"],
     "--preset fastest fixes --batch-size"),
    ("mnist_rso.py", ["--preset", "fastest", "--sampling", "uniform"],
     "--preset fastest fixes --sampling"),
    ("mnist_rso.py", ["--preset", "fastest", "--step-rule", "argmin", "--order", "paper"],
     "--preset fastest fixes --order, --step-rule"),
    ("mnist_rso.py", ["--preset", "fastest", "--net", "paper"],
     "--preset fastest trains mnist_paper_net"),
    ("mnist_rso.py", ["--preset", "fastest", "--filters", "8"],
     "--preset fastest trains mnist_paper_net"),
    ("mnist_rso.py", ["--preset", "fastest", "--pool-after", "2,4"],
     "--preset fastest trains mnist_paper_net"),
    ("mnist_rso.py", ["--net", "paper", "--pool-after", "1,3"],
     "--net paper pools where the authors do"),
    ("mnist_rso.py", ["--preset", "paper", "--pool-after", "1,3"],
     "--net paper pools where the authors do"),
    ("mnist_rso.py", ["--pool-after", "2,7"], "--pool-after: pool_after names convolutions 1 to 6"),
    ("mnist_rso.py", ["--pool-after", "1;3"], "expected convolution numbers separated by commas"),
    ("cifar10_rso.py", ["--preset", "fastest"], "invalid choice: 'fastest'"),
    ("mnist_rso.py", ["--freeze-after", "block1_conv"], "expected LAYER:CYCLE pairs"),
    ("mnist_rso.py", ["--preset", "fastest", "--freeze-after", "block1_conv:3"],
     "--preset fastest fixes --freeze-after"),
])
def test_examples_reject_malformed_or_contradicting_flags(script, argv, message, capsys):
    # In-process: the flags are refused before any data is read.
    module = importlib.import_module(f"examples.{script[:-3]}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err, err[-2000:]


def test_binary_mnist_exports_a_binary_model_that_reloads_and_goes_on(tmp_path, capsys):
    # RSO on the paper's net with every kernel in {-1, +1}: the saved model
    # holds only those values, reloads (keras_rso imported) and predicts
    # identically. (The script's straight-through baseline is plain Keras
    # through the same `run_gradient` as the sign-activation test's SGD.)
    results, saved = tmp_path / "b.json", tmp_path / "b.keras"
    _run_here("examples/binary_mnist.py", "--cycles", "1", "--limit", "128",
              "--validation-size", "32", "--batch-size", "4", "--weights-per-batch", "1024",
              "--test-limit", "500",
              "--verbose", "0", "--results", str(results), "--save", str(saved))
    r = json.loads(results.read_text())
    assert r["trials_per_cycle"] == 12016 and r["weight_updates"] > 0
    model = keras.models.load_model(saved)
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    assert len(kernels) == 7
    for v in kernels:
        assert set(np.unique(v.numpy())) == {-1.0, 1.0}, v.path
    from keras_rso import datasets
    _, (x_test, _) = datasets.load_mnist(raw=True)
    again = keras.models.load_model(saved)
    np.testing.assert_array_equal(model.predict(x_test[:256], verbose=0),
                                  again.predict(x_test[:256], verbose=0))
    # --initial-weights M --initial-cycle 1: a second run goes on from the
    # saved model and runs cycle 2 of the schedules only.
    common = _TINY_MNIST
    second = tmp_path / "second.json"
    _run_here("examples/binary_mnist.py", "--cycles", "2", "--initial-weights", str(saved),
              "--initial-cycle", "1", *common, "--results", str(second))
    r = json.loads(second.read_text())
    assert [row["epoch"] for row in r["per_cycle"]] == [2]
    # Cycle 2 of a 2-cycle schedule annealed to 0.1x: its sigma scale.
    assert r["per_cycle"][0]["sigma_scale"] == pytest.approx(0.1)
    assert r["args"]["initial_weights"] == str(saved)
    for argv, message in [(["--initial-cycle", "1"], "give --initial-weights too"),
                          (["--initial-weights", str(saved), "--initial-cycle", "2"],
                           "leaves nothing to run")]:
        with pytest.raises(SystemExit) as exit_info:
            _run_here("examples/binary_mnist.py", "--cycles", "2", *argv, *common)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err, err[-2000:]
    with pytest.raises(ValueError, match="--initial-weights applies to --method rso"):
        _run_here("examples/binary_mnist.py", "--method", "ste", "--epochs", "1",
                  "--initial-weights", str(saved), *common)
    # --freeze-discrete: the same warm start searches only BatchNormalization's
    # gamma and beta; every binary kernel stays bit-identical.
    frozen, frozen_results = tmp_path / "frozen.keras", tmp_path / "frozen.json"
    _run_here("examples/binary_mnist.py", "--cycles", "2", "--initial-weights", str(saved),
              "--initial-cycle", "1", "--freeze-discrete", *common,
              "--results", str(frozen_results), "--save", str(frozen))
    r = json.loads(frozen_results.read_text())
    assert r["trials_per_cycle"] == 6 * 2 * 16 and r["weight_updates"] > 0
    after = {v.path: v.numpy() for v in keras.models.load_model(frozen).weights}
    before = {v.path: v.numpy() for v in model.weights}
    for path, value in before.items():
        if path.endswith("kernel"):
            np.testing.assert_array_equal(after[path], value, err_msg=path)
    assert any(not np.array_equal(after[p], before[p]) for p in before if p.endswith("gamma"))
    with pytest.raises(ValueError, match="has no variable with a Discrete constraint"):
        _run_here("examples/mnist_rso.py", "--freeze-discrete", "--cycles", "1", *common)


def test_freeze_after_stops_searching_a_layer_from_the_next_cycle(tmp_path):
    results = tmp_path / "f.json"
    _run_here("examples/mnist_rso.py", "--cycles", "2", "--freeze-after", "block1_conv:1",
              *_TINY_MNIST, "--results", str(results))
    rows = json.loads(results.read_text())["per_cycle"]
    first = "rso_mnist_net/block1_conv/kernel"
    # Accept rates list the variables with trials in the cycle.
    assert first in rows[0]["accept_rate_per_variable"]
    assert first not in rows[1]["accept_rate_per_variable"]
    assert "rso_mnist_net/block2_conv/kernel" in rows[1]["accept_rate_per_variable"]


def test_sign_activations_train_under_rso_and_not_under_sgd(tmp_path):
    # The sign's gradient is zero: SGD leaves the hidden kernel exactly where
    # it was; RSO moves it.
    changes = {}
    for method, extra in (("rso", ["--cycles", "1", "--weights-per-batch", "512",
                                   "--batch-size", "512"]),
                          ("sgd", ["--epochs", "1", "--batch-size", "128"])):
        results = tmp_path / f"{method}.json"
        _run_here("examples/sign_activations.py", "--method", method, "--units", "4",
                  "--limit", "2048", "--validation-size", "512", "--verbose", "0",
                  "--results", str(results), *extra)
        changes[method] = json.loads(results.read_text())["hidden_kernel_max_change"]
    assert changes["sgd"] == 0.0 and changes["rso"] > 0.0, changes


def test_imbalanced_objective_reports_balanced_error_and_f1(tmp_path):
    results = tmp_path / "r.json"
    _run_here("examples/imbalanced_objective.py", "--units", "8", "--cycles", "1",
              "--weights-per-batch", "64", "--batch-size", "1024", "--limit", "8192",
              "--smoothing", "0.01", "--validation-size", "2048", "--verbose", "0",
              "--results", str(results))
    objective = json.loads(results.read_text())["objective"]
    # Always answering "rest" scores a balanced error of 0.5.
    assert objective["validation"]["balanced_error"] < 0.45, objective
    # It finds some of the positives (F1 of "always rest" is 0), at the arg-max.
    assert objective["test"]["f1"] > 0.0 and objective["threshold"] == 0.5


def test_compare_sgd_and_plot(tmp_path):
    results, png = tmp_path / "s.json", tmp_path / "p.png"
    # Validation on 512 images, test on 1,000: scoring 10,000 cost more than
    # the training it checks.
    _run_here("examples/compare_sgd.py", "--epochs", "2", "--limit", "2048", "--verbose", "0",
              "--validation-size", "512", "--test-limit", "1000", "--decay", "cosine",
              "--results", str(results))
    r = json.loads(results.read_text())
    assert r["args"]["decay"] == "cosine"
    # Training accuracy: 32 SGD steps are too few for BN's moving averages.
    accs = [row["accuracy"] for row in r["per_cycle"]]
    assert len(accs) == 2 and accs[-1] > 0.3  # chance: 0.1
    assert r["per_cycle"][1]["weight_updates"] == 2 * r["per_cycle"][0]["weight_updates"]
    importlib.import_module("benchmarks.plot_results").main([str(results), "--output",
                                                              str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_compare_sgd_trains_the_papers_net_as_the_gradient_reference(tmp_path):
    # The gradient reference for the paper's CIFAR-10 net: the same model
    # (logits out), Adam on the mean cross-entropy.
    results, saved = tmp_path / "a.json", tmp_path / "a.keras"
    _run_here("examples/compare_sgd.py", "--dataset", "cifar10", "--net", "paper",
              "--optimizer", "adam", "--learning-rate", "0.003", "--epochs", "2",
              "--limit", "1024", "--validation-size", "512", "--batch-size", "64",
              "--test-limit", "1000",
              "--verbose", "0", "--results", str(results), "--save", str(saved))
    r = json.loads(results.read_text())
    assert r["model"] == "paper_cifar10_net" and r["parameters"] == 57104
    assert r["test_size"] == 1000
    assert r["per_cycle"][-1]["accuracy"] > 0.2, r["per_cycle"]  # chance: 0.1
    assert r["per_cycle"][-1]["loss"] < r["per_cycle"][0]["loss"]


def test_test_limit_must_be_positive(capsys):
    parser = argparse.ArgumentParser()
    add_rso_flags(parser, cycles=5, batch_size=1024, weights_per_batch=64)
    assert parser.parse_args([]).test_limit is None
    assert parser.parse_args(["--test-limit", "7"]).test_limit == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["--test-limit", "0"])
    assert "--test-limit: must be >= 1" in capsys.readouterr().err


def test_backup_every_must_not_be_negative(capsys):
    parser = argparse.ArgumentParser()
    add_rso_flags(parser, cycles=5, batch_size=1024, weights_per_batch=64)
    assert parser.parse_args(["--backup-every", "5"]).backup_every == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["--backup-every", "-1"])
    assert "--backup-every: must be >= 0" in capsys.readouterr().err


def test_weight_stats_channel_spread_is_max_over_min_channel_std(monkeypatch):
    weight_stats = importlib.import_module("benchmarks.studies.weight_stats")
    conv = keras.layers.Conv2D(2, 3, use_bias=False)
    model = keras.Sequential([keras.Input((5, 5, 1)), conv, keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    # Output channel 0 alternates +-1 (std 1), channel 1 +-3 (std 3).
    signs = np.where(np.arange(9) % 2 == 0, 1.0, -1.0).reshape(3, 3, 1)
    conv.kernel.assign(np.stack([signs, 3 * signs], axis=-1).astype("float32"))
    spreads = weight_stats.channel_spreads(model)
    # Only the convolution kernel: the Dense kernel has no channel axis to compare.
    assert list(spreads.values()) == [pytest.approx(3.0)]


def test_last_cycle_ablation_reverts_one_layer_and_restores_everything(monkeypatch):
    ablation = importlib.import_module("benchmarks.studies.last_cycle_ablation")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a"),
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.Dense(1, name="b")])
    groups = ablation.layer_groups(model)
    assert list(groups) == ["a", "bn", "b"]
    final = [v.numpy() for v in model.variables]
    start = [np.full(v.shape, 7.0, "float32") for v in model.trainable_variables]
    with ablation.reverted(model, start, groups["a"]):
        model.get_layer("bn").moving_mean.assign([5.0, 5.0])
        np.testing.assert_array_equal(model.get_layer("a").kernel.numpy(), 7.0)
        # The other layers keep their final weights.
        np.testing.assert_array_equal(model.get_layer("b").kernel.numpy(), final[-2])
    for v, value in zip(model.variables, final):
        np.testing.assert_array_equal(v.numpy(), value)


def test_last_cycle_ablation_scores_validation_without_reading_the_test_set(monkeypatch):
    ablation = importlib.import_module("benchmarks.studies.last_cycle_ablation")
    x = np.arange(10, dtype="float32").reshape(10, 1)
    test = (np.full((4, 1), -1.0, "float32"), np.zeros(4, "int64"))
    monkeypatch.setattr(ablation.datasets, "load_mnist", lambda: ((x, 2 * x[:, 0]), test))
    x_bn, (x_score, y_score), split = ablation.scoring_data(validation_size=3, bn_images=5)
    assert split == "validation"
    np.testing.assert_array_equal(x_score[:, 0], [7, 8, 9])
    np.testing.assert_array_equal(y_score, [14, 16, 18])
    np.testing.assert_array_equal(x_bn[:, 0], [0, 1, 2, 3, 4])
    # Asking for more BatchNorm images than precede the split stops short of it.
    assert ablation.scoring_data(validation_size=3, bn_images=100)[0].max() == 6
    x_bn, (x_score, _), split = ablation.scoring_data(validation_size=0, bn_images=5)
    assert split == "test" and x_score is test[0] and len(x_bn) == 5


def test_last_cycle_ablation_unwraps_a_raw_pixel_model(tmp_path):
    ablation = importlib.import_module("benchmarks.studies.last_cycle_ablation")
    experiment = importlib.import_module("examples.experiment")
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a")], name="net")
    raw = experiment.raw_pixel_model(net, keras.layers.Rescaling(0.5, name="standardize"), (3,))
    raw.save(tmp_path / "raw.keras")
    net.save(tmp_path / "net.keras")
    for path in ("raw.keras", "net.keras"):
        loaded = ablation.trained_network(str(tmp_path / path))
        assert loaded.name == "net"
        np.testing.assert_array_equal(loaded.get_layer("a").kernel.numpy(),
                                      net.get_layer("a").kernel.numpy())


def test_sampling_by_loss_flags_reach_the_draws_of_a_trained_run(tmp_path, monkeypatch):
    # One cycle of the example with --sampling loss: the flags reach the
    # LossSampling that drew the fit's batches, which measured the losses
    # of every training image, and the run trained (its weights moved).
    made = []
    # The training loop's module, as the script imports it.
    loop = sys.modules[importlib.import_module("examples.mnist_rso").run_rso.__module__]

    class Spy(loop.LossSampling):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(loop, "LossSampling", Spy)
    results = tmp_path / "loss.json"
    _run_here("examples/mnist_rso.py", "--cycles", "1", "--sampling", "loss",
              "--sampling-refresh", "5", "--sampling-power", "2", "--sampling-share", "0.5",
              "--seed", "3", *_TINY_MNIST, "--results", str(results))
    (sampling,) = made
    assert (sampling.refresh_every, sampling.power, sampling.uniform_share, sampling.seed,
            sampling.batch_size) == (5, 2.0, 0.5, 3, 4)
    # One loss per training image (--limit; the validation split is apart).
    assert sampling.losses.shape == (128,) and np.all(np.isfinite(sampling.losses))
    assert json.loads(results.read_text())["weight_updates"] > 0
    with pytest.raises(ValueError, match="layer-input pool"):
        _run_here("examples/mnist_rso.py", "--cycles", "1", "--sampling", "loss",
                  "--pool-size", "64", *_TINY_MNIST)
