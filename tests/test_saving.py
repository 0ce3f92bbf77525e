"""The trained plain model saves and reloads without keras_rso."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_rso
from conftest import small_convnet


def _trained(toy_data):
    x, y = toy_data
    model = small_convnet()
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=16, seed=1),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return model, trainer


def test_saved_model_reloads_without_custom_objects(toy_data, tmp_path):
    x, _ = toy_data
    model, _ = _trained(toy_data)
    path = tmp_path / "m.keras"
    model.save(path)
    expected = model.predict(x, verbose=0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", expected)
    # A fresh interpreter that never imports keras_rso.
    code = (
        "import numpy as np, keras, sys;"
        f"m = keras.models.load_model(r'{path}');"
        f"p = m.predict(np.load(r'{tmp_path / 'x.npy'}'), verbose=0);"
        f"np.testing.assert_array_equal(p, np.load(r'{tmp_path / 'expected.npy'}'));"
        "assert 'keras_rso' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_trainer_round_trips_with_rso_state(toy_data, tmp_path):
    x, y = toy_data
    model, trainer = _trained(toy_data)
    path = tmp_path / "trainer.keras"
    trainer.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras_rso.RSOModel)
    assert isinstance(loaded.optimizer, keras_rso.RSO)
    assert loaded.optimizer.get_config() == trainer.optimizer.get_config()
    assert int(loaded.optimizer.trials.numpy()) == int(trainer.optimizer.trials.numpy())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("missing", [1, 2, 3])
def test_optimizer_state_loads_from_files_of_earlier_versions(toy_data, missing):
    _, trainer = _trained(toy_data)
    opt = trainer.optimizer
    # A store as earlier versions wrote it: without the variables added
    # later (pool_fills; before that also sigma_factors, then
    # nonfinite_inputs).
    assert [v.name for v in opt.variables[-3:]] == [
        "nonfinite_inputs", "sigma_factors", "pool_fills"]
    opt.pool_fills.assign(5)  # must not leak into the fresh optimizer
    old_store = {str(i): v.numpy() for i, v in enumerate(opt.variables[:-missing])}
    fresh = keras_rso.RSO(weights_per_batch=16, seed=1)
    fresh.build(trainer.trainable_variables)
    fresh.load_own_variables(old_store)
    assert int(fresh.trials.numpy()) == int(opt.trials.numpy()) > 0
    np.testing.assert_array_equal(fresh.sigmas.numpy(), opt.sigmas.numpy())
    assert int(fresh.pool_fills.numpy()) == 0
    if missing >= 2:
        np.testing.assert_array_equal(fresh.sigma_factors.numpy(), 1.0)
    if missing == 3:
        assert int(fresh.nonfinite_inputs.numpy()) == 0


def test_rso_config_round_trip():
    opt = keras_rso.RSO(weights_per_batch=3, seed=7, order="random", zero_std_sigma=0.02,
                        step_rule="parabolic")
    again = keras_rso.RSO.from_config(opt.get_config())
    assert again.get_config() == opt.get_config()
    assert keras.optimizers.deserialize(keras.optimizers.serialize(opt)).get_config() == opt.get_config()


def test_rso_config_extends_the_base_optimizers():
    # Base options (clipnorm, ...) survive a round trip, and so does every
    # option of the paper preset.
    opt = keras_rso.RSO.paper(seed=5, clipnorm=1.0)
    config = opt.get_config()
    assert set(keras.optimizers.SGD().get_config()) - {"momentum", "nesterov"} <= set(config)
    again = keras_rso.RSO.from_config(config)
    assert again.clipnorm == 1.0
    assert (again.order, again.kernel_order, again.sigma_rule, again.weight_decay,
            again.weights_per_batch) == ("paper", "paper", "he", 1e-4, 1)
    assert again.get_config() == config
