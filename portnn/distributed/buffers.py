"""The gradient buffer: every gradient of a step in one flat buffer, summed across the ranks
in one all-reduce, with two extra slots (this rank's sample count and its failure flag).

Paths (``describe`` names the one taken): ``host`` for arrays in CPU memory, through NumPy
views over DLPack; ``staged`` (a host copy, over MPI) and ``nccl`` (on the device) for GPU
arrays. Those two have never run on a GPU and stay off unless ``PORTNN_DISTRIBUTED_GPU``
asks for them. What differs per library (the host copy, the NCCL communicator) is asked of
the arrays' Backend class.

A buffer is laid out once for its parameters (their library, device, dtype and shapes: its
``layout``) and reused every step: packing, summing and unpacking allocate nothing, and the
layers get views of it back, valid until the next all-reduce (copies, for a library whose
arrays cannot alias NumPy's memory: JAX's are immutable). A new layout takes a new
buffer (``DistributedOptimizer`` checks)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .._xp import array_namespace
from ..backend import Backend, backend_class, backend_of, dtype_name, library_of, to_numpy
from .comm import Communicator, launched_size

GPU_VARIABLE = "PORTNN_DISTRIBUTED_GPU"  # "nccl", "staged" or "auto": the untested GPU paths
_DLPACK_CPU = 1


def info() -> str:
    """One line for ``portnn info``: mpi4py, the launch, and the GPU paths."""
    import importlib.util

    if importlib.util.find_spec("mpi4py") is None:
        return "distributed: mpi4py not installed (pip install 'portnn[mpi]')"
    import mpi4py

    size = launched_size()
    launch = f"{size} ranks from mpiexec" if size else "not started by mpiexec"
    gpu = os.environ.get(GPU_VARIABLE, "").strip().lower() or "off (never run on a GPU)"
    return f"distributed: mpi4py {mpi4py.__version__}, {launch}; paths: host, GPU {gpu}"


def _layout(params: list) -> list[tuple[Backend, tuple[int, ...]]]:
    """What a buffer is laid out for: each parameter's backend (library, device, dtype) and
    shape."""
    return [(backend_of(p), tuple(p.shape)) for p in params]


def _checked_layout(params: list) -> list[tuple[Backend, tuple[int, ...]]]:
    layout = _layout(params)
    backends = {b for b, _ in layout}
    if len(backends) > 1:
        raise ValueError(
            "the layers' parameters live on different backends or dtypes "
            f"({'; '.join(sorted(map(repr, backends)))}); one gradient buffer holds one"
        )
    return layout


class _HostBuffer:
    """Every gradient of ``slots`` in one NumPy buffer, plus two slots: this rank's sample
    count and its failure flag. The layers get views of the buffer back (no copy out) where
    their library's arrays can alias it, else copies."""

    path = "host"

    def __init__(self, comm: Communicator, params: list, dtype: np.dtype) -> None:
        self.comm, self.layout = comm, _checked_layout(params)
        sizes = [math.prod(p.shape) for p in params]
        self.n = sum(sizes)
        self.buffer = np.zeros(self.n + 2, dtype)
        self.flat, self.tail = self.buffer[: self.n], self.buffer[self.n :]
        xp, bounds = array_namespace(params[0]), np.cumsum([0, *sizes])
        self.views = [
            self.buffer[a:b].reshape(tuple(p.shape))
            for p, a, b in zip(params, bounds[:-1], bounds[1:], strict=True)
        ]
        self.xp, self.outs = xp, [xp.from_dlpack(v) for v in self.views]  # arrays over them
        # A library of immutable arrays (JAX) copies instead: its arrays are made anew from
        # the views at each unpack, since the buffer is written again at the next step.
        self.aliased = all(
            np.from_dlpack(o).ctypes.data == v.ctypes.data
            for o, v in zip(self.outs, self.views, strict=True)
        )

    def pack(self, grads: list, scale: float) -> None:
        for view, grad in zip(self.views, grads, strict=True):
            # NumPy's own arrays need no DLPack view (a microsecond each, every step).
            g = grad if type(grad) is np.ndarray else np.from_dlpack(grad)
            if g.shape != view.shape:  # np.multiply would broadcast it
                raise _misfit(g.shape, view.shape)
            np.multiply(g, scale, out=view)

    def reduce(self, samples: float, failed: bool) -> tuple[float, float]:
        tail = self.tail
        tail[0], tail[1] = samples, failed
        self.comm.allreduce(self.buffer)
        return tuple(tail.tolist())

    def unpack(self, divisor: float) -> list:
        if divisor != 1:
            np.divide(self.flat, divisor, out=self.flat)
        return self.outs if self.aliased else [self.xp.from_dlpack(v) for v in self.views]


