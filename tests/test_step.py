"""The training step as one pure function (portnn.step): a compiled step and the eager loop
take the same trajectory, one compilation serves every step, random numbers are drawn anew
each step, and what cannot be compiled is refused before anything changes.

On JAX the compiler is jax.jit; on torch, torch.compile (one small case: compiling is slow);
on NumPy and array-api-strict, which have none, a stand-in compiler that counts its traces
and checks the step's numbers arrive as 0-d arrays proves the same seam.
"""

import warnings

import numpy as np
import pytest
from conftest import numpy_of

import portnn as pn
from portnn.step import Step


@pytest.fixture
def compiler(backend64, monkeypatch):
    """The backend's own compiler, or a stand-in where it has none (NumPy, array-api-strict):
    it runs the step as it is, checking every step number is a 0-d array of the parameters'
    dtype (so one trace could serve every step) and counting the calls it wraps."""
    b = backend64
    made = []
    if b.compiler is None:

        def stand_in(step):
            def run(params, state, opt_state, x, y, scalars, key):
                for name, value in scalars.items():
                    assert not isinstance(value, float), name
                    assert tuple(value.shape) == () and value.dtype == b.dtype, name
                return step(params, state, opt_state, x, y, scalars, key)

            made.append(step)
            return run

        monkeypatch.setattr(type(b), "compiler", "stand-in")
        monkeypatch.setattr(b, "compile", stand_in)
    elif b.name == "torch":
        pytest.skip("torch.compile takes half a minute a model: its one case is its own test")
    return made


def _data(n=22, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 2] > 1)
    return X, y


def _model(optimizer, dropout=0.25, l1=0.0, l2=0.0):
    return pn.Model(
        [
            pn.Dense(
                3, 8, weight_regularizer_l1=l1, weight_regularizer_l2=l2, bias_regularizer_l2=l2
            ),
            pn.ReLU(),
            pn.Dropout(dropout),
            pn.Dense(8, 3),
            pn.Softmax(),
        ]
    ).set(loss=pn.CategoricalCrossentropy(), optimizer=optimizer)


def _state(model):
    return {k: numpy_of(v) for k, v in model.state_dict().items()}


def _assert_same_state(a, b, rtol=1e-12, atol=1e-14):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


OPTIMIZERS = {
    "sgd-momentum-decay": lambda: pn.SGD(0.5, decay=0.05, momentum=0.9),
    "sgd-plain": lambda: pn.SGD(0.3),
    "adagrad": lambda: pn.Adagrad(0.2, decay=0.01),
    "rmsprop": lambda: pn.RMSprop(0.01, decay=0.01, rho=0.95),
    "adam": lambda: pn.Adam(0.02, decay=0.01),
}


def _run(compile, make_optimizer, seed=7, **kwargs):
    X, y = _data()
    pn.seed(seed)
    model = _model(make_optimizer(), **kwargs)
    history = model.train(X, y, epochs=3, batch_size=5, print_every=None, compile=compile)
    return model, history


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_compiled_step_takes_the_eager_trajectory(compiler, name):
    # 22 rows in batches of 5: a short last batch of 2; shuffled; dropout; L1 and L2.
    kw = {"l1": 1e-3, "l2": 5e-3}
    eager, eager_history = _run(False, OPTIMIZERS[name], **kw)
    compiled, history = _run(True, OPTIMIZERS[name], **kw)
    _assert_same_state(_state(eager), _state(compiled))
    for key in ("loss", "data_loss", "accuracy", "learning_rate"):
        np.testing.assert_allclose(history[key], eager_history[key], rtol=1e-12, err_msg=key)
    assert compiled.optimizer.iterations == eager.optimizer.iterations == 15
    # and the model really trained: the same numbers, not two untouched models
    pn.seed(7)
    untouched = _state(_model(OPTIMIZERS[name](), **kw))
    assert not np.allclose(untouched["layers/0/weights"], _state(compiled)["layers/0/weights"])


