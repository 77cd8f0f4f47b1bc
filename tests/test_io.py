"""Saving and loading: portable across backends, atomic, and safe against files that are
truncated, foreign, too new or carrying pickled objects (which must never run)."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import stat
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import CPU_BACKENDS, assert_parameters_equal, host, host_parameters

import portnn as pn
from portnn.backend import library_of
from portnn.io import HEADER, VERSION, ModelFileError


def optimizer_arrays(model):
    """The optimizer state as host arrays, keyed by layer position, parameter and field."""
    position = {id(layer): i for i, layer in enumerate(model.layers)}
    return {
        (position[id(layer)], name, field): host(value)
        for layer, states in model.optimizer.state.items()
        for name, state in states.items()
        for field, value in zip(state._fields, state, strict=True)
    }


def build(dropout=0.1):
    layers = [pn.Dense(2, 16, weight_regularizer_l2=1e-3, bias_regularizer_l1=1e-4), pn.ReLU()]
    if dropout:
        layers.append(pn.Dropout(dropout))
    model = pn.Model([*layers, pn.Dense(16, 3), pn.Softmax()])
    return model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(0.02, decay=1e-2))


def trained(epochs=5, dropout=0.1):
    X, y = pn.datasets.spiral(20, 3)
    model = build(dropout)
    model.train(X, y, epochs=epochs, print_every=None)
    return model


def describe(model):
    return (
        [repr(layer) for layer in model.layers],
        repr(model.loss),
        repr(model.accuracy),
        repr(model.optimizer),
    )


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", CPU_BACKENDS)
def test_a_model_saved_on_one_backend_loads_on_every_other(backend, tmp_path, target):
    if target not in pn.available_backends():
        pytest.skip(f"{target} is not installed here")
    X, _ = pn.datasets.spiral(10, 3)
    model = trained()
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = pn.Model.load(path, backend=target)

    assert loaded.backend.name == target and loaded.backend.dtype_name == "float32"
    assert all(library_of(a) == target for pair in loaded.get_parameters() for a in pair)
    assert describe(loaded) == describe(model)
    assert_parameters_equal(host_parameters(loaded), host_parameters(model))
    assert loaded.optimizer.iterations == model.optimizer.iterations == 5
    assert loaded.optimizer.current_learning_rate == model.optimizer.current_learning_rate
    saved_state, loaded_state = optimizer_arrays(model), optimizer_arrays(loaded)
    assert saved_state.keys() == loaded_state.keys() and len(saved_state) == 8
    for key, value in saved_state.items():
        np.testing.assert_array_equal(loaded_state[key], value)
        assert library_of(loaded.optimizer.state[loaded.layers[key[0]]][key[1]][0]) == target
    np.testing.assert_allclose(
        host(loaded.predict(X)), host(model.predict(X)), rtol=1e-5, atol=1e-7
    )


def test_load_uses_the_current_backend_by_default(backend, tmp_path):
    path = tmp_path / "model.npz"
    with pn.use_backend("numpy"):
        trained().save(path)
    loaded = pn.Model.load(path)
    assert loaded.backend.name == backend.name
    assert all(library_of(a) == backend.name for pair in loaded.get_parameters() for a in pair)


def test_a_float64_model_loads_as_float64(backend64, tmp_path):
    model = trained(epochs=2)
    model.save(tmp_path / "model.npz")
    loaded = pn.Model.load(tmp_path / "model.npz", backend=backend64.name)
    assert loaded.backend.dtype_name == "float64"
    assert_parameters_equal(host_parameters(loaded), host_parameters(model))
    assert all(host(a).dtype == np.float64 for pair in loaded.get_parameters() for a in pair)


def test_a_model_without_loss_or_optimizer_round_trips(backend, tmp_path):
    X, _ = pn.datasets.spiral(10, 3)
    model = pn.Model([pn.Dense(2, 4), pn.LeakyReLU(0.1), pn.Dense(4, 3), pn.Softmax()])
    model.save(tmp_path / "bare.npz")
    loaded = pn.Model.load(tmp_path / "bare.npz")
    assert loaded.loss is None and loaded.optimizer is None and loaded.accuracy is None
    assert describe(loaded) == describe(model)
    np.testing.assert_array_equal(host(loaded.predict(X)), host(model.predict(X)))


def test_metadata_is_saved_and_loaded_with_the_model(backend, tmp_path):
    model = trained(epochs=2)
    assert pn.Model.load(_saved(model, tmp_path / "plain.npz")).metadata == {}
    model.metadata = {"dataset": "spiral", "epochs": 2, "lr": 0.5, "ok": True, "note": None}
    loaded = pn.Model.load(_saved(model, tmp_path / "model.npz"))
    assert loaded.metadata == model.metadata and loaded.metadata is not model.metadata
    for bad in ({"epochs": [1, 2]}, {1: "spiral"}, "spiral", {"x": np.float32(1)}):
        model.metadata = bad
        with pytest.raises(ValueError, match="model.metadata must be a dict of str keys"):
            model.save(tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


def _saved(model, path):
    model.save(path)
    return path


def test_loading_draws_no_random_numbers(backend, tmp_path):
    trained().save(tmp_path / "model.npz")
    pn.seed(5)
    pn.Model.load(tmp_path / "model.npz")
    after_load = pn.Dense(2, 3).weights
    pn.seed(5)
    np.testing.assert_array_equal(host(after_load), host(pn.Dense(2, 3).weights))


def test_save_and_load_parameters_round_trip(backend, tmp_path):
    X, _ = pn.datasets.spiral(10, 3)
    model = trained()
    model.save_parameters(tmp_path / "params.npz")
    pn.seed(9)
    other = build()
    other.load_parameters(tmp_path / "params.npz")
    assert all(library_of(a) == backend.name for pair in other.get_parameters() for a in pair)
    assert_parameters_equal(host_parameters(other), host_parameters(model))
    np.testing.assert_array_equal(host(other.predict(X)), host(model.predict(X)))
    assert other.optimizer.iterations == 0  # parameters only: the optimizer is untouched

    # A whole-model file holds the parameters too.
    model.save(tmp_path / "model.npz")
    pn.seed(9)
    third = build()
    third.load_parameters(tmp_path / "model.npz")
    assert_parameters_equal(host_parameters(third), host_parameters(model))

    # But a parameters file is not a model.
    with pytest.raises(ModelFileError, match=r"not a whole model.*load_parameters"):
        pn.Model.load(tmp_path / "params.npz")


def test_resuming_from_a_file_equals_training_without_a_break(backend, tmp_path):
    X, y = pn.datasets.spiral(20, 3)
    kwargs = {"batch_size": 16, "shuffle": False, "print_every": None}
    pn.seed(0)
    uninterrupted = build(dropout=0)  # dropout masks come from the device stream: not saved
    uninterrupted.train(X, y, epochs=7, **kwargs)

    pn.seed(0)
    first = build(dropout=0)
    first.train(X, y, epochs=4, **kwargs)
    first.save(tmp_path / "checkpoint.npz")
    resumed = pn.Model.load(tmp_path / "checkpoint.npz")
    resumed.train(X, y, epochs=3, **kwargs)

    assert resumed.optimizer.iterations == uninterrupted.optimizer.iterations == 7 * 4
    assert resumed.optimizer.current_learning_rate == uninterrupted.optimizer.current_learning_rate
    assert_parameters_equal(
        host_parameters(resumed), host_parameters(uninterrupted), rtol=1e-6, atol=1e-9
    )


def test_loading_parameters_of_another_architecture_raises_and_changes_nothing(backend, tmp_path):
    trained().save_parameters(tmp_path / "params.npz")
    other = pn.Model([pn.Dense(2, 8), pn.ReLU(), pn.Dense(8, 3), pn.Softmax()])
    before = host_parameters(other)
    with pytest.raises(ModelFileError, match="params.npz"):
        other.load_parameters(tmp_path / "params.npz")
    assert_parameters_equal(host_parameters(other), before)


# --- atomic writes ----------------------------------------------------------------------------


def _failing_savez(error):
    def savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half of an archive")
        raise error

    return savez


def _failing_replace(error):
    def replace(src, dst):
        raise error

    return replace


@pytest.mark.parametrize("method", ["save", "save_parameters"])
@pytest.mark.parametrize(
    ("target", "make"),
    [
        (np, lambda: _failing_savez(OSError("No space left on device"))),
        (np, lambda: _failing_savez(KeyboardInterrupt())),
        (os, lambda: _failing_replace(PermissionError("read-only folder"))),
    ],
    ids=["savez-oserror", "savez-interrupt", "replace-fails"],
)
def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(
    backend, tmp_path, monkeypatch, method, target, make
):
    path = tmp_path / "model.npz"
    model = trained(epochs=2)
    getattr(model, method)(path)
    old = path.read_bytes()
    model.train(*pn.datasets.spiral(20, 3), epochs=2, print_every=None)  # new parameters

    error = make()
    name = "savez" if target is np else "replace"
    with monkeypatch.context() as patch:
        patch.setattr(target, name, error)
        with pytest.raises((OSError, KeyboardInterrupt)):
            getattr(model, method)(path)
        with pytest.raises((OSError, KeyboardInterrupt)):
            getattr(model, method)(tmp_path / "new.npz")

    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    assert path.read_bytes() == old
    pn.seed(3)
    reloaded = build()
    reloaded.load_parameters(path)  # the old file is still whole


@pytest.fixture
def umask():
    """Set the process umask for one test (it is process-wide), then restore it."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=oct)
