"""The few operations the Array API standard lacks, written once for every backend, and
the fast paths one library has for a hot operation. Each fast path sits beside its portable
version, which stays the reference (tests compare the two)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import array_api_compat
from array_api_compat import device

from .backend import library_of

__all__ = [
    "adam_update",
    "all_finite",
    "array_namespace",
    "is_kind",
    "one_hot",
    "pick",
    "quiet_float_errors",
    "sign_nonneg",
]


_NAMESPACES: dict[type, Any] = {}


def array_namespace(x: Any) -> Any:
    """``array_api_compat.array_namespace`` for one array, remembered per array type: the
    namespace depends only on the type, and the full lookup costs microseconds per call."""
    try:
        return _NAMESPACES[type(x)]
    except KeyError:
        xp = array_api_compat.array_namespace(x)
        _NAMESPACES[type(x)] = xp
        return xp


def is_kind(x: Any, kind: str) -> bool:
    """Whether the array ``x`` has a dtype of ``kind``: "integral", "real floating", "bool"..."""
    return array_namespace(x).isdtype(x.dtype, kind)


def all_finite(x: Any) -> bool:
    """Whether every element of the float array ``x`` is finite (one host sync).

    A sum is finite only if every term is (NaN and infinities propagate), and reads the data
    once without a boolean temporary: half the time of ``all(isfinite(x))`` on 60,000 x 784.
    Only a sum that overflows from finite terms needs the element-wise check."""
    xp = array_namespace(x)
    with quiet_float_errors(x):
        total = xp.sum(x)
    return bool(xp.isfinite(total)) or bool(xp.all(xp.isfinite(x)))


def one_hot(y: Any, classes: int, dtype: Any) -> Any:
    """Class indices ``(N,)`` as one-hot rows ``(N, classes)`` of ``dtype``."""
    xp = array_namespace(y)
    # int64 first: array_api_strict cannot compare uint64 with arange's int64, and torch
    # implements few operations for uint16/32/64.
    y = xp.astype(y, xp.int64, copy=False)
    return xp.astype(y[:, None] == xp.arange(classes, device=device(y)), dtype)


def pick(p: Any, y: Any) -> Any:
    """``p[i, y[i]]`` for each row i: the probability of each sample's true class."""
    xp = array_namespace(p)
    return xp.take_along_axis(p, xp.astype(y, xp.int64, copy=False)[:, None], axis=1)[:, 0]


def sign_nonneg(x: Any) -> Any:
    """The book's L1 sign: +1 where x >= 0, -1 elsewhere (so sign(0) is +1)."""
    xp = array_namespace(x)
    return xp.where(x >= 0, xp.ones_like(x), -xp.ones_like(x))


@contextlib.contextmanager
def quiet_float_errors(x: Any) -> Iterator[None]:
    """Silence NumPy's overflow/invalid warnings while training: divergence is detected from
    the loss and reported as one clear error instead."""
    if library_of(x) in ("numpy", "array_api_strict"):
        import numpy as np

        with np.errstate(all="ignore"):
            yield
    else:
        yield


def adam_update(
    param: Any, grad: Any, m: Any, v: Any, beta_1: float, beta_2: float, scale: float, eps: float
) -> tuple[Any, Any, Any]:
    """One Adam step with the bias corrections folded into ``scale`` and ``eps``:
    ``m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g**2; param - scale * m / (sqrt(v) + eps)``.
    Returns new (param, m, v); the arguments are never written to."""
    if library_of(param) == "numpy":
        return _adam_numpy(param, grad, m, v, beta_1, beta_2, scale, eps)
    return _adam_portable(param, grad, m, v, beta_1, beta_2, scale, eps)


def _adam_portable(param, grad, m, v, beta_1, beta_2, scale, eps):
    xp = array_namespace(param)
    m = beta_1 * m + (1 - beta_1) * grad
    v = beta_2 * v + (1 - beta_2) * (grad * grad)
    return param - scale * m / (xp.sqrt(v) + eps), m, v


def _adam_numpy(param, grad, m, v, beta_1, beta_2, scale, eps):
    # The portable arithmetic in the same order (so the same bits), in four new arrays
    # instead of nine temporaries. New arrays, not reused ones: a shared pool of buffers was
    # not thread-safe, and anyone may hold the old parameters (a snapshot, a checkpoint).
    import numpy as np

    new_m = np.multiply(m, beta_1)
    tmp = np.multiply(grad, 1 - beta_1)
    new_m += tmp
    new_v = np.multiply(v, beta_2)
    np.multiply(grad, grad, out=tmp)
    tmp *= 1 - beta_2
    new_v += tmp
    np.sqrt(new_v, out=tmp)
    tmp += eps
    step = np.multiply(new_m, scale)
    step /= tmp
    np.subtract(param, step, out=tmp)
    return tmp, new_m, new_v