def test_one_compilation_serves_every_step_of_every_call(compiler, backend64, monkeypatch):
    X, y = _data()
    pn.seed(1)
    model = _model(pn.Adam(0.01))
    traces = []
    dense = model.layers[0]
    apply = type(dense).apply
    monkeypatch.setattr(dense, "apply", lambda *a, **k: traces.append(1) or apply(dense, *a, **k))
    model.train(X, y, epochs=3, batch_size=5, print_every=None, compile=True)
    if backend64.name == "jax":
        assert len(traces) == 2  # one trace per batch shape: 5 rows and the last 2
    else:
        assert len(traces) == 15  # the stand-in traces nothing: every step runs apply
    assert len(compiler) == (0 if backend64.name == "jax" else 1)  # the stand-in's count
    step = model._step_cache[1]

    before = len(traces)
    model.train(X, y, epochs=1, batch_size=5, print_every=None, compile=True)
    assert model._step_cache[1] is step  # the same compiled step, not a new trace
    if backend64.name == "jax":
        assert len(traces) == before
    model.layers[2].rate = 0.5  # a constant of the trace: the step is made again
    model.train(X, y, epochs=1, batch_size=5, print_every=None, compile=True)
    assert model._step_cache[1] is not step
    assert len(compiler) == (0 if backend64.name == "jax" else 2)


def test_a_compiled_step_draws_a_new_dropout_mask_each_call(compiler):
    X, y = _data(8)
    pn.seed(2)
    model = pn.Model([pn.Dense(3, 16), pn.Dropout(0.5), pn.Dense(16, 3), pn.Softmax()])
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.SGD(1e-12))  # next to nothing moves
    model.finalize()
    step = Step(model, compile=True)
    xb, yb = model.backend.asarray(X), model.backend.asarray(y)
    pn.seed(3)
    losses = [numpy_of(step(xb, yb)[0]) for _ in range(3)]
    assert not np.allclose(losses[0], losses[1])
    assert not np.allclose(losses[1], losses[2])
    pn.seed(3)  # the same seed, the same masks
    np.testing.assert_allclose(numpy_of(step(xb, yb)[0]), losses[0], rtol=1e-9)


def test_a_frozen_layer_is_data_a_compiled_step_does_not_train(compiler):
    X, y = _data()

    def run(compile):
        pn.seed(4)
        model = _model(pn.Adam(0.05), dropout=0.0)
        model.layers[0].param_names = ()  # frozen
        model.train(X, y, epochs=2, batch_size=5, print_every=None, compile=compile)
        return model

    def weights(model):
        return [numpy_of(model.layers[i].weights) for i in (0, 3)]

    pn.seed(4)
    start = weights(_model(pn.Adam(0.05), dropout=0.0))
    eager, compiled = run(False), run(True)
    for model in (eager, compiled):
        first, last = weights(model)
        np.testing.assert_array_equal(first, start[0])
        assert not np.allclose(last, start[1])
    _assert_same_state(_state(eager), _state(compiled))


class _StatefulDropout(pn.Dropout):
    """A layer in the book's style: it overrides forward, so its math is not a pure pair."""

    def forward(self, inputs, training=False):
        return super().forward(inputs, training)


class _OldOptimizer(pn.SGD):
    """An optimizer of the older kind: ``_update`` reads its numbers from itself."""

    def _update(self, param, grad, state):
        return param - self.current_learning_rate * grad, state


@pytest.mark.parametrize(
    "case, match",
    [
        ("impure layer", "overrides forward/backward"),
        ("old optimizer", "overrides _update"),
        ("not a flag", "compile must be True, False or None"),
    ],
)
def test_what_cannot_be_compiled_is_refused_and_nothing_changes(backend64, case, match):
    X, y = _data()
    model = _model(pn.SGD(0.1))
    compile = True
    if case == "impure layer":
        model.layers[2] = _StatefulDropout(0.25)
    elif case == "old optimizer":
        model.set(optimizer=_OldOptimizer(0.1))
    else:
        compile = "yes"
    model.finalize()
    before = _state(model)
    with pytest.raises(ValueError, match=match):
        model.train(X, y, epochs=1, batch_size=5, print_every=None, compile=compile)
    _assert_same_state(before, _state(model), rtol=0, atol=0)
    assert model.optimizer.iterations == 0


