"""Conv2D, MaxPool2D, AveragePool2D and Flatten: shapes, finite-difference and torch-autograd
gradients, pooling ties, initialisation, bad input, and CNNs in a model (training, files,
state_dict, summary, safetensors with torch.nn.Sequential)."""

import math
import re

import numpy as np
import pytest
from helpers import assert_grad, away_from_zero, host, numeric_grad

import portnn as pn
from portnn import interop
from portnn.backend import library_of
from portnn.io import ModelFileError

# (kernel_size, stride, padding) -> the cases every shape and gradient test runs.
CONV_CASES = {
    "k3-s1-p0": (3, 1, 0),
    "k3-s1-p1": (3, 1, 1),
    "k3-s1-same": (3, 1, "same"),
    "k3-s2-p0": (3, 2, 0),
    "k3-s2-p1": (3, 2, 1),
    "k2x3-s1-same": ((2, 3), 1, "same"),  # an even side: one more zero at the bottom
    "k2x3-s2x1-p1x2": ((2, 3), (2, 1), (1, 2)),
    "k4-s1-same": (4, 1, "same"),
    "k2-s2-p0": (2, 2, 0),  # windows that tile: the reshape path
    "k1-s1-p0": (1, 1, 0),
}
POOL_CASES = {
    "p2": (2, None),
    "p3-s2": (3, 2),  # overlapping windows
    "p2-s1": (2, 1),
    "p2x3-s1x2": ((2, 3), (1, 2)),
    "p3-s3": (3, None),  # a remainder row and column dropped
}


def out_size(n, k, s, before, after):
    return (n + before + after - k) // s + 1


