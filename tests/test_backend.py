"""Backend selection, dtypes, and explicit moves between libraries."""

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import device as device_of
from helpers import CPU_BACKENDS

import portnn as pn
import portnn.backend as backend_module
from portnn.backend import BACKENDS, library_of


@pytest.fixture
def clean_selection(monkeypatch):
    """No set_backend, no use_backend and no environment choice; restored afterwards."""
    monkeypatch.setattr(backend_module, "_global", None)
    monkeypatch.delenv("PORTNN_BACKEND", raising=False)
    monkeypatch.delenv("PORTNN_DTYPE", raising=False)
    assert backend_module._context.get() is None


@pytest.fixture
def two_backends(backend_name):
    """The selected backend and another installed one (numpy where the selected is not)."""
    others = [n for n in pn.available_backends() if n != backend_name]
    if not others:
        pytest.skip("needs a second installed backend")
    return backend_name, others[0]


def test_numpy_is_the_default(clean_selection):
    b = pn.get_backend()
    assert (b.name, b.dtype_name) == ("numpy", "float32")


# Each level set to one of two backends ("A", "B"), None = not set: (env, global, context,
# explicit) -> the level that wins.
SELECTION = [
    (("A", None, None, None), "A"),
    (("B", None, None, None), "B"),
    (("A", "B", None, None), "B"),
    (("B", "A", None, None), "A"),
    ((None, "A", "B", None), "B"),
    ((None, "B", "A", None), "A"),
    (("A", None, "B", None), "B"),
    ((None, None, "A", "B"), "B"),
    ((None, None, "B", "A"), "A"),
    (("B", "A", None, "B"), "B"),
    (("A", "B", "A", "B"), "B"),
    (("B", "A", "B", "A"), "A"),
]


@pytest.mark.parametrize(("levels", "winner"), SELECTION)
def test_selection_order(clean_selection, monkeypatch, two_backends, levels, winner):
    names = dict(zip("AB", two_backends, strict=True))
    env, glob, context, explicit = (None if v is None else names[v] for v in levels)
    if env is not None:
        monkeypatch.setenv("PORTNN_BACKEND", env)
    if glob is not None:
        pn.set_backend(glob)
    if context is not None:
        with pn.use_backend(context):
            chosen = pn.get_backend(explicit)
    else:
        chosen = pn.get_backend(explicit)
    assert chosen.name == names[winner]


def test_explicit_backend_argument_of_a_layer_wins(clean_selection, two_backends):
    a, b = two_backends
    pn.set_backend(a)
    with pn.use_backend(a):
        layer = pn.Dense(2, 3, backend=b)
        assert library_of(layer.weights) == b
        assert library_of(layer.biases) == b
        assert library_of(pn.Dense(2, 3).weights) == a


def test_set_backend_returns_and_keeps_its_choice(clean_selection, two_backends):
    a, b = two_backends
    chosen = pn.set_backend(b, dtype="float64")
    assert chosen is pn.get_backend()
    assert (chosen.name, chosen.dtype_name) == (b, "float64")


def test_use_backend_restores_the_previous_backend(clean_selection, two_backends):
    a, b = two_backends
    pn.set_backend(a)
    with pn.use_backend(b, dtype="float64") as inner:
        assert inner is pn.get_backend()
        assert (inner.name, inner.dtype_name) == (b, "float64")
        with pn.use_backend(a) as innermost:
            assert pn.get_backend() is innermost
        assert pn.get_backend() is inner
    assert (pn.get_backend().name, pn.get_backend().dtype_name) == (a, "float32")


def test_use_backend_restores_after_an_exception(clean_selection, two_backends):
    a, b = two_backends
    with pn.use_backend(a) as outer:
        with pytest.raises(RuntimeError, match="inside"):
            with pn.use_backend(b, dtype="float64"):
                raise RuntimeError("inside")
        assert pn.get_backend() is outer
    assert pn.get_backend().name == "numpy"


def test_environment_selects_the_dtype_too(clean_selection, monkeypatch, backend_name):
    monkeypatch.setenv("PORTNN_BACKEND", backend_name)
    monkeypatch.setenv("PORTNN_DTYPE", "float64")
    assert (pn.get_backend().name, pn.get_backend().dtype_name) == (backend_name, "float64")