def test_a_new_file_gets_the_mode_open_would_give_it(backend, tmp_path, umask, mask):
    umask(mask)
    model = pn.Model([pn.Dense(2, 3)])
    model.save(tmp_path / "model.npz")
    model.save_parameters(tmp_path / "params.npz")
    (tmp_path / "plain").write_bytes(b"")
    assert _mode(tmp_path / "plain") == 0o666 & ~mask
    assert _mode(tmp_path / "model.npz") == _mode(tmp_path / "params.npz") == 0o666 & ~mask


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o755], ids=oct)
def test_saving_over_a_file_keeps_its_mode(backend, tmp_path, umask, mode):
    umask(0o077)  # would give a new file 0o600
    path = tmp_path / "model.npz"
    path.write_bytes(b"an older file")
    os.chmod(path, mode)
    pn.Model([pn.Dense(2, 3)]).save(path)
    assert _mode(path) == mode
    pn.Model.load(path)


def _refusing_writes_in(folder, monkeypatch):
    """os.open refuses to create files in ``folder``, as a read-only folder would for a user
    who is not root (tests may run as root, whom permissions do not stop)."""
    real_open = os.open

    def fake_open(file, flags, *args, **kwargs):
        if os.path.dirname(os.fspath(file)) == str(folder):
            raise PermissionError(errno.EACCES, "Permission denied", file)
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def _folder(t):
    (t / "folder").mkdir()
    return t / "folder"


