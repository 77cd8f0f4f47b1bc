"""The ranks of an MPI job and what keeps them together: the Communicator and its collectives,
failures that every rank raises at once, and ``MPI_Abort`` for an error that only one rank
saw (uncaught, or handed to ``should_report``). Also the small helpers over a communicator:
``from_environment``, ``shard`` and ``save``."""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import integer

if TYPE_CHECKING:
    from ..model import Model

# What launchers set for every process they start: MPICH/Intel MPI's hydra and Slurm's PMI,
# Open MPI, MVAPICH.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_AGREED = "_portnn_all_ranks"  # set on an exception that every rank raises together


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
        # The launcher forwards each rank's output through its own process, which MPI_Abort
        # kills: on a busy machine it took the message (and the traceback) with it. A moment
        # for the forwarding, once, on the way out of a failed job.
        time.sleep(0.5)
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
    the last good file whole. Rank 0 writes only once every rank has reached the save: a job
    whose other rank failed on the way (and aborts) writes no file."""
    comm.agree(None, "on the way to the save")
    comm.on_root(f"saving the model to {os.fspath(path)}", model.save, path)
