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