def _file_as_folder(t):
    (t / "notes.txt").write_text("a file")
    return t / "notes.txt" / "model.npz"


def _read_only_folder(t, monkeypatch):
    _refusing_writes_in(_folder(t), monkeypatch)
    return t / "folder" / "model.npz"


# (where to save, the error, what its message says besides the path)
SAVE_ERRORS = {
    "a folder": (lambda t, mp: _folder(t), IsADirectoryError, "it is a folder"),
    "a missing folder": (
        lambda t, mp: t / "missing" / "model.npz",
        FileNotFoundError,
        "does not exist; create it first",
    ),
    "a file as the folder": (lambda t, mp: _file_as_folder(t), NotADirectoryError, "is a file"),
    "a read-only folder": (_read_only_folder, PermissionError, "Permission denied"),
}


@pytest.mark.parametrize("method", ["save", "save_parameters"])
@pytest.mark.parametrize("case", list(SAVE_ERRORS))
def test_a_failed_save_names_the_path_asked_for(backend, tmp_path, monkeypatch, case, method):
    make, error, words = SAVE_ERRORS[case]
    path = make(tmp_path, monkeypatch)
    with pytest.raises(error) as caught:
        getattr(pn.Model([pn.Dense(2, 3)]), method)(path)
    message = str(caught.value)
    assert f"cannot save to {path}: " in message and words in message
    assert ".portnn-" not in message and ".tmp" not in message
    monkeypatch.undo()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".portnn-")]


def test_saving_over_a_file_replaces_it(backend, tmp_path):
    path = tmp_path / "model.npz"
    model = trained(epochs=1)
    model.save(path)
    model.train(*pn.datasets.spiral(20, 3), epochs=1, print_every=None)
    model.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    assert_parameters_equal(host_parameters(pn.Model.load(path)), host_parameters(model))


# --- file names -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["save", "save_parameters"])
@pytest.mark.parametrize("name", ["model.safetensors", "Model.SafeTensors"])
def test_a_safetensors_name_is_refused_and_nothing_is_written(backend, tmp_path, method, name):
    """safetensors cannot hold an optimizer, a loss or an accuracy, and every other tool would
    misread a zip under that name: the save points to interop instead of writing one."""
    model = trained(epochs=1)
    with pytest.raises(
        ValueError,
        match=rf"cannot save to .*{name}: model\.{method} writes portnn's \.npz format, not "
        r"safetensors; give a \.npz name, or .*portnn\.interop\.save_safetensors",
    ) as caught:
        getattr(model, method)(tmp_path / name)
    assert "\n" not in str(caught.value)
    assert os.listdir(tmp_path) == []
    (tmp_path / name).write_bytes(b"an older file")
    with pytest.raises(ValueError, match="portnn.interop.save_safetensors"):
        getattr(model, method)(str(tmp_path / name))
    assert (tmp_path / name).read_bytes() == b"an older file"


@pytest.mark.parametrize("name", ["model.npz", "model", "model.pt", "run.safetensors.npz"])
def test_a_file_is_saved_under_exactly_the_name_given(backend, tmp_path, name):
    model = trained(epochs=1)
    model.save(tmp_path / name)
    assert os.listdir(tmp_path) == [name]  # no .npz added, whatever the name
    assert_parameters_equal(host_parameters(pn.Model.load(tmp_path / name)), host_parameters(model))


def test_a_safetensors_file_is_refused_with_the_way_to_load_it(backend, tmp_path):
    pytest.importorskip("safetensors")
    from portnn import interop

    path = tmp_path / "model.safetensors"
    interop.save_safetensors(trained(epochs=1), path)
    match = r"model\.safetensors is a safetensors file, not a portnn file; load it with portnn\.i"
    with pytest.raises(ModelFileError, match=match):
        pn.Model.load(path)
    model = build()
    before = host_parameters(model)
    with pytest.raises(ModelFileError, match=match):
        model.load_parameters(path)
    assert_parameters_equal(host_parameters(model), before)