def expected_shape(shape, cout, kernel, stride, padding):
    """The output shape by torch's formula, written out independently of portnn."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    if padding == "same":
        pads = ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)
    else:
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        pads = (ph, ph), (pw, pw)
    n, _, h, w = shape
    return (n, cout, out_size(h, kh, sh, *pads[0]), out_size(w, kw, sw, *pads[1]))


@pytest.mark.parametrize(("kernel", "stride", "padding"), CONV_CASES.values(), ids=CONV_CASES)
def test_conv_output_shapes(backend, kernel, stride, padding):
    layer = pn.Conv2D(3, 5, kernel, stride, padding)
    shape = (2, 3, 9, 8)
    want = expected_shape(shape, 5, kernel, stride, padding)
    assert layer.output_shape(shape) == want
    assert layer.output_shape((None, 3, 9, None)) == (None, 5, want[2], None)
    out = layer.forward(backend.asarray(np.ones(shape, dtype=np.float32)))
    assert tuple(out.shape) == want
    if padding == "same":
        assert want[2:] == shape[2:]


def conv_objective(b, layer, R, X, W, bias):
    layer.weights, layer.biases = b.asarray(W), b.asarray(bias)
    out = host(layer.forward(b.asarray(X)))
    return float(np.sum(out * R)) + float(layer.regularization_loss())


REGS = {
    "weight_regularizer_l1": 0.3,
    "weight_regularizer_l2": 0.2,
    "bias_regularizer_l1": 0.4,
    "bias_regularizer_l2": 0.5,
}


@pytest.mark.parametrize(("kernel", "stride", "padding"), CONV_CASES.values(), ids=CONV_CASES)
def test_conv_gradients_match_finite_differences(backend64, kernel, stride, padding):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, 2, 5, 6))
    layer = pn.Conv2D(2, 3, kernel, stride, padding)
    W = away_from_zero(rng, tuple(layer.weights.shape))
    bias = away_from_zero(rng, (3,))
    R = rng.standard_normal(expected_shape(X.shape, 3, kernel, stride, padding))

    def objective(X=X, W=W, bias=bias):
        return conv_objective(backend64, layer, R, X, W, bias)

    objective()
    dinputs = layer.backward(backend64.asarray(R))
    for grad in (dinputs, layer.dweights, layer.dbiases):
        assert library_of(grad) == backend64.name
        assert grad.dtype == backend64.xp.float64
    assert_grad(dinputs, numeric_grad(lambda x: objective(X=x), X))
    assert_grad(layer.dweights, numeric_grad(lambda w: objective(W=w), W))
    assert_grad(layer.dbiases, numeric_grad(lambda v: objective(bias=v), bias))


@pytest.mark.parametrize("reg", [*REGS, "all"])
def test_conv_regularizers_and_their_gradients(backend64, reg):
    regs = REGS if reg == "all" else {reg: REGS[reg]}
    rng = np.random.default_rng(2)
    X = rng.standard_normal((2, 2, 4, 4))
    layer = pn.Conv2D(2, 3, 3, padding=1, **regs)
    W, bias = away_from_zero(rng, (3, 2, 3, 3)), away_from_zero(rng, (3,))
    R = rng.standard_normal((2, 3, 4, 4))
    expected = (
        regs.get("weight_regularizer_l1", 0) * np.abs(W).sum()
        + regs.get("weight_regularizer_l2", 0) * (W * W).sum()
        + regs.get("bias_regularizer_l1", 0) * np.abs(bias).sum()
        + regs.get("bias_regularizer_l2", 0) * (bias * bias).sum()
    )
    conv_objective(backend64, layer, R, X, W, bias)
    assert float(layer.regularization_loss()) == pytest.approx(expected, rel=1e-12)
    assert pn.CategoricalCrossentropy().regularization_loss(layer) == pytest.approx(expected)
    layer.backward(backend64.asarray(R))

    def objective(W=W, bias=bias):
        return conv_objective(backend64, layer, R, X, W, bias)

    assert_grad(layer.dweights, numeric_grad(lambda w: objective(W=w), W))
    assert_grad(layer.dbiases, numeric_grad(lambda v: objective(bias=v), bias))


def test_conv_without_dinputs(backend):
    layer = pn.Conv2D(1, 2, 3)
    layer.compute_dinputs = False
    layer.forward(backend.asarray(np.ones((2, 1, 4, 4), dtype=np.float32)))
    assert layer.backward(backend.asarray(np.ones((2, 2, 2, 2), dtype=np.float32))) is None
    np.testing.assert_allclose(host(layer.dweights), np.full((2, 1, 3, 3), 8.0))
    np.testing.assert_allclose(host(layer.dbiases), np.full((2,), 8.0))


def pool_objective(b, layer, R, X):
    return float(np.sum(host(layer.forward(b.asarray(X))) * R))


@pytest.mark.parametrize("cls", [pn.MaxPool2D, pn.AveragePool2D])
@pytest.mark.parametrize(("pool", "stride"), POOL_CASES.values(), ids=POOL_CASES)
def test_pool_shapes_and_gradients_match_finite_differences(backend64, cls, pool, stride):
    rng = np.random.default_rng(3)
    X = rng.permutation(2 * 2 * 7 * 8).reshape(2, 2, 7, 8) / 10.0  # no ties: a smooth max
    layer = cls(pool, stride)
    ph, pw = (pool, pool) if isinstance(pool, int) else pool
    sh, sw = (ph, pw) if stride is None else (stride, stride) if isinstance(stride, int) else stride
    want = (2, 2, out_size(7, ph, sh, 0, 0), out_size(8, pw, sw, 0, 0))
    assert layer.output_shape(X.shape) == want
    R = rng.standard_normal(want)
    pool_objective(backend64, layer, R, X)
    dinputs = layer.backward(backend64.asarray(R))
    assert tuple(dinputs.shape) == X.shape
    assert_grad(dinputs, numeric_grad(lambda x: pool_objective(backend64, layer, R, x), X, 1e-4))


def test_max_pool_ties_send_the_gradient_to_the_first_max(backend64):
    # Each 2x2 window ties; row-major, the first maximum takes the whole gradient (torch's rule).
    X = np.array([[1.0, 3.0, 5.0, 5.0], [3.0, 2.0, 5.0, 5.0], [0.0, 0.0, 7.0, 1.0], [0, 0, 7, 7]])
    layer = pn.MaxPool2D(2)
    out = layer.forward(backend64.asarray(X[None, None]))
    np.testing.assert_array_equal(host(out)[0, 0], [[3.0, 5.0], [0.0, 7.0]])
    d = np.array([[10.0, 20.0], [30.0, 40.0]])
    dx = host(layer.backward(backend64.asarray(d[None, None])))[0, 0]
    expected = np.zeros((4, 4))
    expected[0, 1], expected[0, 2], expected[2, 0], expected[2, 2] = 10.0, 20.0, 30.0, 40.0
    np.testing.assert_array_equal(dx, expected)


def test_max_pool_overlapping_windows_sum_the_gradients_of_a_shared_max(backend64):
    X = np.array([[0.0, 1.0, 0.0], [1.0, 9.0, 1.0], [0.0, 1.0, 0.0]])
    layer = pn.MaxPool2D(2, stride=1)  # the 9 is the max of all four windows
    layer.forward(backend64.asarray(X[None, None]))
    dx = host(layer.backward(backend64.asarray(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))))
    expected = np.zeros((3, 3))
    expected[1, 1] = 10.0
    np.testing.assert_array_equal(dx[0, 0], expected)


# --- against torch autograd -------------------------------------------------------------------


def pair(v):
    return v if isinstance(v, int | str) else tuple(v)


def torch_grads(torch, f, *arrays):
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = f(*tensors)
    return out, tensors


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize(("kernel", "stride", "padding"), CONV_CASES.values(), ids=CONV_CASES)
def test_conv_matches_torch_autograd(backend64, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3, 2, 7, 6))
    layer = pn.Conv2D(2, 4, kernel, stride, padding)
    W, bias = host(layer.weights), rng.standard_normal(4)
    layer.biases = backend64.asarray(bias)
    out = layer.forward(backend64.asarray(X))
    t_out, (tx, tw, tb) = torch_grads(
        torch,
        lambda x, w, b: F.conv2d(x, w, b, stride=pair(stride), padding=pair(padding)),
        X,
        W,
        bias,
    )
    np.testing.assert_allclose(host(out), t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    R = rng.standard_normal(tuple(t_out.shape))
    t_out.backward(torch.from_numpy(R))
    dx = layer.backward(backend64.asarray(R))
    np.testing.assert_allclose(host(dx), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(layer.dweights), tw.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(layer.dbiases), tb.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize(("pool", "stride"), POOL_CASES.values(), ids=POOL_CASES)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_pools_match_torch_autograd(backend64, kind, pool, stride, ties):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    X = rng.integers(0, 3, (2, 3, 7, 8)) * 1.0 if ties else rng.standard_normal((2, 3, 7, 8))
    layer = (pn.MaxPool2D if kind == "max" else pn.AveragePool2D)(pool, stride)
    f = F.max_pool2d if kind == "max" else F.avg_pool2d
    t_out, (tx,) = torch_grads(torch, lambda x: f(x, pool, stride), X)
    out = layer.forward(backend64.asarray(X))
    np.testing.assert_allclose(host(out), t_out.detach().numpy(), rtol=1e-12)
    R = rng.standard_normal(tuple(t_out.shape))
    t_out.backward(torch.from_numpy(R))
    np.testing.assert_allclose(host(layer.backward(backend64.asarray(R))), tx.grad.numpy())


# --- Flatten ----------------------------------------------------------------------------------


def test_flatten_is_c_order_and_backward_reshapes_back(backend):
    X = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    layer = pn.Flatten()
    assert layer.output_shape((None, 3, 4, 5)) == (None, 60)
    assert layer.output_shape((None, 3, None, 5)) == (None, None)
    out = layer.forward(backend.asarray(X))
    np.testing.assert_array_equal(host(out), X.reshape(2, -1))  # torch.flatten(x, 1)
    d = np.arange(120, dtype=np.float32).reshape(2, 60) * 2
    np.testing.assert_array_equal(host(layer.backward(backend.asarray(d))), d.reshape(X.shape))


# --- dtypes and initialisation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: pn.Conv2D(2, 3, 3, padding="same"),
        lambda: pn.Conv2D(2, 3, 2, stride=2),
        lambda: pn.MaxPool2D(2),
        lambda: pn.MaxPool2D(3, 2),
        lambda: pn.AveragePool2D(2),
        lambda: pn.Flatten(),
    ],
    ids=["conv-same", "conv-s2", "max", "max-overlap", "avg", "flatten"],
)
def test_float32_stays_float32(backend, make):
    layer = make()
    X = backend.asarray(np.random.default_rng(6).standard_normal((2, 2, 6, 6)))
    out = layer.forward(X)
    assert out.dtype == backend.xp.float32 and library_of(out) == backend.name
    dx = layer.backward(backend.xp.ones_like(out))
    assert dx.dtype == backend.xp.float32 and tuple(dx.shape) == (2, 2, 6, 6)
    for name in layer.param_names:
        assert getattr(layer, "d" + name).dtype == backend.xp.float32


@pytest.mark.parametrize(
    ("kwargs", "std"),
    [
        ({}, math.sqrt(2 / (16 * 9))),  # He, the default
        ({"weight_init": "he"}, math.sqrt(2 / (16 * 9))),
        ({"weight_init": "glorot"}, math.sqrt(6 / (16 * 9 + 32 * 9)) / math.sqrt(3)),
        ({"weight_init": "book"}, 0.01),
        ({"weight_init": "book", "weight_scale": 0.1}, 0.1),
    ],
)
def test_conv_initialisation(backend, kwargs, std):
    layer = pn.Conv2D(16, 32, 3, **kwargs)
    W, b = host(layer.weights), host(layer.biases)
    assert W.shape == (32, 16, 3, 3) and W.dtype == np.float32
    np.testing.assert_array_equal(b, np.zeros(32))
    assert W.std() == pytest.approx(std, rel=0.05)
    if kwargs.get("weight_init") == "glorot":
        assert np.abs(W).max() <= math.sqrt(6 / (16 * 9 + 32 * 9))


def test_conv_initialisation_is_seeded_and_the_same_on_every_backend(backend):
    pn.seed(7)
    a = host(pn.Conv2D(3, 4, 3).weights)
    pn.seed(7)
    with pn.use_backend("numpy"):
        b = host(pn.Conv2D(3, 4, 3).weights)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, host(pn.Conv2D(3, 4, 3).weights))


def test_conv_config_rebuilds_the_layer():
    for layer in (
        pn.Conv2D(3, 4, (2, 3), stride=(2, 1), padding=(1, 0), weight_regularizer_l2=1e-3),
        pn.Conv2D(3, 4, 3, padding="same", weight_init="glorot"),
        pn.Conv2D(3, 4, 3, padding="valid"),
    ):
        again = pn.Conv2D(**layer.get_config())
        assert again.get_config() == layer.get_config()
        assert again.output_shape((None, 3, 9, 9)) == layer.output_shape((None, 3, 9, 9))
    assert repr(pn.Conv2D(1, 8, (3, 2), padding="same")) == "Conv2D(1, 8, [3, 2], padding='same')"
    assert pn.Conv2D(3, 4, 3, padding="valid").get_config()["padding"] == 0
    assert pn.MaxPool2D(3, stride=2).get_config() == {"pool_size": 3, "stride": 2}
    assert repr(pn.MaxPool2D(2)) == "MaxPool2D(2)" == repr(pn.MaxPool2D(2, 2))
    assert pn.Conv2D.parameter_shapes(pn.Conv2D(3, 4, (2, 5)).get_config()) == {
        "weights": (4, 3, 2, 5),
        "biases": (4,),
    }


# --- bad input ---------------------------------------------------------------------------------

BAD_CONSTRUCTORS = {
    "float-channels": (lambda: pn.Conv2D(1.5, 4, 3), "in_channels must be a positive integer"),
    "zero-filters": (lambda: pn.Conv2D(1, 0, 3), "out_channels must be a positive integer"),
    "float-kernel": (lambda: pn.Conv2D(1, 4, 2.5), "kernel_size must be a positive integer"),
    "three-sides": (lambda: pn.Conv2D(1, 4, (3, 3, 3)), "an int or a pair"),
    "zero-stride": (lambda: pn.Conv2D(1, 4, 3, stride=0), "stride must be a positive"),
    "negative-pad": (lambda: pn.Conv2D(1, 4, 3, padding=-1), "padding must be a non-negative"),
    "same-stride-2": (lambda: pn.Conv2D(1, 4, 3, stride=2, padding="same"), "needs stride 1"),
    "unknown-pad": (lambda: pn.Conv2D(1, 4, 3, padding="full"), "'same' or 'valid'"),
    "bad-init": (lambda: pn.Conv2D(1, 4, 3, weight_init="lecun"), "unknown weight_init"),
    "negative-l2": (
        lambda: pn.Conv2D(1, 4, 3, weight_regularizer_l2=-1.0),
        "weight_regularizer_l2 must be",
    ),
    "float-pool": (lambda: pn.MaxPool2D(1.5), "pool_size must be a positive integer"),
    "zero-pool-stride": (lambda: pn.AveragePool2D(2, 0), "stride must be a positive"),
    "float-input": (lambda: pn.Input(shape=(1, 28.5, 28)), "shape[1] must be a positive"),
    "int-input": (lambda: pn.Input(shape=784), "tuple of positive integers"),
}


@pytest.mark.parametrize(("make", "message"), BAD_CONSTRUCTORS.values(), ids=BAD_CONSTRUCTORS)
def test_bad_constructor_arguments_are_refused(make, message):
    state = pn.random.host().get_state()[1].copy()
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
    np.testing.assert_array_equal(pn.random.host().get_state()[1], state)  # nothing drawn


BAD_FORWARDS = {
    # a flat 784 vector into Conv2D
    "flat-vector": (lambda: pn.Conv2D(1, 4, 3), (5, 784), r"NCHW images.*X.reshape\(-1, 1, 28"),
    "channels": (lambda: pn.Conv2D(3, 4, 3), (5, 1, 8, 8), "3 channels, not 1.*in_channels=1"),
    "kernel-too-big": (lambda: pn.Conv2D(1, 4, 5), (2, 1, 3, 9), "larger than the padded input"),
    "kernel-too-big-w": (
        lambda: pn.Conv2D(1, 4, (1, 5), padding=(0, 1)),
        (2, 1, 3, 2),
        r"width 5 is larger than the padded input's 4 \(2 \+ padding 2\)",
    ),
    "pool-too-big": (lambda: pn.MaxPool2D(4), (2, 1, 3, 9), "pool's height 4 is larger"),
    "pool-flat": (lambda: pn.AveragePool2D(2), (2, 16), "NCHW images"),
    "flatten-1d": (lambda: pn.Flatten(), (16,), r"Flatten takes \(batch, ...\) inputs"),
}


@pytest.mark.parametrize(("make", "shape", "message"), BAD_FORWARDS.values(), ids=BAD_FORWARDS)
def test_bad_inputs_raise_and_change_nothing(backend, make, shape, message):
    layer = make()
    before = {name: host(getattr(layer, name)).copy() for name in layer.param_names}
    with pytest.raises(ValueError, match=message):
        layer.output_shape(tuple(None if i == 0 else n for i, n in enumerate(shape)))
    with pytest.raises(ValueError, match=message):
        layer.forward(backend.asarray(np.ones(shape, dtype=np.float32)))
    assert not hasattr(layer, "output")
    for name, value in before.items():
        np.testing.assert_array_equal(host(getattr(layer, name)), value)


BAD_MODELS = {
    "flat-into-conv": (
        [pn.Input(shape=(784,)), pn.Conv2D(1, 4, 3)],
        r"layer sizes do not chain at layer 1: Conv2D\(1, 4, 3\) takes NCHW images",
    ),
    "dense-into-conv": ([pn.Dense(4, 8), pn.Conv2D(1, 4, 3)], "at layer 1.*NCHW"),
    "channels": ([pn.Input(shape=(3, 8, 8)), pn.Conv2D(1, 4, 3)], "in_channels=3"),
    "conv-chain": (
        [pn.Conv2D(1, 4, 3), pn.ReLU(), pn.Conv2D(8, 4, 3)],
        "at layer 2.*in_channels=4",
    ),
    "kernel": ([pn.Input(shape=(1, 4, 4)), pn.Conv2D(1, 2, 5)], "larger than the padded input"),
    "shrunk-away": (
        [pn.Input(shape=(1, 5, 5)), pn.Conv2D(1, 2, 3), pn.MaxPool2D(2), pn.Conv2D(2, 2, 3)],
        "at layer 3.*larger than the padded input's 1",
    ),
    "flatten-width": (
        [pn.Input(shape=(1, 8, 8)), pn.Conv2D(1, 2, 3), pn.Flatten(), pn.Dense(100, 2)],
        r"at layer 3: Dense\(100, 2\) takes inputs of shape \(batch, 100\), not \(batch, 72\)",
    ),
}


@pytest.mark.parametrize(("layers", "message"), BAD_MODELS.values(), ids=BAD_MODELS)
def test_models_whose_sizes_do_not_chain_fail_at_finalize(backend, layers, message):
    model = pn.Model(layers)
    with pytest.raises(ValueError, match=message):
        model.finalize()
    assert not model._finalized


def small_cnn(channels=1, size=8, classes=2, bn=True):
    half = size // 2
    return pn.Model(
        [
            pn.Input(shape=(channels, size, size)),
            pn.Conv2D(channels, 4, 3, padding="same"),
            *([pn.BatchNormalization(4)] if bn else []),
            pn.ReLU(),
            pn.MaxPool2D(2),
            pn.Flatten(),
            pn.Dense(4 * half * half, classes),
            pn.Softmax(),
        ]
    ).set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(0.01))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            (5, 64),
            r"X has shape \(5, 64\), but the model takes \(samples, 1, 8, 8\).*"
            r"X.reshape\(len\(X\), 1, 8, 8\)",
        ),
        ((5, 8, 8, 1), r"model takes \(samples, 1, 8, 8\).*X.transpose\(0, 3, 1, 2\)"),
        ((5, 1, 8, 9), r"X has shape \(5, 1, 8, 9\), but the model takes \(samples, 1, 8, 8\)"),
    ],
    ids=["flat", "nhwc", "size"],
)
def test_data_of_the_wrong_shape_is_refused_with_the_fix(backend, shape, message):
    model = small_cnn()
    before = [(host(w).copy(), host(b).copy()) for w, b in model.get_parameters()]
    X, y = np.ones(shape, dtype=np.float32), np.zeros(shape[0], dtype=np.int64)
    for call in (lambda: model.predict(X), lambda: model.train(X, y, print_every=0)):
        with pytest.raises(ValueError, match=message):
            call()
    for (w, b), (w0, b0) in zip(model.get_parameters(), before, strict=True):
        np.testing.assert_array_equal(host(w), w0)
        np.testing.assert_array_equal(host(b), b0)
    assert model.optimizer.iterations == 0


def test_a_conv_first_model_knows_its_channels_but_not_its_size(backend):
    model = pn.Model([pn.ReLU(), pn.Conv2D(3, 2, 3), pn.Flatten()])
    assert model.input_shape == (None, 3, None, None) and model.n_inputs is None
    assert model.shapes()[-1] == (None, None)
    out = model.predict(np.ones((2, 3, 5, 6), dtype=np.float32))
    assert tuple(out.shape) == (2, 2 * 3 * 4)
    with pytest.raises(ValueError, match=r"model takes \(samples, 3, height, width\)"):
        model.predict(np.ones((2, 30), dtype=np.float32))
    # A dense model's input shape is as before; Flatten first says nothing of the inputs.
    assert pn.Model([pn.Input(), pn.Dense(4, 2)]).input_shape == (None, 4)
    assert pn.Model([pn.Input(), pn.Dense(4, 2)]).n_inputs == 4
    assert pn.Model([pn.Flatten(), pn.Dense(4, 2)]).input_shape is None


# --- CNNs in a model ---------------------------------------------------------------------------


def bars(n, size=8, seed=0):
    """A two-class toy image task: a bright row (class 0) or column (class 1), in noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 0.3, (n, 1, size, size))
    y = rng.integers(0, 2, n)
    where = rng.integers(1, size - 1, n)
    for i in range(n):
        if y[i]:
            X[i, 0, :, where[i]] += 1.5
        else:
            X[i, 0, where[i], :] += 1.5
    return X.astype(np.float32), y


