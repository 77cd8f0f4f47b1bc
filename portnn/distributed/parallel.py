"""What ``Model.train(comm=...)`` adds to a training run: ``DataParallel``, the distributed
half of ``training.Run``. It checks that the ranks agree (model, settings, data), takes rank
0's state, splits each global batch, makes the steps and reduces the figures; ``describe``
and ``announce`` make the line a distributed run prints first."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import random
from ..backend import Backend, dtype_name, to_numpy
from ..training import concatenated
from .comm import Communicator, _mark, _nothing, shard
from .optimizer import DistributedOptimizer

if TYPE_CHECKING:
    from ..model import Model

_announced: set[str] = set()


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
        comm.together("choosing how to sum gradients", self.optimizer.buffer)
        return everyone[0][1]

    def batches(self, n: int, batch_size: int | None) -> list[slice]:
        """This rank's part of each global batch, as slices of its data (or of the epoch's
        order): every rank gets the same number of steps, a part may be empty."""
        from ..training import batches

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
        self.optimizer.step(samples=samples, total=total, failure=failure)  # the model's layers

    def wrap(self, step: Any) -> Callable[[int, Callable[[], tuple]], Any]:
        """The model's training step (``portnn.step.Step``) made data parallel: its first half
        (``gradients``) on this rank's part of batch ``i``, the all-reduce of every rank's
        gradients, then the update. A failure on one rank (in the batch or the gradients)
        goes into the all-reduce, so every rank raises it after the same step."""

        def run(i: int, batch: Callable[[], tuple]) -> Any:
            failure = figures = None
            try:
                xb, yb = batch()
                params, state, _ = step.gather()
                grads, state, figures = step.gradients(params, state, xb, yb, step.key())
                for key, layer, name in step.params_keys:  # where the all-reduce reads them
                    setattr(layer, "d" + name, grads[key])
                for key, layer, name in step.state_keys:
                    setattr(layer, name, state[key])
            except Exception as exc:
                failure = exc  # every rank learns it in this step's all-reduce
            self.step(i, failure)
            return figures

        return run

    def sums(self, pass_figures: list[tuple[Any, Any]]) -> tuple[_Sums, _Sums]:
        """The loss and accuracy of this rank's part of a pass, as sums (cf. ``means``)."""
        if not pass_figures:
            return _Sums(0.0, 0), _Sums(0.0, 0)
        xp = self.model.backend.xp
        losses, hits = concatenated(self.model, pass_figures)
        return _Sums(xp.sum(losses), losses.shape[0]), _Sums(xp.sum(hits), hits.shape[0])

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

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank: one all-reduce of one number."""
        buffer = np.array([1.0 if flag else 0.0])
        self.comm.allreduce(buffer)
        return bool(buffer[0] > 0)

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
    optimizer = optimizer or DistributedOptimizer(model.optimizer, comm, model.layers)
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
