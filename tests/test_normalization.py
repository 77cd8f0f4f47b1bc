"""BatchNormalization: finite-difference gradients in training and evaluation, torch's
BatchNorm1d/2d step for step (outputs, gradients, running statistics), state kept apart
from the parameters, bad input."""

import numpy as np
import pytest
from helpers import assert_grad, host, numeric_grad

import portnn as pn
from portnn.backend import library_of

SHAPES = {"1d": (6, 3), "2d": (4, 3, 3, 2)}


def with_params(b, layer, gamma, beta, mean=None, var=None):
    layer.weights, layer.biases = b.asarray(gamma), b.asarray(beta)
    if mean is not None:
        layer.running_mean, layer.running_var = b.asarray(mean), b.asarray(var)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_gradients_match_finite_differences(backend64, shape, training):
    rng = np.random.default_rng(0)
    X = rng.standard_normal(shape) * 2 + 0.5
    gamma, beta = rng.uniform(0.5, 2.0, 3), rng.standard_normal(3)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    R = rng.standard_normal(shape)
    layer = pn.BatchNormalization(3)

    def objective(X=X, gamma=gamma, beta=beta):
        with_params(backend64, layer, gamma, beta, mean, var)  # the state as it was
        out = host(layer.forward(backend64.asarray(X), training=training))
        return float(np.sum(out * R))

    objective()
    dinputs = layer.backward(backend64.asarray(R))
    for grad in (dinputs, layer.dweights, layer.dbiases):
        assert library_of(grad) == backend64.name and grad.dtype == backend64.xp.float64
    assert_grad(dinputs, numeric_grad(lambda x: objective(X=x), X))
    assert_grad(layer.dweights, numeric_grad(lambda g: objective(gamma=g), gamma))
    assert_grad(layer.dbiases, numeric_grad(lambda v: objective(beta=v), beta))


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_training_and_evaluation_match_torch_step_for_step(backend64, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    gamma, beta = rng.uniform(0.5, 2.0, 3), rng.standard_normal(3)
    layer = pn.BatchNormalization(3, momentum=0.3, epsilon=1e-3)
    with_params(backend64, layer, gamma, beta)
    module = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(
        3, momentum=0.3, eps=1e-3, dtype=torch.float64
    )
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(gamma))
        module.bias.copy_(torch.from_numpy(beta))
    for step in range(2):  # training: batch statistics, running ones moved
        X = rng.standard_normal(shape) * (step + 2) + 3.0
        R = rng.standard_normal(shape)
        tx = torch.tensor(X, requires_grad=True)
        t_out = module(tx)
        t_out.backward(torch.from_numpy(R))
        out = layer.forward(backend64.asarray(X), training=True)
        np.testing.assert_allclose(host(out), t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
        dx = layer.backward(backend64.asarray(R))
        np.testing.assert_allclose(host(dx), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(host(layer.dweights), module.weight.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(host(layer.dbiases), module.bias.grad.numpy(), rtol=1e-12)
        module.weight.grad = module.bias.grad = None
        # Up to summation order, which differs between libraries: a last-bit difference.
        np.testing.assert_allclose(
            host(layer.running_mean), module.running_mean.numpy(), rtol=1e-14, atol=1e-15
        )
        np.testing.assert_allclose(
            host(layer.running_var), module.running_var.numpy(), rtol=1e-14, atol=0
        )
    assert not np.allclose(host(layer.running_var), 1.0)
    module.eval()  # evaluation: the running statistics
    X, R = rng.standard_normal(shape), rng.standard_normal(shape)
    tx = torch.tensor(X, requires_grad=True)
    t_out = module(tx)
    t_out.backward(torch.from_numpy(R))
    kept = host(layer.running_mean).copy(), host(layer.running_var).copy()
    out = layer.forward(backend64.asarray(X))
    np.testing.assert_allclose(host(out), t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    dx = layer.backward(backend64.asarray(R))
    np.testing.assert_allclose(host(dx), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(layer.dweights), module.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(host(layer.running_mean), kept[0])  # evaluation keeps them
    np.testing.assert_array_equal(host(layer.running_var), kept[1])


def test_the_formulas_by_hand(backend64):
    # One feature, the batch [1, 2, 3, 6]: mean 3, biased variance 3.5, unbiased 14/3.
    layer = pn.BatchNormalization(1, momentum=0.25, epsilon=0.5)
    X = np.array([[1.0], [2.0], [3.0], [6.0]])
    out = host(layer.forward(backend64.asarray(X), training=True))
    np.testing.assert_allclose(out, (X - 3.0) / 2.0, rtol=1e-15)  # sqrt(3.5 + 0.5) = 2
    np.testing.assert_allclose(host(layer.running_mean), [0.25 * 3.0], rtol=1e-15)
    np.testing.assert_allclose(host(layer.running_var), [0.75 + 0.25 * 14 / 3], rtol=1e-15)
    out = host(layer.forward(backend64.asarray(X)))
    expected = (X - 0.75) / np.sqrt(0.75 + 0.25 * 14 / 3 + 0.5)
    np.testing.assert_allclose(out, expected, rtol=1e-14)


def test_state_and_parameters(backend):
    layer = pn.BatchNormalization(5)
    assert layer.param_names == ("weights", "biases")
    assert layer.state_names == ("running_mean", "running_var")
    for name, value in (("weights", 1), ("biases", 0), ("running_mean", 0), ("running_var", 1)):
        array = getattr(layer, name)
        assert tuple(array.shape) == (5,) and array.dtype == backend.xp.float32
        np.testing.assert_array_equal(host(array), np.full(5, float(value)))
    assert pn.BatchNormalization.parameter_shapes(layer.get_config()) == dict.fromkeys(
        ("weights", "biases", "running_mean", "running_var"), (5,)
    )
    assert layer.get_config() == {"n_features": 5, "momentum": 0.1, "epsilon": 1e-5}
    assert repr(pn.BatchNormalization(5, momentum=0.01)) == "BatchNormalization(5, momentum=0.01)"
    X = backend.asarray(np.random.default_rng(2).standard_normal((4, 5, 2, 2)))
    out = layer.forward(X, training=True)
    assert out.dtype == backend.xp.float32
    assert layer.backward(out).dtype == backend.xp.float32
    assert layer.running_mean.dtype == backend.xp.float32
    layer.compute_dinputs = False
    assert layer.backward(out) is None and tuple(layer.dweights.shape) == (5,)


def test_a_model_trains_the_parameters_and_moves_the_state(backend):
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((64, 4)) * [1, 2, 3, 4] + [5, 0, -5, 1]).astype(np.float32)
    y = (X[:, 0] > 5).astype(np.int64)
    model = pn.Model([pn.Dense(4, 8), pn.BatchNormalization(8), pn.ReLU(), pn.Dense(8, 2)])
    model.add(pn.Softmax()).set(loss=pn.CategoricalCrossentropy(), optimizer=pn.SGD(0.1))
    bn = model.layers[1]
    model.train(X, y, epochs=2, batch_size=16, print_every=0)
    assert not np.allclose(host(bn.running_mean), 0.0)
    assert not np.allclose(host(bn.weights), 1.0)  # a parameter: SGD moved it
    assert set(model.optimizer.state[bn]) == {"weights", "biases"}
    kept = host(bn.running_mean).copy(), host(bn.running_var).copy()
    model.predict(X)
    model.evaluate(X, y)
    np.testing.assert_array_equal(host(bn.running_mean), kept[0])  # evaluation: untouched
    np.testing.assert_array_equal(host(bn.running_var), kept[1])
    # What the model predicts is the running statistics' normalisation.
    h = host(model.layers[0].forward(backend.asarray(X)))
    normed = (h - kept[0]) / np.sqrt(kept[1] + 1e-5) * host(bn.weights) + host(bn.biases)
    np.testing.assert_allclose(host(bn.forward(backend.asarray(h))), normed, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: pn.BatchNormalization(0), "n_features must be a positive integer"),
        (lambda: pn.BatchNormalization(2.5), "n_features must be a positive integer"),
        (lambda: pn.BatchNormalization(3, momentum=1.5), "momentum must be a number in"),
        (lambda: pn.BatchNormalization(3, epsilon=0.0), "epsilon must be a number in"),
    ],
)
def test_bad_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("shape", "training", "message"),
    [
        ((4, 5), False, r"BatchNormalization\(3\) takes inputs of shape \(batch, 3\).*\(4, 5\)"),
        ((4, 3, 5), False, r"or NCHW images \(batch, 3, height, width\), not \(4, 3, 5\)"),
        ((4, 2, 2, 2), True, "n_features equal to the inputs' features or channels"),
        ((1, 3), True, "more than one value per feature to train"),
    ],
    ids=["features", "rank-3", "channels", "one-sample"],
)
def test_bad_inputs_raise_and_change_nothing(backend, shape, training, message):
    layer = pn.BatchNormalization(3)
    with pytest.raises(ValueError, match=message):
        layer.forward(backend.asarray(np.ones(shape, dtype=np.float32)), training=training)
    assert not hasattr(layer, "output")
    np.testing.assert_array_equal(host(layer.running_mean), np.zeros(3))
    np.testing.assert_array_equal(host(layer.running_var), np.ones(3))


def test_a_model_whose_channels_do_not_match_fails_at_finalize(backend):
    model = pn.Model([pn.Input(shape=(8, 4, 4)), pn.Conv2D(8, 4, 3), pn.BatchNormalization(8)])
    with pytest.raises(ValueError, match=r"at layer 2: BatchNormalization\(8\) takes"):
        model.finalize()
