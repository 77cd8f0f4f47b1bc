"""The gradient buffer: every gradient of a step in one flat buffer, summed across the ranks
in one all-reduce, with two extra slots (this rank's sample count and its failure flag).

Paths (``describe`` names the one taken): ``host`` for arrays in CPU memory, through NumPy
views over DLPack; ``staged`` (a host copy, over MPI) and ``nccl`` (on the device) for GPU
arrays. Those two have never run on a GPU and stay off unless ``PORTNN_DISTRIBUTED_GPU``
asks for them. What differs per library (the host copy, the NCCL communicator) is asked of
the arrays' Backend class."""

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


class _HostBuffer:
    """Every gradient of ``slots`` in one NumPy buffer, plus two slots: this rank's sample
    count and its failure flag. The layers get views of the buffer back (no copy out)."""

    path = "host"

    def __init__(self, comm: Communicator, params: list, dtype: np.dtype) -> None:
        self.comm = comm
        sizes = [math.prod(p.shape) for p in params]
        self.n = sum(sizes)
        self.buffer = np.zeros(self.n + 2, dtype)
        self.flat = self.buffer[: self.n]
        xp, bounds = array_namespace(params[0]), np.cumsum([0, *sizes])
        self.views = [
            self.buffer[a:b].reshape(tuple(p.shape))
            for p, a, b in zip(params, bounds[:-1], bounds[1:], strict=True)
        ]
        self.outs = [xp.from_dlpack(v) for v in self.views]  # the backend's arrays over them

    def pack(self, grads: list, scale: float) -> None:
        for view, grad in zip(self.views, grads, strict=True):
            np.multiply(np.from_dlpack(grad), scale, out=view)

    def reduce(self, samples: float, failed: bool) -> tuple[float, float]:
        self.buffer[self.n :] = (samples, failed)
        self.comm.allreduce(self.buffer)
        return float(self.buffer[self.n]), float(self.buffer[self.n + 1])

    def unpack(self, divisor: float) -> list:
        if divisor != 1:
            np.divide(self.flat, divisor, out=self.flat)
        return self.outs


class _DeviceBuffer:
    """The GPU paths (never run on a GPU yet; off unless PORTNN_DISTRIBUTED_GPU says). The
    buffer is packed on the device with Array API calls, then summed there with NCCL
    (``nccl``, CuPy) or through one host copy over MPI (``staged``, CuPy or torch on CUDA)."""

    def __init__(self, comm: Communicator, params: list, path: str) -> None:
        self.comm, self.path = comm, path
        self.backend = backend_of(params[0])
        xp = self.backend.xp
        self.shapes = [tuple(p.shape) for p in params]
        sizes = [math.prod(s) for s in self.shapes]
        ends = [int(e) for e in np.cumsum(sizes)]
        self.bounds = list(zip([0, *ends[:-1]], ends, strict=True))
        self.n = sum(sizes)
        self.buffer = xp.zeros((self.n + 2,), dtype=params[0].dtype, device=self.backend.device)
        if path == "nccl":  # ChainerMN's bootstrap: rank 0's NCCL id, broadcast over MPI
            self.nccl = self.backend.nccl_allreduce(comm.rank, comm.size, comm.bcast)

    def pack(self, grads: list, scale: float) -> None:
        xp = self.backend.xp
        for (a, b), grad in zip(self.bounds, grads, strict=True):
            flat = xp.reshape(grad, (-1,))
            self.buffer[a:b] = flat if scale == 1 else flat * scale

    def reduce(self, samples: float, failed: bool) -> tuple[float, float]:
        self.buffer[self.n] = samples
        self.buffer[self.n + 1] = float(failed)
        if self.path == "nccl":
            self.nccl(self.buffer)
            tail = to_numpy(self.buffer[self.n :])  # waits for the all-reduce
        else:
            host = self.backend.to_host(self.buffer)
            self.comm.allreduce(host)
            self.buffer = self.backend.from_host(host)
            tail = host[self.n :]
        return float(tail[0]), float(tail[1])

    def unpack(self, divisor: float) -> list:
        xp = self.backend.xp
        flat = self.buffer[: self.n] if divisor == 1 else self.buffer[: self.n] / divisor
        return [
            xp.reshape(flat[a:b], s) for (a, b), s in zip(self.bounds, self.shapes, strict=True)
        ]


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