@pytest.mark.parametrize("bn", [True, False], ids=["batchnorm", "plain"])
def test_a_small_cnn_trains_through_model_train(backend, bn):
    X, y = bars(256)
    X_test, y_test = bars(200, seed=1)
    model = small_cnn(bn=bn)
    untrained = model.evaluate(X_test, y_test)[1]
    history = model.train(X, y, epochs=4, batch_size=32, print_every=0)
    loss, accuracy = model.evaluate(X_test, y_test)
    assert accuracy >= 0.95 > untrained
    assert history["loss"][-1] < history["loss"][0]
    if bn:  # running statistics moved, and are not the optimizer's
        assert not np.allclose(host(model.layers[2].running_var), 1.0)
        assert not any("running" in key for key in model.state_dict() if "optimizer/" in key)


def test_a_trained_cnn_saves_and_loads_whole(backend, tmp_path):
    X, y = bars(96)
    model = small_cnn()
    model.train(X, y, epochs=2, batch_size=32, print_every=0)
    path = tmp_path / "cnn.npz"
    model.save(path)
    again = pn.Model.load(path)
    assert [repr(la) for la in again.layers] == [repr(la) for la in model.layers]
    np.testing.assert_array_equal(host(again.predict(X)), host(model.predict(X)))
    for name in ("running_mean", "running_var", "weights", "biases"):
        np.testing.assert_array_equal(
            host(getattr(again.layers[2], name)), host(getattr(model.layers[2], name))
        )
    assert again.optimizer.iterations == model.optimizer.iterations == 6
    # Both go on training the same way (the optimizer's moments came back too).
    model.train(X, y, epochs=1, batch_size=32, print_every=0, shuffle=False)
    again.train(X, y, epochs=1, batch_size=32, print_every=0, shuffle=False)
    np.testing.assert_allclose(host(again.predict(X)), host(model.predict(X)), rtol=1e-5)
    # Parameters alone load into a built model, running statistics with them.
    model.save_parameters(tmp_path / "params.npz")
    fresh = small_cnn()
    fresh.load_parameters(tmp_path / "params.npz")
    np.testing.assert_array_equal(host(fresh.predict(X)), host(model.predict(X)))


