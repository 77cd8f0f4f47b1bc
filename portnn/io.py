"""Saving and loading, safely and across backends.

A portnn file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays) holding
- ``__portnn__``: a JSON header as UTF-8 bytes: ``{"format": "portnn", "version": 1,
  "kind": "model" | "parameters", "dtype": ..., "layers": [{"class", "config"}...],
  "loss", "accuracy", "optimizer": {"class", "config", "iterations",
  "current_learning_rate"}}`` (loss, accuracy and optimizer are null when unset);
- ``layers/<i>/<name>``: parameter ``name`` of layer ``i`` (``weights``, ``biases``);
- ``optimizer/<i>/<name>/<field>``: the optimizer's state for that parameter.

Arrays are stored on the host, so any backend reads what any other wrote. Loading uses
``allow_pickle=False`` and builds objects only from the classes listed below, so a file can
never run code. Writes go to a temporary file that replaces the target only once complete.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import os
import tempfile
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np

from . import activations, layers, losses, metrics, optimizers, random
from .backend import DTYPES, Backend, get_backend, to_numpy

if TYPE_CHECKING:
    from .model import Model

FORMAT = "portnn"
VERSION = 1
HEADER = "__portnn__"


def _by_name(*classes: type) -> dict[str, type]:
    return {c.__name__: c for c in classes}


# The only classes a file may name: loading builds these and nothing else.
_LAYERS = _by_name(
    layers.Dense,
    layers.Dropout,
    layers.Input,
    activations.ReLU,
    activations.Softmax,
    activations.Sigmoid,
    activations.Linear,
    activations.Tanh,
    activations.LeakyReLU,
)
_LOSSES = _by_name(
    losses.CategoricalCrossentropy,
    losses.BinaryCrossentropy,
    losses.MeanSquaredError,
    losses.MeanAbsoluteError,
    losses.SoftmaxCategoricalCrossentropy,
)
_ACCURACIES = _by_name(
    metrics.CategoricalAccuracy, metrics.BinaryAccuracy, metrics.RegressionAccuracy
)
_OPTIMIZERS = _by_name(optimizers.SGD, optimizers.Adagrad, optimizers.RMSprop, optimizers.Adam)


class ModelFileError(ValueError):
    """A file that is not a readable portnn file: corrupt, truncated, foreign or too new."""


# --- writing --------------------------------------------------------------------------------
def _write(path: str | os.PathLike, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a temporary file in the same folder, then one rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    payload = {HEADER: np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    payload.update(arrays)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".portnn-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _described(obj: Any, registry: dict) -> dict | None:
    if obj is None:
        return None
    cls = type(obj)
    if cls.__module__ == "portnn.nnfs":  # the book's names save as the classes they adapt
        cls = next(c for c in cls.__mro__ if registry.get(c.__name__) is c)
    if registry.get(cls.__name__) is not cls:
        raise TypeError(f"cannot save a {cls.__name__}: only portnn's own classes can be saved")
    return {"class": cls.__name__, "config": obj.get_config()}


def _parameters(model: Model) -> dict[str, np.ndarray]:
    return {
        f"layers/{i}/{name}": to_numpy(getattr(layer, name))
        for i, layer in enumerate(model.layers)
        for name in layer.param_names
    }


def save_parameters(model: Model, path: str | os.PathLike) -> None:
    header = {"format": FORMAT, "version": VERSION, "kind": "parameters"}
    header["dtype"] = model.backend.dtype_name
    _write(path, header, _parameters(model))


def save_model(model: Model, path: str | os.PathLike) -> None:
    arrays = _parameters(model)
    opt = model.optimizer
    optimizer = _described(opt, _OPTIMIZERS)
    if opt is not None:
        optimizer["iterations"] = opt.iterations
        optimizer["current_learning_rate"] = opt.current_learning_rate
        index = {id(layer): i for i, layer in enumerate(model.layers)}
        for layer, states in opt.state.items():
            if id(layer) not in index:
                continue  # a layer the optimizer stepped that is not part of this model
            for name, state in states.items():
                for field, value in zip(getattr(state, "_fields", ()), state or (), strict=True):
                    arrays[f"optimizer/{index[id(layer)]}/{name}/{field}"] = to_numpy(value)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "model",
        "dtype": model.backend.dtype_name,
        "layers": [_described(layer, _LAYERS) for layer in model.layers],
        "loss": _described(model.loss, _LOSSES),
        "accuracy": _described(model.accuracy, _ACCURACIES),
        "optimizer": optimizer,
    }
    _write(path, header, arrays)


# --- reading --------------------------------------------------------------------------------
def _read(path: str | os.PathLike, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and check the whole file before anything is built from it."""
    path = os.fspath(path)
    with open(path, "rb") as f:  # FileNotFoundError passes through as itself
        data = f.read()
    try:
        archive = np.load(_io.BytesIO(data), allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a plain .npy has no `with`
            raise ModelFileError(f"{path} is a single NumPy array, not a portnn file")
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except ModelFileError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(
            f"{path} is not a readable portnn file (truncated, corrupt, or another format; "
            f"portnn never unpickles): {exc}"
        ) from exc
    # NpzFile hands back a member that is not a .npy as raw bytes: a zip, but not ours.
    odd = sorted(key for key, value in arrays.items() if not isinstance(value, np.ndarray))
    if odd:
        raise ModelFileError(f"{path} is a zip archive but not a portnn file: {odd} are not arrays")
    raw = arrays.pop(HEADER, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(f"{path} is a NumPy archive without a portnn header")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} has a corrupt portnn header: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a portnn file (its header names no portnn format)")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path} has an invalid format version {version!r}")
    if version > VERSION:
        raise ModelFileError(
            f"{path} was written in portnn file format version {version}, newer than this "
            f"portnn reads (up to {VERSION}); upgrade portnn to read it"
        )
    if kind == "model" and header.get("kind") != "model":
        raise ModelFileError(
            f"{path} holds {header.get('kind')!r}, not a whole model; "
            "load it into a built model with model.load_parameters(path)"
        )
    return header, arrays


