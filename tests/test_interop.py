"""portnn.interop: safetensors files that torch.nn.Sequential loads as they are, torch's files
loaded back, and bad or hostile files refused as portnn.io refuses them."""

from __future__ import annotations

import json
import math
import os
import stat
import sys
import time
import tracemalloc

import numpy as np
import pytest
from helpers import assert_parameters_equal, host, host_parameters

import portnn as pn
from portnn import interop
from portnn.backend import library_of
from portnn.io import ModelFileError

safetensors = pytest.importorskip("safetensors", reason="portnn.interop needs safetensors")
st_numpy = pytest.importorskip("safetensors.numpy")

CPU_BACKENDS = [b for b in ("numpy", "array_api_strict", "torch") if b in pn.available_backends()]
DTYPES = ["float32", "float64"]
TOLERANCE = {"float32": {"rtol": 1e-6, "atol": 1e-7}, "float64": {"rtol": 1e-12, "atol": 1e-15}}


def needs_torch():
    return pytest.importorskip("torch", reason="the torch side of interop needs PyTorch")


def build():
    """The 2-16-16-3 spiral network."""
    model = pn.Model(
        [pn.Dense(2, 16), pn.ReLU(), pn.Dense(16, 16), pn.ReLU(), pn.Dense(16, 3), pn.Softmax()]
    )
    return model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(0.02))


def trained(epochs=30):
    model = build()
    model.train(*pn.datasets.spiral(50, 3), epochs=epochs, print_every=None)
    return model


def torch_built(torch, dtype="float32"):
    """The 2-16-16-3 network written by hand in torch, as a torch user would."""
    nn = torch.nn
    torch.manual_seed(0)
    layers = [nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)]
    return nn.Sequential(*layers, nn.Softmax(dim=1)).to(getattr(torch, dtype))


# Every layer portnn maps, with the torch module each becomes.
EVERY_LAYER = [
    (lambda: pn.Input(), lambda nn: nn.Identity()),
    (lambda: pn.Dense(2, 8), lambda nn: nn.Linear(2, 8)),
    (lambda: pn.LeakyReLU(0.1), lambda nn: nn.LeakyReLU(0.1)),
    (lambda: pn.Dropout(0.2), lambda nn: nn.Dropout(0.2)),
    (lambda: pn.Dense(8, 8), lambda nn: nn.Linear(8, 8)),
    (lambda: pn.Tanh(), lambda nn: nn.Tanh()),
    (lambda: pn.Dense(8, 6), lambda nn: nn.Linear(8, 6)),
    (lambda: pn.Sigmoid(), lambda nn: nn.Sigmoid()),
    (lambda: pn.Dense(6, 4), lambda nn: nn.Linear(6, 4)),
    (lambda: pn.Linear(), lambda nn: nn.Identity()),
    (lambda: pn.Dense(4, 3), lambda nn: nn.Linear(4, 3)),
    (lambda: pn.Softmax(), lambda nn: nn.Softmax(dim=1)),
]


def describe(model):
    return [repr(layer) for layer in model.layers]


def torch_outputs(torch, module, X):
    with torch.no_grad():
        return module(torch.from_numpy(np.asarray(X))).numpy()


# --- into torch -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_saved_model_loads_into_the_equivalent_torch_sequential(backend_name, tmp_path, dtype):
    torch = needs_torch()
    from safetensors.torch import load_file

    with pn.use_backend(backend_name, dtype=dtype):
        model = trained()
        X, _ = pn.datasets.spiral(40, 3)
        path = tmp_path / "model.safetensors"
        interop.save_safetensors(model, path)
        expected = host(model.predict(X))

    state = load_file(path)
    assert {k: (tuple(v.shape), v.dtype) for k, v in state.items()} == {
        name: (shape, getattr(torch, dtype))
        for i, (n_in, n_out) in ((0, (2, 16)), (2, (16, 16)), (4, (16, 3)))
        for name, shape in ((f"{i}.weight", (n_out, n_in)), (f"{i}.bias", (n_out,)))
    }
    net = torch_built(torch, dtype).eval()
    net.load_state_dict(state)  # strict: every name, every shape
    got = torch_outputs(torch, net, X.astype(dtype))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, expected, **TOLERANCE[dtype])


