"""portnn.distributed: data-parallel training over MPI, checked against one process.

The multi-rank tests launch ``mpiexec -n 2`` (and 3, for uneven splits) on
``tests/distributed/worker.py`` with a timeout, and compare what rank 0 saved with the same
case trained here in one process (``tests/distributed/cases.py``). They skip where mpi4py or
mpiexec is missing; ``nox -s distributed`` installs both (``portnn[mpi]``). Dropout is left
out: each rank draws its own masks, so no single process reproduces a distributed run's.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import portnn as pn
from portnn import distributed as dist

HERE = Path(__file__).parent / "distributed"
sys.path.insert(0, str(HERE))
from cases import build, case, chunks, data, parameters, train  # noqa: E402

TIMEOUT = 120  # seconds: a hang fails the test instead of the whole session


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # pip's mpich, beside mpi4py
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
HAVE_MPI = MPIEXEC is not None and importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(
    not HAVE_MPI, reason="needs mpi4py and mpiexec: pip install 'portnn[mpi]' (nox -s distributed)"
)
BACKENDS = [b for b in ("numpy", "array_api_strict", "torch") if b in pn.available_backends()]


def mpirun(n: int, mode: str, out: Path, cases=None, timeout: float = TIMEOUT):
    """Run the worker on ``n`` ranks; the completed process, with ``.seconds`` and ``.output``
    (stdout and stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # Open MPI (the GPU machine's) refuses root without these; MPICH ignores them.
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.pop("PORTNN_BACKEND", None)
    command = [MPIEXEC, "-n", str(n), sys.executable, "worker.py", mode, str(out)]
    if cases is not None:
        command.append(json.dumps(cases))
    start = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=HERE,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    done.seconds = time.perf_counter() - start
    done.output = done.stdout + done.stderr
    return done


def ok(done) -> None:
    assert done.returncode == 0, done.output


def tolerance(c: dict) -> dict:
    """float64 runs agree to rounding; float32 ones to float32's."""
    if c["dtype"] == "float64":
        return {"rtol": 1e-8, "atol": 1e-11}
    return {"rtol": 2e-4, "atol": 1e-6}


def assert_same_run(saved: Path, c: dict, model: pn.Model, history: dict) -> None:
    """What rank 0 saved equals the one-process run: parameters and history."""
    with np.load(saved) as got:
        for i, expected in enumerate(parameters(model)):
            np.testing.assert_allclose(got[f"p{i}"], expected, **tolerance(c))
        for key, values in history.items():
            if f"h_{key}" in got:
                np.testing.assert_allclose(got[f"h_{key}"], values, rtol=1e-6, atol=1e-9)
        assert ("h_val_loss" in got) == c["validation"]


# --- N ranks with global batch B give one process's parameters ------------------------------
EVEN = [  # 2 ranks; 120 samples in batches of 32: 16 + 16, then 12 + 12
    *(
        case(backend=b, optimizer=o, l2=l2)
        for b in BACKENDS
        for o, l2 in (("sgd", 0.0), ("momentum", 0.0), ("adam", 0.0), ("adam", 5e-4))
    ),
    *(case(backend=b, dtype="float32", optimizer="adam", l2=5e-4) for b in BACKENDS),
    case(optimizer="rmsprop", validation=True, shuffle=False),
    case(loss="mse", samples=200, batch_size=50, optimizer="adam", l2=1e-4, validation=True),
]
UNEVEN = [  # 3 ranks: batches of 25 of 120 (8/8/9, then 6/7/7), and of 61 of 123 (0/0/1 last)
    *(case(backend=b, batch_size=25, optimizer="momentum", l2=5e-4) for b in BACKENDS),
    *(case(backend=b, batch_size=25, optimizer="adam", validation=True) for b in BACKENDS),
    case(samples=41, batch_size=61, optimizer="sgd", l2=5e-4),
    case(samples=41, batch_size=61, optimizer="adam"),
    case(batch_size=None, optimizer="adam", l2=5e-4),
]


def _label(c: dict) -> str:
    parts = [c["backend"], c["dtype"], c["optimizer"], f"batch{c['batch_size']}"]
    parts += ["l2"] * bool(c["l2"]) + ["val"] * c["validation"] + [c["loss"]] * (c["loss"] == "mse")
    parts += [c["path"]] * (c["path"] != "host")
    return "-".join(parts)


@pytest.fixture(scope="module")
def even_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("even")
    ok(mpirun(2, "train", out, EVEN))
    return out


@pytest.fixture(scope="module")
def uneven_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("uneven")
    ok(mpirun(3, "train", out, UNEVEN))
    return out


@needs_mpi
@pytest.mark.parametrize("i", range(len(EVEN)), ids=[_label(c) for c in EVEN])
def test_two_ranks_train_as_one_process(even_runs, i):
    c = EVEN[i]
    assert_same_run(even_runs / f"case{i}.npz", c, *train(c))


@needs_mpi
@pytest.mark.parametrize("i", range(len(UNEVEN)), ids=[_label(c) for c in UNEVEN])
def test_three_ranks_with_uneven_parts_train_as_one_process(uneven_runs, i):
    c = UNEVEN[i]
    assert_same_run(uneven_runs / f"case{i}.npz", c, *train(c))


# --- the book's three calls, and Horovod's step ---------------------------------------------
BOOK = [case(backend=b, batch_size=25, optimizer="adam", l2=5e-4) for b in BACKENDS]


@pytest.fixture(scope="module")
def book_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    done = mpirun(3, "book", out, BOOK)
    ok(done)
    return out, done


@needs_mpi
def test_three_call_loop_with_distributed_optimizer(book_runs):
    out, done = book_runs
    for i, c in enumerate(BOOK):
        model, _ = train({**c, "shuffle": False})
        with np.load(out / f"case{i}.npz") as got:
            for j, expected in enumerate(parameters(model)):
                np.testing.assert_allclose(got[f"p{j}"], expected, **tolerance(c))
    # a layer left out of the registration is refused on every rank, not updated alone
    assert done.stdout.count("were not summed across ranks") == 3, done.output


# --- the GPU paths' staging, run on CPU arrays: the host path's results, bit for bit -------
STAGED = [i for i, c in enumerate(EVEN) if c["dtype"] == "float32" or c["loss"] == "mse"]


def assert_same_bits(a: Path, b: Path) -> None:
    with np.load(a) as x, np.load(b) as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            assert x[key].dtype == y[key].dtype and x[key].tobytes() == y[key].tobytes(), key


@needs_mpi
def test_staged_path_trains_as_the_host_path(tmp_path, even_runs):
    ok(mpirun(2, "train", tmp_path, [{**EVEN[i], "path": "staged"} for i in STAGED]))
    for k, i in enumerate(STAGED):
        assert_same_bits(tmp_path / f"case{k}.npz", even_runs / f"case{i}.npz")


@needs_mpi
def test_staged_path_in_the_three_call_loop(tmp_path, book_runs):
    # samples without a total: every rank packs n_r * g_r, and the sum is divided after
    ok(mpirun(3, "book", tmp_path, [{**c, "path": "staged"} for c in BOOK]))
    for i in range(len(BOOK)):
        assert_same_bits(tmp_path / f"case{i}.npz", book_runs[0] / f"case{i}.npz")


# --- each rank holds only its shard ---------------------------------------------------------
SHARDED = [
    case(sharded=True, shuffle=False, batch_size=30, optimizer="adam", l2=5e-4),
    case(backend=BACKENDS[-1], sharded=True, shuffle=False, batch_size=32, optimizer="momentum"),
    case(sharded=True, batch_size=32, optimizer="adam"),  # shuffled: each rank its own order
    # Remainders: 41 rows a rank in 5 steps of 8 or 9 rows; shards of 33, 33 and 34 rows in 7
    # steps of 4 or 5 (with a last global batch of 4 rows).
    case(sharded=True, shuffle=False, samples=41, batch_size=25, optimizer="momentum"),
    case(sharded=True, shuffle=False, loss="mse", samples=100, batch_size=16, optimizer="sgd"),
]
SHARDED_EXACT = [i for i, c in enumerate(SHARDED) if not c["shuffle"]]


def sharded_reference(c: dict, size: int) -> pn.Model:
    """One process training on the global batches the shards make: global batch k holds
    chunk k of every rank's rows."""
    X, y = data(c)
    model = build(c)
    model.finalize()
    b = model.backend
    n = len(X)
    shards = [np.arange(r * n // size, (r + 1) * n // size) for r in range(size)]
    steps = math.ceil(n / c["batch_size"])
    for _ in range(c["epochs"]):
        for k in range(steps):
            rows = np.concatenate([s[chunks(len(s), steps, k)] for s in shards])
            output = model.forward(b.asarray(X[rows]), training=True)
            targets = y[rows] if c["loss"] == "mse" else y[rows].astype(np.int64)
            model.backward(output, b.asarray(targets))
            model.optimizer.step(model.trainable_layers)
    return model


@needs_mpi
def test_sharded_data(tmp_path):
    ok(mpirun(3, "sharded", tmp_path, SHARDED))
    for i in SHARDED_EXACT:
        c = SHARDED[i]
        model = sharded_reference(c, 3)
        with np.load(tmp_path / f"case{i}.npz") as got:
            for j, expected in enumerate(parameters(model)):
                np.testing.assert_allclose(got[f"p{j}"], expected, **tolerance(c))
    with np.load(tmp_path / "case2.npz") as got:  # shuffled per rank: it learns, and agrees
        assert np.all(np.isfinite(got["h_loss"])) and got["h_loss"][-1] < got["h_loss"][0]


# --- output, files ----------------------------------------------------------------------------
@needs_mpi
def test_only_rank_zero_prints_and_names_the_path_first(tmp_path):
    done = mpirun(2, "print", tmp_path)
    ok(done)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("distributed: 2 ranks over MPI"), done.output
    assert "through host buffers over MPI" in lines[0]
    assert "global batch 50 (25 per rank)" in lines[0]
    assert sum(line.startswith("epoch: 1,") for line in lines) == 1, done.output
    assert sum(line.startswith("epoch: 2,") for line in lines) == 1, done.output
    assert sum(line.startswith("validation,") for line in lines) == 2, done.output
    assert "rank 0 done" in done.stderr and "rank 1 done" in done.stderr


@needs_mpi
def test_save_of_a_distributed_run_loads_in_one_process(tmp_path):
    c = case(optimizer="adam", l2=5e-4)
    ok(mpirun(2, "save", tmp_path, [c]))
    assert (tmp_path / "rank0.txt").exists() and not (tmp_path / "rank1.txt").exists()
    loaded = pn.Model.load(tmp_path / "model.npz", backend="numpy")
    reference, _ = train(c)
    with np.load(tmp_path / "parameters.npz") as saved:
        pairs = zip(parameters(loaded), parameters(reference), strict=True)
        for j, (got, expected) in enumerate(pairs):
            np.testing.assert_array_equal(got, saved[f"arr_{j}"])
            np.testing.assert_allclose(got, expected, **tolerance(c))
    assert loaded.optimizer.iterations == reference.optimizer.iterations == 12
    X, y = data(c)
    loaded.train(X, y, epochs=1, batch_size=32, print_every=0)  # and trains on, alone
    assert loaded.optimizer.iterations == 16


# --- faults: every rank stops, with a message, within seconds ---------------------------------
@needs_mpi
def test_a_stop_on_one_rank_stops_every_rank_after_the_same_epoch(tmp_path):
    done = mpirun(2, "stop-one-rank", tmp_path, timeout=60)  # it hung before: a timeout
    ok(done)
    for rank in (0, 1):
        for stopper, others in ((1, 1), (1, 0), (0, 0)):
            line = f"rank {rank} stopper {stopper} others {others}: epochs [1, 2], iterations 8"
            assert f"{line}, same True" in done.stdout, done.output


@needs_mpi
def test_a_rank_raising_in_a_step_stops_every_rank(tmp_path):
    done = mpirun(2, "fail-step", tmp_path, timeout=60)
    assert done.returncode != 0
    assert done.seconds < 30
    assert "RuntimeError: planted failure on rank 1" in done.output
    assert "rank 1 (RuntimeError: planted failure on rank 1) of 2 failed in update 3" in done.output
    assert "DistributedError" in done.output  # rank 0's


@needs_mpi
def test_a_failed_step_leaves_every_rank_with_the_same_model(tmp_path):
    done = mpirun(2, "fail-step-caught", tmp_path, timeout=60)
    ok(done)
    assert "rank 0: DistributedError: rank 1 (RuntimeError: planted failure" in done.stdout
    assert "rank 1: RuntimeError: planted failure on rank 1" in done.stdout
    assert done.stdout.count("; iterations 2") == 2  # the failed update was applied nowhere
    assert done.stdout.count("same parameters: True") == 2
    assert done.stdout.count("diverged: training diverged: the loss of epoch 1") == 2
    assert done.stdout.count("same parameters after divergence: True") == 2


@needs_mpi
def test_a_rank_raising_outside_training_aborts_the_job(tmp_path):
    done = mpirun(2, "fail-outside", tmp_path, [case()], timeout=60)
    assert done.returncode != 0
    assert done.seconds < 30
    assert "planted failure outside training on rank 1" in done.output
    assert "aborting every rank" in done.output
    assert not (tmp_path / "model.npz").exists()


@needs_mpi
def test_ranks_with_different_data_refuse_to_start(tmp_path):
    done = mpirun(2, "disagree", tmp_path, timeout=60)
    assert done.returncode != 0
    assert "rank 1 holds other data than rank 0" in done.output
    assert "Aborted" not in done.output and "BAD TERMINATION" not in done.output


@needs_mpi
def test_a_bad_shard_stops_every_rank_before_training(tmp_path):
    done = mpirun(2, "bad-shard", tmp_path, timeout=60)
    assert done.returncode != 0
    assert "X contains NaN" in done.output
    assert "failed checking the training arguments and data" in done.output


@needs_mpi
def test_a_top_level_handler_reports_once_or_aborts(tmp_path):
    done = mpirun(2, "report", tmp_path, timeout=60)
    assert done.returncode != 0 and done.seconds < 30
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["rank 0 reports"], done.output
    assert "rank 1 holds other data than rank 0" in lines[0]
    assert "planted failure on rank 1 alone" in done.stderr
    assert "aborting every rank" in done.stderr


# --- one process: clear errors ----------------------------------------------------------------
def _clean_environment(monkeypatch) -> None:
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_missing_mpi4py_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install 'portnn\[mpi\]'"):
        dist.Communicator()


def test_launched_by_mpiexec_without_mpi4py_refuses_to_train_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("PMI_SIZE", "4")
    with pytest.raises(ImportError, match="one of 4 ranks started by mpiexec"):
        dist.from_environment()


def test_a_plain_process_is_not_distributed(monkeypatch):
    _clean_environment(monkeypatch)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # and mpi4py is not even imported
    assert dist.launched_size() is None
    assert dist.from_environment() is None
    monkeypatch.setenv("PMI_SIZE", "1")
    assert dist.from_environment() is None


@needs_mpi
def test_asking_for_ranks_without_mpiexec_names_the_command():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_"))}
    code = "from portnn import distributed as d; d.Communicator(size=2)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode != 0
    assert "not started by mpiexec" in done.stderr and "mpiexec -n 2" in done.stderr


def test_shards_cover_the_rows_once():
    for n, size in ((10, 3), (2, 3), (60000, 4), (0, 2)):
        parts = [dist.shard(n, types.SimpleNamespace(rank=r, size=size)) for r in range(size)]
        rows = np.concatenate([np.arange(n)[p] for p in parts])
        np.testing.assert_array_equal(rows, np.arange(n))
        lengths = [p.stop - p.start for p in parts]
        assert max(lengths) - min(lengths) <= 1


class _GpuArray:
    """Stands for a CUDA array: DLPack says device type 2 (kDLCUDA)."""

    shape, dtype = (3,), "float32"

    def __dlpack_device__(self):
        return (2, 0)


def test_gpu_paths_are_off_unless_asked(monkeypatch):
    monkeypatch.delenv(dist.GPU_VARIABLE, raising=False)
    with pytest.raises(RuntimeError, match="has not run on a GPU yet.*PORTNN_DISTRIBUTED_GPU"):
        dist._gradient_buffer(None, [_GpuArray()])
    monkeypatch.setenv(dist.GPU_VARIABLE, "nccl")
    with pytest.raises(RuntimeError, match="needs CuPy arrays"):
        dist._gradient_buffer(None, [_GpuArray()])


def test_the_wrapper_takes_portnn_optimizers_only():
    with pytest.raises(TypeError, match="portnn Optimizer"):
        dist.DistributedOptimizer(object(), None)
    with pytest.raises(TypeError, match="Communicator"):
        dist.DistributedOptimizer(pn.SGD(), object())
