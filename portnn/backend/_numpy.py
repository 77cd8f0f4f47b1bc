"""NumPy: the CPU reference backend, with fewer temporaries in its hottest update."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from ._base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    extra = "numpy"

    @classmethod
    def load(cls) -> tuple[ModuleType, Any]:
        import array_api_compat.numpy as xp

        return xp, "cpu"

    def from_numpy(self, x: np.ndarray, dtype: Any) -> Any:
        return np.asarray(x, dtype=dtype)

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        return np.asarray(x)

    def uniform(self, generator: Any, shape: tuple[int, ...]) -> Any:
        return generator.random(shape, dtype=self.dtype_name)

    def permutation(self, generator: Any, n: int) -> Any:
        return generator.permutation(n)

    @staticmethod
    @contextlib.contextmanager
    def quiet_float_errors() -> Iterator[None]:
        with np.errstate(all="ignore"):
            yield

    @staticmethod
    def adam_update(param, grad, m, v, beta_1, beta_2, scale, eps):
        # The portable arithmetic in the same order (so the same bits), in four new arrays
        # instead of nine temporaries. New arrays, not reused ones: anyone may hold the old
        # parameters (a snapshot, a checkpoint, another thread).
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
