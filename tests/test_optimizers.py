"""Optimizers against hand-computed steps of the book's formulas, against torch.optim where the
formulas coincide, argument checks, and float32 staying float32 through a whole network."""

import numpy as np
import pytest
from helpers import assert_parameters_equal, host_parameters

import portnn as pn

DEFAULTS = {
    "SGD": {"learning_rate": 1.0, "decay": 0.0, "momentum": 0.0},
    "Adagrad": {"learning_rate": 1.0, "decay": 0.0, "epsilon": 1e-7},
    "RMSprop": {"learning_rate": 0.001, "decay": 0.0, "epsilon": 1e-7, "rho": 0.9},
    "Adam": {"learning_rate": 0.001, "decay": 0.0, "epsilon": 1e-7, "beta_1": 0.9, "beta_2": 0.999},
}

# (optimizer, constructor arguments); every argument differs from its default somewhere.
CASES = [
    ("SGD", {}),
    ("SGD", {"learning_rate": 0.5, "decay": 0.1}),
    ("SGD", {"learning_rate": 0.3, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.3, "decay": 0.2, "momentum": 0.5}),
    ("Adagrad", {}),
    ("Adagrad", {"learning_rate": 0.3, "decay": 0.05, "epsilon": 1e-3}),
    ("RMSprop", {}),
    ("RMSprop", {"learning_rate": 0.01, "decay": 0.1, "epsilon": 1e-3, "rho": 0.8}),
    ("Adam", {}),
    ("Adam", {"learning_rate": 0.02, "decay": 0.1}),
    ("Adam", {"learning_rate": 0.02, "decay": 0.1, "epsilon": 1e-3, "beta_1": 0.8, "beta_2": 0.95}),
]
IDS = [f"{kind}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for kind, kw in CASES]


def reference_steps(kind, kwargs, params, grads):
    """The book's update rules (REFERENCE.md) in NumPy float64, written out step by step.

    ``params``: name -> array; ``grads``: one name -> array dict per step. Returns, per step,
    the parameters after it and the learning rate it used."""
    h = {**DEFAULTS[kind], **kwargs}
    params = {k: v.astype(np.float64) for k, v in params.items()}
    first = {k: np.zeros_like(v) for k, v in params.items()}  # momentum / cache
    second = {k: np.zeros_like(v) for k, v in params.items()}  # Adam's cache
    trajectory = []
    for t, step_grads in enumerate(grads):
        lr = h["learning_rate"] / (1 + h["decay"] * t)
        for name, g in step_grads.items():
            p = params[name]
            if kind == "SGD" and h["momentum"]:
                first[name] = h["momentum"] * first[name] - lr * g
                p = p + first[name]
            elif kind == "SGD":
                p = p - lr * g
            elif kind == "Adagrad":
                first[name] = first[name] + g**2
                p = p - lr * g / (np.sqrt(first[name]) + h["epsilon"])
            elif kind == "RMSprop":
                first[name] = h["rho"] * first[name] + (1 - h["rho"]) * g**2
                p = p - lr * g / (np.sqrt(first[name]) + h["epsilon"])
            else:
                b1, b2 = h["beta_1"], h["beta_2"]
                first[name] = b1 * first[name] + (1 - b1) * g
                second[name] = b2 * second[name] + (1 - b2) * g**2
                m_hat = first[name] / (1 - b1 ** (t + 1))
                v_hat = second[name] / (1 - b2 ** (t + 1))
                p = p - lr * m_hat / (np.sqrt(v_hat) + h["epsilon"])
            params[name] = p
        trajectory.append(({k: v.copy() for k, v in params.items()}, lr))
    return trajectory


@pytest.fixture(params=["float64", "float32"])
def any_dtype_backend(request, backend_name):
    with pn.use_backend(backend_name, dtype=request.param) as b:
        yield b


@pytest.mark.parametrize("calls", ["three_calls", "step"])
@pytest.mark.parametrize(("kind", "kwargs"), CASES, ids=IDS)
def test_steps_match_the_books_formulas(any_dtype_backend, kind, kwargs, calls):
    b = any_dtype_backend
    rtol = 1e-12 if b.dtype_name == "float64" else 2e-5
    rng = np.random.default_rng(0)
    layers = [pn.Dense(3, 4), pn.ReLU(), pn.Dense(4, 2)]
    dense = [layers[0], layers[2]]
    start = {}
    for i, layer in enumerate(dense):
        for name in ("weights", "biases"):
            value = rng.standard_normal(tuple(getattr(layer, name).shape))
            value = value.astype(b.dtype_name)
            setattr(layer, name, b.asarray(value))
            start[f"{i}.{name}"] = value
    grads = [
        {k: (rng.standard_normal(v.shape) * 0.5).astype(b.dtype_name) for k, v in start.items()}
        for _ in range(5)
    ]
    expected = reference_steps(kind, kwargs, start, grads)

    optimizer = getattr(pn, kind)(**kwargs)
    assert optimizer.iterations == 0
    for t, (step_grads, (want, lr)) in enumerate(zip(grads, expected, strict=True)):
        for i, layer in enumerate(dense):
            layer.dweights = b.asarray(step_grads[f"{i}.weights"])
            layer.dbiases = b.asarray(step_grads[f"{i}.biases"])
        if calls == "step":
            optimizer.step(layers)
        else:
            optimizer.pre_update_params()
            for layer in dense:
                optimizer.update_params(layer)
            optimizer.post_update_params()
        assert optimizer.iterations == t + 1
        assert optimizer.current_learning_rate == pytest.approx(lr, rel=1e-15)
        for i, layer in enumerate(dense):
            for name in ("weights", "biases"):
                got = getattr(layer, name)
                assert got.dtype == b.dtype
                np.testing.assert_allclose(
                    pn.to_numpy(got),
                    want[f"{i}.{name}"],
                    rtol=rtol,
                    atol=rtol * 1e-3,
                    err_msg=f"step {t + 1}, layer {i} {name}",
                )


@pytest.mark.parametrize(("kind", "kwargs"), CASES, ids=IDS)
def test_learning_rate_decay(kind, kwargs):
    optimizer = getattr(pn, kind)(**kwargs)
    h = {**DEFAULTS[kind], **kwargs}
    for t in range(4):
        optimizer.step([])
        assert optimizer.iterations == t + 1
        assert optimizer.current_learning_rate == pytest.approx(
            h["learning_rate"] / (1 + h["decay"] * t), rel=1e-15
        )


def test_book_chapter_10_learning_rate():
    """Adam(lr=0.05, decay=5e-7): the rate the book prints at epoch 10,000."""
    optimizer = pn.Adam(learning_rate=0.05, decay=5e-7)
    for _ in range(10_000):
        optimizer.pre_update_params()
        optimizer.post_update_params()
    assert optimizer.current_learning_rate == pytest.approx(0.04975126853296942, rel=1e-12)


def _torch_pairs():
    return [
        ({"kind": "SGD", "learning_rate": 0.1}, ("SGD", {"lr": 0.1})),
        (
            {"kind": "SGD", "learning_rate": 0.05, "momentum": 0.9},
            ("SGD", {"lr": 0.05, "momentum": 0.9}),  # lr * torch's buffer == -book's momentum
        ),
        (
            {"kind": "Adagrad", "learning_rate": 0.5, "decay": 0.1},
            ("Adagrad", {"lr": 0.5, "lr_decay": 0.1, "eps": 1e-7}),  # the same decay rule
        ),
        (
            {"kind": "RMSprop", "learning_rate": 0.01, "rho": 0.8},
            ("RMSprop", {"lr": 0.01, "alpha": 0.8, "eps": 1e-7}),
        ),
        ({"kind": "Adam", "learning_rate": 0.01}, ("Adam", {"lr": 0.01, "eps": 1e-7})),
        (
            {"kind": "Adam", "learning_rate": 0.05, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-4},
            ("Adam", {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-4}),
        ),
    ]


TORCH_IDS = ["sgd", "sgd_momentum", "adagrad_decay", "rmsprop", "adam", "adam_betas"]


@pytest.mark.parametrize(("ours", "theirs"), _torch_pairs(), ids=TORCH_IDS)
def test_trajectory_matches_torch_optim(backend64, ours, theirs):
    """Ten steps on a quadratic bowl, gradients taken at each step's own parameters."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    start = {"weights": rng.standard_normal((3, 4)), "biases": rng.standard_normal((1, 4))}
    target = {k: rng.standard_normal(v.shape) for k, v in start.items()}
    curve = {k: rng.uniform(0.2, 3.0, v.shape) for k, v in start.items()}

    layer = pn.Dense(3, 4)
    for name, value in start.items():
        setattr(layer, name, backend64.asarray(value))
    kwargs = dict(ours)
    optimizer = getattr(pn, kwargs.pop("kind"))(**kwargs)
    tensors = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in start.items()
    }
    torch_optimizer = getattr(torch.optim, theirs[0])(list(tensors.values()), **theirs[1])

    for t in range(10):
        for name in start:
            grad = curve[name] * (pn.to_numpy(getattr(layer, name)) - target[name])
            setattr(layer, "d" + name, backend64.asarray(grad))
            with torch.no_grad():
                tensors[name].grad = torch.tensor(curve[name]) * (
                    tensors[name] - torch.tensor(target[name])
                )
        optimizer.step([layer])
        torch_optimizer.step()
        for name in start:
            np.testing.assert_allclose(
                pn.to_numpy(getattr(layer, name)),
                tensors[name].detach().numpy(),
                rtol=1e-10,
                atol=1e-13,
                err_msg=f"after step {t + 1}, {name}",
            )
    assert not np.allclose(pn.to_numpy(layer.weights), start["weights"])


BAD_ARGUMENTS = [
    ("SGD", {"learning_rate": -0.1}, "learning_rate"),
    ("SGD", {"learning_rate": 0}, "learning_rate"),
    ("SGD", {"learning_rate": float("nan")}, "learning_rate"),
    ("SGD", {"learning_rate": float("inf")}, "learning_rate"),
    ("SGD", {"learning_rate": "0.1"}, "learning_rate"),
    ("SGD", {"momentum": -0.1}, "momentum"),
    ("SGD", {"momentum": 1.0}, "momentum"),
    ("SGD", {"momentum": 1.5}, "momentum"),
    ("SGD", {"decay": -1e-3}, "decay"),
    ("Adagrad", {"learning_rate": -1}, "learning_rate"),
    ("Adagrad", {"epsilon": -1e-7}, "epsilon"),
    ("Adagrad", {"decay": -0.5}, "decay"),
    ("RMSprop", {"rho": 1.0}, "rho"),
    ("RMSprop", {"rho": -0.1}, "rho"),
    ("RMSprop", {"epsilon": -1.0}, "epsilon"),
    ("Adam", {"beta_1": 1.0}, "beta_1"),
    ("Adam", {"beta_1": -0.1}, "beta_1"),
    ("Adam", {"beta_2": 1.0}, "beta_2"),
    ("Adam", {"beta_2": 2}, "beta_2"),
    ("Adam", {"epsilon": -1e-8}, "epsilon"),
    ("Adam", {"decay": -5e-7}, "decay"),
    ("Adam", {"learning_rate": None}, "learning_rate"),
    ("Adam", {"beta_1": True}, "beta_1"),
]


@pytest.mark.parametrize(("kind", "kwargs", "name"), BAD_ARGUMENTS)
def test_constructors_reject_nonsense(kind, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must be") as info:
        getattr(pn, kind)(**kwargs)
    assert repr(next(iter(kwargs.values())))[:3] in str(info.value)


@pytest.mark.parametrize("kind", ["SGD", "Adagrad", "RMSprop", "Adam"])
def test_constructors_accept_numpy_numbers(kind):
    # Adam(np.float32(1e-3)) was refused while train() took NumPy numbers.
    optimizer = getattr(pn, kind)(np.float32(0.5), decay=np.float64(1e-3))
    assert optimizer.learning_rate == pytest.approx(0.5)
    assert type(optimizer.learning_rate) is float and type(optimizer.decay) is float


def _adam_model(seed):
    pn.seed(seed)
    model = pn.Model([pn.Dense(8, 256), pn.ReLU(), pn.Dense(256, 256), pn.ReLU()])
    model.add(pn.Dense(256, 1)).add(pn.Linear())
    return model.set(loss=pn.MeanSquaredError(), optimizer=pn.Adam(learning_rate=1e-3))


def test_two_models_training_in_two_threads_get_the_single_threaded_results(backend):
    # Parameters of 65,536 elements: NumPy's Adam once took its buffers from a shared pool
    # whose reuse two threads could race on (wrong weights in 1-3 of 70 runs).
    import threading

    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((64, 8)), rng.standard_normal((64, 1))) for _ in range(2)]
    expected = []
    for seed, (X, y) in enumerate(data):
        model = _adam_model(seed)
        model.train(X, y, epochs=15, batch_size=8, shuffle=False, print_every=None)
        expected.append(host_parameters(model))
    models = [_adam_model(seed) for seed in range(2)]
    errors = []

    def train(model, X, y):
        try:
            model.train(X, y, epochs=15, batch_size=8, shuffle=False, print_every=None)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pairs = zip(models, data, strict=True)
    threads = [threading.Thread(target=train, args=(m, *d)) for m, d in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for model, want in zip(models, expected, strict=True):
        assert_parameters_equal(host_parameters(model), want)


@pytest.mark.parametrize(("kind", "kwargs"), CASES, ids=IDS)
def test_constructors_accept_the_books_arguments(kind, kwargs):
    optimizer = getattr(pn, kind)(**kwargs)
    for name, value in {**DEFAULTS[kind], **kwargs}.items():
        assert getattr(optimizer, name) == value
    assert optimizer.current_learning_rate == optimizer.learning_rate
    assert optimizer.iterations == 0


# --- float32 stays float32 ---------------------------------------------------------------


def _network(kind, n):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((n, 4))
    l2 = {"weight_regularizer_l2": 1e-3, "bias_regularizer_l1": 1e-3}
    if kind == "softmax_cce":
        layers = [pn.Dense(4, 8, **l2), pn.ReLU(), pn.Dense(8, 3), pn.Softmax()]
        return layers, pn.CategoricalCrossentropy(), X, rng.integers(0, 3, n).astype(np.uint8)
    if kind == "fused_softmax_cce":
        layers = [pn.Dense(4, 8), pn.ReLU(), pn.Dense(8, 3)]
        return layers, pn.SoftmaxCategoricalCrossentropy(), X, np.eye(3)[rng.integers(0, 3, n)]
    if kind == "sigmoid_bce":
        layers = [pn.Dense(4, 8, **l2), pn.Tanh(), pn.Dense(8, 2), pn.Sigmoid()]
        return layers, pn.BinaryCrossentropy(), X, rng.integers(0, 2, (n, 2))
    if kind == "linear_mse":
        layers = [pn.Dense(4, 8), pn.LeakyReLU(), pn.Dropout(0.3), pn.Dense(8, 1), pn.Linear()]
        return layers, pn.MeanSquaredError(), X, rng.standard_normal((n, 1))
    layers = [pn.Dense(4, 8, weight_regularizer_l1=1e-3), pn.ReLU(), pn.Dense(8, 1), pn.Linear()]
    return layers, pn.MeanAbsoluteError(), X, rng.standard_normal((n, 1))


NETWORKS = ["softmax_cce", "fused_softmax_cce", "sigmoid_bce", "linear_mse", "linear_mae"]
OPTIMIZERS = {
    "sgd": lambda: pn.SGD(learning_rate=0.1),
    "sgd_momentum": lambda: pn.SGD(learning_rate=0.1, decay=1e-3, momentum=0.9),
    "adagrad": lambda: pn.Adagrad(decay=1e-3),
    "rmsprop": lambda: pn.RMSprop(decay=1e-3),
    "adam": lambda: pn.Adam(learning_rate=0.01, decay=1e-3),
}


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
@pytest.mark.parametrize("kind", NETWORKS)
def test_float32_stays_float32(backend, kind, make_optimizer, batch):
    f32 = backend.xp.float32
    assert backend.dtype == f32
    layers, loss, X, y = _network(kind, batch)
    X, y = backend.asarray(X), backend.asarray(y)
    assert X.dtype == f32
    optimizer = make_optimizer()
    fused = isinstance(loss, pn.SoftmaxCategoricalCrossentropy)
    trainable = [layer for layer in layers if layer.param_names]
    loss.remember_trainable_layers(trainable)
    losses = []
    for _ in range(3):
        out = X
        for layer in layers:
            out = layer.forward(out, training=True)
            assert out.dtype == f32, type(layer).__name__
            assert tuple(out.shape)[0] == batch
        if fused:
            per_sample = loss.forward(out, y)
            assert loss.output.dtype == f32 and per_sample.dtype == f32
            value = loss.calculate(loss.output, y)
            d = loss.backward(loss.output, y)
        else:
            value, reg = loss.calculate(out, y, include_regularization=True)
            assert isinstance(reg, float)
            d = loss.backward(out, y)
        assert isinstance(value, float) and np.isfinite(value)
        losses.append(value)
        assert d.dtype == f32
        for layer in reversed(layers):
            d = layer.backward(d)
            assert d.dtype == f32, type(layer).__name__
        for layer in trainable:
            assert layer.dweights.dtype == f32 and layer.dbiases.dtype == f32
        optimizer.step(layers)
        for layer in trainable:
            assert layer.weights.dtype == f32 and layer.biases.dtype == f32
            for state in optimizer.state.get(layer, {}).values():
                for array in state or ():
                    assert array.dtype == f32
    assert optimizer.iterations == 3
    assert losses[0] != losses[-1]  # the updates reached the network


# --- state in and out -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["SGD", "Adagrad", "RMSprop", "Adam"])
def test_state_dict_round_trip_continues_the_same_trajectory(backend, kind):
    # state_dict/load_state_dict are the one way state goes in and out: a fresh optimizer
    # loaded with it must take the very steps the original would.
    kwargs = {"momentum": 0.9} if kind == "SGD" else {}
    rng = np.random.default_rng(4)
    X = rng.standard_normal((16, 3)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)

    def model_with(optimizer):
        pn.seed(5)
        model = pn.Model([pn.Dense(3, 4), pn.Tanh(), pn.Dense(4, 1), pn.Linear()])
        return model.set(loss=pn.MeanSquaredError(), optimizer=optimizer)

    straight = model_with(getattr(pn, kind)(0.01, decay=1e-2, **kwargs))
    straight.train(X, y, epochs=6, batch_size=4, shuffle=False, print_every=None)
    first = model_with(getattr(pn, kind)(0.01, decay=1e-2, **kwargs))
    first.train(X, y, epochs=3, batch_size=4, shuffle=False, print_every=None)
    state = {
        k: (pn.to_numpy(v) if hasattr(v, "shape") else v) for k, v in first.state_dict().items()
    }
    second = model_with(getattr(pn, kind)(0.01, decay=1e-2, **kwargs))
    second.load_state_dict(state)
    assert second.optimizer.iterations == 12
    second.train(X, y, epochs=3, batch_size=4, shuffle=False, print_every=None)
    assert_parameters_equal(host_parameters(second), host_parameters(straight), rtol=1e-6)


def test_optimizer_state_dict_is_indexed_by_the_layers_given(backend):
    dense1, dense2 = pn.Dense(2, 3), pn.Dense(3, 1)
    opt = pn.Adam()
    for layer in (dense1, dense2):
        layer.dweights, layer.dbiases = layer.weights * 0 + 1, layer.biases * 0 + 1
    opt.step([dense1, dense2])
    state = opt.state_dict()
    assert sorted(state["state"]) == [0, 1]
    assert sorted(state["state"][1]["weights"]) == ["cache", "momentum"]
    assert opt.state_dict([pn.ReLU(), dense2, dense1])["state"].keys() == {1, 2}
    fresh = pn.Adam()
    with pytest.raises(ValueError, match="pass the layers it belongs to"):
        fresh.load_state_dict(state)
    fresh.load_state_dict(state, layers=[dense1, dense2])
    assert fresh.iterations == 1
    np.testing.assert_array_equal(
        pn.to_numpy(fresh.state[dense2]["weights"].momentum),
        pn.to_numpy(opt.state[dense2]["weights"].momentum),
    )


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda s: s.update(iterations=-1), "iterations"),
        (lambda s: s.update(current_learning_rate=float("nan")), "current_learning_rate"),
        (lambda s: s["state"][0]["weights"].pop("cache"), "fields"),
        (lambda s: s["state"][0]["weights"].update(cache=np.zeros((5, 5))), "shape"),
        (lambda s: s["state"].update({-1: s["state"][0]}), "layer -1"),
    ],
)
def test_a_bad_optimizer_state_dict_changes_nothing(backend, change, pattern):
    dense = pn.Dense(2, 3)
    dense.dweights, dense.dbiases = dense.weights * 0 + 1, dense.biases * 0 + 1
    opt = pn.Adam()
    opt.step([dense])
    state = opt.state_dict()
    state["state"] = {i: {n: dict(f) for n, f in p.items()} for i, p in state["state"].items()}
    before = opt.state_dict()
    change(state)
    with pytest.raises(ValueError, match=pattern):
        opt.load_state_dict(state, layers=[dense])
    assert opt.iterations == before["iterations"]
    assert opt.state[dense]["weights"].cache is before["state"][0]["weights"]["cache"]
