"""portnn.distributed's gradient buffers and DistributedOptimizer, in one process.

A stand-in communicator sums as ranks that all hold this one's gradients would, so every path
must step exactly as one process does: ``host``, and ``staged`` (the GPU path's code, run on
CPU arrays) through a DLPack view of its host buffer or through the Backend's copies. The
MPI runs are in tests/test_distributed.py; these need no MPI.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from cases import build, case, data, parameters

import portnn as pn
import portnn.distributed.optimizer as optimizer_module
from portnn import distributed as dist
from portnn.backend import backend_of
from portnn.distributed import buffers

BACKENDS = [b for b in ("numpy", "array_api_strict", "torch") if b in pn.available_backends()]
PATHS = ["host", "staged", "staged-copies"]


def _gpu_runs() -> list[tuple[str, str | None, str]]:
    """(backend, device, path) for the GPUs here (none on most machines): ``staged`` copies
    between two memories there, and NCCL sums on the device where CuPy has it."""
    found = []
    for name, device in (("cupy", None), ("torch", "cuda")):
        try:
            with pn.use_backend(name, device=device) as b:
                found += [(name, device, path) for path in PATHS[1:]]
                found += [(name, device, "nccl")] * (b.has_nccl and type(b).nccl_available())
        except (ImportError, RuntimeError, ValueError):
            continue
    return found


RUNS = [(b, None, path) for b in BACKENDS for path in PATHS] + _gpu_runs()


class Mirror(dist.Communicator):
    """``size`` ranks that all hold this rank's gradients: the all-reduce multiplies by
    ``size``, a power of two, so exactly. Keeps the last buffer it summed."""

    def __init__(self, size: int = 2) -> None:  # no MPI
        self.rank, self.size, self.local_rank = 0, size, 0
        self.sums, self.summed = 0, None

    @property
    def library(self) -> str:
        return "a mirror"

    def allreduce(self, buffer: np.ndarray) -> None:
        buffer *= self.size
        self.sums, self.summed = self.sums + 1, buffer

    def allgather(self, obj):
        return [obj] * self.size

    def agree(self, failure, what):  # every rank fails as this one does
        if failure is not None:
            self.fail_together(failure, what)


@pytest.fixture
def force(monkeypatch):
    """Puts every buffer made afterwards on ``path``: the GPU paths' code takes CPU arrays too."""

    def on(path: str) -> None:
        if path == "host":
            return
        if path == "staged-copies":  # as for a library that cannot view host memory
            monkeypatch.setattr(buffers, "_staging", lambda xp, host: (None, None))

        def forced(comm, params):
            return buffers._DeviceBuffer(comm, params, path.split("-")[0])

        monkeypatch.setattr(optimizer_module, "_gradient_buffer", forced)

    return on


def same_bits(a: pn.Model, b: pn.Model) -> bool:
    return all(
        x.dtype == y.dtype and x.tobytes() == y.tobytes()
        for x, y in zip(parameters(a), parameters(b), strict=True)
    )


def pair(c: dict, comm: Mirror) -> tuple[pn.Model, pn.Model, dist.DistributedOptimizer]:
    """Two copies of the case's model: one to train alone, one with a DistributedOptimizer."""
    alone, model = build(c).finalize(), build(c).finalize()
    return alone, model, dist.DistributedOptimizer(model.optimizer, comm, model.layers)


def step_both(alone, model, opt, X, y, rows: slice, **how) -> None:
    """One step on the same batch: ``alone`` with its optimizer, ``model`` with ``opt``."""
    for m in (alone, model):
        b = m.backend
        m.backward(m.forward(b.asarray(X[rows]), training=True), b.asarray(y[rows]))
    alone.optimizer.step(alone.trainable_layers)
    opt.step(**how)


