"""The authors' networks: sizes, and a forward pass checked against an
independent numpy transcription of their `forward` (train.py)."""

import keras
import numpy as np
import pytest

from keras_rso import models
from numpy_reference import avg_pool2 as _pool, batchnorm as _bn, conv_same as _conv


def _reference(model, x, mean, pools, skips):
    """The authors' forward: for layer i, ReLU of the previous BN output,
    convolution, + the BN output of layer skips[i] (through a 1x1
    convolution and BN if the channels differ), pooling, BN."""
    get = lambda name: model.get_layer(name).get_weights()  # noqa: E731
    h = x / 255.0 - np.asarray(mean)
    outs = []
    for i in range(len(pools)):
        inp = np.maximum(h, 0) if i else h
        out = _conv(inp, get(f"conv{i + 1}")[0])
        if i in skips:
            skip = outs[skips[i]]
            if skip.shape[-1] != out.shape[-1]:
                skip = _conv(skip, get(f"conv{i + 1}_shortcut")[0])
                skip = _bn(skip, *get(f"bn{i + 1}_shortcut")[:2])
            out = out + skip
        if pools[i]:
            out = _pool(out)
        h = _bn(out, *get(f"bn{i + 1}")[:2])
        outs.append(h)
    return h.mean(axis=(1, 2)) @ get("classifier")[0]


def _randomize_bn(model, rng):
    # Non-trivial gamma and beta, so that their place in the net matters.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mm, mv = layer.get_weights()
            layer.set_weights([rng.normal(1, 0.3, gamma.shape), rng.normal(0, 0.3, beta.shape),
                               mm, mv])


@pytest.mark.parametrize("build, size, mean, pools, skips", [
    (models.paper_mnist_net, 12016, models.MNIST_MEAN, [0, 1, 0, 1, 0, 0], {}),
    (models.paper_cifar10_net, 57104, models.CIFAR10_MEAN, [0, 0, 1, 0, 1, 0, 0, 0, 0],
     {2: 0, 4: 2, 6: 4, 8: 6}),
])
def test_paper_net_is_the_authors_network(build, size, mean, pools, skips):
    keras.utils.set_random_seed(0)
    model = build()
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == size
    rng = np.random.default_rng(0)
    _randomize_bn(model, rng)
    x = rng.integers(0, 256, size=(4,) + model.input_shape[1:]).astype("float32")
    expected = _reference(model, x, mean, pools=pools, skips=skips)
    np.testing.assert_allclose(model(x, training=True).numpy(), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("build", [models.paper_mnist_net, models.paper_cifar10_net])
def test_kernels_start_with_the_he_std_and_the_saved_model_takes_raw_pixels(build, tmp_path):
    keras.utils.set_random_seed(0)
    model = build()
    conv = model.get_layer("conv2")
    fan_in = int(np.prod(conv.kernel.shape[:3]))
    assert np.std(conv.kernel.numpy()) == pytest.approx(np.sqrt(2 / fan_in), rel=0.1)
    # Untruncated, as in the authors' code: Keras' he_normal cuts at 2 std.
    assert np.max(np.abs(conv.kernel.numpy())) > 2.5 * np.sqrt(2 / fan_in)
    path = tmp_path / "m.keras"
    model.save(path)
    x = np.random.default_rng(0).integers(0, 256, (2,) + model.input_shape[1:]).astype("uint8")
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)


def test_paper_order_visits_each_kernel_then_its_batchnorm_from_the_output():
    import keras_rso

    trainer = keras_rso.RSOModel(models.paper_cifar10_net())
    trainer.compile(optimizer=keras_rso.RSO.paper(), loss=models.paper_loss())
    evaluator, plan = trainer._plan()
    visit = plan.visit
    names = [evaluator.variables[v].path for v in visit]
    block = lambda i: [f"conv{i}/kernel", f"bn{i}/beta", f"bn{i}/gamma"]  # noqa: E731
    # The authors' order: dense; then per convolution from the last, its
    # kernel, beta, gamma; the projection shortcut after its convolution.
    expected = (["classifier/kernel"] + sum((block(i) for i in (9, 8, 7, 6, 5)), [])
                + ["conv5_shortcut/kernel", "bn5_shortcut/beta", "bn5_shortcut/gamma"]
                + sum((block(i) for i in (4, 3, 2, 1)), []))
    assert names == expected


