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


# (activation, its backward at x = 0 as a multiple of dvalues): the book's ReLU backward
# zeroes dvalues where x <= 0, and LeakyReLU takes its alpha branch there.
AT_ZERO = {"relu": (pn.ReLU, 0.0), "leaky_relu": (lambda: pn.LeakyReLU(alpha=0.2), 0.2)}


@pytest.mark.parametrize(("make", "slope"), AT_ZERO.values(), ids=AT_ZERO.keys())
def test_kinked_activations_at_exactly_zero(backend64, make, slope):
    X = np.array([[0.0, 1.5, -0.0], [-2.0, 0.0, 0.25]])
    zero = X == 0
    R = np.array([[3.0, -1.0, 5.0], [2.0, -4.0, 7.0]])
    layer = make()
    out = pn.to_numpy(layer.forward(backend64.asarray(X)))
    np.testing.assert_array_equal(out[zero], 0.0)
    got = pn.to_numpy(layer.backward(backend64.asarray(R)))
    np.testing.assert_array_equal(got[zero], slope * R[zero])
    np.testing.assert_array_equal(got[X > 0], R[X > 0])
    np.testing.assert_array_equal(got[X < 0], slope * R[X < 0])


def _sigmoid64(x):
    with np.errstate(over="ignore"):  # exp(1e30) is inf, and 1 / (1 + inf) the right 0
        return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e30])
def test_softmax_and_sigmoid_do_not_overflow(backend, scale):
    X = np.array([[1.0, -1.0, 0.5], [-2.0, 3.0, 0.0]]) * scale
    s = pn.to_numpy(pn.Softmax().forward(backend.asarray(X)))
    g = pn.to_numpy(pn.Sigmoid().forward(backend.asarray(X)))
    # Float64 references: at 1e3 and 1e30 every softmax row is one-hot and every sigmoid 0,
    # 1/2 or 1, exactly (a NaN from inf / inf or exp overflow would fail these).
    np.testing.assert_allclose(s, np_softmax(X), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(g, _sigmoid64(X), rtol=1e-6, atol=1e-30)
    if scale > 1:
        np.testing.assert_array_equal(s, np.eye(3)[X.argmax(axis=1)])
        np.testing.assert_array_equal(g, np.where(X > 0, 1.0, np.where(X < 0, 0.0, 0.5)))


# Four rows of three: an argmax over the wrong axis gives three values, and a row's largest
# entry is not its column's (row 3's 0.5 loses column 0 to row 1's 0.6). Row 3 also holds
# 0.5, where Sigmoid's threshold is strict.
OUTPUTS = np.array(
    [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.05, 0.85], [0.5, 0.45, 0.05]], dtype=np.float32
)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (pn.ReLU, OUTPUTS),
        (pn.Linear, OUTPUTS),
        (pn.Tanh, OUTPUTS),
        (pn.LeakyReLU, OUTPUTS),
        (pn.Softmax, np.array([1, 0, 2, 0])),
        (pn.Sigmoid, np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]])),
    ],
)
def test_predictions(backend, make, expected):
    got = pn.to_numpy(make().predictions(backend.asarray(OUTPUTS)))
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == expected.dtype


@pytest.mark.parametrize("alpha", [-0.1, 1, 1.5, "0.1", None])
def test_leaky_relu_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match=r"alpha must be .*in \[0, 1\)"):
        pn.LeakyReLU(alpha=alpha)
