"""NumPy: the CPU reference backend, with its hottest update (Adam) fused: one compiled pass
where numba is installed, fewer temporaries where it is not."""

from __future__ import annotations

import contextlib
import functools
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

    @classmethod
    def kernel(cls, name: str) -> Any:
        # The CNN layers' element-wise passes fused by numba (``_numba_cnn``); numba is
        # loaded only when a CNN layer asks: a dense network's ReLU never loads it.
        from . import _numba_cnn

        return _numba_cnn.kernel(name)

    @staticmethod
    def adam_update(param, grad, m, v, beta_1, beta_2, scale, eps):
        kernel = _fused_adam() if param.size >= _FUSE_FROM else None
        if kernel is None or not param.flags.c_contiguous:
            return _adam_passes(param, grad, m, v, beta_1, beta_2, scale, eps)
        # One pass over the four arrays instead of twelve, with every constant cast to the
        # arrays' dtype as NumPy casts a Python float: the same operations, the same bits.
        dt = param.dtype.type
        # C order, whatever order m and v came in (an F-ordered m from the passes, after
        # weights loaded in nn.Linear's layout): the loop writes through flat views.
        out = tuple(np.empty(param.shape, param.dtype) for _ in range(3))
        kernel(
            param,
            np.ascontiguousarray(grad),
            np.ascontiguousarray(m),
            np.ascontiguousarray(v),
            dt(beta_1),
            dt(1 - beta_1),
            dt(beta_2),
            dt(1 - beta_2),
            dt(scale),
            dt(eps),
            *out,
        )
        return out


# The book's small networks (spiral, sine) stay below this and never pay the first call's
# compilation; above it, the compiled loop is about three times faster than the passes.
_FUSE_FROM = 1 << 13


def _adam_passes(param, grad, m, v, beta_1, beta_2, scale, eps):
    """The portable arithmetic in the same order (so the same bits), in four new arrays
    instead of nine temporaries. New arrays, not reused ones: anyone may hold the old
    parameters (a snapshot, a checkpoint, another thread)."""
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


@functools.cache
def _fused_adam() -> Any:
    """Adam as one compiled loop where numba is installed (a dependency of portnn where
    CPython is), else None: the element-wise passes above are the fallback."""
    try:
        import numba
    except ImportError:
        return None

    # NumPy's error model: x / 0 is inf or nan as in the reference, not ZeroDivisionError,
    # and without that per-element check the loop vectorizes (several times faster).
    # cache: compiled once per installation, not in every process (about two seconds).
    @numba.njit(nogil=True, error_model="numpy", cache=True)
    def kernel(p, g, m, v, b1, c1, b2, c2, scale, eps, p_out, m_out, v_out):  # pragma: no cover
        p, g, m, v = p.ravel(), g.ravel(), m.ravel(), v.ravel()
        p_out, m_out, v_out = p_out.ravel(), m_out.ravel(), v_out.ravel()
        for i in range(p.size):
            gi = g[i]
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * (gi * gi)
            m_out[i] = mi
            v_out[i] = vi
            p_out[i] = p[i] - scale * mi / (np.sqrt(vi) + eps)

    return kernel