def test_the_cifar10_preset_starts_every_variable_at_the_authors_sigma():
    import keras_rso

    # The authors' train.py: a 3x3 kernel's sigma is sqrt(2 / (9 C_in)),
    # the dense kernel's sqrt(2 / 32), gamma and beta 0.167, and the 1x1
    # shortcut of block 5 takes block 5's own 3x3 sigma.
    widths = [16, 16, 16, 32, 32, 32, 32, 32, 32]
    inputs = [3] + widths[:-1]
    expected = {"classifier/kernel": np.sqrt(2 / 32),
                "conv5_shortcut/kernel": np.sqrt(2 / (9 * 32)),
                "bn5_shortcut/gamma": 0.167, "bn5_shortcut/beta": 0.167}
    for i, c in enumerate(inputs, start=1):
        expected.update({f"conv{i}/kernel": np.sqrt(2 / (9 * c)),
                         f"bn{i}/gamma": 0.167, f"bn{i}/beta": 0.167})
    model = models.paper_cifar10_net()
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO.paper(
        sigma_overrides=models.paper_sigmas(model)), loss=models.paper_loss())
    trainer(np.zeros((1, 32, 32, 3), "uint8"))
    trainer.optimizer.build(trainer.trainable_variables)
    trainer._initialize_sigmas()
    got = dict(zip([v.path for v in trainer.trainable_variables],
                   trainer.optimizer.sigmas.numpy()))
    assert got.keys() == expected.keys()
    for path, sigma in expected.items():
        assert got[path] == pytest.approx(sigma, rel=1e-6), path
    assert models.paper_sigmas(models.paper_mnist_net()) == {}


def test_the_cifar10_shortcut_starts_with_the_authors_std():
    # Their code draws the 1x1 projection with std sqrt(2 / C), C = 32 the
    # input channels of convolution 5, not sqrt(2 / 16), its own fan-in.
    keras.utils.set_random_seed(0)
    kernel = models.paper_cifar10_net().get_layer("conv5_shortcut").kernel.numpy()
    assert kernel.shape == (1, 1, 16, 32)
    assert np.std(kernel) == pytest.approx(np.sqrt(2 / 32), rel=0.1)


def test_sigma_overrides_are_checked_and_serialized():
    import keras_rso

    with pytest.raises(ValueError, match="positive finite"):
        keras_rso.RSO(sigma_overrides={"dense/kernel": -1.0})
    opt = keras_rso.RSO(sigma_overrides={"nope/kernel": 0.1})
    assert keras_rso.RSO.from_config(opt.get_config()).sigma_overrides == {"nope/kernel": 0.1}
    trainer = keras_rso.RSOModel(models.paper_mnist_net())
    trainer.compile(optimizer=opt, loss=models.paper_loss())
    x = np.zeros((8, 28, 28, 1), "uint8")
    with pytest.raises(ValueError, match=r"names \['nope/kernel'\].*paper_mnist_net/conv1/kernel"):
        trainer.fit(x, np.zeros(8, "int64"), batch_size=8, epochs=1, verbose=0)


def test_mnist_paper_net_pools_where_told():
    default, early = models.mnist_paper_net(), models.mnist_paper_net(pool_after=(1, 3))
    # The default is the paper's layout, layer for layer.
    assert [layer.name for layer in default.layers] == [
        layer.name for layer in models.mnist_paper_net(pool_after=(2, 4)).layers]
    assert default.get_layer("pool2").output.shape[1:3] == (14, 14)
    assert default.get_layer("pool4").output.shape[1:3] == (7, 7)
    # Pooling earlier moves the pools and keeps every weight.
    assert early.get_layer("pool1").output.shape[1:3] == (14, 14)
    assert early.get_layer("block2_conv").output.shape[1:3] == (14, 14)
    assert early.get_layer("pool3").output.shape[1:3] == (7, 7)
    assert [tuple(v.shape) for v in early.weights] == [tuple(v.shape) for v in default.weights]
    assert early.count_params() == default.count_params()


@pytest.mark.parametrize("pool_after, message", [
    ((0, 2), r"convolutions 1 to 6; got \[0\]"),
    ((2, 7), r"convolutions 1 to 6; got \[7\]"),
    ((2.0,), r"convolutions 1 to 6; got \[2.0\]"),
    ((3, 3), "names a convolution twice"),
    ((1, 2, 3, 4, 5), "shrink a 28x28 image below one pixel"),
])
def test_mnist_paper_net_refuses_impossible_pools(pool_after, message):
    with pytest.raises(ValueError, match=message):
        models.mnist_paper_net(pool_after=pool_after)


def test_early_pools_take_the_fast_path_and_match_the_full_path(float64):
    from keras_rso.evaluators.chain import ChainEvaluator
    from testing_utils import fit_rso

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1))
    y = rng.integers(0, 10, size=64).astype("int32")
    weights = {}
    for fast in (True, False):
        keras.utils.set_random_seed(3)
        model = models.mnist_paper_net((8, 8, 1), filters=2, pool_after=(1, 3))
        fitted = fit_rso(model, x, y, fast_path=fast, batch_size=32, shuffle=False,
                         weights_per_batch=32, seed=1)
        assert isinstance(fitted.trainer._plan()[0], ChainEvaluator) == fast
        assert fitted.trainer.optimizer.weight_updates.numpy() > 0
        weights[fast] = [v.numpy() for v in model.weights]
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_paper_cifar10_net_takes_a_kernel_constraint():
    from keras_rso.constraints import Discrete

    model = models.paper_cifar10_net(kernel_constraint=Discrete.binary())
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    assert len(kernels) == 11  # nine 3x3 convolutions, the shortcut, the classifier
    assert all(isinstance(v.constraint, Discrete) for v in kernels)
    assert not any(v.constraint for v in model.trainable_variables
                   if not v.path.endswith("kernel"))