def test_torch_sequential_is_the_network_a_torch_user_writes(backend, tmp_path):
    torch = needs_torch()
    from safetensors.torch import load_file

    model = trained()
    X, _ = pn.datasets.spiral(40, 3)
    net = interop.torch_sequential(model)
    assert repr(net) == repr(torch_built(torch))
    assert not net.training  # eval mode: dropout off, as in model.predict
    interop.save_safetensors(model, tmp_path / "model.safetensors")
    from_file = load_file(tmp_path / "model.safetensors")
    assert net.state_dict().keys() == from_file.keys()
    for name, value in net.state_dict().items():
        assert torch.equal(value, from_file[name])
    np.testing.assert_allclose(
        torch_outputs(torch, net, X), host(model.predict(X)), **TOLERANCE["float32"]
    )
    # A copy: training the torch module leaves the portnn model as it was.
    before = host_parameters(model)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert_parameters_equal(host_parameters(model), before)


def test_every_portnn_layer_maps_to_its_torch_module(backend, tmp_path):
    torch = needs_torch()
    from safetensors.torch import load_file

    model = pn.Model([make() for make, _ in EVERY_LAYER])
    X, _ = pn.datasets.spiral(40, 3)
    hand_built = torch.nn.Sequential(*[torch_module(torch.nn) for _, torch_module in EVERY_LAYER])
    assert repr(interop.torch_sequential(model)) == repr(hand_built)

    path = tmp_path / "every.safetensors"
    interop.save_safetensors(model, path)
    hand_built.load_state_dict(load_file(path))
    hand_built.eval()
    np.testing.assert_allclose(
        torch_outputs(torch, hand_built, X), host(model.predict(X)), **TOLERANCE["float32"]
    )
    rebuilt = interop.load_safetensors(path)
    assert describe(rebuilt) == describe(model)
    np.testing.assert_array_equal(host(rebuilt.predict(X)), host(model.predict(X)))


def test_every_layer_portnn_io_can_build_has_a_torch_module():
    from portnn import io

    assert set(interop._TORCH) == set(io._LAYERS)


# --- back from torch --------------------------------------------------------------------------


@pytest.mark.parametrize("torch_dtype", DTYPES)
def test_a_file_torch_saved_loads_into_the_equivalent_portnn_model(backend, tmp_path, torch_dtype):
    torch = needs_torch()
    from safetensors.torch import save_file

    net = torch_built(torch, torch_dtype).eval()
    path = tmp_path / "torch.safetensors"
    save_file(net.state_dict(), path)
    X, _ = pn.datasets.spiral(40, 3)

    model = build()
    assert interop.load_safetensors(path, model) is model
    assert model.backend.dtype_name == "float32"  # the model's dtype, whatever the file's
    assert all(library_of(a) == backend.name for pair in model.get_parameters() for a in pair)
    assert all(host(a).dtype == np.float32 for pair in model.get_parameters() for a in pair)
    np.testing.assert_allclose(
        host(model.predict(X)), torch_outputs(torch, net.float(), X), **TOLERANCE["float32"]
    )
    model.train(*pn.datasets.spiral(20, 3), epochs=2, print_every=None)  # trains from there

    # A file without portnn's metadata holds weights, not an architecture.
    with pytest.raises(ModelFileError, match=r"no portnn architecture.*load_safetensors\(path, m"):
        interop.load_safetensors(path)


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", CPU_BACKENDS)
def test_a_round_trip_gives_identical_parameters(backend_name, tmp_path, target, dtype):
    with pn.use_backend(backend_name, dtype=dtype):
        model = trained(epochs=5)
        X, _ = pn.datasets.spiral(20, 3)
        expected = host(model.predict(X))
    path = tmp_path / "model.safetensors"
    interop.save_safetensors(model, path)

    rebuilt = interop.load_safetensors(path, backend=target)
    assert rebuilt.backend.name == target and rebuilt.backend.dtype_name == dtype
    assert all(library_of(a) == target for pair in rebuilt.get_parameters() for a in pair)
    assert all(host(a).dtype == np.dtype(dtype) for pair in rebuilt.get_parameters() for a in pair)
    assert describe(rebuilt) == describe(model)
    assert_parameters_equal(host_parameters(rebuilt), host_parameters(model))
    assert rebuilt.loss is None and rebuilt.optimizer is None  # weights, not a checkpoint
    np.testing.assert_allclose(host(rebuilt.predict(X)), expected, **TOLERANCE[dtype])

    with pn.use_backend(target, dtype=dtype):
        pn.seed(7)
        other = build()
    interop.load_safetensors(path, other)
    assert_parameters_equal(host_parameters(other), host_parameters(model))
    other.train(*pn.datasets.spiral(20, 3), epochs=2, print_every=None)  # arrays it may update


