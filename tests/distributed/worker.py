"""One MPI job of tests/test_distributed.py: ``mpiexec -n N python worker.py MODE OUT [JSON]``.

Modes: ``train`` (the cases in JSON; rank 0 saves each run's parameters and history to OUT),
``book`` (the book's three-call loop with DistributedOptimizer), ``sharded``, ``save``,
``print``, ``stop-one-rank``, and the faults: ``fail-step``, ``fail-step-caught``, ``fail-outside``,
``disagree``, ``bad-shard``, ``report``. The training modes check that every rank ends with
the same parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np
from cases import build, case, data, parameters, train

import portnn as pn
import portnn.distributed.optimizer as optimizer_module
from portnn import distributed as dist
from portnn.distributed import buffers


def gradient_path(path: str):
    """Every gradient buffer made inside takes ``path``: ``staged`` runs the GPU path's code
    (device buffer, host staging, copies back) on CPU arrays, where it can be compared."""
    if path == "host":
        return contextlib.nullcontext()

    def forced(comm, params):
        return buffers._DeviceBuffer(comm, params, path)

    return mock.patch.object(optimizer_module, "_gradient_buffer", forced)


def same_everywhere(comm: dist.Communicator, model: pn.Model) -> bool:
    digest = hashlib.sha256(b"".join(p.tobytes() for p in parameters(model))).hexdigest()
    return len(set(comm.allgather(digest))) == 1


def save_run(path: Path, model: pn.Model, history: dict) -> None:
    arrays = {f"p{i}": p for i, p in enumerate(parameters(model))}
    for key, values in history.items():
        if values and values[0] is not None:
            arrays[f"h_{key}"] = np.asarray(values, np.float64)
    np.savez(path, **arrays)


def mode_train(comm, out: Path, cases: list[dict]) -> None:
    for i, c in enumerate(cases):
        with gradient_path(c["path"]):
            model, history = train(c, comm)
        if not same_everywhere(comm, model):
            raise SystemExit(f"case {i}: the ranks' parameters differ")
        if comm.is_root:
            save_run(out / f"case{i}.npz", model, history)


def mode_sharded(comm, out: Path, cases: list[dict]) -> None:
    """Each rank holds only its rows (``dist.shard``) and trains with sharded=True."""
    for i, c in enumerate(cases):
        X, y = data(c)
        rows = dist.shard(len(X), comm)
        model, history = train(c, comm, X[rows], y[rows])
        assert same_everywhere(comm, model)
        if comm.is_root:
            save_run(out / f"case{i}.npz", model, history)


def mode_book(comm, out: Path, cases: list[dict]) -> None:
    """The book's loop by hand: forward, loss, backward, then the optimizer's three calls (or
    ``step``), on this rank's part of each global batch."""
    for i, c in enumerate(cases):
        X, y = data(c)
        model = build(c)
        model.finalize()
        b = model.backend
        X, y = b.asarray(X), b.asarray(y.astype(np.int64))
        layers = model.trainable_layers
        opt = dist.DistributedOptimizer(model.optimizer, comm, layers=layers)
        with gradient_path(c["path"]):
            book_loop(comm, c, model, opt, X, y)
        assert same_everywhere(comm, model)
        if comm.is_root:
            save_run(out / f"case{i}.npz", model, {})
    # A layer that was never registered is refused, rather than updated from its own gradient.
    c = case(batch_size=None)
    model = build(c)
    model.finalize()
    X, y = data(c)
    opt = dist.DistributedOptimizer(model.optimizer, comm, layers=model.trainable_layers[:1])
    model.backward(model.forward(model.backend.asarray(X), training=True), model.backend.asarray(y))
    opt.pre_update_params()
    try:
        opt.update_params(model.trainable_layers[1])
    except RuntimeError as exc:
        print(f"rank {comm.rank}: refused: {exc}")


def book_loop(comm, c: dict, model: pn.Model, opt: dist.DistributedOptimizer, X, y) -> None:
    layers = model.trainable_layers
    for epoch in range(c["epochs"]):
        for start in range(0, X.shape[0], c["batch_size"]):
            stop = min(start + c["batch_size"], X.shape[0])
            mine = slice(
                start + comm.rank * (stop - start) // comm.size,
                start + (comm.rank + 1) * (stop - start) // comm.size,
            )
            output = model.forward(X[mine, ...], training=True)
            model.backward(output, y[mine, ...])
            if (epoch + start) % 2:  # the three calls, weighted by this rank's samples
                opt.allreduce_gradients(samples=mine.stop - mine.start)
                opt.pre_update_params()
                for layer in layers:
                    opt.update_params(layer)
                opt.post_update_params()
            else:
                opt.step(layers, samples=mine.stop - mine.start)


def mode_save(comm, out: Path, cases: list[dict]) -> None:
    model, _ = train(cases[0], comm)
    dist.save(model, out / "model.npz", comm)
    comm.on_root("writing a marker", (out / f"rank{comm.rank}.txt").write_text, "written")
    if comm.is_root:
        np.savez(out / "parameters.npz", *parameters(model))


