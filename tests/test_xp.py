"""The fast paths of the backend classes against their portable reference versions."""

import array_api_compat
import numpy as np
import pytest

import portnn as pn
from portnn import _xp


def _adam_args(backend, shape=(300, 300)):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(shape) for _ in range(3)] + [rng.random(shape)]
    return [backend.asarray(a) for a in arrays]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_update_equals_the_portable_version(backend_name, dtype):
    b = pn.get_backend(backend_name, dtype)
    args = _adam_args(b)
    constants = (0.9, 0.999, 0.00123, 1e-7 * 0.0316)
    fast = _xp.adam_update(*args, *constants)
    reference = pn.Backend.adam_update(*args, *constants)  # the portable reference
    # NumPy's path does the same operations in the same order: equal bit for bit. A GPU
    # kernel may contract a multiply and an add into one rounding (FMA).
    rtol, atol = (1e-6, 1e-7) if backend_name == "cupy" else (0, 0)
    for got, want in zip(fast, reference, strict=True):
        assert got.dtype == args[0].dtype
        np.testing.assert_allclose(pn.to_numpy(got), pn.to_numpy(want), rtol=rtol, atol=atol)


def test_adam_update_never_writes_to_its_arguments(backend):
    args = _adam_args(backend)
    before = [pn.to_numpy(a).copy() for a in args]
    _xp.adam_update(*args, 0.9, 0.999, 0.01, 1e-7)
    for a, b in zip(args, before, strict=True):
        np.testing.assert_array_equal(pn.to_numpy(a), b)


def test_cached_namespace_is_array_api_compats(backend):
    x = backend.asarray(np.ones(3))
    assert _xp.array_namespace(x) is array_api_compat.array_namespace(x)
    assert _xp.array_namespace(x) is _xp.array_namespace(backend.asarray(np.zeros(2)))


