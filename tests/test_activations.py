"""Activations: forward values, finite-difference backward, predictions, numerical safety."""

import numpy as np
import pytest
from helpers import assert_grad, away_from_zero, numeric_grad

import portnn as pn


def np_softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# name: (factory, NumPy forward)
ACTIVATIONS = {
    "relu": (pn.ReLU, lambda x: np.maximum(x, 0)),
    "softmax": (pn.Softmax, np_softmax),
    "sigmoid": (pn.Sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "linear": (pn.Linear, lambda x: x),
    "tanh": (pn.Tanh, np.tanh),
    "leaky_relu": (pn.LeakyReLU, lambda x: np.where(x > 0, x, 0.01 * x)),
    "leaky_relu_0.2": (lambda: pn.LeakyReLU(alpha=0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
}
CASES = pytest.mark.parametrize(("make", "reference"), ACTIVATIONS.values(), ids=ACTIVATIONS.keys())


def inputs(seed=0, shape=(5, 4)):
    # |x| >= 0.1: ReLU and LeakyReLU have a kink at 0, which finite differences would straddle.
    return away_from_zero(np.random.default_rng(seed), shape, 0.1, 3.0)


@CASES
def test_forward_values(backend64, make, reference):
    X = inputs()
    layer = make()
    out = layer.forward(backend64.asarray(X))
    assert layer.output is out
    assert out.dtype == backend64.dtype
    np.testing.assert_allclose(pn.to_numpy(out), reference(X), rtol=1e-12, atol=1e-15)


@CASES
def test_backward_matches_finite_differences(backend64, make, reference):
    X = inputs(1)
    R = np.random.default_rng(2).standard_normal(X.shape)
    layer = make()

    def objective(x):
        return float(np.sum(pn.to_numpy(layer.forward(backend64.asarray(x))) * R))

    objective(X)
    dinputs = layer.backward(backend64.asarray(R))
    assert layer.dinputs is dinputs
    assert dinputs.dtype == backend64.dtype
    assert_grad(dinputs, numeric_grad(objective, X))


def test_softmax_backward_equals_the_books_jacobian_loop(backend64):
    X, R = inputs(3), np.random.default_rng(4).standard_normal((5, 4))
    layer = pn.Softmax()
    s = pn.to_numpy(layer.forward(backend64.asarray(X)))
    got = pn.to_numpy(layer.backward(backend64.asarray(R)))
    want = np.empty_like(R)
    for i, (out, d) in enumerate(zip(s, R, strict=True)):
        out = out.reshape(-1, 1)
        want[i] = (np.diagflat(out) - out @ out.T) @ d
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e30])
def test_softmax_and_sigmoid_do_not_overflow(backend, scale):
    X = np.array([[1.0, -1.0, 0.5], [-2.0, 3.0, 0.0]]) * scale
    s = pn.to_numpy(pn.Softmax().forward(backend.asarray(X)))
    np.testing.assert_allclose(s.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(s.argmax(axis=1), X.argmax(axis=1))
    g = pn.to_numpy(pn.Sigmoid().forward(backend.asarray(X)))
    assert np.all(np.isfinite(g)) and np.all((g >= 0) & (g <= 1))
    np.testing.assert_array_equal(g > 0.5, X > 0)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (pn.ReLU, lambda o: o),
        (pn.Linear, lambda o: o),
        (pn.Tanh, lambda o: o),
        (pn.LeakyReLU, lambda o: o),
        (pn.Softmax, lambda o: o.argmax(axis=1)),
        (pn.Sigmoid, lambda o: (o > 0.5).astype(np.int64)),
    ],
)
def test_predictions(backend, make, expected):
    outputs = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.5, 0.45, 0.05]], dtype=np.float32)
    got = pn.to_numpy(make().predictions(backend.asarray(outputs)))
    np.testing.assert_array_equal(got, expected(outputs))
    assert got.dtype == expected(outputs).dtype


@pytest.mark.parametrize("alpha", [-0.1, 1, 1.5, "0.1", None])
def test_leaky_relu_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be in"):
        pn.LeakyReLU(alpha=alpha)
