"""Data-parallel training over MPI (mpi4py; ``pip install 'portnn[mpi]'``): every rank holds
the whole model and trains on its own part of each global batch, and before each update the
ranks sum their gradients with **one all-reduce per step over one flat buffer**. This follows
Horovod's and ChainerMN's design: a thin wrapper around the optimizer, not a second training
loop.

    mpiexec -n 4 python train.py

    from portnn import distributed as dist
    comm = dist.Communicator()                     # MPI.COMM_WORLD: comm.rank, comm.size
    model.train(X, y, batch_size=128, comm=comm)   # global batch 128, 32 samples per rank
    dist.save(model, "model.npz", comm)            # rank 0 writes; all ranks learn if it failed

``Model.train(..., comm=comm)`` broadcasts rank 0's parameters and optimizer state. Every
rank passes the same data, rank 0's permutation is broadcast every epoch, and each rank
takes its slice of each global batch (``sharded=True``: each rank passes only its own rows,
from ``shard``). The run reduces its figures across ranks, and only rank 0 prints. A hand
loop wraps its optimizer instead: ``DistributedOptimizer(opt, comm, layers=...)``, whose
``step(layers)`` or ``pre_update_params`` (the first of the book's three calls) makes the
step's one all-reduce of every registered layer's gradients.

Gradient scale: a loss's backward divides by the *local* batch size n_r. What the ranks
must sum is therefore ``n_r / B * g_r``, B being the global batch: that sum is the gradient
of the global batch's mean loss, even for uneven splits (3 ranks, a short last batch, an
empty part). ``Model.train`` knows B for every step, so each rank scales as it packs. A hand
loop may not know B. Then each rank packs ``n_r * g_r``, with n_r in an extra slot of the
same buffer, and after the sum divides by the summed count. The L1/L2 terms, which every
rank adds in full, come out once. A second extra slot carries a failure flag, so a rank
whose forward or backward raised still joins the step's all-reduce. Every rank then raises
together instead of waiting for it forever.

Paths, named in the first line a distributed run prints:
- ``host``: arrays in CPU memory (numpy, array_api_strict, torch on the CPU). The gradients
  are copied, scaled on the way, through NumPy views obtained over DLPack into one NumPy
  buffer. mpi4py sums that buffer in place, and the layers get views of it back, which
  stay valid until the next all-reduce. There is no copy out.
- ``staged`` and ``nccl``: GPU arrays. ``staged`` packs on the device and sums through a host
  copy over MPI (CuPy, torch on CUDA). ``nccl`` sums on the device with ``cupy.cuda.nccl``,
  bootstrapped over MPI as ChainerMN does; use one rank per GPU,
  ``pn.set_backend("cupy", device=comm.local_rank)``. **Neither path has run on a GPU yet,**
  so both stay off unless ``PORTNN_DISTRIBUTED_GPU`` is ``nccl``, ``staged``, or ``auto``
  (NCCL for CuPy where it is available, else staged). Without it, training on GPU arrays
  refuses to start and says why.

Dropout draws its masks on each rank from that rank's device generator, so a run with
dropout matches no single process. For independent masks, seed each rank differently once
its data and model exist: ``pn.seed(seed + comm.rank)``. The parameters and the epochs'
orders still come from rank 0.

Faults: a rank that raises in its forward or backward makes every rank raise at that step
(``DistributedError`` on the others, with that rank's message). No update is applied, so
the parameters stay identical everywhere. An error only one rank can see anywhere else (or
an uncaught exception once a Communicator exists) ends the whole job with ``MPI_Abort``,
within seconds rather than as a hang.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from . import random
from ._checks import integer, real
from ._xp import array_namespace
from .backend import Backend, backend_of, dtype_name, to_numpy
from .layers import Layer
from .optimizers import Optimizer

if TYPE_CHECKING:
    from .model import Model

__all__ = [
    "Communicator",
    "DistributedError",
    "DistributedOptimizer",
    "announce",
    "describe",
    "from_environment",
    "info",
    "launched_size",
    "save",
    "shard",
    "should_report",
]

GPU_VARIABLE = "PORTNN_DISTRIBUTED_GPU"  # "nccl", "staged" or "auto": the untested GPU paths
# What launchers set for every process they start: MPICH/Intel MPI's hydra and Slurm's PMI,
# Open MPI, MVAPICH.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_AGREED = "_portnn_all_ranks"  # set on an exception that every rank raises together
_DLPACK_CPU = 1
_announced: set[str] = set()


class DistributedError(RuntimeError):
    """Another rank failed; every rank stops at the same point (the failing one with its own
    exception)."""


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as exc:  # no mpi4py, or no MPI library for it
        raise ImportError(
            "portnn.distributed needs mpi4py and an MPI library; install both with: "
            f"pip install 'portnn[mpi]' (mpi4py and mpich) [{type(exc).__name__}: {exc}]"
        ) from exc
    return MPI


def launched_size() -> int | None:
    """The number of ranks an MPI launcher (mpiexec, srun) started, from its environment;
    None when this process was not started by one. Reads no MPI."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def _mark(exc: BaseException) -> BaseException:
    setattr(exc, _AGREED, True)
    return exc


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