@pytest.mark.parametrize(
    ("values", "finite"),
    [
        ([1.0, -2.0, 0.0], True),
        ([3e38, 3e38, 3e38], True),  # finite terms whose float32 sum overflows
        ([1.0, np.nan, 2.0], False),
        ([1.0, np.inf], False),
        ([-np.inf, 5.0], False),
        ([np.inf, -np.inf], False),  # their sum is NaN, not a finite number
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_finite(backend_name, dtype, values, finite):
    b = pn.get_backend(backend_name, dtype)
    x = b.asarray(np.array(values).reshape(1, -1))
    assert _xp.all_finite(x) is finite


def test_adam_update_keeps_no_buffers_between_calls(backend):
    # A process-wide pool once kept NumPy's outputs to hand out again once "free", a decision
    # two threads could race on. Nothing may outlive the caller's own references.
    import gc
    import weakref

    outputs = _xp.adam_update(*_adam_args(backend), 0.9, 0.999, 0.01, 1e-7)
    refs = [weakref.ref(a) for a in outputs]
    del outputs
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "shape", [(1, 1), (3, 5), (300, 300), (1, 70000), "transposed", "F-ordered state"]
)
def test_numpys_adam_paths_equal_the_portable_reference_bit_for_bit(dtype, shape):
    # Both NumPy paths, the compiled loop (where numba is installed, for C-contiguous
    # parameters from _FUSE_FROM elements) and the element-wise passes (the fallback, and a
    # parameter that is a transposed view), do the reference's operations in its order with
    # its casts: the same bits, so installing numba moves no figure. State in Fortran order
    # (what the passes return for weights loaded in nn.Linear's layout) once came back from
    # the compiled loop as uninitialised memory.
    from portnn.backend import _numpy

    b = pn.get_backend("numpy", dtype)
    if shape == "transposed":
        args = [a.T for a in _adam_args(b, (40, 70))]
    elif shape == "F-ordered state":
        param, *rest = _adam_args(b, (300, 300))
        args = [param, *(np.asfortranarray(a) for a in rest)]
    else:
        args = _adam_args(b, shape)
    constants = (0.9, 0.999, 0.00123, 1e-7 * 0.0316)
    reference = pn.Backend.adam_update(*args, *constants)
    paths = {"passes": _numpy._adam_passes(*args, *constants)}
    kernel = _numpy._fused_adam()
    if kernel is not None:
        paths["fused"] = _numpy.NumpyBackend.adam_update(*args, *constants)
    for name, got in paths.items():
        for g, want in zip(got, reference, strict=True):
            assert g.dtype == want.dtype, name
            np.testing.assert_array_equal(g, want, err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_update_divides_by_zero_as_the_reference_does(backend_name, dtype):
    # Adam(epsilon=0) with a zero gradient and cache divides 0 by 0: the reference gives NaN
    # there (NumPy's rules). The compiled NumPy loop once raised ZeroDivisionError instead.
    b = pn.get_backend(backend_name, dtype)
    shape = (1, 70000)
    rng = np.random.default_rng(2)
    grad = rng.standard_normal(shape)
    grad[0, :10] = 0.0
    args = [
        b.asarray(a) for a in (rng.standard_normal(shape), grad, np.zeros(shape), np.zeros(shape))
    ]
    with b.quiet_float_errors():
        fast = _xp.adam_update(*args, 0.9, 0.999, 0.01, 0.0)
        reference = pn.Backend.adam_update(*args, 0.9, 0.999, 0.01, 0.0)
    for got, want in zip(fast, reference, strict=True):
        got, want = pn.to_numpy(got), pn.to_numpy(want)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.isnan(pn.to_numpy(fast[0])[0, :10]).all()


def _kernel_cases(b):
    """Each fused kernel's arguments, and the portable code it replaces."""
    from portnn import activations, losses

    rng = np.random.default_rng(3)
    d, x = rng.standard_normal((64, 33)), rng.standard_normal((64, 33))
    x[0, :3] = 0.0  # the mask at exactly zero
    d[1, 0] = np.nan  # NaN passes where the mask keeps it, as in the product
    logits = rng.standard_normal((64, 10))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p[2, :] = 0.0  # clipped below
    p[3, :] = np.nan  # NaN must reach the loss
    y = rng.integers(0, 10, 64).astype(np.uint8)
    y[2] = 4

    def relu(dv, inputs):
        layer = activations.ReLU()
        layer.forward(inputs)
        return layer.backward(dv)

    cce = losses.CategoricalCrossentropy()
    return {
        "relu_backward": ((b.asarray(d), b.asarray(x)), relu),
        "softmax_cce_backward": ((b.asarray(p), b.asarray(y)), cce.fused_backward),
        "cce_per_sample": ((b.asarray(p), b.asarray(y)), cce._forward),
    }


@pytest.mark.parametrize("name", ["relu_backward", "softmax_cce_backward", "cce_per_sample"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_kernels_equal_the_portable_code(backend_name, dtype, name, monkeypatch):
    # Every fused kernel a library has (CuPy's behind PORTNN_CUPY_FUSED=1 until a GPU run
    # proves them) against the math modules' portable code it stands in for.
    b = pn.get_backend(backend_name, dtype)
    args, portable = _kernel_cases(b)[name]
    monkeypatch.setenv("PORTNN_CUPY_FUSED", "1")
    if _xp.kernel(args[0], name) is None:
        pytest.skip(f"{backend_name} has no fused {name}: its portable code is the only path")
    with b.quiet_float_errors():
        fused = pn.to_numpy(portable(*args))
        monkeypatch.setenv("PORTNN_CUPY_FUSED", "0")
        assert _xp.kernel(args[0], name) is None
        want = pn.to_numpy(portable(*args))
    assert fused.dtype == want.dtype and fused.shape == want.shape
    np.testing.assert_array_equal(np.isnan(fused), np.isnan(want))
    np.testing.assert_allclose(fused, want, rtol=1e-6, atol=0)


def test_the_math_modules_call_a_librarys_fused_kernels(monkeypatch):
    # The doors on the CPU, where no library has these kernels: stand-ins written in NumPy
    # from each kernel's contract must be called, with arguments in the contract's order,
    # and give what the portable code gives.
    from portnn.backend import _numpy

    def cce_per_sample(p, y, lo, hi):
        return -np.log(np.clip(p[np.arange(len(y)), y], lo, hi))

    stand_ins = {
        "relu_backward": lambda d, x: d * (x > 0),
        "softmax_cce_backward": lambda p, y: (p - np.eye(p.shape[1], dtype=p.dtype)[y]) / len(p),
        "cce_per_sample": lambda p, y, lo, hi: cce_per_sample(p, y, lo, hi).astype(p.dtype),
    }
    called = []

    def kernel(cls, name):
        called.append(name)
        return stand_ins[name]

    b = pn.get_backend("numpy", "float64")
    cases = _kernel_cases(b)
    with b.quiet_float_errors():
        want = {name: portable(*args) for name, (args, portable) in cases.items()}
        assert called == []
        monkeypatch.setattr(_numpy.NumpyBackend, "kernel", classmethod(kernel))
        got = {name: portable(*args) for name, (args, portable) in cases.items()}
    assert called == list(cases)
    for name in cases:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, err_msg=name)


def test_math_on_arrays_of_a_library_without_a_backend_class_runs_the_portable_code():
    # The kernel door must not refuse an Array API library portnn has no class for: the
    # layers' and losses' math is plain Array API (array-api-strict's arrays stand in here,
    # their class unregistered for the test).
    from portnn import activations, backend, losses

    xps = pytest.importorskip("array_api_strict")

    x = xps.asarray([[1.0, -2.0], [0.0, 3.0]], dtype=xps.float64)
    y = xps.asarray([1, 0])
    backend._class_of_type.cache_clear()
    saved = backend._CLASSES.pop("array_api_strict")
    try:
        assert _xp.kernel(x, "relu_backward") is None
        relu = activations.ReLU()
        relu.forward(x)
        np.testing.assert_array_equal(np.asarray(relu.backward(x)), [[1.0, 0.0], [0.0, 3.0]])
        cce = losses.CategoricalCrossentropy()
        p = xps.asarray([[0.25, 0.75], [0.5, 0.5]], dtype=xps.float64)
        np.testing.assert_allclose(np.asarray(cce._forward(p, y)), -np.log([0.75, 0.5]))
        np.testing.assert_allclose(
            np.asarray(cce.fused_backward(p, y)), [[0.125, -0.125], [-0.25, 0.25]]
        )
    finally:
        backend._CLASSES["array_api_strict"] = saved
        backend._class_of_type.cache_clear()


def test_cupy_has_none_of_the_cnn_kernels_and_says_so(monkeypatch):
    # CuPy's fused kernels are the dense network's; a CNN layer asking for one of NumPy's
    # (im2col, max_pool, ...) gets None and its portable code, not a KeyError.
    from portnn.backend._cupy import CupyBackend

    monkeypatch.setenv("PORTNN_CUPY_FUSED", "1")
    assert CupyBackend.kernel("relu_backward") is not None
    for name in ("batch_norm_train", "batch_norm_backward", "max_pool", "im2col", "col2im"):
        assert CupyBackend.kernel(name) is None, name
