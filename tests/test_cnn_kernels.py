"""NumPy's fused CNN kernels (``portnn/backend/_numba_cnn.py``) against the layers' portable
code, which the kernels stand in for: BatchNormalization's training forward, backward and
running statistics; MaxPool2D's forward and backward, ties to the first maximum as torch;
Conv2D's im2col and col2im, for every padding and stride.
The layers run on NumPy here whatever backend the suite tests (the kernels are NumPy's)."""

import numpy as np
import pytest

import portnn as pn
from portnn import _xp
from portnn.backend import _numba_cnn, _numpy

pytest.importorskip("numba")

TOL = {"float32": {"rtol": 2e-5, "atol": 2e-6}, "float64": {"rtol": 1e-11, "atol": 1e-13}}


@pytest.fixture
def spy(monkeypatch):
    """The names of the kernels called, in order (each still runs)."""
    called = []
    for name, fn in list(_numba_cnn._WRAPPERS.items()):

        def wrapped(*args, _fn=fn, _name=name):
            called.append(_name)
            return _fn(*args)

        monkeypatch.setitem(_numba_cnn._WRAPPERS, name, wrapped)
    return called


def _portable(monkeypatch):
    """From here on NumPy has no kernels: the layers' portable code runs."""
    monkeypatch.setattr(_numpy.NumpyBackend, "kernel", classmethod(lambda cls, name: None))


def _layer(make, dtype):
    with pn.use_backend("numpy", dtype=dtype):
        pn.seed(0)
        return make()


def _run(layer, x, d, training=True):
    """Forward, backward and (for BatchNormalization in training) the new running statistics."""
    params = layer.params()
    out, context = layer.apply(params, x, training)
    dx, grads = layer.vjp(params, context, d)
    state = layer.new_state(params, context) if training and layer.state_names else {}
    return {"out": out, "dx": dx, **grads, **state}


def _close(got, want, dtype):
    assert got.keys() == want.keys()
    for key in want:
        g, w = np.asarray(got[key]), np.asarray(want[key])
        assert g.dtype == w.dtype == np.dtype(dtype) and g.shape == w.shape, key
        tol = TOL[dtype]
        scale = max(1.0, float(np.abs(w).max()))  # dx's cancellation is relative to its size
        np.testing.assert_allclose(g, w, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=key)


def _layout(x, how):
    """``x`` (NCHW values) in another memory layout with the same values."""
    if how == "nhwc":  # a Conv2D's output: an NCHW view of NHWC rows
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if how == "strided":  # every other column of a wider array: contiguous in no order
        wide = np.repeat(x, 2, axis=-1)
        wide[..., 1::2] = -7.0
        return wide[..., ::2]
    return x


