"""Saving and loading, safely and across backends.

A portnn file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays) holding
- ``__portnn__``: a JSON header as UTF-8 bytes: ``{"format": "portnn", "version": 1,
  "kind": "model" | "parameters", "dtype": ..., "layers": [{"class", "config"}...],
  "loss", "accuracy", "optimizer": {"class", "config", "iterations",
  "current_learning_rate"}}`` (loss, accuracy and optimizer are null when unset);
- ``layers/<i>/<name>``: parameter ``name`` of layer ``i`` (``weights``, ``biases``), or its
  state (``running_mean``, ``running_var``: a layer's ``state_names``);
- ``optimizer/<i>/<name>/<field>``: the optimizer's state for that parameter.

Arrays are stored on the host, uncompressed, in the header's dtype (a file holding another
is refused as corrupt), so any backend reads what any other wrote. The name is the caller's,
kept as given (no suffix is added), except that a ``.safetensors`` name is refused: that
format is ``portnn.interop``'s, and cannot hold an optimizer, a loss or an accuracy.

Loading never unpickles and builds objects only from the classes listed below, so a file can
never run code; it checks the header, then every array's name, shape and dtype against the
architecture the header describes, before reading any array or building any layer, so a
hostile file cannot make it allocate much more than the file's size (``_npz.py`` reads the
archive). Writes go to a temporary file that replaces the target only once complete.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import (
    _npz,
    activations,
    conv,
    layers,
    losses,
    metrics,
    normalization,
    optimizers,
    random,
    schedules,
)
from ._npz import FORMAT, VERSION, ModelFileError
from ._npz import HEADER as HEADER
from .backend import DTYPES, Backend, get_backend, to_numpy

if TYPE_CHECKING:
    from .model import Model


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
    conv.Conv2D,
    conv.MaxPool2D,
    conv.AveragePool2D,
    conv.Flatten,
    normalization.BatchNormalization,
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


# --- writing --------------------------------------------------------------------------------
def _described(obj: Any, registry: dict) -> dict | None:
    if obj is None:
        return None
    cls = type(obj)
    if cls.__module__ == "portnn.nnfs":  # the book's names save as the classes they adapt
        cls = next(c for c in cls.__mro__ if registry.get(c.__name__) is c)
    if registry.get(cls.__name__) is not cls:
        raise TypeError(f"cannot save a {cls.__name__}: only portnn's own classes can be saved")
    return {"class": cls.__name__, "config": obj.get_config()}


def _arrays(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of a state dict, on the host (its numbers go in the header)."""
    return {key: to_numpy(value) for key, value in state.items() if not _is_number(value)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def save_parameters(model: Model, path: str | os.PathLike) -> None:
    path = _npz.checked_name(path, "model.save_parameters")
    header = {"format": FORMAT, "version": VERSION, "kind": "parameters"}
    header["dtype"] = model.backend.dtype_name
    parameters = {k: v for k, v in model.state_dict().items() if k.startswith("layers/")}
    _npz.write(path, header, _arrays(parameters))


def save_model(model: Model, path: str | os.PathLike) -> None:
    path = _npz.checked_name(path, "model.save")
    state = model.state_dict()
    optimizer = _described(model.optimizer, _OPTIMIZERS)
    if optimizer is not None:
        schedule = optimizer["config"].get("schedule")
        if schedule is not None:
            optimizer["config"]["schedule"] = _described(schedule, schedules.SCHEDULES)
        optimizer["iterations"] = state["optimizer/iterations"]
        optimizer["current_learning_rate"] = state["optimizer/current_learning_rate"]
    header = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "model",
        "dtype": model.backend.dtype_name,
        "layers": [_described(layer, _LAYERS) for layer in model.layers],
        "loss": _described(model.loss, _LOSSES),
        "accuracy": _described(model.accuracy, _ACCURACIES),
        "optimizer": optimizer,
        "metadata": _metadata(model.metadata, "model.metadata", ValueError),
    }
    _npz.write(path, header, _arrays(state))


def _metadata(value: Any, where: str, error: type[Exception]) -> dict:
    """``model.metadata`` checked: a dict of str keys and JSON scalars, kept as it is."""
    scalars = (str, int, float, bool, type(None))
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, scalars) for k, v in value.items()
    ):
        raise error(
            f"{where} must be a dict of str keys and str, int, float, bool or None values, "
            f"got {_npz.short(value)}"
        )
    return dict(value)