def mode_print(comm, out: Path, cases: list[dict]) -> None:
    X, y = data(cases[0])
    model = build(cases[0])
    model.train(X, y, epochs=2, batch_size=50, validation_data=(X, y), print_every=1, comm=comm)
    print(f"rank {comm.rank} done", file=sys.stderr)


class Planted(pn.ReLU):
    """A ReLU that raises on rank 1 at its third training forward pass."""

    calls = 0
    rank = 0

    def forward(self, inputs, training=False):
        if training:
            Planted.calls += 1
            if Planted.rank == 1 and Planted.calls == 3:
                raise RuntimeError("planted failure on rank 1")
        return super().forward(inputs, training)


def planted_model(comm) -> tuple[pn.Model, np.ndarray, np.ndarray]:
    Planted.rank = comm.rank
    X, y = data(case())
    pn.seed(0)
    model = pn.Model([pn.Dense(2, 16), Planted(), pn.Dense(16, 3), pn.Softmax()])
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(learning_rate=0.02))
    return model, X, y


class StopOn(pn.callbacks.Callback):
    """Stops training after epoch ``epoch`` on one rank only (a wall-clock budget, a signal
    file: anything that differs by rank)."""

    def __init__(self, rank: int, epoch: int) -> None:
        self.rank, self.epoch = rank, epoch

    def on_epoch_end(self, run, epoch, logs):
        if run.dp.comm.rank == self.rank and epoch == self.epoch:
            run.stop_training = True


def mode_stop_one_rank(comm, out: Path, cases: list[dict]) -> None:
    """A stop decided on one rank stops every rank after the same epoch, whether the other
    ranks have callbacks or none."""
    for stopper, others in ((1, [pn.callbacks.Callback()]), (1, []), (0, [])):
        callbacks = [StopOn(stopper, 2)] if comm.rank == stopper else others
        X, y = data(cases[0])
        model = build(cases[0])
        history = model.train(
            X, y, epochs=6, batch_size=32, print_every=0, comm=comm, callbacks=callbacks
        )
        same = same_everywhere(comm, model)
        print(
            f"rank {comm.rank} stopper {stopper} others {len(others)}: epochs "
            f"{history['epoch']}, iterations {model.optimizer.iterations}, same {same}"
        )


def mode_fail_step(comm, out: Path, cases: list[dict]) -> None:
    model, X, y = planted_model(comm)
    model.train(X, y, epochs=5, batch_size=16, print_every=0, comm=comm)  # uncaught


def mode_fail_step_caught(comm, out: Path, cases: list[dict]) -> None:
    model, X, y = planted_model(comm)
    try:
        model.train(X, y, epochs=5, batch_size=16, print_every=0, comm=comm)
    except Exception as exc:
        kind = type(exc).__name__
        print(f"rank {comm.rank}: {kind}: {exc}; iterations {model.optimizer.iterations}")
    print(f"rank {comm.rank}: same parameters: {same_everywhere(comm, model)}")
    # Divergence: every rank sees the same summed loss, raises, and restores the same state.
    c = case(loss="mse", samples=200, optimizer="sgd")
    X, y = data(c)
    model = build(c)
    model.optimizer.learning_rate = model.optimizer.current_learning_rate = 1e30
    try:
        model.train(X, y, epochs=3, batch_size=16, print_every=0, comm=comm)
    except FloatingPointError as exc:
        print(f"rank {comm.rank}: diverged: {str(exc).split(';')[0]}")
    print(f"rank {comm.rank}: same parameters after divergence: {same_everywhere(comm, model)}")


def mode_fail_outside(comm, out: Path, cases: list[dict]) -> None:
    model, _ = train(cases[0], comm)
    if comm.rank == 1:
        raise OSError("planted failure outside training on rank 1")
    dist.save(model, out / "model.npz", comm)  # rank 0 waits here for rank 1


def mode_disagree(comm, out: Path, cases: list[dict]) -> None:
    X, y = data(cases[0])
    if comm.rank == 1:
        X = X + 1e-3  # another data set: the run must refuse to start
    model = build(cases[0])
    model.train(X, y, epochs=1, batch_size=32, print_every=0, comm=comm)


def mode_bad_shard(comm, out: Path, cases: list[dict]) -> None:
    X, y = data(cases[0])
    rows = dist.shard(len(X), comm)
    X, y = X[rows].copy(), y[rows]
    if comm.rank == 1:
        X[3, 0] = np.nan
    model = build(cases[0])
    model.train(X, y, epochs=1, batch_size=32, print_every=0, comm=comm, sharded=True)


def mode_report(comm, out: Path, cases: list[dict]) -> None:
    """A top-level handler as the portnn command's: an error every rank raised is printed
    once (by rank 0); one of rank 1 alone aborts the job."""
    for alone in (False, True):
        try:
            if alone and comm.rank == 1:
                raise OSError("planted failure on rank 1 alone")
            if not alone:
                mode_disagree(comm, out, cases)
            comm.barrier()  # rank 0 waits here for rank 1, which never comes
        except Exception as exc:
            if dist.should_report(exc):
                print(f"rank {comm.rank} reports: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    cases = [case(**c) for c in json.loads(sys.argv[3])] if len(sys.argv) > 3 else [case()]
    comm = dist.Communicator()
    globals()["mode_" + mode.replace("-", "_")](comm, out, cases)