class Communicator:
    """The ranks of an MPI job: ``Communicator()`` wraps ``MPI.COMM_WORLD``.

    ``size``, when given, is how many ranks the program needs. A process not started by
    mpiexec then raises a RuntimeError that shows the command to run, where it would
    otherwise silently train alone. With more than one rank, an uncaught exception on any
    rank aborts the whole job (``abort_on_error``), since the other ranks would otherwise
    wait for it forever.
    """

    def __init__(
        self, size: int | None = None, *, mpi_comm: Any = None, abort_on_error: bool = True
    ) -> None:
        MPI = _mpi()
        comm = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        launched, actual = launched_size(), comm.Get_size()
        if mpi_comm is None and launched is not None and launched != actual:
            raise RuntimeError(
                f"mpiexec started {launched} ranks but MPI sees {actual}: mpi4py is linked to "
                "another MPI library than this mpiexec's; use the mpiexec of the MPI that "
                f"mpi4py uses ({MPI.Get_library_version().splitlines()[0].strip()})"
            )
        if size is not None and integer("size", size) != actual:
            if launched is None:
                raise RuntimeError(
                    f"asked for {size} ranks, but this process was not started by mpiexec "
                    f"and runs alone; start it with: mpiexec -n {size} python ..."
                )
            raise RuntimeError(f"asked for {size} ranks, but the MPI job has {actual}")
        self.MPI, self.mpi = MPI, comm
        self.rank, self.size = comm.Get_rank(), actual
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank = node.Get_rank()  # the GPU to use: one rank per GPU on each node
        node.Free()
        if self.size > 1:
            _jobs.append(self)
            if abort_on_error:
                _install_excepthook(self)

    @property
    def is_root(self) -> bool:
        """Rank 0: the one that prints, shows progress and writes files."""
        return self.rank == 0

    @property
    def library(self) -> str:
        """The MPI library in a few words (``MPICH 5.0.2``)."""
        first = self.MPI.Get_library_version().splitlines()[0].split(",")[0]
        return " ".join(first.replace("Version:", "").split())

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, library={self.library!r})"

    # --- collectives: every rank calls them, in the same order ----------------------------
    def allreduce(self, buffer: np.ndarray) -> None:
        """Sum a NumPy host buffer across ranks, in place."""
        if self.size > 1:
            self.mpi.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def bcast_array(self, buffer: np.ndarray, root: int = 0) -> None:
        """Overwrite a NumPy host buffer with rank ``root``'s, in place (no pickling)."""
        if self.size > 1:
            self.mpi.Bcast(buffer, root=root)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        """A Python object from rank ``root`` (pickled: for small things)."""
        return obj if self.size == 1 else self.mpi.bcast(obj, root=root)

    def allgather(self, obj: Any) -> list:
        return [obj] if self.size == 1 else self.mpi.allgather(obj)

    def barrier(self) -> None:
        self.mpi.Barrier()

    def agree(self, failure: BaseException | None, what: str) -> None:
        """Every rank says whether it failed ``what``; if one did, every rank raises: the
        failing ranks their own exception, the others a DistributedError naming them."""
        if self.size == 1:
            if failure is not None:
                raise failure
            return
        if self.mpi.allreduce(int(failure is not None), op=self.MPI.SUM):
            self.fail_together(failure, what)

    def fail_together(self, failure: BaseException | None, what: str) -> None:
        """Raise on every rank, once all of them know that one failed (a collective)."""
        messages = self.allgather(None if failure is None else _one_line(failure))
        failed = [f"rank {r} ({m})" for r, m in enumerate(messages) if m is not None]
        summary = f"{' and '.join(failed)} of {self.size} failed {what}; every rank stopped"
        if failure is not None:
            if hasattr(failure, "add_note"):  # Python 3.11+
                failure.add_note(f"portnn.distributed: {summary}")
            raise _mark(failure)
        raise _mark(DistributedError(summary))

    def together(self, what: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on every rank, then ``agree`` on whether it failed."""
        failure, result = None, None
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            failure = exc
        self.agree(failure, what)
        return result

    def on_root(self, what: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """``fn`` on rank 0 only (writing a file); every rank raises if it failed. Rank 0's
        result, None elsewhere."""
        return self.together(what, fn if self.is_root else _nothing, *args, **kwargs)

    def abort(self, message: str, code: int = 1) -> None:
        """End every rank of the job now (``MPI_Abort``), after saying why on stderr."""
        sys.stderr.write(f"portnn: rank {self.rank} of {self.size}: {message}\n")
        sys.stderr.flush()
        self.mpi.Abort(code)

    def abort_unless_agreed(self, exc: BaseException, where: str) -> None:
        """Abort the job if ``exc`` happened on this rank alone: the other ranks would wait
        for it forever. Exceptions every rank raises together pass."""
        if self.size > 1 and not getattr(exc, _AGREED, False):
            traceback.print_exception(exc)
            self.abort(
                f"{_one_line(exc)} {where}, which the other ranks cannot know of; aborting "
                "every rank so that none waits for this one forever"
            )


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


_jobs: list[Communicator] = []  # the communicators of more than one rank made here
_hooked: list[Communicator] = []


def should_report(exc: BaseException) -> bool:
    """For a program's top-level error handler (the ``portnn`` command's): whether this rank
    should print ``exc``. An error of this rank alone aborts the whole job here instead, since
    the other ranks would wait for it forever. One that every rank raised together is
    printed by rank 0 only; its message names the rank that failed. True outside MPI jobs."""
    if not _jobs:
        return True
    comm = _jobs[0]
    comm.abort_unless_agreed(exc, "in this program")
    return comm.is_root


def _install_excepthook(comm: Communicator) -> None:
    if _hooked:
        return
    _hooked.append(comm)
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        previous(kind, value, tb)
        if not getattr(value, _AGREED, False):
            comm.abort(f"uncaught {kind.__name__}; aborting every rank of the job")

    sys.excepthook = hook


def from_environment() -> Communicator | None:
    """A Communicator when an MPI launcher started this process with more than one rank,
    else None (a plain run never imports mpi4py). What ``portnn train`` calls: ``mpiexec -n 4
    portnn train ...`` trains data-parallel with no flag."""
    size = launched_size()
    if size is None or size <= 1:
        return None
    try:
        return Communicator(size)
    except ImportError as exc:
        raise ImportError(
            f"this process is one of {size} ranks started by mpiexec, but {exc}; without it "
            "every rank would train alone"
        ) from exc


def shard(n: int, comm: Communicator) -> slice:
    """This rank's rows of ``n``: ``slice(rank * n // size, (rank + 1) * n // size)``. A rank
    can then read only its rows (``np.load(path, mmap_mode="r")[shard(n, comm)]``) and train on
    them with ``model.train(X, y, comm=comm, sharded=True)``."""
    n = integer("n", n, 0)
    return slice(comm.rank * n // comm.size, (comm.rank + 1) * n // comm.size)


def save(model: Model, path: str | os.PathLike, comm: Communicator) -> None:
    """``model.save(path)`` on rank 0 only; every rank raises if it failed (a full disk), and
    none goes on before the file is complete. The write is atomic, so a failed save leaves
    the last good file whole."""
    comm.on_root(f"saving the model to {os.fspath(path)}", model.save, path)


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


# --- the gradient buffer --------------------------------------------------------------------
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
        self.bounds = list(zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes), strict=True))
        self.n = sum(sizes)
        self.buffer = xp.zeros((self.n + 2,), dtype=params[0].dtype, device=self.backend.device)
        if path == "nccl":
            self._nccl_setup()

    def _nccl_setup(self) -> None:
        import cupy
        from cupy.cuda import nccl

        uid = self.comm.bcast(nccl.get_unique_id() if self.comm.is_root else None)
        with self.backend.device:
            self.nccl = nccl.NcclCommunicator(self.comm.size, uid, self.comm.rank)
        kinds = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}
        self.nccl_dtype, self.nccl_sum = kinds[self.backend.dtype_name], nccl.NCCL_SUM
        self.stream = cupy.cuda.get_current_stream

    def pack(self, grads: list, scale: float) -> None:
        xp = self.backend.xp
        for (a, b), grad in zip(self.bounds, grads, strict=True):
            self.buffer[int(a) : int(b)] = xp.reshape(grad, (-1,)) * scale

    def reduce(self, samples: float, failed: bool) -> tuple[float, float]:
        self.buffer[self.n] = samples
        self.buffer[self.n + 1] = float(failed)
        if self.path == "nccl":
            ptr, size = self.buffer.data.ptr, self.n + 2
            self.nccl.allReduce(ptr, ptr, size, self.nccl_dtype, self.nccl_sum, self.stream().ptr)
            tail = to_numpy(self.buffer[self.n :])  # waits for the all-reduce
        else:
            host = np.ascontiguousarray(to_numpy(self.buffer))
            self.comm.allreduce(host)
            self.buffer = self.backend.asarray(host)
            tail = host[self.n :]
        return float(tail[0]), float(tail[1])

    def unpack(self, divisor: float) -> list:
        xp = self.backend.xp
        flat = self.buffer[: self.n] / divisor
        return [
            xp.reshape(flat[int(a) : int(b)], s)
            for (a, b), s in zip(self.bounds, self.shapes, strict=True)
        ]


def _gradient_buffer(comm: Communicator, params: list) -> _HostBuffer | _DeviceBuffer:
    """The path for these parameters: host buffers for CPU arrays; the GPU paths only on
    request, since they have never run on a GPU."""
    param = params[0]
    if int(param.__dlpack_device__()[0]) == _DLPACK_CPU:
        return _HostBuffer(comm, params, np.dtype(dtype_name(param.dtype)))
    library = type(param).__module__.split(".")[0]
    choice = os.environ.get(GPU_VARIABLE, "").strip().lower()
    if choice not in ("staged", "nccl", "auto"):
        raise RuntimeError(
            f"the model's parameters are {library} arrays on a GPU, and portnn.distributed "
            "has not run on a GPU yet: its GPU paths are written but untested, so they are "
            f"off. To try them, set {GPU_VARIABLE}=nccl (CuPy: NCCL on the device), "
            f"{GPU_VARIABLE}=staged (CuPy or torch: through host buffers) or "
            f"{GPU_VARIABLE}=auto (NCCL where CuPy has it, else staged), or train on the CPU"
        )
    if choice == "auto":
        choice = "nccl" if library == "cupy" and _nccl_available() else "staged"
    if choice == "nccl" and library != "cupy":  # NCCL reads CuPy's device pointers
        raise RuntimeError(
            f"{GPU_VARIABLE}=nccl needs CuPy arrays, got {library} arrays; those go through "
            f"host buffers: {GPU_VARIABLE}=staged"
        )
    return _DeviceBuffer(comm, params, choice)


def _nccl_available() -> bool:
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", True))


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


# --- the optimizer wrapper ------------------------------------------------------------------
class DistributedOptimizer:
    """An optimizer whose updates use the gradients summed over every rank (weighted by
    each rank's samples: the global batch's mean gradient), in one all-reduce per step.

    Horovod's pattern: ``opt.step(layers, samples=len(batch))``, or ``opt.step(layers,
    samples=n_r, total=B)`` when every rank knows the global batch B. For the book's three calls,
    register the layers once; ``pre_update_params`` then sums every registered layer's
    gradients in its one all-reduce, before any ``update_params``::

        opt = DistributedOptimizer(pn.Adam(), comm, layers=[dense1, dense2])
        opt.pre_update_params(); opt.update_params(dense1); opt.update_params(dense2)
        opt.post_update_params()

    ``pre_update_params`` weights every rank alike, which is exact when every rank has the
    same batch size. For uneven batches, call ``opt.allreduce_gradients(samples=len(batch))``
    first; ``pre_update_params`` then sees the step done and does not reduce again.
    ``update_params`` refuses a layer that was not reduced, rather than let the ranks drift
    apart. Everything else (``current_learning_rate``, ``iterations``, ``state_dict``...) is
    the wrapped optimizer's.
    """

    def __init__(
        self, optimizer: Optimizer, comm: Communicator, layers: Iterable[Layer] | None = None
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a portnn Optimizer, got {optimizer!r}")
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a portnn.distributed.Communicator, got {comm!r}")
        self.optimizer, self.comm = optimizer, comm
        self.layers = None if layers is None else _trainable(layers)
        self._buffers: dict[tuple[int, ...], _HostBuffer | _DeviceBuffer] = {}
        self._reduced: frozenset[int] = frozenset()

    def __getattr__(self, name: str) -> Any:  # the wrapped optimizer's state and settings
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.optimizer!r}, {self.comm!r})"

    def buffer(self, layers: list[Layer]) -> _HostBuffer | _DeviceBuffer:
        """The flat buffer of these layers' gradients, laid out on first use."""
        key = tuple(id(la) for la in layers)
        found = self._buffers.get(key)
        if found is None:
            params = [getattr(la, name) for la in layers for name in la.param_names]
            found = self._buffers[key] = _gradient_buffer(self.comm, params)
        return found

    def describe(self, layers: Iterable[Layer] | None = None) -> str:
        layers = self._layers(layers)
        params = [getattr(la, name) for la in layers for name in la.param_names]
        return _describe_path(self.buffer(layers), params)

    def _layers(self, layers: Iterable[Layer] | None) -> list[Layer]:
        if layers is not None:
            return _trainable(layers)
        if not self.layers:
            raise RuntimeError(
                "DistributedOptimizer does not know the layers to reduce: register them, "
                "DistributedOptimizer(opt, comm, layers=[...]), or call step(layers)"
            )
        return self.layers

    def allreduce_gradients(
        self,
        layers: Iterable[Layer] | None = None,
        *,
        samples: float = 1,
        total: float | None = None,
        failure: BaseException | None = None,
    ) -> None:
        """Replace every layer's ``d<name>`` by ``sum_r samples_r * d<name>_r / sum_r
        samples_r`` over the ranks (the registered layers when ``layers`` is None).

        ``samples`` is this rank's batch size, which may be 0. ``total``, the step's samples
        over every rank, may be given when every rank knows it (``Model.train`` does). Each
        rank then scales as it packs, and no pass divides after the sum. A rank whose forward
        or backward raised passes that exception as ``failure``, and still joins. Then every
        rank raises here together, and no gradient is touched."""
        samples = real("samples", samples, 0.0)
        scale = samples if total is None else samples / real("total", total, 0.0, low_open=True)
        layers = self._layers(layers)  # the same on every rank: raising here is agreed
        buffer = self.buffer(layers)  # laid out once; creating it may refuse a GPU path
        if failure is None:
            try:
                grads = [getattr(la, "d" + name) for la in layers for name in la.param_names]
                buffer.pack(grads, scale)
            except Exception as exc:  # a layer without a gradient, a wrong shape...
                failure = exc
        failed = failure is not None
        summed, failures = buffer.reduce(0.0 if failed else samples, failed)
        if failures:  # every rank learns it in the same all-reduce, and stops here
            self.comm.fail_together(failure, f"in update {self.optimizer.iterations + 1}")
        if summed == 0:
            raise _mark(ValueError("no rank had a sample in this step: nothing to average"))
        if total is not None and summed != total:
            raise ValueError(f"the ranks' samples sum to {summed:g}, not the total {total:g}")
        grads = iter(buffer.unpack(summed if total is None else 1))
        for la in layers:
            for name in la.param_names:
                setattr(la, "d" + name, next(grads))
        self._reduced = frozenset(id(la) for la in layers)

    def step(
        self,
        layers: Iterable[Layer],
        *,
        samples: float = 1,
        total: float | None = None,
        failure: BaseException | None = None,
    ) -> None:
        """Sum the gradients across ranks (one all-reduce), then the wrapped optimizer's step
        (``samples``, ``total`` and ``failure`` as in ``allreduce_gradients``)."""
        layers = _trainable(layers)
        self.allreduce_gradients(layers, samples=samples, total=total, failure=failure)
        self.optimizer.step(layers)
        self._reduced = frozenset()

    # --- the book's three calls -----------------------------------------------------------
    def pre_update_params(self) -> None:
        if not self._reduced:
            self.allreduce_gradients()
        self.optimizer.pre_update_params()

    def update_params(self, layer: Layer) -> None:
        if id(layer) not in self._reduced:
            raise RuntimeError(
                f"{layer!r}: its gradients were not summed across ranks this step, so the "
                "ranks would drift apart; register it (DistributedOptimizer(..., layers=[...])) "
                "and call pre_update_params() first"
            )
        self.optimizer.update_params(layer)

    def post_update_params(self) -> None:
        self.optimizer.post_update_params()
        self._reduced = frozenset()