def test_state_dict_keys_and_a_bad_running_statistic_changes_nothing(backend):
    model = small_cnn()
    model.train(*bars(64), epochs=1, batch_size=32, print_every=0)
    state = model.state_dict()
    layer_keys = [k for k in state if k.startswith("layers/")]
    assert layer_keys == [
        "layers/1/weights",
        "layers/1/biases",
        "layers/2/weights",
        "layers/2/biases",
        "layers/2/running_mean",
        "layers/2/running_var",
        "layers/6/weights",
        "layers/6/biases",
    ]
    opt_keys = {k.rsplit("/", 1)[0] for k in state if k.count("/") == 3}
    assert opt_keys == {
        f"optimizer/{i}/{n}" for i in (1, 2, 6) for n in ("weights", "biases")
    }  # running statistics have no optimizer state
    before = {k: host(v).copy() for k, v in state.items() if k.startswith("layers/")}
    bad = dict(state)
    bad["layers/2/running_var"] = np.ones(5)
    with pytest.raises(ValueError, match=r"layers/2/running_var: expected shape \(4,\)"):
        model.load_state_dict(bad)
    missing = {k: v for k, v in state.items() if k != "layers/2/running_mean"}
    with pytest.raises(ValueError, match="missing.*running_mean"):
        model.load_state_dict(missing)
    for key, value in before.items():
        np.testing.assert_array_equal(host(model.state_dict()[key]), value)
    # set_parameters' (weights, biases) pairs leave the running statistics as they are.
    pairs = [(host(w) * 0, host(b) * 0) for w, b in model.get_parameters()]
    model.set_parameters(pairs)
    np.testing.assert_array_equal(host(model.layers[2].running_var), before["layers/2/running_var"])
    assert np.all(host(model.layers[2].weights) == 0)