# --- reading --------------------------------------------------------------------------------
@dataclass
class _Saved:
    """A model file's header, checked: what to build, and every array the file may hold."""

    dtype: str
    layers: list[tuple[type, dict]]  # built only once the arrays are known to fit them
    loss: Any
    accuracy: Any
    optimizer: optimizers.Optimizer | None
    shapes: dict[str, tuple[int, ...]]


def _saved(header: dict, path: str) -> _Saved:
    dtype, specs = _architecture({"dtype": "float32", **header}, path, "header")  # the default
    shapes = {
        f"layers/{i}/{name}": shape
        for i, (cls, config) in enumerate(specs)
        for name, shape in _parameter_shapes(cls, config, i, path).items()
    }
    with _rebuilding(path):
        loss = _built(header.get("loss"), _LOSSES, "loss", path)
        accuracy = _built(header.get("accuracy"), _ACCURACIES, "accuracy", path)
        optimizer = _built(header.get("optimizer"), _OPTIMIZERS, "optimizer", path)
    if optimizer is not None:
        _set_step_count(optimizer, header["optimizer"], path)
        fields = optimizer.State._fields if optimizer.State is not None else ()
        for key, shape in list(shapes.items()):
            i, name = key.split("/")[1:]
            if name not in specs[int(i)][0].state_names:  # running statistics: no optimizer
                shapes.update({f"optimizer/{i}/{name}/{field}": shape for field in fields})
    return _Saved(dtype, specs, loss, accuracy, optimizer, shapes)


def _architecture(header: dict, path: str, where: str) -> tuple[str, list[tuple[type, dict]]]:
    """The dtype and the layers (class, config) that a portnn header names, checked; ``where``
    says what the file calls the header (``interop`` reads its metadata with this too)."""
    dtype = _dtype(header, path, where)
    described = header.get("layers")
    if not isinstance(described, list) or not described:
        raise ModelFileError(f"{path}: the saved architecture cannot be rebuilt: no layers")
    return dtype, [_spec(d, _LAYERS, "layer", path) for d in described]


def _dtype(header: dict, path: str, where: str) -> str:
    dtype = header.get("dtype")
    if dtype not in DTYPES:
        raise ModelFileError(f"{path}: unsupported dtype {_npz.short(dtype)} in the {where}")
    return dtype


def _rebuilding(path: str) -> contextlib.AbstractContextManager[None]:
    """What a constructor refuses in a header's configs, as a ModelFileError naming the file."""
    return _npz.translated(
        f"{path}: the saved architecture cannot be rebuilt", TypeError, ValueError
    )


def _spec(described: Any, registry: dict, what: str, path: str) -> tuple[type, dict]:
    name = described.get("class") if isinstance(described, dict) else None
    if not isinstance(name, str) or name not in registry:
        raise ModelFileError(f"{path}: unknown or malformed {what} {_npz.short(described)}")
    if not isinstance(described.get("config"), dict):
        raise ModelFileError(f"{path}: the {what} {name} has no config dict")
    return registry[name], dict(described["config"])


def _built(described: Any, registry: dict, what: str, path: str) -> Any:
    if described is None:
        return None
    cls, config = _spec(described, registry, what, path)
    if registry is _OPTIMIZERS and config.get("schedule") is not None:
        config["schedule"] = _built(config["schedule"], schedules.SCHEDULES, "schedule", path)
    return cls(**config)


def _parameter_shapes(cls: type, config: dict, i: int, path: str) -> dict[str, tuple]:
    """The shapes a layer's config implies, known before the layer is built: Dense draws its
    initial weights when built, so a header alone could otherwise make loading allocate
    gigabytes."""
    try:
        return cls.parameter_shapes(config)
    except ValueError as exc:
        raise ModelFileError(
            f"{path}: the saved architecture cannot be rebuilt: layer {i} is {exc}"
        ) from None


def _set_step_count(opt: optimizers.Optimizer, described: dict, path: str) -> None:
    iterations = described.get("iterations")
    rate = described.get("current_learning_rate")
    # type() rules out bool; 2**53 bounds what Adam can raise its betas to as a float.
    if type(iterations) is not int or not 0 <= iterations < 2**53:
        raise ModelFileError(
            f"{path}: the optimizer's iterations must be a non-negative integer, "
            f"got {_npz.short(iterations)}"
        )
    if type(rate) not in (int, float) or not (math.isfinite(rate) and rate > 0):
        raise ModelFileError(
            f"{path}: the optimizer's current_learning_rate must be a finite positive number, "
            f"got {_npz.short(rate)}"
        )
    opt.iterations, opt.current_learning_rate = iterations, float(rate)