@pytest.mark.parametrize(
    "spell", [str, str.upper, lambda n: f" {n} ", lambda n: n.replace("_", "-")]
)
def test_backend_names_are_normalised(backend_name, spell):
    assert pn.get_backend(spell(backend_name)).name == backend_name


def test_default_dtype_is_float32(backend_name):
    b = pn.get_backend(backend_name)
    assert b.dtype == b.xp.float32
    assert b.dtype_name == "float32"
    assert pn.Dense(2, 3, backend=backend_name).weights.dtype == b.xp.float32
    assert b.asarray(np.ones(3, dtype=np.float64)).dtype == b.xp.float32


@pytest.mark.parametrize("request_as", ["string", "numpy", "library"])
def test_float64_on_request(backend_name, request_as):
    xp = pn.get_backend(backend_name).xp
    dtype = {"string": "float64", "numpy": np.float64, "library": xp.float64}[request_as]
    b = pn.get_backend(backend_name, dtype=dtype)
    assert (b.dtype, b.dtype_name, b.name) == (xp.float64, "float64", backend_name)
    with pn.use_backend(backend_name, dtype=dtype) as active:
        assert active.dtype == xp.float64
        assert pn.Dense(2, 3).weights.dtype == xp.float64
    assert pn.Dense(2, 3, backend=backend_name, dtype=dtype).biases.dtype == xp.float64


@pytest.mark.parametrize("dtype", ["float16", "int32", "bfloat16", np.int64, "complex64"])
def test_unsupported_dtype_raises(backend_name, dtype):
    with pytest.raises(ValueError, match="float32 or float64"):
        pn.get_backend(backend_name, dtype=dtype)
    with pytest.raises(ValueError, match="unsupported dtype"):
        pn.use_backend(backend_name, dtype=dtype).__enter__()


@pytest.mark.parametrize("name", ["mxnet", "tensorflow", "", "nump"])
def test_unknown_backend_lists_the_known_names(name):
    for call in (pn.get_backend, pn.set_backend, lambda n: pn.use_backend(n).__enter__()):
        with pytest.raises(ValueError, match="unknown backend") as info:
            call(name)
        for known in BACKENDS:
            assert known in str(info.value)


@pytest.mark.parametrize(
    ("name", "module", "extra"),
    [
        ("array_api_strict", "array_api_strict", "portnn[strict]"),
        ("torch", "torch", "portnn[torch]"),
        ("cupy", "cupy", "portnn[cupy]"),
        ("jax", "jax", "portnn[jax]"),
    ],
)
def test_missing_library_names_the_pip_extra(monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import of `module` now fails
    backend_module._make.cache_clear()
    try:
        with pytest.raises(ImportError, match=re.escape(f"pip install '{extra}'")):
            pn.get_backend(name)
        with pytest.raises(ImportError, match=module):
            pn.set_backend(name)
        assert name not in pn.available_backends()
    finally:
        backend_module._make.cache_clear()


def test_available_backends():
    found = pn.available_backends()
    assert found[0] == "numpy"
    assert found == [n for n in BACKENDS if n in found]  # known names, in order, once each
    for name in CPU_BACKENDS:
        installed = importlib.util.find_spec(name) is not None
        assert (name in found) == installed
    for name in found:
        b = pn.get_backend(name)
        assert np.array_equal(pn.to_numpy(b.asarray(np.arange(3.0))), np.arange(3.0))


def test_backend_describes_itself(backend):
    assert backend.name in repr(backend)
    assert "float32" in repr(backend)
    assert device_of(backend.asarray([1.0])) == backend.device


DTYPES = ["float32", "float64", "int8", "int32", "int64", "uint8", "bool"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_keeps_values_and_dtype(backend_name, dtype):
    data = np.array([[0, 1, 2], [3, 1, 0]]).astype(dtype)
    if dtype.startswith("float"):
        data = data / 7 - 0.1
    moved = pn.to_backend(data, backend_name)
    assert library_of(moved) == backend_name
    back = pn.to_numpy(moved)
    assert isinstance(back, np.ndarray)
    assert back.dtype == data.dtype
    np.testing.assert_array_equal(back, data)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_backend_converts_on_request(backend_name, dtype):
    data = np.linspace(-1, 1, 5)
    moved = pn.to_backend(data, backend_name, dtype=dtype)
    assert pn.to_numpy(moved).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(pn.to_numpy(moved), data.astype(dtype))


@pytest.mark.parametrize("source", CPU_BACKENDS)
def test_to_backend_between_libraries(backend_name, source):
    if source not in pn.available_backends():
        pytest.skip(f"{source} is not installed")
    data = np.arange(6, dtype=np.float64).reshape(2, 3) / 3
    moved = pn.to_backend(pn.to_backend(data, source), backend_name)
    assert library_of(moved) == backend_name
    assert pn.to_numpy(moved).dtype == np.float64
    np.testing.assert_array_equal(pn.to_numpy(moved), data)


def test_to_backend_of_own_array_is_the_same_array(backend):
    x = backend.asarray(np.ones((2, 2)))
    assert pn.to_backend(x, backend.name) is x


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (np.ones((2, 2), dtype=np.float64), "real floating"),
        (np.ones((2, 2), dtype=np.float32), "real floating"),
        ([[1.0, 2.0]], "real floating"),
        (2.5, "real floating"),
        (np.arange(3, dtype=np.int32), "integral"),
        ([1, 2, 3], "integral"),
    ],
)
def test_asarray_takes_numpy_and_python_data(backend, value, kind):
    x = backend.asarray(value)
    assert library_of(x) == backend.name
    assert backend.xp.isdtype(x.dtype, kind)
    if kind == "real floating":
        assert x.dtype == backend.dtype
    np.testing.assert_array_equal(pn.to_numpy(x), np.asarray(value).astype(pn.to_numpy(x).dtype))