def test_summary_shows_image_shapes_and_counts(backend, capsys):
    model = small_cnn()
    model.summary()
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split("  ")[1].strip(): line for line in lines[2:9]}
    expected = {
        "Input(shape=[1, 8, 8])": ("(batch, 1, 8, 8)", "0"),
        "Conv2D(1, 4, 3, padding='same')": ("(batch, 4, 8, 8)", "40"),  # 4*1*3*3 + 4
        "BatchNormalization(4)": ("(batch, 4, 8, 8)", "8"),
        "ReLU()": ("(batch, 4, 8, 8)", "0"),
        "MaxPool2D(2)": ("(batch, 4, 4, 4)", "0"),
        "Flatten()": ("(batch, 64)", "0"),
        "Dense(64, 2)": ("(batch, 2)", "130"),
    }
    for name, (shape, count) in expected.items():
        assert shape in rows[name] and rows[name].endswith(f" {count}"), rows[name]
    assert "parameters: 178" in lines
    assert "non-trainable: 8 (running statistics, not counted above)" in lines
    assert model.count_parameters() == 178
    assert repr(model).startswith("Model(1-4-4-2, 8 layers, 178 parameters")


# --- safetensors and torch ---------------------------------------------------------------------


def torch_cnn(torch):
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same"),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 2),
    ).double()


