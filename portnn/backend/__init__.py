"""Array backends: which library computes, on which device, in which float dtype.

Selection, first match wins: an explicit ``backend=`` argument, ``with use_backend(...)``,
``set_backend(...)``, the environment variable ``PORTNN_BACKEND`` (with ``PORTNN_DTYPE`` and
``PORTNN_DEVICE``), then ``numpy``.
Arrays never move between libraries silently: ``to_numpy`` and ``to_backend`` are the moves.

Everything that differs between libraries lives in one class per library (``_numpy.py``,
``_strict.py``, ``_torch.py``, ``_cupy.py``, ``_jax.py``) over the portable ``Backend`` of
``_base.py``; this module only chooses among them. No other module names a library.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._base import Backend, dtype_name
from ._cupy import CupyBackend
from ._jax import JaxBackend
from ._numpy import NumpyBackend
from ._strict import StrictBackend
from ._torch import TorchBackend

__all__ = [
    "BACKENDS",
    "DTYPES",
    "Backend",
    "available_backends",
    "backend_class",
    "backend_of",
    "common_backend",
    "get_backend",
    "library_of",
    "set_backend",
    "to_backend",
    "to_numpy",
    "use_backend",
]

_CLASSES: dict[str, type[Backend]] = {
    c.name: c for c in (NumpyBackend, StrictBackend, TorchBackend, CupyBackend, JaxBackend)
}
BACKENDS = tuple(_CLASSES)
DTYPES = ("float32", "float64")


def library_of(x: Any) -> str | None:
    """The backend name of an array (``"numpy"``, ``"cupy"``...), or None for non-arrays."""
    cls = _class_of_type(type(x))
    return None if cls is None else cls.name


@functools.cache
def _class_of_type(kind: type) -> type[Backend] | None:
    module = kind.__module__.split(".")[0]
    if module == "numpy" and not issubclass(kind, np.ndarray | np.generic):
        return None
    return next((c for c in _CLASSES.values() if module in (c.name, *c.modules)), None)


def backend_class(x: Any) -> type[Backend]:
    """The Backend class of an array's library, remembered per array type: the math modules
    call its fused kernels (``backend_class(param).adam_update(...)``) without a lookup."""
    cls = _class_of_type(type(x))
    if cls is None:
        raise TypeError(f"expected an array, got {type(x).__name__}")
    return cls


def _load(cls: type[Backend]) -> tuple[Any, Any]:
    try:
        importlib.import_module(cls.name)
    except ImportError as exc:
        raise ImportError(
            f"the {cls.name!r} backend needs the {cls.name!r} package, which is not installed "
            f"here; install it with: pip install {cls.extra}"
        ) from exc
    return cls.load()


_MADE: dict[tuple, Backend] = {}


def _make(name: str, dtype: str, device: Any = None) -> Backend:
    """The one Backend of (name, dtype, device), made once. Keyed by the device's text, not
    the device: CuPy's Device objects cannot be hashed (CuPy 14)."""
    key = (name, dtype, None if device is None else _device_key(device))
    made = _MADE.get(key)
    if made is None:
        cls = _CLASSES[name]
        xp, _ = _load(cls)
        made = _MADE[key] = cls(xp, cls.resolve_device(device), getattr(xp, dtype))
    return made


_make.cache_clear = _MADE.clear  # what a test that swaps a library out calls


def _device_key(device: Any) -> str:
    return f"{type(device).__name__}:{getattr(device, 'id', device)}"


def _check(name: str, dtype: str | None) -> tuple[str, str]:
    name = name.strip().lower().replace("-", "_")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    dtype = "float32" if dtype is None else dtype_name(dtype)
    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; portnn computes in {' or '.join(DTYPES)}")
    return name, dtype


_global: Backend | None = None
_context: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "portnn_backend", default=None
)


def get_backend(backend: str | Backend | None = None, dtype: Any = None) -> Backend:
    """The backend to use: ``backend`` if given, else the innermost ``use_backend``,
    else ``set_backend``'s, else ``$PORTNN_BACKEND``, else NumPy. ``dtype`` overrides its dtype.
    """
    if isinstance(backend, Backend):
        chosen = backend
    elif backend is not None:
        chosen = _make(*_check(backend, dtype))
    else:
        chosen = _context.get() or _global
        if chosen is None:
            env = os.environ.get("PORTNN_BACKEND", "").strip() or "numpy"
            env_dtype = os.environ.get("PORTNN_DTYPE", "").strip() or None
            env_device = os.environ.get("PORTNN_DEVICE", "").strip() or None
            chosen = _make(*_check(env, env_dtype), env_device)
    if dtype is not None and dtype_name(dtype) != chosen.dtype_name:
        chosen = _make(*_check(chosen.name, dtype), chosen.device)
    return chosen


def set_backend(name: str, dtype: Any = None, device: Any = None) -> Backend:
    """Make ``name`` the backend for the rest of the program (``use_backend`` still overrides).
    ``device`` picks one of the library's devices: ``set_backend("cupy", device=1)``,
    ``set_backend("torch", device="cuda")``."""
    global _global
    _global = _make(*_check(name, dtype), device)
    return _global


@contextlib.contextmanager
def use_backend(name: str, dtype: Any = None, device: Any = None) -> Iterator[Backend]:
    """``with use_backend("torch"):`` computes on that backend inside, and restores on exit."""
    token = _context.set(_make(*_check(name, dtype), device))
    try:
        yield _context.get()
    finally:
        _context.reset(token)


def available_backends() -> list[str]:
    """The backends that work on this machine (CuPy only where a CUDA GPU answers)."""
    found = []
    for name, cls in _CLASSES.items():
        try:
            _load(cls)
        except (ImportError, RuntimeError):
            continue
        found.append(name)
    return found


def backend_of(x: Any) -> Backend:
    """The backend an array lives on (its library and device), with the array's float dtype."""
    cls = backend_class(x)
    float_dtype = dtype_name(x.dtype) if "float" in dtype_name(x.dtype) else None
    return _make(*_check(cls.name, float_dtype), cls.device_of(x))


def common_backend(arrays: dict[str, Any]) -> Backend | None:
    """The one backend (library, device and dtype) of ``arrays``, named by where each is; a
    ValueError if they differ: mixing them fails deep in a product or silently promotes a
    float32 model to float64."""
    found: dict[Backend, str] = {}
    for where, array in arrays.items():
        found.setdefault(backend_of(array), where)
    if len(found) > 1:
        listed = "; ".join(f"{where} is on {b}" for b, where in found.items())
        raise ValueError(
            f"the model's parameters live on different backends or dtypes: {listed}. "
            "Build every layer on one backend (pn.use_backend), or move the model with "
            "model.to(backend, dtype)"
        )
    return next(iter(found), None)


def to_numpy(x: Any) -> np.ndarray:
    """Copy any backend's array to a NumPy array on the host (NumPy arrays pass through)."""
    cls = _class_of_type(type(x))
    return np.asarray(x) if cls is None else cls.to_numpy(x)


def to_backend(x: Any, backend: str | Backend, dtype: Any = None) -> Any:
    """Move an array (or NumPy data) to ``backend``, keeping its dtype unless ``dtype`` is given."""
    target = get_backend(backend)
    if library_of(x) == target.name and dtype is None:
        device = type(target).device_of(x)
        if device is None or device == target.device:
            return x
        return target.asarray(x)
    data = to_numpy(x)
    return target.asarray(data, dtype=dtype or dtype_name(data.dtype))