def _trainable(layers: Iterable[Layer]) -> list[Layer]:
    return [la for la in layers if la.param_names]


# --- what Model.train(comm=...) adds to a training run --------------------------------------
class _Sums:
    """One figure of a pass on this rank, as a sum and a count (device scalars allowed),
    turned into the mean over every rank at the next logging point."""

    __slots__ = ("count", "total")

    def __init__(self, total: Any, count: int) -> None:
        self.total, self.count = total, count


class DataParallel:
    """The distributed half of ``training.Run``: it checks the ranks agree, takes rank 0's
    state, splits the batches, makes the steps and reduces the figures."""

    def __init__(self, comm: Communicator, model: Model, sharded: bool) -> None:
        if not isinstance(comm, Communicator):
            raise TypeError(
                f"comm must be a portnn.distributed.Communicator, got {comm!r}; wrap an mpi4py "
                "communicator as Communicator(mpi_comm=comm)"
            )
        self.comm, self.model, self.sharded = comm, model, bool(sharded)
        self.sizes: list[int] = []  # each rank's samples
        self.batch_size: int | None = None
        self.parts: list[tuple[int, int]] = []  # per step: (this rank's samples, every rank's)
        self.optimizer: DistributedOptimizer | None = None

    @property
    def is_root(self) -> bool:
        return self.comm.is_root

    def together(self, what: str, fn: Callable, *args: Any) -> Any:
        return self.comm.together(what, fn, *args)

    def start(self, X: Any, y: Any, val: tuple | None, settings: dict) -> dict:
        """Agree on the model, the settings and (unless sharded) the data; take rank 0's
        parameters and optimizer state; lay out the gradient buffer. Returns rank 0's
        settings."""
        comm, model = self.comm, self.model
        data = [_fingerprint(X, y)] + ([] if val is None else [_fingerprint(*val)])
        everyone = comm.allgather((repr(model), settings, data))
        problem = _disagreement(everyone, self.sharded)
        if problem:
            raise _mark(ValueError(problem))
        self.sizes = [data[0][0] for _, _, data in everyone]  # each rank's samples
        state = _broadcast_state(comm, model)
        load = _nothing if comm.is_root else model.load_state_dict
        comm.together("taking rank 0's parameters", load, state)
        if self.sharded:  # what the accuracy learnt from the targets (a precision): rank 0's
            for key, value in comm.bcast(model.accuracy.get_config()).items():
                setattr(model.accuracy, key, value)
        self.optimizer = DistributedOptimizer(model.optimizer, comm, model.trainable_layers)
        comm.together("choosing how to sum gradients", self.optimizer.buffer, self.optimizer.layers)
        return everyone[0][1]

    def batches(self, n: int, batch_size: int | None) -> list[slice]:
        """This rank's part of each global batch, as slices of its data (or of the epoch's
        order): every rank gets the same number of steps, a part may be empty."""
        from .training import batches

        self.batch_size, r, size = batch_size, self.comm.rank, self.comm.size
        if self.sharded:  # each rank's rows in as many steps as the global batches need
            total = sum(self.sizes)
            steps = 1 if batch_size is None else max(1, math.ceil(total / batch_size))
            chunks = [[_chunk(m, steps, k) for k in range(steps)] for m in self.sizes]
            mine = chunks[r]
            totals = [sum(c[k].stop - c[k].start for c in chunks) for k in range(steps)]
        else:
            mine, totals = [], []
            for s in batches(n, batch_size):
                length = s.stop - s.start
                mine.append(slice(s.start + r * length // size, s.start + (r + 1) * length // size))
                totals.append(length)
        self.parts = [(s.stop - s.start, t) for s, t in zip(mine, totals, strict=True)]
        return mine

    def part(self, X: Any, y: Any) -> tuple[Any, Any]:
        """This rank's rows of validation data (sharded: the rank's data already is)."""
        if self.sharded:
            return X, y
        rows = shard(X.shape[0], self.comm)
        return X[rows, ...], y[rows, ...]

    def permutation(self, n: int, backend: Backend) -> Any:
        """The epoch's order: rank 0's, broadcast (sharded: each rank's own)."""
        if self.sharded:
            return random.permutation(n, backend)
        if self.comm.is_root:
            order = random.permutation(n, backend)
            host = np.ascontiguousarray(to_numpy(order), dtype=np.int64)
        else:
            host = np.empty(n, np.int64)
        self.comm.bcast_array(host)
        return order if self.comm.is_root else backend.asarray(host)

    def step(self, i: int, failure: BaseException | None) -> None:
        """Step ``i``'s all-reduce of every gradient, weighted by this rank's part, then the
        update."""
        samples, total = self.parts[i]
        self.optimizer.step(self.optimizer.layers, samples=samples, total=total, failure=failure)

    def sums(self, pass_figures: list[tuple[Any, Any]]) -> tuple[_Sums, _Sums]:
        """The loss and accuracy of this rank's part of a pass, as sums (cf. ``means``)."""
        if not pass_figures:
            return _Sums(0.0, 0), _Sums(0.0, 0)
        xp = self.model.backend.xp
        losses = xp.concat([loss for loss, _ in pass_figures])
        hits = xp.concat([xp.reshape(comparisons, (-1,)) for _, comparisons in pass_figures])
        hit_sum = xp.sum(xp.astype(hits, losses.dtype))
        return _Sums(xp.sum(losses), losses.shape[0]), _Sums(hit_sum, hits.shape[0])

    def reduce(self, records: list[dict]) -> None:
        """Replace every ``_Sums`` in ``records`` by its mean over all ranks: one all-reduce
        for all the epochs waiting for this logging point."""
        found = [(r, k) for r in records for k, v in r.items() if isinstance(v, _Sums)]
        sums = [(float(r[k].total), r[k].count) for r, k in found]
        buffer = np.array(sums, np.float64).reshape(-1)
        self.comm.allreduce(buffer)
        for i, (record, key) in enumerate(found):
            total, count = buffer[2 * i], buffer[2 * i + 1]
            record[key] = float(total / count) if count else math.nan

    def describe(self) -> str:
        return describe(self.model, self.comm, self.batch_size, self.sharded, self.optimizer)

    def abort_unless_agreed(self, exc: BaseException) -> None:
        self.comm.abort_unless_agreed(exc, "during training")

    @staticmethod
    def mark_agreed(exc: BaseException) -> None:
        """``exc`` is raised by every rank at the same point (no abort needed)."""
        _mark(exc)


def describe(
    model: Model,
    comm: Communicator,
    batch_size: int | None = None,
    sharded: bool = False,
    optimizer: DistributedOptimizer | None = None,
) -> str:
    """The line a distributed run prints first: the ranks, the MPI library, the data, and the
    path the gradients take."""
    optimizer = optimizer or DistributedOptimizer(model.optimizer, comm, _trainable(model.layers))
    if batch_size is None:
        batch = "full batch"
    else:
        low, high = batch_size // comm.size, -(-batch_size // comm.size)
        batch = f"global batch {batch_size} ({low if low == high else f'{low}-{high}'} per rank)"
    data = "each rank its own shard" if sharded else "the same data on every rank"
    return (
        f"distributed: {comm.size} ranks over MPI ({comm.library}), {data}, {batch}; "
        f"{optimizer.describe()}"
    )


def announce(line: str, write: Callable[[str], Any], comm: Communicator) -> None:
    """Write ``line`` on rank 0, once per process (the CLI's first line, then train's)."""
    if comm.is_root and line not in _announced:
        _announced.add(line)
        write(line)


def _chunk(n: int, steps: int, k: int) -> slice:
    return slice(k * n // steps, (k + 1) * n // steps)


def _broadcast_state(comm: Communicator, model: Model) -> dict[str, Any] | None:
    """Rank 0's ``state_dict`` on the other ranks (None on rank 0): the numbers and shapes
    pickled, each array through MPI's buffer interface."""
    if comm.size == 1:
        return None
    state = model.state_dict() if comm.is_root else {}
    layout = comm.bcast(
        {
            k: v if isinstance(v, int | float) else (tuple(v.shape), dtype_name(v.dtype))
            for k, v in state.items()
        }
    )
    received = {}
    for key, spec in layout.items():
        if isinstance(spec, tuple):
            if comm.is_root:
                host = np.ascontiguousarray(to_numpy(state[key]))
            else:
                host = np.empty(spec[0], np.dtype(spec[1]))
            comm.bcast_array(host)
            spec = host
        received[key] = spec
    return None if comm.is_root else received


def _fingerprint(X: Any, y: Any) -> tuple:
    """Sizes and a position-weighted sum of about 256 rows of (X, y): equal on ranks that
    hold the same data, and almost surely not otherwise (another seed, order or file)."""
    n = X.shape[0]
    rows = slice(None, None, max(1, n // 256))
    sums = []
    for a in (X, y):
        picked = np.asarray(to_numpy(a[rows, ...]), np.float64)
        picked = picked.reshape(picked.shape[0], -1)
        weights = np.arange(1, picked.shape[0] + 1, dtype=np.float64)
        sums.append(float(weights @ picked.sum(axis=1)))
    return (n, tuple(X.shape[1:]), *sums)


def _disagreement(everyone: list[tuple], sharded: bool) -> str | None:
    """What the ranks disagree on (model, settings, data), in words; None if nothing."""
    model, settings, data = everyone[0]
    for rank, (m, s, d) in enumerate(everyone[1:], 1):
        if m != model:
            return (
                f"rank {rank} built another model than rank 0 (rank 0: {model}; rank {rank}: "
                f"{m}); build the same model on every rank"
            )
        for key in settings:
            if s[key] != settings[key]:
                return (
                    f"the ranks passed different {key} to train: {settings[key]!r} on rank 0, "
                    f"{s[key]!r} on rank {rank}"
                )
        if len(d) != len(data):
            return "validation data given on some ranks and not on others"
        if not sharded and d != data:
            return (
                f"rank {rank} holds other data than rank 0 ({_data_difference(data, d)}): "
                "with comm, every rank passes the same data (draw or load it with the same "
                "seed on every rank), or each rank its own rows with sharded=True "
                "(see portnn.distributed.shard)"
            )
    return None


def _data_difference(a: list[tuple], b: list[tuple]) -> str:
    for what, x, y in zip(("training", "validation"), a, b, strict=False):
        if x[:2] != y[:2]:
            return f"{what} data of shape {(x[0], *x[1])} against {(y[0], *y[1])}"
        if x != y:
            return f"{what} data of the same shape but other values"
    return "?"