def test_without_a_flag_an_impure_model_trains_eagerly_and_the_same(backend64):
    # compile=None compiles where the backend does by default (JAX) and the model can be:
    # a book-style layer makes the step eager rather than an error, on every backend.
    X, y = _data()

    def run(compile, layer):
        pn.seed(5)
        model = _model(pn.Adam(0.02))
        model.layers[2] = layer
        model.train(X, y, epochs=2, batch_size=5, print_every=None, compile=compile)
        return _state(model)

    by_default = run(None, _StatefulDropout(0.25))
    _assert_same_state(by_default, run(False, pn.Dropout(0.25)))


def test_without_a_flag_an_old_optimizer_trains_eagerly_and_the_same(backend64):
    X, y = _data()

    def run(compile, optimizer):
        pn.seed(6)
        model = _model(optimizer)
        model.train(X, y, epochs=2, batch_size=5, print_every=None, compile=compile)
        assert not model._step_cache[1].compiled
        return _state(model)

    _assert_same_state(run(None, _OldOptimizer(0.1)), run(False, pn.SGD(0.1)))


def test_compile_none_follows_the_backend(backend64):
    X, y = _data()
    model = _model(pn.SGD(0.1))
    model.train(X, y, epochs=1, batch_size=5, print_every=None)
    assert model._step_cache[1].compiled is (backend64.name == "jax")
    if backend64.name == "torch":
        return  # compiling takes half a minute: test_torch_compile_takes_the_eager_trajectory
    model.train(X, y, epochs=1, batch_size=5, print_every=None, compile=True)
    assert model._step_cache[1].compiled is (backend64.compiler is not None)


def test_torch_compile_takes_the_eager_trajectory(backend64):
    if backend64.name != "torch":
        pytest.skip("torch.compile: the torch backend's compiler")
    pytest.importorskip("torch._dynamo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dynamo's own notes on what it traces
        eager, _ = _run(False, OPTIMIZERS["adam"], l2=5e-3)
        compiled, _ = _run(True, OPTIMIZERS["adam"], l2=5e-3)
    assert compiled._step_cache[1].compiled
    _assert_same_state(_state(eager), _state(compiled), rtol=1e-10, atol=1e-12)


def test_a_compiled_cnn_with_batch_norm_takes_the_eager_trajectory(compiler):
    # Convolution, pooling and BatchNormalization through the step: the running statistics
    # are layer state, data the step takes and gives back, not parameters it trains.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(10, 1, 6, 6))
    y = (X[:, 0, :3].sum(axis=(1, 2)) > X[:, 0, 3:].sum(axis=(1, 2))).astype(np.int64)

    def run(compile):
        pn.seed(8)
        model = pn.Model(
            [
                pn.Input(shape=(1, 6, 6)),
                pn.Conv2D(1, 3, 3, padding="same"),
                pn.BatchNormalization(3),
                pn.ReLU(),
                pn.MaxPool2D(2),
                pn.Flatten(),
                pn.Dense(27, 2),
                pn.Softmax(),
            ]
        ).set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(0.02))
        model.train(X, y, epochs=2, batch_size=4, print_every=None, compile=compile)
        return model

    eager, compiled = run(False), run(True)
    state = _state(compiled)
    # atol: the conv biases before BN have a true gradient of 0 (BN takes the mean out), so
    # they are rounding, which XLA's other summation order makes other rounding.
    _assert_same_state(_state(eager), state, rtol=1e-9, atol=1e-9)
    assert not np.allclose(state["layers/2/running_mean"], 0)  # the statistics moved
    assert not any(k.startswith("optimizer/2/running") for k in state)


# --- donated buffers: a compiled step reuses the arrays nobody else holds --------------------


def test_a_step_sees_every_other_holder_of_its_arrays(backend64):
    # portnn.step._unshared, on every backend: only the model and the step's own dicts may
    # hold an array the step is to consume (jax.jit's donation deletes it).
    from portnn.step import _unshared

    model = _model(pn.Adam(0.01))
    X, y = _data()
    model.train(X, y, epochs=1, batch_size=5, print_every=None, compile=False)
    step = Step(model)

    def unshared():
        params, state, opt_state = step.gather()
        return _unshared(params, state, opt_state)

    assert unshared()
    held = model.layers[3].biases
    assert not unshared()
    del held
    kept = model.state_dict()
    assert not unshared()
    del kept
    record = model.optimizer.state[model.layers[0]]["weights"]
    assert not unshared()
    moment = record[0]
    del record
    assert not unshared()
    del moment
    assert unshared()
    model.layers[3].biases = model.layers[0].biases  # one array, two holders (nothing runs)
    assert not unshared()


