"""Shared test utilities: central finite differences in NumPy float64."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

EPS = 1e-6
RTOL = 1e-5
ATOL = 1e-8

CPU_BACKENDS = ("numpy", "array_api_strict", "torch")


def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Central differences ``(f(x + eps e_i) - f(x - eps e_i)) / 2 eps`` of a scalar ``f``."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x.copy())
        x[i] = old - eps
        down = f(x.copy())
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def assert_grad(analytic, numeric: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> None:
    """An analytic gradient (any backend's array) equals the finite differences."""
    import portnn as pn

    got = np.asarray(pn.to_numpy(analytic))
    assert got.shape == numeric.shape
    np.testing.assert_allclose(got, numeric, rtol=rtol, atol=atol)


def away_from_zero(rng: np.random.Generator, shape, low: float = 0.1, high: float = 1.0):
    """Random values of random sign with ``low <= |x| < high`` (no kink of ReLU, L1 or MAE)."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def host(x) -> np.ndarray:
    """Any backend's array as a NumPy array."""
    import portnn as pn

    return np.asarray(pn.to_numpy(x))


def host_parameters(model) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(host(w), host(b)) for w, b in model.get_parameters()]


def assert_parameters_equal(a, b, rtol: float = 0.0, atol: float = 0.0) -> None:
    assert len(a) == len(b)
    for (wa, ba), (wb, bb) in zip(a, b, strict=True):
        np.testing.assert_allclose(wa, wb, rtol=rtol, atol=atol)
        np.testing.assert_allclose(ba, bb, rtol=rtol, atol=atol)