BN_SHAPES = {
    "odd": (3, 5, 7, 9),
    "batch1": (1, 3, 5, 5),
    "batch2-many-channels": (2, 64, 3, 5),
    "1x1-pixels": (5, 4, 1, 1),
    "dense": (7, 6),
    "dense-batch2": (2, 3),
}


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
@pytest.mark.parametrize("shape", BN_SHAPES.values(), ids=BN_SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_norm_kernels_equal_the_portable_code(dtype, shape, layout, spy, monkeypatch):
    if len(shape) == 2 and layout != "nchw":
        pytest.skip("2-D inputs have one layout")
    rng = np.random.default_rng(3)
    # An offset mean and unequal features: a sum over the wrong axis or a missing centring
    # shows; weights and biases away from 1 and 0.
    spread = rng.uniform(0.5, 3, shape[1]).reshape(1, -1, *([1] * (len(shape) - 2)))
    x = (5.0 + rng.normal(size=shape) * spread).astype(dtype)
    d = rng.normal(size=shape).astype(dtype)
    x, d = _layout(x, layout), _layout(d, layout)
    layer = _layer(lambda: pn.BatchNormalization(shape[1], momentum=0.3), dtype)
    layer.weights = rng.uniform(0.5, 2, shape[1]).astype(dtype)
    layer.biases = rng.normal(size=shape[1]).astype(dtype)
    layer.running_mean = rng.normal(size=shape[1]).astype(dtype)
    layer.running_var = rng.uniform(0.5, 2, shape[1]).astype(dtype)
    assert _xp.kernel(x, "batch_norm_train") is not None
    fused = _run(layer, x, d)
    assert spy == ["batch_norm_train", "batch_norm_backward"]
    _portable(monkeypatch)
    want = _run(layer, x, d)
    assert spy == ["batch_norm_train", "batch_norm_backward"]  # the portable run took none
    _close(fused, want, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_norm_kernel_without_input_gradient_and_in_evaluation(dtype, spy, monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 3, 5, 6)).astype(dtype)
    d = rng.normal(size=x.shape).astype(dtype)
    layer = _layer(lambda: pn.BatchNormalization(3), dtype)
    layer.compute_dinputs = False
    fused = _run(layer, x, d)
    assert fused["dx"] is None and spy == ["batch_norm_train", "batch_norm_backward"]
    layer.compute_dinputs = True
    evaluation = _run(layer, x, d, training=False)  # evaluation: the portable code only
    assert spy == ["batch_norm_train", "batch_norm_backward"]
    _portable(monkeypatch)
    layer.compute_dinputs = False
    want = _run(layer, x, d)
    assert want.pop("dx") is None and fused.pop("dx") is None
    _close(fused, want, dtype)
    layer.compute_dinputs = True
    _close(evaluation, _run(layer, x, d, training=False), dtype)


POOLS = {  # (pool, stride, input height x width)
    "2-tile-odd": (2, None, (7, 9)),  # a row and a column in no window
    "2-tile-even": (2, None, (8, 6)),  # windows that tile the input exactly
    "3x2-tile": ((3, 2), None, (9, 4)),
    "3-stride2-overlap": (3, 2, (9, 8)),
    "2-stride3-gaps": (2, 3, (8, 11)),
    "3-stride1": (3, 1, (5, 6)),
    "2x3-stride1x2": ((2, 3), (1, 2), (6, 9)),
    "whole-image": (4, None, (4, 4)),
}


@pytest.mark.parametrize("values", ["normal", "ties"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
@pytest.mark.parametrize("batch_channels", [(1, 3), (2, 64)], ids=["b1-c3", "b2-c64"])
@pytest.mark.parametrize(("pool", "stride", "size"), POOLS.values(), ids=POOLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_pool_kernels_equal_the_portable_code(
    dtype, pool, stride, size, batch_channels, layout, values, spy, monkeypatch
):
    rng = np.random.default_rng(5)
    shape = (*batch_channels, *size)
    # Ties everywhere with three values: the gradient must go to the first maximum of each
    # window (row-major), as the portable code's and torch's, not the last or every one.
    x = rng.integers(0, 3, shape) if values == "ties" else rng.normal(size=shape)
    x = _layout(x.astype(dtype), layout)
    layer = _layer(lambda: pn.MaxPool2D(pool, stride=stride), dtype)
    out_shape = layer.output_shape(shape)
    d = rng.normal(size=out_shape).astype(dtype)
    assert _xp.kernel(x, "max_pool") is not None
    fused = _run(layer, x, d)
    assert spy == ["max_pool", "max_pool_backward"]
    _portable(monkeypatch)
    want = _run(layer, x, d)
    _close(fused, want, dtype)
    if values == "ties" and stride is None:  # windows that tile: each input gets one share
        np.testing.assert_array_equal(np.asarray(fused["dx"]) != 0, np.asarray(want["dx"]) != 0)


def test_max_pool_kernel_sends_a_tied_windows_gradient_to_its_first_maximum():
    x = np.array([[[[1.0, 5.0, 5.0], [5.0, 0.0, 5.0], [2.0, 2.0, 2.0]]]])
    layer = _layer(lambda: pn.MaxPool2D(2, stride=1), "float64")
    got = _run(layer, x, np.array([[[[1.0, 10.0], [100.0, 1000.0]]]]))
    np.testing.assert_array_equal(got["out"], [[[[5.0, 5.0], [5.0, 5.0]]]])
    # windows: (0,0) -> x[0,1]; (0,1) -> x[0,1]; (1,0) -> x[1,0]; (1,1) -> x[1,2]
    np.testing.assert_array_equal(got["dx"], [[[[0, 11, 0], [100, 0, 1000], [0, 0, 0]]]])


CONVS = {  # (kernel_size, stride, padding, input height x width)
    "3-same-odd": (3, 1, "same", (7, 9)),
    "2-same-even-kernel": (2, 1, "same", (5, 6)),  # one more zero at the bottom and right
    "3-stride2-pad1": (3, 2, 1, (9, 8)),
    "3-stride3-pad0": (3, 3, 0, (10, 11)),  # the last rows and columns in no window
    "2x3-stride2x1-pad1x0": ((2, 3), (2, 1), (1, 0), (7, 6)),
    "5-pad2": (5, 1, 2, (5, 5)),  # every window reaches the padding
    "1x1": (1, 1, 0, (4, 3)),
}


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
@pytest.mark.parametrize("batch_channels", [(1, 3, 2), (2, 16, 5)], ids=["b1-c3", "b2-c16"])
@pytest.mark.parametrize(("kernel", "stride", "padding", "size"), CONVS.values(), ids=CONVS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_kernels_equal_the_portable_code(
    dtype, kernel, stride, padding, size, batch_channels, layout, spy, monkeypatch
):
    rng = np.random.default_rng(7)
    n, c_in, c_out = batch_channels
    x = _layout(rng.normal(size=(n, c_in, *size)).astype(dtype), layout)
    layer = _layer(lambda: pn.Conv2D(c_in, c_out, kernel, stride=stride, padding=padding), dtype)
    layer.biases = rng.normal(size=c_out).astype(dtype)
    d = _layout(rng.normal(size=layer.output_shape(x.shape)).astype(dtype), layout)
    assert _xp.kernel(x, "im2col") is not None
    fused = _run(layer, x, d)
    assert spy == ["im2col", "col2im"]
    _portable(monkeypatch)
    _close(fused, _run(layer, x, d), dtype)


def test_a_cnn_trains_the_same_with_and_without_the_kernels(spy, monkeypatch):
    # The layers chained as a CNN chains them (a Conv2D's NHWC-memory output into
    # BatchNormalization, ReLU and an overlapping MaxPool2D): three SGD steps' trajectory.
    def trajectory():
        pn.seed(0)
        with pn.use_backend("numpy", dtype="float64"):
            model = pn.Model(
                [
                    pn.Conv2D(2, 6, 3, padding="same"),
                    pn.BatchNormalization(6),
                    pn.ReLU(),
                    pn.MaxPool2D(3, stride=2),
                    pn.Flatten(),
                    pn.Dense(6 * 4 * 3, 3),
                    pn.Softmax(),
                ]
            )
            model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.SGD(0.1))
            rng = np.random.default_rng(6)
            X, y = rng.normal(size=(8, 2, 9, 7)), rng.integers(0, 3, 8)
            model.train(X, y, epochs=3, batch_size=8, print_every=None)
        return [np.asarray(a) for layer in model.layers for a in layer.params().values()]

    fused = trajectory()
    assert spy.count("max_pool") == 3 and spy.count("batch_norm_backward") == 3
    assert spy.count("im2col") == 3 and "col2im" not in spy  # the first layer: no dX
    _portable(monkeypatch)
    want = trajectory()
    assert spy.count("max_pool") == 3  # no more calls
    for g, w in zip(fused, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_the_kernels_decline_what_they_do_not_take():
    x = np.ones((2, 3, 4, 4), np.float16)
    assert _numba_cnn.batch_norm_train(x, np.ones(3), np.zeros(3), 1e-5) is None
    assert _numba_cnn.max_pool(x, (2, 2), (2, 2)) is None
    assert _numba_cnn.im2col(x, (2, 2), (1, 1), ((0, 0), (0, 0)), (3, 3)) is None
    assert (
        _numba_cnn.col2im(
            np.ones((18, 12), np.float16), x.shape, (2, 2), (1, 1), ((0, 0), (0, 0)), (3, 3)
        )
        is None
    )
    assert _xp.kernel(x, "relu_backward") is None  # not a CNN kernel of NumPy's


def test_without_numba_there_are_no_kernels(monkeypatch):
    monkeypatch.setattr(_numba_cnn, "_compiled", lambda: None)
    assert _xp.kernel(np.ones((2, 3, 4, 4)), "batch_norm_train") is None