def test_loaded_parameters_are_the_models_own_arrays(backend, tmp_path):
    """Not read-only views of the file's bytes: the book's chapter 6 edits weights in place."""
    model = trained(epochs=2)
    interop.save_safetensors(model, tmp_path / "model.safetensors")
    for loaded in (interop.load_safetensors(tmp_path / "model.safetensors"), model):
        interop.load_safetensors(tmp_path / "model.safetensors", loaded)
        for pair in loaded.get_parameters():
            for array in pair:
                edited = host(array)  # the array itself on NumPy
                edited += 1.0


def test_load_uses_the_current_backend_and_the_files_dtype(backend, tmp_path):
    with pn.use_backend("numpy", dtype="float64"):
        interop.save_safetensors(trained(epochs=2), tmp_path / "model.safetensors")
    rebuilt = interop.load_safetensors(tmp_path / "model.safetensors")
    assert rebuilt.backend.name == backend.name and rebuilt.backend.dtype_name == "float64"


def test_a_model_keeps_its_dtype_whatever_float_the_file_holds(backend_name, tmp_path):
    for dtype in DTYPES:
        with pn.use_backend("numpy", dtype=dtype):
            interop.save_safetensors(trained(epochs=2), tmp_path / f"{dtype}.safetensors")
    tensors = st_numpy.load_file(tmp_path / "float32.safetensors")
    st_numpy.save_file(
        {k: v.astype(np.float16) for k, v in tensors.items()}, tmp_path / "float16.safetensors"
    )
    for model_dtype in DTYPES:
        for file_dtype in ("float16", *DTYPES):
            with pn.use_backend(backend_name, dtype=model_dtype):
                model = build()
            interop.load_safetensors(tmp_path / f"{file_dtype}.safetensors", model)
            assert model.backend.dtype_name == model_dtype
            assert all(
                host(a).dtype == model_dtype for pair in model.get_parameters() for a in pair
            )


def test_float64_tensors_load_as_float32_only_if_their_values_fit(backend_name, tmp_path):
    """Into a float32 model, or rebuilt from float32 metadata: a cast would make 1e300 inf."""
    with pn.use_backend("numpy", dtype="float32"):
        interop.save_safetensors(build(), tmp_path / "float32.safetensors")
    with safetensors.safe_open(tmp_path / "float32.safetensors", "np") as f:
        metadata = f.metadata()
    tensors = st_numpy.load_file(tmp_path / "float32.safetensors")
    huge = {k: v.astype(np.float64) for k, v in tensors.items()}
    huge["2.bias"] = np.full_like(huge["2.bias"], -1e300)
    st_numpy.save_file(huge, tmp_path / "huge.safetensors", metadata=metadata)
    match = r"huge\.safetensors: tensor 2\.bias holds values beyond float32's range; load the"

    with pn.use_backend(backend_name, dtype="float32"):
        model = build()
    before = host_parameters(model)
    with pytest.raises(ModelFileError, match=match):
        interop.load_safetensors(tmp_path / "huge.safetensors", model)
    assert_parameters_equal(host_parameters(model), before)
    with pn.use_backend(backend_name):
        with pytest.raises(ModelFileError, match=match):
            interop.load_safetensors(tmp_path / "huge.safetensors")
    with pn.use_backend(backend_name, dtype="float64"):
        wide = build()
    interop.load_safetensors(tmp_path / "huge.safetensors", wide)  # a float64 model holds them
    assert (host(wide.layers[2].biases) == -1e300).all()