@pytest.mark.parametrize("donates", [False, True])
def test_the_state_training_keeps_is_copied_where_steps_donate(backend64, monkeypatch, donates):
    # portnn._state.snapshot, what the divergence restore and EarlyStopping keep: by
    # reference where nothing is deleted (updates make new arrays), copies where a compiled
    # step consumes the arrays it is given (JAX's donation, stood in for on every backend).
    from portnn import _state

    monkeypatch.setattr(type(backend64), "donates", donates)
    model = _model(pn.Adam(0.01))
    X, y = _data()
    model.train(X, y, epochs=1, batch_size=5, print_every=None, compile=False)
    live, kept = model.state_dict(), _state.snapshot(model)
    assert kept.keys() == live.keys()
    for key, value in live.items():
        if isinstance(value, int | float):
            assert kept[key] == value, key
            continue
        assert (kept[key] is value) is not donates, key
        np.testing.assert_array_equal(numpy_of(kept[key]), numpy_of(value), err_msg=key)


@pytest.fixture
def donation(backend64, monkeypatch):
    """JAX's compiled steps, spied on: for each call, whether it was the donating one and
    whether the arrays it was given were deleted by it (their buffers reused)."""
    if not backend64.donates:
        pytest.skip(f"{backend64.name} has no donated buffers")
    calls = []
    make = Step.__init__

    def init(self, *args, **kwargs):
        make(self, *args, **kwargs)
        for name in ("run", "donating"):
            real = getattr(self, name)

            def spy(params, *rest, real=real, name=name):
                out = real(params, *rest)
                calls.append((name, all(a.is_deleted() for a in params.values())))
                return out

            setattr(self, name, spy)

    monkeypatch.setattr(Step, "__init__", init)
    return calls


def test_a_compiled_step_reuses_the_buffers_nobody_else_holds(donation):
    X, y = _data()

    def run(hold):
        pn.seed(5)
        model = _model(pn.Adam(0.05), dropout=0.0)
        kept = {}
        if hold:
            kept = {"weights": model.layers[0].weights, "state": model.state_dict()}
        before = {k: numpy_of(v) for k, v in model.state_dict().items()}
        donation.clear()
        model.train(X, y, epochs=2, batch_size=5, print_every=None, compile=True)
        return model, kept, before, list(donation)

    free, _, _, calls = run(hold=False)
    # Every step: the epoch's snapshot (restored on divergence) is a copy, so even the first
    # step of an epoch gives its arrays away, and the arrays given are deleted.
    assert calls == [("donating", True)] * 10
    held, kept, before, calls = run(hold=True)
    # The first step sees the arrays held and leaves them; from then on, its results are
    # the model's alone.
    assert calls == [("run", False)] + [("donating", True)] * 9
    assert not kept["weights"].is_deleted()
    np.testing.assert_array_equal(numpy_of(kept["weights"]), before["layers/0/weights"])
    for key, value in kept["state"].items():
        np.testing.assert_array_equal(numpy_of(value), before[key], err_msg=key)
    _assert_same_state(_state(free), _state(held), rtol=0, atol=0)


def test_after_donated_steps_the_best_epoch_is_restored(donation):
    # EarlyStopping keeps the best epoch's state while the steps after it give their arrays
    # away: it keeps copies, and restores them. (The divergence restore after donated steps:
    # tests/test_model.py's divergence tests, which compile on JAX.)
    X, y = _data()

    def run(epochs, callbacks=()):
        pn.seed(6)
        model = _model(pn.SGD(0.8, momentum=0.9), dropout=0.0)
        kw = {"batch_size": 5, "print_every": None, "compile": True, "callbacks": callbacks}
        return model, model.train(X, y, epochs=epochs, **kw)

    best = pn.callbacks.EarlyStopping(monitor="loss", patience=8, restore_best=True)
    model, history = run(8, [best])
    assert ("donating", True) in donation
    assert 1 <= best.best_epoch < 8  # a best epoch before the last: a real restore
    assert history["loss"][best.best_epoch - 1] == min(history["loss"])
    reference, _ = run(best.best_epoch)
    _assert_same_state(_state(model), _state(reference), rtol=0, atol=0)