def test_a_portnn_file_under_a_safetensors_name_still_loads(backend, tmp_path):
    """What model.save wrote for such a name before it refused one: the contents decide."""
    model = trained(epochs=1)
    model.save(tmp_path / "model.npz")
    os.rename(tmp_path / "model.npz", tmp_path / "old.safetensors")
    loaded = pn.Model.load(tmp_path / "old.safetensors")
    assert_parameters_equal(host_parameters(loaded), host_parameters(model))


# --- across dtypes ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["save", "save_parameters"])
def test_a_float64_file_loads_into_a_float32_model_only_if_its_values_fit(
    backend_name, tmp_path, method
):
    with pn.use_backend(backend_name, dtype="float64"):
        wide = build()
    fits = host_parameters(wide)
    getattr(wide, method)(tmp_path / "fits.npz")
    wide.set_parameters([fits[0], (fits[1][0], np.full_like(fits[1][1], 1e300))])
    getattr(wide, method)(tmp_path / "huge.npz")

    with pn.use_backend(backend_name, dtype="float32"):
        model = build()
    before = host_parameters(model)
    with pytest.raises(
        ModelFileError,
        match=r"huge\.npz: layers/3/biases holds values beyond float32's range; load the file "
        r"into a float64 model",
    ):
        model.load_parameters(tmp_path / "huge.npz")
    assert_parameters_equal(host_parameters(model), before)

    model.load_parameters(tmp_path / "fits.npz")  # the control: values that fit are cast
    assert all(host(a).dtype == np.float32 for pair in model.get_parameters() for a in pair)
    expected = [(w.astype(np.float32), b.astype(np.float32)) for w, b in fits]
    assert_parameters_equal(host_parameters(model), expected)


def test_a_parameters_file_holds_its_own_dtype(backend, tmp_path):
    model = trained(epochs=1)
    model.save_parameters(tmp_path / "params.npz")
    good = (tmp_path / "params.npz").read_bytes()
    for edit, match in [
        (_set(["dtype"], "int8"), "unsupported dtype 'int8' in the header"),
        (
            _put("layers/0/weights", _like("layers/0/weights", np.float64)),
            "parameter layers/0/weights is float64, but its header says the file is float32",
        ),
    ]:
        (tmp_path / "bad.npz").write_bytes(_rewritten(good, edit))
        before = host_parameters(model)
        with pytest.raises(ModelFileError, match=match):
            model.load_parameters(tmp_path / "bad.npz")
        assert_parameters_equal(host_parameters(model), before)


# --- files that are not portnn files ----------------------------------------------------------


def _npz(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _header_array(header) -> np.ndarray:
    return np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


def _rewritten(good: bytes, edit) -> bytes:
    """A valid file with its header or arrays changed by ``edit(header, arrays)``."""
    with np.load(io.BytesIO(good)) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(arrays.pop(HEADER).tobytes())
    edit(header, arrays)
    return _npz({HEADER: _header_array(header), **arrays})


def _zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _set(path, value):
    def edit(header, arrays):
        *keys, last = path
        target = header
        for key in keys:
            target = target[key]
        target[last] = value

    return edit


def _put(key, value):
    """An edit that stores ``value`` (a function of the arrays) as the array ``key``."""
    return lambda header, arrays: arrays.update({key: value(arrays)})


def _like(key, dtype, fill=1):
    """The array ``key`` of the good file, as ``dtype`` and filled with ``fill``."""
    return lambda arrays: np.full(arrays[key].shape, fill, dtype=dtype)


def _with_nonfinite(key, value):
    def make(arrays):
        array = arrays[key].copy()
        array.flat[1] = value
        return array

    return make


def _no_layers(header, arrays):
    header["layers"] = []
    arrays.clear()


def _unchained(header, arrays):
    """Layer 3 (a Dense(16, 3)) rebuilt as a Dense(8, 3), its arrays and state to match."""
    header["layers"][3]["config"]["n_inputs"] = 8
    for key in [k for k in arrays if k.startswith(("layers/3/weights", "optimizer/3/weights"))]:
        arrays[key] = np.ones((8, 3), np.float32)


def _compressed(good: bytes) -> bytes:
    with np.load(io.BytesIO(good)) as archive:
        arrays = {key: archive[key] for key in archive.files}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _twice(good: bytes) -> bytes:
    """The good file with its first parameter stored again under the same name."""
    buffer = io.BytesIO(good)
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "a") as z:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate: the point here
        z.writestr("layers/0/weights.npy", _npy(np.zeros((2, 16), np.float32)))
    return buffer.getvalue()


def _member(name, change):
    """The good file with the member ``name`` (an array's name) replaced by
    ``change(its .npy bytes)``, the zip otherwise as np.savez lays it out."""

    def make(good: bytes) -> bytes:
        with zipfile.ZipFile(io.BytesIO(good)) as z:
            members = {info.filename: z.read(info) for info in z.infolist()}
        members[name + ".npy"] = change(members[name + ".npy"])
        return _zip(members)

    return make