def test_loading_draws_no_random_numbers(backend, tmp_path):
    interop.save_safetensors(trained(epochs=2), tmp_path / "model.safetensors")
    pn.seed(5)
    interop.load_safetensors(tmp_path / "model.safetensors")
    after_load = pn.Dense(2, 3).weights
    pn.seed(5)
    np.testing.assert_array_equal(host(after_load), host(pn.Dense(2, 3).weights))


def test_torch_sequential_draws_no_random_numbers(backend):
    torch = needs_torch()
    model = build()
    torch.manual_seed(3)
    interop.torch_sequential(model)
    drawn = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.rand(4))


# --- metadata and what cannot be saved --------------------------------------------------------


def test_metadata_of_ones_own_is_saved_beside_portnns(backend, tmp_path):
    path = tmp_path / "model.safetensors"
    interop.save_safetensors(build(), path, metadata={"author": "me", "epochs": "30"})
    with safetensors.safe_open(path, framework="np") as f:
        metadata = f.metadata()
    assert metadata["author"] == "me" and metadata["epochs"] == "30"
    assert metadata["format"] == "pt"  # what Hugging Face's loaders look for
    architecture = json.loads(metadata[interop.METADATA_KEY])
    assert architecture["format"] == "portnn" and architecture["dtype"] == "float32"
    assert [layer["class"] for layer in architecture["layers"]] == [
        "Dense", "ReLU", "Dense", "ReLU", "Dense", "Softmax"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("metadata", "error", "match"),
    [
        ({"portnn": "mine"}, ValueError, "portnn's own"),
        ({"epochs": 30}, TypeError, "strings to strings"),
        ({1: "x"}, TypeError, "strings to strings"),
        ({"notes": "x" * (5 * 2**20)}, ValueError, "keep metadata short"),
    ],
    ids=["portnn's key", "a number", "a number as key", "too long"],
)
def test_bad_metadata_is_refused_and_writes_nothing(backend, tmp_path, metadata, error, match):
    with pytest.raises(error, match=match):
        interop.save_safetensors(build(), tmp_path / "model.safetensors", metadata=metadata)
    assert os.listdir(tmp_path) == []


class Doubler(pn.Layer):
    def forward(self, inputs, training=False):
        return 2 * inputs


class MyDense(pn.Dense):
    pass


@pytest.mark.parametrize(
    ("layers", "error", "match"),
    [
        ([], ValueError, "no layers"),
        ([pn.Dense(2, 3), Doubler()], TypeError, "layer 1 is a Doubler, which has no torch"),
        ([MyDense(2, 3)], TypeError, "layer 0 is a MyDense"),
    ],
    ids=["empty", "a layer of ones own", "a Dense subclass"],
)
def test_a_model_portnn_cannot_map_is_refused_clearly(backend, tmp_path, layers, error, match):
    model = pn.Model(layers)
    with pytest.raises(error, match=match):
        interop.save_safetensors(model, tmp_path / "model.safetensors")
    if layers:
        with pytest.raises(error, match=match):
            interop.torch_sequential(model)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: interop.save_safetensors([pn.Dense(2, 3)], p), TypeError, "got list"),
        (lambda p: interop.torch_sequential(pn.Dense(2, 3)), TypeError, "got Dense"),
        (lambda p: interop.load_safetensors(p, "torch"), TypeError, "got str"),
        (lambda p: interop.load_safetensors(p, build(), "numpy"), ValueError, "model.to"),
    ],
    ids=["save a list", "torch_sequential of a layer", "a backend as model", "both"],
)
def test_arguments_of_the_wrong_kind_are_refused(backend, tmp_path, call, error, match):
    path = tmp_path / "model.safetensors"
    interop.save_safetensors(build(), path)
    with pytest.raises(error, match=match):
        call(path)


