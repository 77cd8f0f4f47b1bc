"""Array backends: which library computes, on which device, in which float dtype.

Selection, first match wins: an explicit ``backend=`` argument, ``with use_backend(...)``,
``set_backend(...)``, the environment variable ``PORTNN_BACKEND``, then ``numpy``.
Arrays never move between libraries silently: ``to_numpy`` and ``to_backend`` are the moves.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS = ("numpy", "array_api_strict", "torch", "cupy")
DTYPES = ("float32", "float64")

# What to install when a backend's library is missing: (module, pip requirement).
_NEEDS = {
    "numpy": ("numpy", "numpy"),
    "array_api_strict": ("array_api_strict", "'portnn[strict]'"),
    "torch": ("torch", "'portnn[torch]'"),
    "cupy": ("cupy", "'portnn[cupy]'"),
}


@dataclass(frozen=True)
class Backend:
    """A library's Array API namespace ``xp``, the device arrays live on, and the float dtype."""

    name: str
    xp: ModuleType
    device: Any
    dtype: Any

    @property
    def dtype_name(self) -> str:
        return _dtype_name(self.dtype)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """NumPy data, Python numbers or this backend's arrays as an array on this device.

        Floats take this backend's dtype unless ``dtype`` says otherwise; integers stay integers.
        Arrays of another array library raise: move them with ``to_numpy`` first.
        """
        lib = library_of(x)
        if lib not in (None, "numpy", self.name):
            raise TypeError(
                f"got a {lib} array, but this model computes on the {self.name!r} backend; "
                f"move it explicitly with portnn.to_backend(x, {self.name!r}) "
                "or portnn.to_numpy(x)"
            )
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(
                "got a masked array, whose mask portnn would drop; fill the masked values "
                "(x.filled(value)) or drop those samples first"
            )
        if getattr(x, "requires_grad", False):
            raise TypeError(
                "got a torch tensor that requires grad: portnn computes its own gradients, and "
                "autograd would record every step (memory grows each epoch); pass x.detach()"
            )
        if lib is None:
            x = np.asarray(x)
        _check_numeric(x)
        if lib in (None, "numpy") and x.dtype.kind == "f" and x.dtype.itemsize > 8:
            x = x.astype(np.float64)  # long double: most libraries cannot take it
        if dtype is None and _is_float(x):
            dtype = self.dtype
        elif isinstance(dtype, str):
            dtype = getattr(self.xp, dtype)
        if lib == "numpy" and self.name != "numpy":
            x = np.asarray(x, order="C")  # not ascontiguousarray: it makes a 0-d array 1-d
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: callers check
            return self.xp.asarray(x, dtype=dtype, device=self.device)

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device!r}, dtype={self.dtype_name!r})"


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:  # torch and array_api_strict dtypes print as "torch.float32"
        return str(dtype).rsplit(".", 1)[-1]


def _check_numeric(x: Any) -> None:
    """Refuse data that would lose information or meaning on the way in: complex numbers
    (the imaginary part would be dropped), strings, objects, dates."""
    name = _dtype_name(x.dtype)
    if not (name == "bool" or "int" in name or "float" in name) or "complex" in name:
        raise TypeError(
            f"got an array of dtype {name}; portnn takes real numbers (floats, integers or "
            "booleans): convert the data, e.g. x.real or x.astype('float32'), or encode labels "
            "as integers"
        )


def _is_float(x: Any) -> bool:
    return "float" in _dtype_name(x.dtype)


def library_of(x: Any) -> str | None:
    """The backend name of an array (``"numpy"``, ``"cupy"``...), or None for non-arrays."""
    module = type(x).__module__.split(".")[0]
    if module == "numpy" and isinstance(x, np.ndarray | np.generic):
        return "numpy"
    if module in ("cupy", "torch", "array_api_strict"):
        return module
    return None


def _load_namespace(name: str) -> tuple[ModuleType, Any]:
    module, pip = _NEEDS[name]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the {name!r} backend needs the {module!r} package, which is not installed here; "
            f"install it with: pip install {pip}"
        ) from exc
    if name == "numpy":
        import array_api_compat.numpy as xp

        return xp, "cpu"
    if name == "array_api_strict":
        import array_api_strict as xp

        return xp, xp.Device("CPU_DEVICE")
    if name == "torch":
        import array_api_compat.torch as xp
        import torch

        return xp, torch.device("cpu")
    import array_api_compat.cupy as xp
    import cupy

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own types
        raise RuntimeError(f"the 'cupy' backend needs a CUDA GPU, and none answers: {exc}") from exc
    if count < 1:
        raise RuntimeError("the 'cupy' backend needs a CUDA GPU, and none was found")
    return xp, cupy.cuda.Device(0)


@functools.cache
def _make(name: str, dtype: str, device: Any = None) -> Backend:
    xp, default_device = _load_namespace(name)
    if name == "torch" and device is not None:
        import torch

        device = torch.device(device)
    return Backend(name, xp, default_device if device is None else device, getattr(xp, dtype))


def _check(name: str, dtype: str | None) -> tuple[str, str]:
    name = name.strip().lower().replace("-", "_")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    dtype = "float32" if dtype is None else _dtype_name(dtype)
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
            chosen = _make(*_check(env, env_dtype))
    if dtype is not None and _dtype_name(dtype) != chosen.dtype_name:
        chosen = _make(*_check(chosen.name, dtype), _custom_device(chosen))
    return chosen


def _custom_device(backend: Backend) -> Any:
    return backend.device if backend.name == "torch" else None


def set_backend(name: str, dtype: Any = None, device: Any = None) -> Backend:
    """Make ``name`` the backend for the rest of the program (``use_backend`` still overrides)."""
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
    for name in BACKENDS:
        try:
            _load_namespace(name)
        except (ImportError, RuntimeError):
            continue
        found.append(name)
    return found


def backend_of(x: Any) -> Backend:
    """The backend an array lives on, with the array's own float dtype."""
    name = library_of(x)
    if name is None:
        raise TypeError(f"expected an array, got {type(x).__name__}")
    dtype = _dtype_name(x.dtype) if _is_float(x) else None
    device = x.device if name == "torch" else None
    return _make(*_check(name, dtype), device)


def to_numpy(x: Any) -> np.ndarray:
    """Copy any backend's array to a NumPy array on the host (NumPy arrays pass through)."""
    lib = library_of(x)
    if lib in (None, "numpy"):
        return np.asarray(x)
    if lib == "cupy":
        return x.get()
    if lib == "torch":
        return x.detach().cpu().numpy()
    return np.from_dlpack(x).copy()  # array_api_strict on its CPU device


def to_backend(x: Any, backend: str | Backend, dtype: Any = None) -> Any:
    """Move an array (or NumPy data) to ``backend``, keeping its dtype unless ``dtype`` is given."""
    target = get_backend(backend)
    if library_of(x) == target.name and dtype is None:
        return x
    data = to_numpy(x)
    return target.asarray(data, dtype=dtype or _dtype_name(data.dtype))
