"""Saving and loading: portable across backends, atomic, and safe against files that are
truncated, foreign, too new or carrying pickled objects (which must never run)."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_parameters_equal, host, host_parameters

import portnn as pn
from portnn.backend import library_of
from portnn.io import HEADER, VERSION, ModelFileError

CPU_BACKENDS = [b for b in ("numpy", "array_api_strict", "torch") if b in pn.available_backends()]


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


def test_saving_over_a_file_replaces_it(backend, tmp_path):
    path = tmp_path / "model.npz"
    model = trained(epochs=1)
    model.save(path)
    model.train(*pn.datasets.spiral(20, 3), epochs=1, print_every=None)
    model.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    assert_parameters_equal(host_parameters(pn.Model.load(path)), host_parameters(model))


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