@pytest.mark.parametrize(
    ("module", "call", "match"),
    [
        ("torch", lambda m, p: interop.torch_sequential(m), "needs PyTorch: pip install"),
        ("safetensors", lambda m, p: interop.save_safetensors(m, p), "portnn\\[safetensors\\]"),
        ("safetensors", lambda m, p: interop.load_safetensors(p, m), "portnn\\[safetensors\\]"),
    ],
    ids=["torch_sequential", "save", "load"],
)
def test_a_missing_package_raises_a_clear_import_error(
    backend, tmp_path, monkeypatch, module, call, match
):
    path = tmp_path / "model.safetensors"
    model = build()
    interop.save_safetensors(model, path)
    monkeypatch.setitem(sys.modules, module, None)  # what import finds when it is not installed
    with pytest.raises(ImportError, match=match):
        call(model, path)


# --- atomic writes ----------------------------------------------------------------------------


def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(backend, tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    model = trained(epochs=2)
    interop.save_safetensors(model, path)
    old = path.read_bytes()
    model.train(*pn.datasets.spiral(20, 3), epochs=2, print_every=None)

    def replace(src, dst):
        raise PermissionError("read-only folder")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        with pytest.raises(PermissionError, match=f"cannot save to {path}"):
            interop.save_safetensors(model, path)
        with pytest.raises(PermissionError):
            interop.save_safetensors(model, tmp_path / "new.safetensors")
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert path.read_bytes() == old


def test_a_save_into_a_missing_folder_names_the_path(backend, tmp_path):
    path = tmp_path / "missing" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match=f"cannot save to {path}: .*create it first"):
        interop.save_safetensors(build(), path)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_file_modes_are_those_open_gives_or_the_old_files(backend, tmp_path, umask):
    umask(0o027)
    interop.save_safetensors(build(), tmp_path / "new.safetensors")
    assert _mode(tmp_path / "new.safetensors") == 0o640
    path = tmp_path / "old.safetensors"
    path.write_bytes(b"an older file")
    os.chmod(path, 0o604)
    interop.save_safetensors(build(), path)
    assert _mode(path) == 0o604


# --- bad files: a clear error, and nothing changes --------------------------------------------

ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "C64": 8, "BOOL": 1}


def _raw(header, data=b""):
    text = json.dumps(header).encode() if isinstance(header, dict) else header
    return len(text).to_bytes(8, "little") + text + data


def _split(good):
    n = int.from_bytes(good[:8], "little")
    return json.loads(good[8 : 8 + n]), good[8 + n :]


def _edited(edit):
    """The good file with its header changed by ``edit(header)``, data as it was."""

    def make(good):
        header, data = _split(good)
        edit(header)
        return _raw(header, data)

    return make


def _laid_out(specs, metadata):
    """A well-formed file of zero-filled tensors, ``specs`` mapping names to (dtype, shape)."""
    header, offset = {"__metadata__": metadata}, 0
    for name, (dtype, shape) in specs.items():
        size = math.prod(shape) * ITEMSIZE[dtype]
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    return _raw(header, bytes(offset))


def _respecced(change):
    """The good file's tensors, with ``change(specs)`` applied to their names, dtypes and
    shapes, laid out anew."""

    def make(good):
        header, _ = _split(good)
        metadata = header.pop("__metadata__")
        specs = {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items()}
        change(specs)
        return _laid_out(specs, metadata)

    return make


def _arrays(change):
    """The good file's arrays, changed by ``change(arrays)``, saved by safetensors itself."""

    def make(good):
        arrays = {k: v.copy() for k, v in st_numpy.load(good).items()}
        metadata = _split(good)[0]["__metadata__"]
        change(arrays)
        return st_numpy.save(arrays, metadata=metadata)

    return make


def _architecture(edit):
    """The good file with its portnn metadata changed by ``edit(architecture)``."""

    def change(header):
        architecture = json.loads(header["__metadata__"]["portnn"])
        edit(architecture)
        header["__metadata__"]["portnn"] = json.dumps(architecture)

    return _edited(change)


def _set(path, value):
    def edit(target):
        *keys, last = path
        for key in keys:
            target = target[key]
        target[last] = value

    return edit


def _npz_file(good):
    import io

    buffer = io.BytesIO()
    np.savez(buffer, weights=np.ones((2, 16), np.float32))
    return buffer.getvalue()


def _nonfinite(name, value):
    def change(arrays):
        arrays[name].flat[1] = value

    return change


def _named_twice(good):
    n = int.from_bytes(good[:8], "little")
    return _raw(good[8 : 8 + n].replace(b'"2.weight"', b'"0.weight"'), good[8 + n :])