def portnn_cnn():
    """torch_cnn in portnn, layer for layer (so the Sequential's indexes are the model's)."""
    return pn.Model(
        [
            pn.Conv2D(1, 4, 3, padding="same"),
            pn.BatchNormalization(4),
            pn.ReLU(),
            pn.MaxPool2D(2),
            pn.Flatten(),
            pn.Dense(64, 2),
        ]
    )


def test_a_torch_cnn_loads_from_safetensors_and_back(backend_name, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file, save_file

    X, _ = bars(16)
    X = X.astype(np.float64)
    net = torch_cnn(torch)
    net.train()
    with torch.no_grad():  # two training batches: running statistics away from 0 and 1
        net(torch.from_numpy(X[:8]))
        net(torch.from_numpy(X[8:]))
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(X)).numpy()
    path = tmp_path / "torch.safetensors"
    save_file(net.state_dict(), path)  # with num_batches_tracked, as torch writes it

    with pn.use_backend(backend_name, dtype="float64"):
        model = interop.load_safetensors(path, portnn_cnn())
        np.testing.assert_allclose(host(model.predict(X)), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(host(model.layers[1].running_var), net[1].running_var.numpy())
        back = tmp_path / "portnn.safetensors"
        interop.save_safetensors(model, back)
        rebuilt = interop.load_safetensors(back)
        np.testing.assert_array_equal(host(rebuilt.predict(X)), host(model.predict(X)))
        sequential = interop.torch_sequential(model)
    state = load_file(back)
    assert state["1.num_batches_tracked"].dtype == torch.int64
    assert tuple(state["0.weight"].shape) == (4, 1, 3, 3)
    fresh = torch_cnn(torch)
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    with torch.no_grad():
        np.testing.assert_allclose(fresh(torch.from_numpy(X)).numpy(), expected, rtol=1e-12)
        np.testing.assert_allclose(sequential(torch.from_numpy(X)).numpy(), expected, rtol=1e-12)
    assert "BatchNorm2d(4" in repr(sequential) and "Conv2d(1, 4" in repr(sequential)


def test_a_file_without_batch_counters_loads_and_a_bad_counter_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    net = torch_cnn(torch)
    state = dict(net.state_dict())
    without = {k: v for k, v in state.items() if "num_batches" not in k}
    save_file(without, tmp_path / "a.safetensors")
    with pn.use_backend("numpy", dtype="float64"):
        model = interop.load_safetensors(tmp_path / "a.safetensors", portnn_cnn())
        np.testing.assert_array_equal(host(model.layers[5].weights), net[5].weight.detach().T)
        before = host(model.layers[0].weights).copy()
        state["1.num_batches_tracked"] = torch.ones(3)
        save_file(state, tmp_path / "b.safetensors")
        with pytest.raises(ModelFileError, match="a batch counter is an integer"):
            interop.load_safetensors(tmp_path / "b.safetensors", model)
        np.testing.assert_array_equal(host(model.layers[0].weights), before)


def test_a_compiled_step_trains_a_cnn_as_the_eager_one(backend_name):
    # The layers' apply/vjp are pure (no attribute writes, no host reads): jax.jit takes them,
    # running statistics included, and gives the eager trajectory to float tolerance.
    if backend_name == "torch":
        pytest.skip(
            "torch.compile of a whole CNN step takes minutes on a CPU; eager is the default"
        )
    X, y = bars(48)
    runs = []
    for compile in (False, True):
        with pn.use_backend(backend_name, dtype="float64"):
            pn.seed(3)
            model = small_cnn()
            model.train(X, y, epochs=2, batch_size=20, print_every=0, compile=compile)
            runs.append({k: host(v) for k, v in model.state_dict().items() if k.startswith("l")})
    assert runs[0].keys() == runs[1].keys()
    for key, value in runs[0].items():  # (the conv biases before BN get only rounding noise)
        np.testing.assert_allclose(runs[1][key], value, rtol=1e-9, atol=1e-10, err_msg=key)
    assert not np.allclose(runs[0]["layers/2/running_mean"], 0.0)