class _DeviceBuffer:
    """The GPU paths (never run on a GPU yet; off unless PORTNN_DISTRIBUTED_GPU says). The
    buffer is packed on the device with Array API calls, then summed there with NCCL
    (``nccl``, CuPy) or through a host buffer over MPI (``staged``, CuPy or torch on CUDA).

    ``staged`` copies into one host buffer made with the device buffer, through the library's
    own array over that host memory (DLPack) where the library has one (torch); where it has
    none (CuPy), through the Backend's ``to_host`` and ``from_host`` copies."""

    def __init__(self, comm: Communicator, params: list, path: str) -> None:
        self.comm, self.path, self.layout = comm, path, _checked_layout(params)
        self.backend = b = backend_of(params[0])
        xp = b.xp
        shapes = [tuple(p.shape) for p in params]
        ends = np.cumsum([0, *(math.prod(s) for s in shapes)]).tolist()
        self.bounds = list(zip(ends[:-1], ends[1:], strict=True))
        self.n = ends[-1]
        self.buffer = xp.zeros((self.n + 2,), dtype=params[0].dtype, device=b.device)
        self.flat = self.buffer[: self.n]
        self.shapes = shapes
        self.outs = [
            xp.reshape(self.flat[a:c], s) for (a, c), s in zip(self.bounds, shapes, strict=True)
        ]
        if path == "nccl":  # ChainerMN's bootstrap: rank 0's NCCL id, broadcast over MPI
            self.nccl = b.nccl_allreduce(comm.rank, comm.size, comm.bcast)
        else:  # the host buffer, and the library's array over it (None: it has none)
            self.host, self.staging = _staging(xp, np.empty(self.n + 2, np.dtype(b.dtype_name)))

    def pack(self, grads: list, scale: float) -> None:
        buffer, reshape = self.buffer, self.backend.xp.reshape
        for (a, c), shape, grad in zip(self.bounds, self.shapes, grads, strict=True):
            if grad.shape != shape:  # one of the same size would pass unnoticed
                raise _misfit(tuple(grad.shape), shape)
            buffer[a:c] = reshape(grad, (-1,))
        if scale != 1:  # one pass in place: the same products as ``grad * scale``
            self.flat *= scale

    def reduce(self, samples: float, failed: bool) -> tuple[float, float]:
        n = self.n
        if self.path == "nccl":
            self.buffer[n] = samples
            self.buffer[n + 1] = float(failed)
            self.nccl(self.buffer)
            return tuple(to_numpy(self.buffer[n:]).tolist())  # waits for the all-reduce
        if self.staging is None:
            host = self.backend.to_host(self.buffer)
        else:
            self.staging[...] = self.buffer
            host = self.host
        host[n], host[n + 1] = samples, failed
        self.comm.allreduce(host)
        self.buffer[...] = self.backend.from_host(host) if self.staging is None else self.staging
        return tuple(host[n:].tolist())

    def unpack(self, divisor: float) -> list:
        if divisor != 1:
            self.flat /= divisor
        return self.outs


def _misfit(got: tuple[int, ...], shape: tuple[int, ...]) -> ValueError:
    return ValueError(f"a gradient of shape {got} for a parameter of shape {shape}")


def _staging(xp: Any, host: np.ndarray) -> tuple[np.ndarray | None, Any]:
    """``host`` and an array of namespace ``xp`` over its memory (through DLPack), to copy
    to and from in place; (None, None) where the library cannot hold host memory (its import
    fails, or copies to the device)."""
    try:
        view = xp.from_dlpack(host)
        same = np.from_dlpack(view).ctypes.data == host.ctypes.data
    except Exception:  # each library raises its own types here
        return None, None
    return (host, view) if same else (None, None)


def _gradient_buffer(comm: Communicator, params: list) -> _HostBuffer | _DeviceBuffer:
    """The path for these parameters: host buffers for CPU arrays; the GPU paths only on
    request, since they have never run on a GPU."""
    param = params[0]
    if int(param.__dlpack_device__()[0]) == _DLPACK_CPU:
        return _HostBuffer(comm, params, np.dtype(dtype_name(param.dtype)))
    library = library_of(param)
    choice = os.environ.get(GPU_VARIABLE, "").strip().lower()
    if choice not in ("staged", "nccl", "auto"):
        raise RuntimeError(
            f"the model's parameters are {library} arrays on a GPU, and portnn.distributed "
            "has not run on a GPU yet: its GPU paths are written but untested, so they are "
            f"off. To try them, set {GPU_VARIABLE}=nccl (CuPy: NCCL on the device), "
            f"{GPU_VARIABLE}=staged (CuPy or torch: through host buffers) or "
            f"{GPU_VARIABLE}=auto (NCCL where CuPy has it, else staged), or train on the CPU"
        )
    cls = _class_of(param)
    if choice == "auto":
        choice = "nccl" if cls is not None and cls.nccl_available() else "staged"
    if choice == "nccl" and not (cls is not None and cls.has_nccl):  # NCCL reads device pointers
        raise RuntimeError(
            f"{GPU_VARIABLE}=nccl needs CuPy arrays, got {library} arrays; those go through "
            f"host buffers: {GPU_VARIABLE}=staged"
        )
    return _DeviceBuffer(comm, params, choice)


def _class_of(param: Any) -> type[Backend] | None:
    """The Backend class of ``param``'s library; None for an array no backend knows."""
    try:
        return backend_class(param)
    except TypeError:
        return None


def _describe_path(buffer: _HostBuffer | _DeviceBuffer, params: list) -> str:
    b = backend_of(params[0])
    nbytes = buffer.n * np.dtype(b.dtype_name).itemsize
    shown = f"{nbytes / 1024:.0f} KiB" if nbytes >= 10240 else f"{nbytes:,} bytes"
    size = f"{buffer.n:,} {b.dtype_name} values ({shown})"
    if buffer.path == "host":
        how = f"host buffers over MPI (NumPy views of the {b.name} arrays)"
    elif buffer.path == "staged":
        how = f"host buffers over MPI, staged from {b.name} on {b.device} (UNTESTED GPU path)"
    else:
        how = f"NCCL on {b.device} (UNTESTED GPU path)"
    return f"one all-reduce per step of {size} through {how}"