def _build(described: dict | None, registry: dict, what: str, path: str) -> Any:
    if described is None:
        return None
    try:
        cls = registry[described["class"]]
        return cls, dict(described["config"])
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: unknown or malformed {what} {described!r}") from exc


def _assign(model: Model, arrays: dict[str, np.ndarray], path: str) -> None:
    """Check every parameter against the model, then set them all (all or nothing)."""
    expected = {
        f"layers/{i}/{name}": (layer, name)
        for i, layer in enumerate(model.layers)
        for name in layer.param_names
    }
    found = {key for key in arrays if key.startswith("layers/")}
    if found != set(expected):
        raise ModelFileError(
            f"{path} holds parameters {sorted(found)} but the model has {sorted(expected)}"
        )
    b = model.backend
    moved = {}
    for key, (layer, name) in expected.items():
        value = arrays[key]
        want = tuple(getattr(layer, name).shape)
        if value.shape != want or value.dtype.kind != "f":
            raise ModelFileError(
                f"{path}: {key} has shape {value.shape} and dtype {value.dtype}, "
                f"the model needs {want} floats"
            )
        moved[key] = b.asarray(value)
    for key, (layer, name) in expected.items():
        setattr(layer, name, moved[key])


def load_parameters(model: Model, path: str | os.PathLike) -> None:
    _, arrays = _read(path, "parameters")
    _assign(model, arrays, os.fspath(path))


def load_model(path: str | os.PathLike, backend: str | Backend | None = None) -> Model:
    from .model import Model

    path = os.fspath(path)
    header, arrays = _read(path, "model")
    dtype = header.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ModelFileError(f"{path}: unsupported dtype {dtype!r} in the header")
    target = get_backend(backend, dtype)
    try:
        with random.kept_state():
            built = []
            for described in header["layers"]:
                cls, config = _build(described, _LAYERS, "layer", path)
                if cls is layers.Dense:
                    config["backend"] = target
                built.append(cls(**config))
            model = Model(built)
            loss = _build(header.get("loss"), _LOSSES, "loss", path)
            accuracy = _build(header.get("accuracy"), _ACCURACIES, "accuracy", path)
            opt = _build(header.get("optimizer"), _OPTIMIZERS, "optimizer", path)
            model.set(
                loss=loss and loss[0](**loss[1]),
                accuracy=accuracy and accuracy[0](**accuracy[1]),
                optimizer=opt and opt[0](**opt[1]),
            )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path}: the saved architecture cannot be rebuilt: {exc}") from exc
    _assign(model, {k: v for k, v in arrays.items() if k.startswith("layers/")}, path)
    if model.optimizer is not None:
        _restore_optimizer(model, header["optimizer"], arrays, target, path)
    return model


def _restore_optimizer(model: Model, described: dict, arrays: dict, target: Backend, path: str):
    opt = model.optimizer
    try:
        opt.iterations = int(described["iterations"])
        opt.current_learning_rate = float(described["current_learning_rate"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: malformed optimizer step count: {exc}") from exc
    state_type = opt.State
    states: dict = {}
    for key, value in arrays.items():
        if not key.startswith("optimizer/"):
            continue
        try:
            _, i, name, field = key.split("/")
            layer = model.layers[int(i)]
            if name not in layer.param_names or state_type is None:
                raise ValueError(key)
            if field not in state_type._fields:
                raise ValueError(field)
            if value.shape != tuple(getattr(layer, name).shape):
                raise ValueError(f"{key} has shape {value.shape}")
        except (ValueError, IndexError) as exc:
            raise ModelFileError(f"{path}: optimizer state {key!r} does not fit: {exc}") from exc
        states.setdefault(layer, {}).setdefault(name, {})[field] = target.asarray(value)
    for layer, by_name in states.items():
        for name, fields in by_name.items():
            if set(fields) != set(state_type._fields):
                raise ModelFileError(f"{path}: incomplete optimizer state for {name}")
            opt.state.setdefault(layer, {})[name] = state_type(**fields)