# --- every path steps as one process, bit for bit, and allocates once -------------------------
@pytest.mark.parametrize("total", [True, False], ids=["total", "samples"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("backend", "device", "path"), RUNS, ids=["-".join(map(str, r)) for r in RUNS]
)
def test_every_path_steps_as_one_process(force, backend, device, path, dtype, total):
    force(path)
    c = case(backend=backend, device=device, dtype=dtype, optimizer="adam", l2=5e-4)
    X, y = data(c)
    comm = Mirror(1 if path == "nccl" else 2)  # NCCL sums on its own: one rank here
    alone, model, opt = pair(c, comm)
    # total: each rank scales by 1/size as it packs; samples: by 32, and the sum is divided
    how = {"samples": 32, "total": 32 * comm.size if total else None}
    step_both(alone, model, opt, X, y, slice(0, 32), **how)
    buffer = opt.buffer()
    outs = list(buffer.outs)
    grads = [g for la in model.trainable_layers for g in (la.dweights, la.dbiases)]
    assert all(g is out for g, out in zip(grads, outs, strict=True))  # views, no copy out
    for k in range(1, 3):
        step_both(alone, model, opt, X, y, slice(32 * k, 32 * k + 32), **how)
        assert same_bits(alone, model)
    assert comm.sums == (0 if path == "nccl" else 3)
    assert opt.buffer() is buffer  # laid out once, and reused
    assert all(a is b for a, b in zip(buffer.outs, outs, strict=True))
    if path == "staged":  # the one host buffer, not a copy per step, where it can be viewed
        assert buffer.staging is not None or backend == "cupy"
        assert (comm.summed is buffer.host) == (buffer.staging is not None)
    if path == "staged-copies":
        assert buffer.host is None and buffer.staging is None


# --- the buffer follows the parameters' library, dtype and shapes -----------------------------
MOVES = [
    ("numpy", "float64"),
    ("numpy", "float32"),
    *((b, "float32") for b in BACKENDS[1:]),
    ("numpy", "float64"),
]


@pytest.mark.parametrize("path", PATHS)
def test_a_model_moved_to_another_backend_or_dtype_gets_a_new_buffer(force, path):
    force(path)
    c = case(optimizer="adam", l2=5e-4)
    X, y = data(c)
    alone, model, opt = pair(c, Mirror(2))
    laid_out = []
    for backend, dtype in MOVES:
        target = pn.get_backend(backend, dtype)
        for m in (alone, model):
            m.to(backend, dtype)
        step_both(alone, model, opt, X, y, slice(0, 32), samples=32, total=64)
        buffer = opt.buffer()
        step_both(alone, model, opt, X, y, slice(32, 64), samples=32)
        assert opt.buffer() is buffer
        assert {b for b, _ in buffer.layout} == {target}
        assert same_bits(alone, model)  # float32 stayed float32, and the values agree
        assert all(backend_of(p) == target for ps in model.get_parameters() for p in ps)
        laid_out.append(buffer)
    assert len({id(b) for b in laid_out}) == len(MOVES)


class Toy(pn.Layer):
    """One parameter ``w``, its gradient set by hand."""

    param_names = ("w",)

    def __init__(self, w: np.ndarray) -> None:
        self.w = w


@pytest.mark.parametrize("path", PATHS)
def test_a_parameter_of_another_shape_gets_a_buffer_of_its_shape(force, path):
    force(path)
    toy = Toy(np.zeros((2, 3)))
    opt = dist.DistributedOptimizer(pn.SGD(), Mirror(4), [toy])
    for w, dw in (
        (toy.w, np.arange(6.0).reshape(2, 3)),
        (np.zeros(4), np.arange(4.0) - 1.5),  # replaced: a new layout
        (np.ones(4), np.arange(4.0) * 3),  # replaced by one of the same layout
    ):
        toy.w, toy.dw = w, dw
        opt.allreduce_gradients(samples=1)  # four ranks of one sample each: their mean
        np.testing.assert_array_equal(pn.to_numpy(toy.dw), dw)
        assert opt.buffer().n == dw.size
    assert opt.buffer().layout[0][1] == (4,)


@pytest.mark.parametrize("path", PATHS)
def test_a_gradient_that_does_not_fit_its_parameter_fails_the_step(force, path):
    force(path)
    toy = Toy(np.zeros((2, 3)))
    opt = dist.DistributedOptimizer(pn.SGD(), Mirror(2), [toy])
    toy.dw = np.ones((3, 2))  # the same size: a flat copy would not notice
    with pytest.raises(ValueError, match=r"shape \(3, 2\) for a parameter of shape \(2, 3\)"):
        opt.allreduce_gradients(samples=1)
    assert toy.dw.shape == (3, 2)  # untouched
    toy.dw = np.ones((1, 3))  # np.multiply would broadcast this one
    with pytest.raises(ValueError, match="for a parameter of shape"):
        opt.allreduce_gradients(samples=1)


def test_parameters_on_two_backends_cannot_share_a_buffer():
    layers = [Toy(np.zeros(3)), Toy(np.zeros(3, np.float32))]
    with pytest.raises(ValueError, match="different backends or dtypes"):
        dist.DistributedOptimizer(pn.SGD(), Mirror(2), layers).buffer()


# --- which layers: sorted out once per sequence, anew for another -----------------------------
def test_registered_layers_are_sorted_out_once_and_can_be_replaced():
    model = build(case()).finalize()
    dense = model.trainable_layers
    opt = dist.DistributedOptimizer(model.optimizer, Mirror(2), model.layers)
    assert opt.layers == dense
    opt.layers.append(model.layers[1])  # a copy: the registration stays
    assert opt.layers == dense
    assert opt.buffer() is opt.buffer(model.layers)  # step(the same layers) shares its buffer
    opt.layers = dense[:1]
    X, y = data(case())
    model.backward(model.forward(X, training=True), y)
    opt.pre_update_params()
    opt.update_params(dense[0])
    with pytest.raises(RuntimeError, match="were not summed across ranks"):
        opt.update_params(dense[1])
    opt.layers = None
    with pytest.raises(RuntimeError, match="does not know the layers"):
        opt.allreduce_gradients()


def test_layers_given_to_step_are_followed_when_they_change():
    model = build(case()).finalize()
    comm = Mirror(2)
    opt = dist.DistributedOptimizer(model.optimizer, comm)
    X, y = data(case())
    sizes = [sum(p.size for p in pair) for pair in model.get_parameters()]
    given = model.layers[:2]  # the first Dense and its ReLU
    for expected in (sizes[0], sum(sizes)):
        model.backward(model.forward(X, training=True), y)
        opt.step(given, samples=len(X))
        assert comm.summed.size == expected + 2  # the gradients, the count and the flag
        given += model.layers[2:]  # the same list, grown: another sequence of layers
    with pytest.raises(ValueError, match="none of these layers has parameters"):
        opt.step([model.layers[1]])


def test_many_sequences_keep_the_registered_buffer():
    model = build(case()).finalize()
    opt = dist.DistributedOptimizer(model.optimizer, Mirror(2), model.layers)
    registered = opt.buffer()
    for n in range(1, 2 * optimizer_module._PLANS):
        opt.buffer([model.layers[0]] * n)
    assert len(opt._plans) <= optimizer_module._PLANS
    assert opt.buffer() is registered


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("frozen", [("weights",), ()])
def test_freezing_and_unfreezing_a_layer_steps_as_one_process_does(backend, frozen, registered):
    # A layer's param_names set per instance freezes it (Optimizer.step reads them every
    # step). A plan sorted out while it was frozen once missed the unfreezing: its biases got
    # no all-reduce (the ranks drifted apart), or the layer never trained again.
    rng = np.random.default_rng(0)
    X, y = backend.asarray(rng.standard_normal((8, 2))), backend.asarray(rng.integers(0, 3, 8))

    def layers():
        pn.seed(0)
        return [pn.Dense(2, 4), pn.ReLU(), pn.Dense(4, 3), pn.Softmax()]

    mirror, alone = layers(), layers()
    loss = pn.CategoricalCrossentropy()
    comm = Mirror(2)
    opt = dist.DistributedOptimizer(pn.SGD(0.5), comm, layers=mirror if registered else None)
    reference = pn.SGD(0.5)
    for step in range(4):
        for net in (mirror, alone):
            net[2].param_names = frozen if step < 2 else ("weights", "biases")
            out = X
            for layer in net:
                out = layer.forward(out, training=True)
            d = loss.fused_backward(out, y)
            for layer in reversed(net[:-1]):
                d = layer.backward(d)
        # The mirror's ranks each hold the same gradients: the average is the one process's.
        opt.step(None if registered else mirror, samples=1, total=2)
        reference.step(alone)
        # Every trainable number went through the all-reduce (a mirror cannot show drift).
        trained = sum(math.prod(getattr(la, n).shape) for la in mirror for n in la.param_names)
        assert comm.summed.size == trained + 2  # and the count and failure slots
        for a, b in zip(mirror, alone, strict=True):
            for name in ("weights", "biases"):
                if hasattr(a, name):
                    np.testing.assert_array_equal(
                        pn.to_numpy(getattr(a, name)), pn.to_numpy(getattr(b, name))
                    )
    assert comm.sums == 4
    untrained = pn.to_numpy(layers()[2].biases)
    assert not np.array_equal(pn.to_numpy(mirror[2].biases), untrained)  # unfrozen, it trained
