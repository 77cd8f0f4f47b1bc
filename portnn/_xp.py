"""The few operations the Array API standard lacks, written once for every backend, and the
doors to what a library's Backend class does its own way (fused kernels, float errors)."""

from __future__ import annotations

import contextlib
from typing import Any

import array_api_compat
from array_api_compat import device

from .backend import _class_of_type, backend_class

__all__ = [
    "adam_update",
    "all_finite",
    "array_namespace",
    "is_kind",
    "kernel",
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


def quiet_float_errors(x: Any) -> contextlib.AbstractContextManager:
    """Silence the float warnings of ``x``'s library while training: divergence is detected
    from the loss and reported as one clear error instead."""
    return backend_class(x).quiet_float_errors()


def kernel(x: Any, name: str) -> Any:
    """The fused kernel ``name`` of ``x``'s library (``Backend.kernel``), or None: then the
    caller's portable code, which the kernel is tested against, runs (always, for an Array
    API library portnn has no Backend class for)."""
    cls = _class_of_type(type(x))
    return None if cls is None else cls.kernel(name)


def adam_update(
    param: Any, grad: Any, m: Any, v: Any, beta_1: float, beta_2: float, scale: float, eps: float
) -> tuple[Any, Any, Any]:
    """One Adam step by the library's own kernel (``Backend.adam_update`` is the portable
    reference, which a library's class may override with a fused one)."""
    return backend_class(param).adam_update(param, grad, m, v, beta_1, beta_2, scale, eps)
