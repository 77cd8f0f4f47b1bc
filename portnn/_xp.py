"""The few operations the Array API standard lacks, written once for every backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from array_api_compat import array_namespace, device

from .backend import library_of, to_numpy

__all__ = [
    "array_namespace",
    "is_integer",
    "one_hot",
    "pick",
    "quiet_float_errors",
    "sign_nonneg",
    "to_numpy",
]


def is_integer(x: Any) -> bool:
    xp = array_namespace(x)
    return xp.isdtype(x.dtype, "integral")


def one_hot(y: Any, classes: int, dtype: Any) -> Any:
    """Class indices ``(N,)`` as one-hot rows ``(N, classes)`` of ``dtype``."""
    xp = array_namespace(y)
    # int64 first: array_api_strict cannot compare uint64 with arange's int64, and torch
    # implements few operations for uint16/32/64.
    y = xp.astype(y, xp.int64)
    return xp.astype(y[:, None] == xp.arange(classes, device=device(y)), dtype)


def pick(p: Any, y: Any) -> Any:
    """``p[i, y[i]]`` for each row i: the probability of each sample's true class."""
    xp = array_namespace(p)
    return xp.take_along_axis(p, xp.astype(y, xp.int64)[:, None], axis=1)[:, 0]


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