@pytest.mark.parametrize("source", ["array_api_strict", "torch", "cupy", "jax"])  # NumPy: taken
def test_asarray_refuses_another_librarys_array(backend, source):
    if source == backend.name:
        pytest.skip("same library")
    if source not in pn.available_backends():
        pytest.skip(f"{source} is not installed")
    foreign = pn.to_backend(np.ones(3), source)
    with pytest.raises(TypeError) as info:
        backend.asarray(foreign)
    message = str(info.value)
    assert source in message
    assert "to_backend" in message
    assert "to_numpy" in message


@pytest.mark.parametrize("value", [np.array(2.0), np.float32(2.0), 2.0])
def test_a_scalar_stays_zero_dimensional(backend_name, value):
    # np.ascontiguousarray once made a 0-d array 1-d on the way to torch and array_api_strict.
    x = pn.to_backend(np.asarray(value), backend_name)
    assert tuple(x.shape) == ()
    assert tuple(pn.get_backend(backend_name).asarray(value).shape) == ()


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (np.array([1 + 2j, 3 + 0j]), "complex"),
        (np.array(["a", "b"]), "str"),
        (np.array([1, "b"], dtype=object), "object"),
        (np.array(["2026-01-01"], dtype="datetime64[D]"), "datetime"),
        (np.ma.masked_array([1.0, 2.0], mask=[0, 1]), "masked"),
    ],
)
def test_asarray_refuses_data_it_would_mangle(backend, value, pattern):
    with pytest.raises(TypeError, match=pattern):
        backend.asarray(value)


def test_asarray_refuses_complex_and_grad_tracking_torch_tensors(backend):
    if backend.name != "torch":
        pytest.skip("torch tensors are another library's arrays on this backend")
    import torch

    with pytest.raises(TypeError, match="complex"):
        backend.asarray(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"requires grad.*detach\(\)"):
        backend.asarray(torch.zeros(3, requires_grad=True))


def test_long_double_is_taken_as_float64_data(backend):
    if not hasattr(np, "float128"):
        pytest.skip("this NumPy has no long double wider than float64")
    x = backend.asarray(np.array([1.5, 2.5], dtype=np.float128))
    assert x.dtype == backend.dtype
    np.testing.assert_array_equal(pn.to_numpy(x), [1.5, 2.5])


# --- one class per library ----------------------------------------------------------------------


