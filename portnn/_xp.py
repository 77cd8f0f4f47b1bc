"""The few operations the Array API standard lacks, written once for every backend, and
the fast paths one library has for a hot operation. Each fast path sits beside its portable
version, which stays the reference (tests compare the two)."""

from __future__ import annotations

import contextlib
import sys
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
    if library_of(param) == "numpy" and param.size >= _RECYCLE_FROM:
        return _adam_numpy(param, grad, m, v, beta_1, beta_2, scale, eps)
    return _adam_portable(param, grad, m, v, beta_1, beta_2, scale, eps)


def _adam_portable(param, grad, m, v, beta_1, beta_2, scale, eps):
    xp = array_namespace(param)
    m = beta_1 * m + (1 - beta_1) * grad
    v = beta_2 * v + (1 - beta_2) * (grad * grad)
    return param - scale * m / (xp.sqrt(v) + eps), m, v


def _adam_numpy(param, grad, m, v, beta_1, beta_2, scale, eps):
    # The portable arithmetic in the same order, written into recycled buffers: a freshly
    # allocated block of the first layer's size page-faults on first touch, which cost more
    # than the arithmetic itself (measured: 480 us against 150 us a step for 784 x 128).
    import numpy as np

    new_m, new_v, tmp, step = _recycled(param, 4)
    np.multiply(m, beta_1, out=new_m)
    np.multiply(grad, 1 - beta_1, out=tmp)
    new_m += tmp
    np.multiply(v, beta_2, out=new_v)
    np.multiply(grad, grad, out=tmp)
    tmp *= 1 - beta_2
    new_v += tmp
    np.sqrt(new_v, out=tmp)
    tmp += eps
    np.multiply(new_m, scale, out=step)
    step /= tmp
    np.subtract(param, step, out=tmp)
    return tmp, new_m, new_v


_POOL: dict[tuple, list] = {}
_POOL_SIZE = 8  # per shape and dtype: a parameter, its two moments, temporaries, a snapshot
# Below this many elements NumPy's allocator is cheap and the pool's bookkeeping is not.
_RECYCLE_FROM = 1 << 16


def _reference_counts(bucket: list) -> list[int]:
    return [sys.getrefcount(buffer) for buffer in bucket]


# The count _reference_counts reports for an object that only its list holds (3 on CPython up
# to 3.13: the list, the loop's name, getrefcount's argument): measured, not assumed, since
# newer interpreters may borrow references on the stack.
_ONLY_THE_BUCKET = _reference_counts([object()])[0]


def _unreferenced(bucket: list) -> list:
    """The buffers of ``bucket`` that nothing but the bucket refers to."""
    counts = _reference_counts(bucket)
    return [b for b, n in zip(bucket, counts, strict=True) if n == _ONLY_THE_BUCKET]


def _recycled(like: Any, count: int) -> list:
    """``count`` uninitialised NumPy arrays shaped like ``like``: ones portnn made before and
    nothing else refers to any more, else new ones. Only unreferenced buffers are reused, so
    no array anyone can see is ever written to."""
    import numpy as np

    bucket = _POOL.setdefault((like.shape, like.dtype.str), [])
    # A view of a buffer refers to it too, so a viewed buffer is never reused either.
    found = _unreferenced(bucket)[:count]
    while len(found) < count:
        buffer = np.empty(like.shape, like.dtype)
        if len(bucket) < _POOL_SIZE:
            bucket.append(buffer)
        found.append(buffer)
    return found
