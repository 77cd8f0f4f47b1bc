"""``portnn info``: what portnn finds on this machine (versions, backends and their
devices, the distributed paths, thread pools), as text."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform

import portnn as pn

from . import distributed
from ._summary import table
from .backend import BACKENDS
from .scripts import one_line

__all__ = ["environment_report"]


def environment_report() -> str:
    """The lines ``portnn info`` prints."""
    lines = []
    lines.append(
        f"portnn {pn.__version__} (Python {platform.python_version()}, {platform.system()})"
    )
    try:
        selected = pn.get_backend()
        lines.append(f"selected backend: {selected.name} ({selected.dtype_name})")
    except Exception as exc:  # a broken library raises whatever its import raises
        lines.append(f"selected backend: none usable ({_why(exc)})")
    rows, notes = [], []
    for name in BACKENDS:
        version = _library_version(name)
        try:
            backend = pn.get_backend(name)
            devices = ", ".join(type(backend).devices())  # what its library computes on here
        except Exception as exc:  # one broken library leaves the others to report
            rows.append((name, version, "no", "-", "-"))
            notes.append(f"  {name}: {_why(exc)}")
            continue
        rows.append((name, version, "yes", devices, backend.dtype_name))
    header = ("backend", "library", "usable", "devices", "dtype")
    lines.extend("  " + line for line in table([header, *rows]))
    for note in notes:
        lines.append(note)
    lines.append(distributed.info())
    pools = ", ".join(f"{name} {n}" for name, n in pn.get_num_threads().items())
    lines.append(f"threads: {_cpus()} CPUs; {pools or 'no BLAS or OpenMP pool loaded'}")
    return "\n".join(lines)


def _why(exc: Exception) -> str:
    """Why a backend is unusable, in one line: portnn's own message (ImportError, RuntimeError,
    ValueError), else the error a broken library raised, with its type."""
    if isinstance(exc, (ImportError, RuntimeError, ValueError)):
        return one_line(exc)
    return f"{type(exc).__name__}: {one_line(exc)}"


def _cpus() -> int:
    """The CPUs this process may run on (its affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _library_version(module: str) -> str:
    """The version of the library a backend is named after (each backend's module name)."""
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        return f"{module} {importlib.import_module(module).__version__}"
    except Exception as exc:  # a broken install raises whatever its import raises
        return f"{module} (fails to import: {type(exc).__name__})"
