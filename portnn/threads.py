"""How many threads the CPU libraries under portnn use: the BLAS and OpenMP pools (NumPy's
OpenBLAS or MKL, any libgomp) through threadpoolctl, and PyTorch's intra-op pool.

The book's networks are small: a spiral epoch is a few products of 300 x 64 matrices, far
below what a second thread pays for, and on a busy machine the pools' threads spin waiting
for each other (seen on a shared 2-core VM: ``portnn train sine`` 482 s with the default
threads, 22 s with ``OPENBLAS_NUM_THREADS=1``; torch 6.0 s against 0.7 s). portnn never
changes the pools on import; ``set_num_threads`` and ``num_threads`` do it when asked, and the
``portnn`` command uses one thread for its small datasets (``portnn train --help``).

Only libraries already loaded are reached: torch is set when it has been imported (portnn
never imports it for this), and a library loaded later starts with its own default. Choose
the backend first (``pn.set_backend("torch")``), then the threads, or let ``limit`` load the
backends' libraries before it sets them. ``describe`` puts the counts in a few words.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._checks import integer

__all__ = [
    "MAX_THREADS",
    "describe",
    "get_num_threads",
    "limit",
    "num_threads",
    "set_num_threads",
]

# More than the CPUs of any machine portnn runs on; torch refuses 2**31 and up only once the
# BLAS pools have been set, so a count is checked against this first.
MAX_THREADS = 1024


def _count(n: Any) -> int:
    n = integer("the number of threads", n, 1)  # any integer (NumPy's too), never a bool
    if n > MAX_THREADS:
        raise ValueError(f"the number of threads must be at most {MAX_THREADS}, got {n}")
    return n


def _torch() -> Any:
    """torch's module if this process has imported it, else None (never imports it)."""
    return sys.modules.get("torch")


def _pool_name(info: dict[str, Any]) -> str:
    """``openblas (numpy)``: the library's kind and the package that ships it."""
    path = Path(info.get("filepath") or "")
    parts = path.parts
    owner = path.name
    if "site-packages" in parts and parts.index("site-packages") + 1 < len(parts) - 1:
        owner = parts[parts.index("site-packages") + 1].removesuffix(".libs")
    return f"{info.get('internal_api', '?')} ({owner})"


def get_num_threads() -> dict[str, int]:
    """The thread count of each pool that ``set_num_threads`` reaches, as loaded now: one
    entry per BLAS or OpenMP library threadpoolctl finds, named by its kind and the package
    that ships it (``"openblas (numpy)"``, ``"openmp (torch)"``), and ``"torch"`` (its
    intra-op threads) when torch is imported."""
    from threadpoolctl import threadpool_info

    counts: dict[str, int] = {}
    for info in threadpool_info():
        name, k = _pool_name(info), 2
        while name in counts:  # two copies of one library (each wheel vendors its own)
            name, k = f"{_pool_name(info)} #{k}", k + 1
        counts[name] = int(info["num_threads"])
    torch = _torch()
    if torch is not None:
        counts["torch"] = int(torch.get_num_threads())
    return counts


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (an integer from 1 to ``MAX_THREADS``) in every BLAS and OpenMP pool
    loaded now and, when torch is imported, in torch's intra-op pool (``torch.set_num_threads``),
    until changed. A bad ``n`` raises ValueError and changes nothing. OpenBLAS uses at most its
    build's maximum (often 64) whatever ``n`` asks; ``get_num_threads`` shows what each took."""
    n = _count(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(n)


def num_threads(n: int) -> contextlib.AbstractContextManager[None]:
    """``with pn.num_threads(1): model.train(...)``: ``set_num_threads(n)`` for the block;
    every pool it changed gets its own count back on the way out, on error too. A bad ``n``
    raises ValueError here, at the call."""
    return _limited(_count(n))


@contextlib.contextmanager
def _limited(n: int) -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    torch = _torch()
    torch_before = torch.get_num_threads() if torch is not None else None
    limits = threadpool_limits(limits=n)
    try:
        if torch is not None:
            torch.set_num_threads(n)
        yield
    finally:
        limits.restore_original_limits()
        if torch is not None:
            torch.set_num_threads(torch_before)


def limit(
    n: int | None, backends: Iterable[str | None] = (None,), modules: Iterable[str] = ()
) -> contextlib.AbstractContextManager[None]:
    """``num_threads(n)`` once the libraries of ``backends`` (names; None: the selected
    backend) and the ``modules`` (``"sklearn.datasets"``: scipy's OpenBLAS and scikit-learn's
    OpenMP) are loaded, so that their pools, torch's own among them, are among those set; one
    that cannot load is passed over (whoever uses it says why). ``n`` None: the libraries'
    own counts, nothing changed."""
    if n is None:
        return contextlib.nullcontext()
    n = _count(n)  # a bad count raises here, before any library is loaded
    from .backend import get_backend

    for name in backends:
        with contextlib.suppress(Exception):  # a broken library raises whatever it raises
            get_backend(name)
    for module in modules:
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    return _limited(n)


def describe(counts: dict[str, int] | None = None) -> str:
    """The counts (default ``get_num_threads()``) in a few words: ``1 CPU thread`` where every
    pool has the same count, else each pool's (``CPU threads: openblas (numpy) 2, torch 1``);
    empty where no pool is seen."""
    counts = get_num_threads() if counts is None else counts
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return f"{n} CPU thread{'s' if n > 1 else ''}"
    return ("CPU threads: " + ", ".join(f"{k} {n}" for k, n in counts.items())) if counts else ""