def _overlapping(header):
    """0.bias moved onto the first bytes of 0.weight."""
    begin = header["0.weight"]["data_offsets"][0]
    header["0.bias"]["data_offsets"] = [begin, begin + 64]


def _unchained(good):
    """Layer 4 rebuilt as a Dense(8, 3) after a Dense(16, 16), its tensor to match."""
    edit = _architecture(_set(["layers", 4, "config", "n_inputs"], 8))
    return _respecced(lambda s: s.update({"4.weight": ("F32", (3, 8))}))(edit(good))


UNREADABLE = "not a readable safetensors file"
# Files that both loads refuse: (how to make one from the good file's bytes, the message).
BAD_FILES = {
    "empty": (lambda good: b"", UNREADABLE),
    "first 7 bytes": (lambda good: good[:7], "shorter than a safetensors header"),
    "first 30 bytes": (lambda good: good[:30], r"declares a header of \d+ bytes in a file of 30"),
    "first half": (lambda good: good[: len(good) // 2], UNREADABLE),
    "all but the last byte": (
        lambda good: good[:-1],
        r"header declares (\d+) bytes of tensors after it, the file holds (?!\1)\d+",
    ),
    "a byte too many": (lambda good: good + b"\0", r"declares \d+ bytes of tensors after it"),
    "random bytes": (lambda good: np.random.RandomState(0).bytes(2000), UNREADABLE),
    "text": (lambda good: b'{"0.weight": {"dtype": "F32"}}\n' * 3, UNREADABLE),
    "an npz": (_npz_file, r"looks like a zip or .npz: .* pn.Model.load"),
    "a header that is not JSON": (lambda good: _raw(b"\xff{not json"), "not valid JSON"),
    "a header nested too deeply": (lambda good: _raw(b"[" * 100_000), "not valid JSON"),
    "a header that is a list": (lambda good: _raw(b"[1, 2]"), "not a JSON object"),
    "a tensor named twice": (_named_twice, r"names \['0.weight'\] twice"),
    "metadata that is not strings": (
        _edited(_set(["__metadata__", "format"], 1)),
        r"metadata holds values that are not strings: \{'format': 1\}$",
    ),
    "a malformed shape": (
        _edited(_set(["0.weight", "shape"], "16x2")),
        "tensor '0.weight' has a malformed entry",
    ),
    "a negative dimension": (_edited(_set(["0.weight", "shape"], [-16, -2])), "malformed entry"),
    "boolean offsets": (_edited(_set(["0.bias", "data_offsets"], [False, True])), "malformed"),
    # Names, dtypes and shapes, as torch's load_state_dict checks them.
    "names of a Sequential inside a module": (
        _respecced(lambda s: s.update({f"net.{k}": s.pop(k) for k in list(s)})),
        r"but (the model|its metadata) needs .*missing \['0.bias'.*unexpected \['net.0.bias'",
    ),
    "a missing tensor": (_respecced(lambda s: s.pop("4.bias")), r"missing \['4.bias'\]"),
    "an extra tensor": (
        _respecced(lambda s: s.update({"6.weight": ("F32", (3, 3))})),
        r"unexpected \['6.weight'\]",
    ),
    "a wrong shape": (
        _respecced(lambda s: s.update({"2.weight": ("F32", (16, 8))})),
        r"tensor 2.weight has shape \(16, 8\); (the model|its metadata) needs \(16, 16\)$",
    ),
    "portnn's own layout": (
        _respecced(lambda s: s.update({"0.weight": ("F32", (2, 16))})),
        r"shape \(2, 16\); .* needs \(16, 2\) \(transposed: .*nn.Linear layout",
    ),
    "integer weights": (
        _respecced(lambda s: s.update({"0.weight": ("I64", (16, 2))})),
        r"tensor 0.weight has dtype 'I64'; it needs a real float dtype \(F16, F32, F64\)",
    ),
    "bfloat16 weights": (
        _respecced(lambda s: s.update({"2.weight": ("BF16", (16, 16))})),
        r"dtype 'BF16'.*tensor.float\(\) before saving",
    ),
    "complex biases": (_respecced(lambda s: s.update({"4.bias": ("C64", (3,))})), "dtype 'C64'"),
    "boolean biases": (_respecced(lambda s: s.update({"0.bias": ("BOOL", (16,))})), "'BOOL'"),
    "a NaN weight": (
        _arrays(_nonfinite("2.weight", np.nan)),
        "tensor 2.weight holds NaN or infinite values",
    ),
    "an infinite bias": (_arrays(_nonfinite("4.bias", -np.inf)), "4.bias holds NaN or infinite"),
    # Byte ranges that do not tile the data.
    "overlapping tensors": (
        _edited(_overlapping),
        r"tensor \S+ of shape .* needs \d+ bytes from byte \d+ .*, but its data_offsets are",
    ),
    "a range of the wrong size": (
        _edited(lambda h: h["4.bias"]["data_offsets"].__setitem__(1, 10**9)),
        r"tensor 4.bias of shape \(3,\) needs 12 bytes from byte (\d+) .* are \[\1, 1000000000\]",
    ),
}

# Metadata that only a rebuild reads: (how to make the file, the message, whether a load into
# a model succeeds, as torch's load_state_dict ignores metadata).
BAD_METADATA = {
    "no metadata": (
        lambda good: st_numpy.save(st_numpy.load(good)),
        "no portnn architecture in its metadata",
        True,
    ),
    "metadata that is not JSON": (
        _edited(_set(["__metadata__", "portnn"], "{not json")),
        "corrupt portnn metadata",
        True,
    ),
    "another format": (_architecture(_set(["format"], "keras")), "names no portnn format", True),
    "a newer version": (
        _architecture(_set(["version"], interop.VERSION + 1)),
        "newer than this portnn reads .*upgrade portnn",
        True,
    ),
    "a version in a string": (
        _architecture(_set(["version"], "1")),
        "invalid portnn metadata version '1'",
        True,
    ),
    "an unsupported dtype": (_architecture(_set(["dtype"], "int8")), "unsupported dtype", True),
    "no layers": (_architecture(_set(["layers"], [])), "no layers", True),
    "an unknown layer class": (
        _architecture(_set(["layers", 1, "class"], "posix.system")),
        "unknown or malformed layer",
        True,
    ),
    "a layer config with a foreign argument": (
        _architecture(_set(["layers", 1, "config"], {"command": "rm -rf /"})),
        "cannot be rebuilt",
        True,
    ),
    "a Dense of no size": (
        _architecture(_set(["layers", 0, "config", "n_inputs"], "2")),
        "n_inputs='2' and n_neurons=16, not positive integers",
        True,
    ),
    "an architecture the tensors do not fit": (
        _architecture(_set(["layers", 4, "config", "n_neurons"], 4)),
        r"tensor 4.bias has shape \(3,\); its metadata needs \(4,\)",
        True,
    ),
    "layer sizes that do not chain": (
        _unchained,
        "cannot be rebuilt: layer sizes do not chain",
        False,
    ),
}


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    """The bytes of a good file of the 2-16-16-3 network, written once on NumPy."""
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    with pn.use_backend("numpy"):
        pn.seed(0)
        interop.save_safetensors(trained(epochs=2), path)
    return path.read_bytes()


def test_the_good_file_loads_both_ways(backend, tmp_path, good_file):
    (tmp_path / "good.safetensors").write_bytes(good_file)
    into = interop.load_safetensors(tmp_path / "good.safetensors", build())
    rebuilt = interop.load_safetensors(tmp_path / "good.safetensors")
    assert_parameters_equal(host_parameters(into), host_parameters(rebuilt))
    # The helpers that make bad files lay out good ones as safetensors itself reads them.
    relaid = _respecced(lambda specs: None)(good_file)
    assert {k: v.shape for k, v in st_numpy.load(relaid).items()} == {
        k: v.shape for k, v in st_numpy.load(good_file).items()
    }
    (tmp_path / "relaid.safetensors").write_bytes(relaid)
    zeros = interop.load_safetensors(tmp_path / "relaid.safetensors")
    assert not any(host(a).any() for pair in zeros.get_parameters() for a in pair)


def _refused(path, match, model=None):
    with pytest.raises(ModelFileError, match=match) as caught:
        interop.load_safetensors(path, model)
    assert isinstance(caught.value, ValueError)
    assert str(path) in str(caught.value)  # the message names the file


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_raises_model_file_error_and_changes_nothing(backend, tmp_path, good_file, case):
    make, match = BAD_FILES[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(make(good_file))
    model = build()
    before = host_parameters(model)
    _refused(path, match, model)
    assert_parameters_equal(host_parameters(model), before)
    _refused(path, match)


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_metadata_stops_a_rebuild_only(backend, tmp_path, good_file, case):
    make, match, loads_into_a_model = BAD_METADATA[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(make(good_file))
    _refused(path, match)
    model = build()
    before = host_parameters(model)
    if loads_into_a_model:
        interop.load_safetensors(path, model)
        (tmp_path / "good.safetensors").write_bytes(good_file)
        assert_parameters_equal(
            host_parameters(model),
            host_parameters(interop.load_safetensors(tmp_path / "good.safetensors")),
        )
    else:
        _refused(path, None, model)
        assert_parameters_equal(host_parameters(model), before)


def test_a_missing_file_raises_file_not_found(backend, tmp_path):
    with pytest.raises(FileNotFoundError):
        interop.load_safetensors(tmp_path / "nothing.safetensors")
    with pytest.raises(FileNotFoundError):
        interop.load_safetensors(tmp_path / "nothing.safetensors", build())


# --- hostile files: refused before anything large is read or built ---------------------------


def _metadata(*sizes):
    dense = [{"class": "Dense", "config": {"n_inputs": i, "n_neurons": o}} for i, o in sizes]
    architecture = {"format": "portnn", "version": 1, "dtype": "float32", "layers": dense}
    return {"portnn": json.dumps(architecture)}


def _declared(shape, begin, end, metadata):
    """A header declaring a Dense's tensors, 0.weight at bytes [begin, end), and no data."""
    bias = [end, end + 4 * shape[0]]
    weight = {"dtype": "F32", "shape": list(shape), "data_offsets": [begin, end]}
    bias = {"dtype": "F32", "shape": [shape[0]], "data_offsets": bias}
    return _raw({"__metadata__": metadata, "0.weight": weight, "0.bias": bias})


HUGE = (100_000, 100_000)
# Each file is a few kilobytes; the message is what a rebuild says.
HOSTILE_FILES = {
    "a header length of 2**62": (
        lambda: (2**62).to_bytes(8, "little") + b"{}",
        r"declare a header of \d+ bytes, more than a header portnn reads can be",
    ),
    "a header of 40 MB declared": (
        lambda: (40 * 10**6).to_bytes(8, "little") + b"{" + b" " * 1000,
        "declare a header of 40000000 bytes, more than",
    ),
    "a 1e12-element tensor over 8 bytes": (
        lambda: _declared((10**12, 1), 0, 8, _metadata((1, 10**12))),
        r"needs 4000000000000 bytes from byte 0 .* data_offsets are \[0, 8\]",
    ),
    "a huge tensor whose data is not there": (
        lambda: _declared(HUGE, 0, 4 * 10**10, _metadata(HUGE)),
        r"declares 40000400000 bytes of tensors after it, the file holds 0",
    ),
    "a huge Dense in the metadata over small tensors": (
        lambda: _laid_out({"0.weight": ("F32", (3, 2)), "0.bias": ("F32", (3,))}, _metadata(HUGE)),
        r"tensor 0.bias has shape \(3,\); its metadata needs \(100000,\)",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_a_hostile_file_is_refused_quickly_in_little_memory(backend, tmp_path, case):
    make, match = HOSTILE_FILES[case]
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(make())
    assert path.stat().st_size < 50_000
    small = pn.Model([pn.Dense(2, 4)])  # fits none of the files
    for model, message in ((None, match), (small, None)):
        tracemalloc.start()
        start = time.perf_counter()
        try:
            _refused(path, message, model)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # A refusal takes milliseconds and kilobytes, not the gigabytes the file declares.
        assert time.perf_counter() - start < 5
        assert peak < 2 * 2**20, f"loading peaked at {peak / 2**20:.1f} MiB"