# (how to make the bad file from a good one's bytes, what the message says, which loaders)
BOTH, MODEL = ("load", "load_parameters"), ("load",)
BAD_FILES = {
    "empty": (lambda good: b"", "not a readable portnn file", BOTH),
    "first byte": (lambda good: good[:1], "not a readable portnn file", BOTH),
    "first 30 bytes": (lambda good: good[:30], "not a readable portnn file", BOTH),
    "first half": (lambda good: good[: len(good) // 2], "not a readable portnn file", BOTH),
    "all but the last byte": (lambda good: good[:-1], "not a readable portnn file", BOTH),
    "random bytes": (
        lambda good: np.random.RandomState(0).bytes(2000),
        "not a readable portnn file",
        BOTH,
    ),
    "text": (lambda good: b'{"format": "portnn"}\n', "not a readable portnn file", BOTH),
    "a plain .npy": (lambda good: _npy(np.ones((2, 16))), "single NumPy array", BOTH),
    "an npz without a header": (
        lambda good: _npz({"layers/0/weights": np.ones((2, 16))}),
        "without a portnn header",
        BOTH,
    ),
    "metadata that is not a dict": (
        lambda good: _rewritten(good, _set(["metadata"], ["spiral"])),
        "metadata must be a dict of str keys",
        MODEL,
    ),
    "metadata holding a list": (
        lambda good: _rewritten(good, _set(["metadata"], {"dataset": ["spiral"]})),
        "metadata must be a dict of str keys",
        MODEL,
    ),
    "a zip of other files": (
        lambda good: _zip({"readme.txt": b"hello", "data.csv": b"1,2\n"}),
        "zip archive but not a portnn file",
        BOTH,
    ),
    "a zip with a raw header entry": (
        lambda good: _zip({HEADER: json.dumps({"format": "portnn", "version": 1}).encode()}),
        r"zip archive but not a portnn file: \['__portnn__'\] are not arrays",
        BOTH,
    ),
    "a header that is not JSON": (
        lambda good: _npz({HEADER: np.frombuffer(b"\xff{not json", dtype=np.uint8)}),
        "corrupt portnn header",
        BOTH,
    ),
    "a header of the wrong dtype": (
        lambda good: _npz({HEADER: np.arange(3.0)}),
        "without a portnn header",
        BOTH,
    ),
    "another format's header": (
        lambda good: _npz({HEADER: _header_array({"format": "keras", "version": 1})}),
        "not a portnn file",
        BOTH,
    ),
    "a newer format version": (
        lambda good: _rewritten(good, _set(["version"], VERSION + 1)),
        rf"version {VERSION + 1}, newer than this portnn reads.*upgrade portnn",
        BOTH,
    ),
    "a version that is not a number": (
        lambda good: _rewritten(good, _set(["version"], "1")),
        "invalid format version",
        BOTH,
    ),
    "a parameter of the wrong shape": (
        lambda good: _rewritten(
            good, lambda h, a: a.update({"layers/0/weights": np.ones((3, 16), np.float32)})
        ),
        r"layers/0/weights has shape \(3, 16\)",
        BOTH,
    ),
    "integer parameters": (
        lambda good: _rewritten(
            good, lambda h, a: a.update({"layers/0/weights": np.ones((2, 16), np.int64)})
        ),
        "needs",
        BOTH,
    ),
    "a missing parameter": (
        lambda good: _rewritten(good, lambda h, a: a.pop("layers/3/biases")),
        "holds parameters",
        BOTH,
    ),
    "an unknown layer class": (
        lambda good: _rewritten(good, _set(["layers", 1, "class"], "posix.system")),
        "unknown or malformed layer",
        MODEL,
    ),
    "a layer config with a foreign argument": (
        lambda good: _rewritten(good, _set(["layers", 1, "config"], {"command": "rm -rf /"})),
        "cannot be rebuilt",
        MODEL,
    ),
    "an unknown optimizer": (
        lambda good: _rewritten(good, _set(["optimizer", "class"], "builtins.eval")),
        "unknown or malformed optimizer",
        MODEL,
    ),
    "an unsupported dtype": (
        lambda good: _rewritten(good, _set(["dtype"], "int8")),
        "unsupported dtype",
        MODEL,
    ),
    "no layer list": (
        lambda good: _rewritten(good, lambda h, a: h.pop("layers")),
        "cannot be rebuilt",
        MODEL,
    ),
    "optimizer state of the wrong shape": (
        lambda good: _rewritten(
            good,
            lambda h, a: a.update({"optimizer/0/weights/cache": np.ones((5,), np.float32)}),
        ),
        "optimizer state",
        MODEL,
    ),
    # Arrays must be real float16/32/64 and finite, state included (issue 10).
    "integer optimizer state": (
        lambda good: _rewritten(
            good, _put("optimizer/0/weights/cache", _like("optimizer/0/weights/cache", np.int64))
        ),
        r"optimizer state optimizer/0/weights/cache .* dtype int64; it needs",
        BOTH,
    ),
    "complex optimizer state": (
        lambda good: _rewritten(
            good, _put("optimizer/3/biases/momentum", _like("layers/3/biases", np.complex64))
        ),
        "dtype complex64; it needs",
        BOTH,
    ),
    "string optimizer state": (
        lambda good: _rewritten(
            good, _put("optimizer/0/weights/cache", _like("layers/0/weights", "<U3", "abc"))
        ),
        "dtype <U3; it needs",
        BOTH,
    ),
    "float128 parameters": (
        lambda good: _rewritten(
            good, _put("layers/0/weights", _like("layers/0/weights", np.longdouble))
        ),
        r"dtype float\d+; it needs .*a real float dtype \(float16, float32, float64\)",
        BOTH,
    ),
    "float128 optimizer state": (
        lambda good: _rewritten(
            good, _put("optimizer/3/weights/cache", _like("layers/3/weights", np.longdouble))
        ),
        "it needs",
        BOTH,
    ),
    "a NaN parameter": (
        lambda good: _rewritten(
            good, _put("layers/3/weights", _with_nonfinite("layers/3/weights", np.nan))
        ),
        "layers/3/weights holds NaN or infinite values",
        BOTH,
    ),
    "infinite optimizer state": (
        lambda good: _rewritten(
            good,
            _put("optimizer/0/biases/momentum", _with_nonfinite("layers/0/biases", -np.inf)),
        ),
        "optimizer/0/biases/momentum holds NaN or infinite values",
        BOTH,
    ),
    "a negative squared-gradient cache": (
        lambda good: _rewritten(
            good, _put("optimizer/0/weights/cache", _like("layers/0/weights", np.float32, -1))
        ),
        "optimizer/0/weights/cache holds negative values",
        BOTH,
    ),
    # Only the arrays the header describes, under their one spelling (issue 10).
    "a negative layer index": (
        lambda good: _rewritten(
            good, _put("optimizer/-2/weights/cache", lambda a: a["optimizer/3/weights/cache"])
        ),
        r"holds arrays its header does not describe: \['optimizer/-2/weights/cache'\]",
        BOTH,
    ),
    "a layer index with a leading zero": (
        lambda good: _rewritten(
            good, _put("optimizer/03/weights/cache", lambda a: a["optimizer/3/weights/cache"])
        ),
        r"does not describe: \['optimizer/03/weights/cache'\]",
        BOTH,
    ),
    "an array of no layer": (
        lambda good: _rewritten(good, _put("evil", lambda a: np.ones(3))),
        r"does not describe: \['evil'\]",
        BOTH,
    ),
    "a member stored twice": (_twice, "holds a member twice", BOTH),
    # A member holds what its .npy header implies, no more and no less: NumPy's reader would
    # ignore what follows the data.
    "zeros after a member's data": (
        _member("layers/3/weights", lambda npy: npy + bytes(8)),
        r"is corrupt: layers/3/weights declares 320 bytes, the zip 328",
        BOTH,
    ),
    "an array after a member's data": (
        _member("optimizer/0/biases/cache", lambda npy: npy + _npy(np.ones(16, np.float32))),
        r"is corrupt: optimizer/0/biases/cache declares \d+ bytes, the zip \d+",
        BOTH,
    ),
    "one float short in a member": (
        _member("layers/0/biases", lambda npy: npy[:-4]),
        r"is corrupt: layers/0/biases declares \d+ bytes, the zip \d+",
        BOTH,
    ),
    # Every array is in the header's dtype, as portnn writes them: a float64 array in a
    # float32 file would otherwise be cast, 1e300 to inf.
    "a float64 parameter in a float32 file": (
        lambda good: _rewritten(
            good, _put("layers/0/weights", _like("layers/0/weights", np.float64, 1e300))
        ),
        r"is corrupt: parameter layers/0/weights is float64, but its header says the file is "
        "float32",
        BOTH,
    ),
    "float16 optimizer state in a float32 file": (
        lambda good: _rewritten(
            good, _put("optimizer/3/biases/cache", _like("layers/3/biases", np.float16))
        ),
        "optimizer state optimizer/3/biases/cache is float16, but its header says",
        BOTH,
    ),
    "compressed arrays": (_compressed, "are compressed; portnn files hold arrays uncompr", BOTH),
    # The header's values are checked before anything is built (issue 10).
    "negative iterations": (
        lambda good: _rewritten(good, _set(["optimizer", "iterations"], -5)),
        "iterations must be a non-negative integer, got -5",
        BOTH,
    ),
    "boolean iterations": (
        lambda good: _rewritten(good, _set(["optimizer", "iterations"], True)),
        "iterations must be a non-negative integer, got True",
        BOTH,
    ),
    "fractional iterations": (
        lambda good: _rewritten(good, _set(["optimizer", "iterations"], 2.5)),
        "iterations must be a non-negative integer",
        BOTH,
    ),
    "a NaN learning rate": (
        lambda good: _rewritten(good, _set(["optimizer", "current_learning_rate"], float("nan"))),
        "current_learning_rate must be a finite positive number, got nan",
        BOTH,
    ),
    "an infinite learning rate": (
        lambda good: _rewritten(good, _set(["optimizer", "current_learning_rate"], float("inf"))),
        "current_learning_rate must be a finite positive number",
        BOTH,
    ),
    "a zero learning rate": (
        lambda good: _rewritten(good, _set(["optimizer", "current_learning_rate"], 0.0)),
        "current_learning_rate must be a finite positive number",
        BOTH,
    ),
    "a learning rate in a string": (
        lambda good: _rewritten(good, _set(["optimizer", "current_learning_rate"], "0.02")),
        "current_learning_rate must be a finite positive number, got '0.02'",
        BOTH,
    ),
    "a layer config that is not a dict": (
        lambda good: _rewritten(good, _set(["layers", 1, "config"], [])),
        "the layer ReLU has no config dict",
        BOTH,
    ),
    "a loss config that is not a dict": (
        lambda good: _rewritten(good, _set(["loss", "config"], [])),
        "the loss CategoricalCrossentropy has no config dict",
        BOTH,
    ),
    "no layers": (lambda good: _rewritten(good, _no_layers), "no layers", BOTH),
    "layer sizes that do not chain": (
        lambda good: _rewritten(good, _unchained),
        "cannot be rebuilt: layer sizes do not chain",
        MODEL,
    ),
    "a header nested too deeply": (
        lambda good: _npz({HEADER: np.frombuffer(b"[" * 100_000, dtype=np.uint8)}),
        "corrupt portnn header",
        BOTH,
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_raises_model_file_error_and_changes_nothing(backend, tmp_path, case):
    make, match, loaders = BAD_FILES[case]
    good_path = tmp_path / "good.npz"
    trained(epochs=2).save(good_path)
    bad_path = tmp_path / "bad.npz"
    bad_path.write_bytes(make(good_path.read_bytes()))

    with pytest.raises(ModelFileError, match=match) as caught:
        pn.Model.load(bad_path)
    assert isinstance(caught.value, ValueError)
    assert "bad.npz" in str(caught.value)  # the message names the file

    model = build()
    before = host_parameters(model)
    if "load_parameters" in loaders:
        with pytest.raises(ModelFileError, match=match):
            model.load_parameters(bad_path)
    assert_parameters_equal(host_parameters(model), before)


def test_a_missing_file_raises_file_not_found(backend, tmp_path):
    with pytest.raises(FileNotFoundError):
        pn.Model.load(tmp_path / "nothing.npz")


# --- hostile files: refused before anything large is read or built ---------------------------


def _dense_header(*sizes) -> dict:
    """A model header for Dense layers of these ``(n_inputs, n_neurons)``."""
    dense = [{"class": "Dense", "config": {"n_inputs": i, "n_neurons": o}} for i, o in sizes]
    return {"format": "portnn", "version": VERSION, "kind": "model", "dtype": "float32",
            "layers": dense, "loss": None, "accuracy": None, "optimizer": None}  # fmt: skip


def _npy_header(shape, dtype="<f4") -> bytes:
    """Only the .npy header of an array: what a member declares, without the data."""
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _archive(header, members, compress=zipfile.ZIP_STORED) -> bytes:
    """A portnn-like archive built by hand: ``members`` maps array names to .npy bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(HEADER + ".npy", _npy(_header_array(header)))
        for name, data in members.items():
            z.writestr(name + ".npy", data, compress_type=compress)
    return buffer.getvalue()


def _small(shape):
    return _npy(np.ones(shape, np.float32))


def _zeros_deflated(header, shapes) -> bytes:
    """A zip bomb in miniature: megabytes of zeros, deflated to a few kilobytes."""
    members = {name: _npy(np.zeros(shape, np.float32)) for name, shape in shapes.items()}
    return _archive(header, members, compress=zipfile.ZIP_DEFLATED)


# Each file is a few kilobytes on disk; the message is what loading it says.
HOSTILE_FILES = {
    "a 20000x20000 Dense with small arrays": (
        lambda: _archive(
            _dense_header((20_000, 20_000)),
            {"layers/0/weights": _small((2, 3)), "layers/0/biases": _small((1, 3))},
        ),
        r"layers/0/weights has shape \(2, 3\).*needs shape \(20000, 20000\)",
    ),
    "a 100000x100000 Dense without arrays": (
        lambda: _archive(_dense_header((100_000, 100_000)), {}),
        r"holds parameters \[\] but its header describes",
    ),
    ".npy headers declaring the huge arrays, without their data": (
        lambda: _archive(
            _dense_header((20_000, 20_000)),
            {
                "layers/0/weights": _npy_header((20_000, 20_000)),
                "layers/0/biases": _npy_header((1, 20_000)),
            },
        ),
        r"is corrupt: layers/0/\w+ declares \d+ bytes, the zip \d+",
    ),
    "a tiny member declaring shape (1e12,)": (
        lambda: _archive(
            _dense_header((2, 3)),
            {"layers/0/weights": _npy_header((10**12,)), "layers/0/biases": _small((1, 3))},
        ),
        r"layers/0/weights has shape \(1000000000000,\)",
    ),
    "a zip bomb of the arrays the header describes": (
        lambda: _zeros_deflated(
            _dense_header((1000, 2000)),
            {"layers/0/weights": (1000, 2000), "layers/0/biases": (1, 2000)},
        ),
        "are compressed",
    ),
    "a zip bomb beside no layers": (
        lambda: _zeros_deflated(_dense_header(), {"junk": (2000, 1000)}),
        "are compressed",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_a_hostile_file_is_refused_quickly_in_little_memory(backend, tmp_path, case):
    make, match = HOSTILE_FILES[case]
    path = tmp_path / "hostile.npz"
    path.write_bytes(make())
    assert path.stat().st_size < 50_000

    model = pn.Model([pn.Dense(2, 3)])
    for load, message in ((pn.Model.load, match), (model.load_parameters, None)):
        tracemalloc.start()
        start = time.perf_counter()
        try:
            with pytest.raises(ModelFileError, match=message):
                load(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # The bug took 20 s and gigabytes; a refusal takes milliseconds and kilobytes.
        assert time.perf_counter() - start < 5
        assert peak < 2 * 2**20, f"loading peaked at {peak / 2**20:.1f} MiB"


def test_the_header_is_read_only_up_to_a_cap(backend, tmp_path, monkeypatch):
    """A header over the cap is refused from the zip's directory, before it is read (the cap
    is lowered here so that the file stays small)."""
    from portnn import _npz

    assert 2**20 <= _npz.MAX_HEADER_BYTES <= 16 * 2**20  # far above any real header
    monkeypatch.setattr(_npz, "MAX_HEADER_BYTES", 10_000)
    header = {**_dense_header((2, 3)), "padding": " " * 20_000}
    path = tmp_path / "big-header.npz"
    path.write_bytes(
        _archive(header, {"layers/0/weights": _small((2, 3)), "layers/0/biases": _small((1, 3))})
    )
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match=r"header is \d+ bytes, more than .* \(10000\)"):
            pn.Model.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000


# --- pickles never run ------------------------------------------------------------------------


def _leave_a_mark(path):
    Path(path).write_text("this code ran")
    return "unpickled"


class Payload:
    """An object whose unpickling calls ``_leave_a_mark``: proof of whether a file ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return _leave_a_mark, (self.marker,)


def test_the_payload_runs_when_unpickled(tmp_path):
    """The control: the payload the next test hides in files does run code when unpickled."""
    marker = tmp_path / "ran"
    assert pickle.loads(pickle.dumps(Payload(marker))) == "unpickled"
    assert marker.exists()
    marker.unlink()
    np.savez(tmp_path / "objects.npz", x=np.array([Payload(marker)], dtype=object))
    with np.load(tmp_path / "objects.npz", allow_pickle=True) as archive:
        archive["x"]
    assert marker.exists()


def _raw_pickle(marker, header):
    return pickle.dumps({"model": Payload(marker)})


def _pickled_like_the_book(marker, header):
    return pickle.dumps(Payload(marker), protocol=pickle.HIGHEST_PROTOCOL)


def _object_array_in_npz(marker, header):
    return _npz(
        {HEADER: _header_array(header), "layers/0/weights": np.array([Payload(marker)], object)}
    )


def _object_header_in_npz(marker, header):
    return _npz({HEADER: np.array([Payload(marker)], object)})


def _pickled_npy(marker, header):
    return _npy(np.array([Payload(marker)], dtype=object))


@pytest.mark.parametrize(
    "make",
    [
        _raw_pickle,
        _pickled_like_the_book,
        _object_array_in_npz,
        _object_header_in_npz,
        _pickled_npy,
    ],
)
def test_a_file_carrying_a_pickle_raises_and_runs_nothing(backend, tmp_path, make):
    good = tmp_path / "good.npz"
    trained(epochs=1).save(good)
    with np.load(good) as archive:
        header = json.loads(archive[HEADER].tobytes())
    marker = tmp_path / "ran"
    path = tmp_path / "evil.npz"
    path.write_bytes(make(marker, header))

    with pytest.raises(ModelFileError, match="evil.npz") as caught:
        pn.Model.load(path)
    assert "pickle" in str(caught.value) or "single NumPy array" in str(caught.value)
    model = build()
    before = host_parameters(model)
    with pytest.raises(ModelFileError):
        model.load_parameters(path)
    assert_parameters_equal(host_parameters(model), before)
    assert not marker.exists()