def test_only_the_backend_classes_name_a_library():
    # Per-library behaviour lives in portnn/backend/ (thinc's Ops pattern); elsewhere code reads
    # the namespace from its arrays or asks the array's Backend class.
    root = Path(pn.__file__).parent
    pattern = re.compile(
        r"""\.name\s*[!=]=\s*["'](numpy|cupy|torch|array_api_strict|jax)["']"""
        r"""|library_of\([^)]*\)\s*(==|in)|^\s*(import|from)\s+(torch|cupy|array_api_strict|jax)\b""",
        re.MULTILINE,
    )
    offenders = [
        f"{path.relative_to(root)}: {match.group(0).strip()}"
        for path in sorted(root.rglob("*.py"))
        # interop.py builds torch.nn modules on purpose: exporting to torch is its job.
        if "backend" not in path.relative_to(root).parts and path.name != "interop.py"
        for match in pattern.finditer(path.read_text())
    ]
    assert offenders == []


def test_every_backend_class_names_its_library_and_extra():
    for name in BACKENDS:
        cls = backend_module._CLASSES[name]
        assert cls.name == name
        assert issubclass(cls, pn.Backend)
        assert cls.extra == "numpy" or cls.extra.startswith("'portnn[")


def test_the_default_device_is_the_same_backend_however_it_is_named(backend):
    same = backend_module._make(backend.name, backend.dtype_name, backend.device)
    assert same == backend
    assert backend_module.backend_of(backend.asarray([1.0])) == backend


def test_a_device_the_library_does_not_have_is_refused(backend_name):
    with pytest.raises((ValueError, RuntimeError), match="device|GPU|CUDA"):
        pn.set_backend(backend_name, device="cuda:7" if backend_name != "numpy" else "gpu")


def test_torch_devices_are_real():
    if "torch" not in pn.available_backends():
        pytest.skip("torch is not installed")
    import torch

    with pn.use_backend("torch", device="cpu") as b:
        assert b == pn.get_backend("torch")
        assert pn.to_backend(np.ones(2), b).device == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            pn.set_backend("torch", device="cuda")
    else:  # pragma: no cover - on a GPU machine
        with pn.use_backend("torch", device="cuda") as b:
            x = pn.to_backend(np.ones(2, dtype=np.float32), b)
            assert x.device.type == "cuda"
            assert backend_module.backend_of(x) == b


def test_jax_devices_dtypes_and_keys():
    if "jax" not in pn.available_backends():
        pytest.skip("jax is not installed")
    import jax

    for spelled in ("cpu", "cpu:0", jax.devices("cpu")[0]):
        with pn.use_backend("jax", device=spelled) as b:
            x = pn.to_backend(np.ones(2, dtype=np.float32), b)
            assert x.device == jax.devices("cpu")[0]
            assert backend_module.backend_of(x) == b
    # Loading the backend enabled 64-bit types: float64 and int64 are not cut to 32 bits.
    assert pn.to_backend(np.ones(2), "jax").dtype == np.float64
    assert pn.to_backend(np.arange(3), "jax").dtype == np.int64
    assert pn.get_backend("jax").asarray([0.5]).dtype == np.float32
    # The stateful generator over JAX's keys: each draw moves on, one seed repeats.
    b = pn.get_backend("jax")
    g, h = b.generator(3), b.generator(3)
    first = pn.to_numpy(b.uniform(g, (4,)))
    assert not np.array_equal(first, pn.to_numpy(b.uniform(g, (4,))))
    np.testing.assert_array_equal(first, pn.to_numpy(b.uniform(h, (4,))))
    assert sorted(pn.to_numpy(b.permutation(g, 5)).tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="devices"):
        pn.set_backend("jax", device="cpu:99")


def test_each_library_lists_its_devices(backend):
    devices = type(backend).devices()
    assert devices and all(isinstance(d, str) for d in devices)
    backend.sync()  # returns once the device is idle; on a CPU at once


def test_the_environment_selects_the_device_too(clean_selection, monkeypatch, backend_name):
    monkeypatch.setenv("PORTNN_BACKEND", backend_name)
    default = pn.get_backend(backend_name)
    monkeypatch.setenv(
        "PORTNN_DEVICE",
        str(getattr(default.device, "id", default.device))  # CuPy's Device: its number
        if backend_name != "array_api_strict"
        else "",
    )
    assert pn.get_backend() == default
    monkeypatch.setenv("PORTNN_DEVICE", "no-such-device:9")
    with pytest.raises((ValueError, RuntimeError)):
        pn.get_backend()