def _require(keys: set[str], shapes: dict, path: str, whose: str) -> None:
    """Every parameter ``shapes`` names is present, and each optimizer state is whole (a
    parameter never stepped has none)."""
    found = sorted(key for key in keys if key.startswith("layers/"))
    needed = sorted(key for key in shapes if key.startswith("layers/"))
    if found != needed:
        raise ModelFileError(f"{path} holds parameters {found} but {whose} {needed}")
    for state in {key.rsplit("/", 1)[0] + "/" for key in keys if key.startswith("optimizer/")}:
        missing = sorted(k for k in shapes if k.startswith(state) and k not in keys)
        if missing:
            raise ModelFileError(f"{path}: incomplete optimizer state, without {missing}")


def _checked(arrays: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    for key, value in arrays.items():
        _npz.check_finite(path, key, value)
        if key.endswith("/cache") and (value < 0).any():  # sums of squares: sqrt would be NaN
            raise ModelFileError(f"{path}: {key} holds negative values")
    return arrays


def load_parameters(model: Model, path: str | os.PathLike) -> None:
    path = os.fspath(path)
    wanted = {
        key: tuple(value.shape)
        for key, value in model.state_dict().items()
        if key.startswith("layers/")
    }
    with _npz.Reader(path) as file:
        kind = file.header.get("kind")
        if kind == "model":  # a whole model holds parameters too; its own header says which
            saved = _saved(file.header, path)
            shapes, dtype = saved.shapes, saved.dtype
            _require(file.keys, shapes, path, "its header describes")
            held = {k: v for k, v in shapes.items() if k.startswith("layers/")}
            if held != wanted:
                raise ModelFileError(f"{path} holds parameters {held} but the model has {wanted}")
        elif kind == "parameters":
            shapes, dtype = wanted, _dtype(file.header, path, "header")
            _require(file.keys, shapes, path, "the model has")
        else:
            raise ModelFileError(f"{path} holds {kind!r}, neither a model nor parameters")
        arrays = _checked(file.read(shapes, dtype), path)
    target = model.backend.dtype_name
    model._assign(
        {k: _npz.fitted(path, k, v, target) for k, v in arrays.items() if k.startswith("layers/")}
    )


def load_model(path: str | os.PathLike, backend: str | Backend | None = None) -> Model:
    path = os.fspath(path)
    with _npz.Reader(path) as file:
        if file.header.get("kind") != "model":
            raise ModelFileError(
                f"{path} holds {file.header.get('kind')!r}, not a whole model; "
                "load it into a built model with model.load_parameters(path)"
            )
        saved = _saved(file.header, path)
        metadata = _metadata(file.header.get("metadata", {}), f"{path}: metadata", ModelFileError)
        _require(file.keys, saved.shapes, path, "its header describes")
        arrays = _checked(file.read(saved.shapes, saved.dtype), path)
    parts = {"loss": saved.loss, "accuracy": saved.accuracy, "optimizer": saved.optimizer}
    model = _rebuilt(saved.layers, get_backend(backend, saved.dtype), path, **parts)
    state = dict(arrays)
    if saved.optimizer is not None:  # its step count, checked with the header
        state["optimizer/iterations"] = saved.optimizer.iterations
        state["optimizer/current_learning_rate"] = saved.optimizer.current_learning_rate
    model.load_state_dict(state)
    model.metadata = metadata
    return model


def _rebuilt(specs: list[tuple[type, dict]], target: Backend, path: str, **parts: Any) -> Model:
    """The model ``specs`` describe, on ``target``, with ``parts`` (its loss, accuracy and
    optimizer) set; a ModelFileError if they cannot be built or do not fit together."""
    from .model import Model

    with _rebuilding(path):
        with random.kept_state():  # rebuilding draws nothing
            model = Model([_layer(cls, config, target) for cls, config in specs])
        model.set(**parts)
        model.finalize()  # layer sizes that do not chain fail here, not at first use
    return model


def _layer(cls: type, config: dict, target: Backend) -> layers.Layer:
    return cls(**config, backend=target) if cls.param_names else cls(**config)
