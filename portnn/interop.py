"""A model's weights as safetensors, the format PyTorch, Hugging Face and most of the ecosystem
read, laid out so that they load straight into the equivalent ``torch.nn.Sequential``.

Layers map one to one (``torch_sequential`` builds the Sequential): Dense -> ``nn.Linear``,
ReLU -> ``nn.ReLU``, Softmax -> ``nn.Softmax(dim=1)``, Sigmoid -> ``nn.Sigmoid``, Tanh ->
``nn.Tanh``, LeakyReLU(alpha) -> ``nn.LeakyReLU(alpha)``, Linear and Input -> ``nn.Identity``,
Dropout(rate) -> ``nn.Dropout(rate)``, Conv2D -> ``nn.Conv2d``, MaxPool2D -> ``nn.MaxPool2d``,
AveragePool2D -> ``nn.AvgPool2d``, Flatten -> ``nn.Flatten()``, BatchNormalization ->
``nn.BatchNorm2d`` on images, ``nn.BatchNorm1d`` otherwise. Dense layer ``i`` of
``model.layers`` is stored as ``"<i>.weight"``, shape ``(n_neurons, n_inputs)`` (nn.Linear's
layout, portnn's transposed), and ``"<i>.bias"``, shape ``(n_neurons,)``; Conv2D's as they are
(``(out_channels, in_channels, kh, kw)`` and ``(out_channels,)``); BatchNormalization's as
``"<i>.weight"``, ``"<i>.bias"``, ``"<i>.running_mean"``, ``"<i>.running_var"`` and torch's
batch counter ``"<i>.num_batches_tracked"`` (int64, written as 0: portnn does not count, and
torch reads it only for ``momentum=None``; a file may hold it or not), all in the model's
dtype but the counter. The string metadata holds
``"format": "pt"`` and ``"portnn"``: JSON ``{"format": "portnn", "version": 1, "dtype",
"layers": [{"class", "config"}...]}``, from which ``load_safetensors(path)`` rebuilds the
model (architecture and weights; the loss, accuracy and optimizer are ``model.save``'s).

Reading meets ``portnn.io``'s standard: the header is read only up to a cap, and every
tensor's name, dtype, shape and byte range is checked against what the model (or the
metadata) needs and what the file holds before any tensor is read or any layer is built, so
a hostile file cannot make loading allocate much more than its size; only portnn's own layer
classes are built and no code runs; a bad file raises ``ModelFileError`` naming it and
changes nothing. Writes go to a temporary file that replaces the target once complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _npz, io
from ._npz import ModelFileError, short
from ._safetensors import Reader, package
from .backend import Backend, get_backend, to_numpy

if TYPE_CHECKING:
    from .model import Model

__all__ = ["METADATA_KEY", "VERSION", "load_safetensors", "save_safetensors", "torch_sequential"]

METADATA_KEY = "portnn"  # the metadata entry holding the architecture, as JSON
VERSION = 1

# portnn's layer classes (by name, as portnn.io saves them) and their torch modules, from
# the layer's config and its inputs' shape (BatchNormalization is BatchNorm2d on images).
_TORCH = {
    "Dense": lambda nn, c, dtype, shape: nn.utils.skip_init(
        nn.Linear, c["n_inputs"], c["n_neurons"], dtype=dtype
    ),
    "ReLU": lambda nn, c, dtype, shape: nn.ReLU(),
    "Softmax": lambda nn, c, dtype, shape: nn.Softmax(dim=1),
    "Sigmoid": lambda nn, c, dtype, shape: nn.Sigmoid(),
    "Tanh": lambda nn, c, dtype, shape: nn.Tanh(),
    "LeakyReLU": lambda nn, c, dtype, shape: nn.LeakyReLU(c["alpha"]),
    "Linear": lambda nn, c, dtype, shape: nn.Identity(),
    "Input": lambda nn, c, dtype, shape: nn.Identity(),
    "Dropout": lambda nn, c, dtype, shape: nn.Dropout(c["rate"]),
    "Conv2D": lambda nn, c, dtype, shape: nn.utils.skip_init(
        nn.Conv2d,
        c["in_channels"],
        c["out_channels"],
        _pair(c["kernel_size"]),
        stride=_pair(c["stride"]),
        padding=c["padding"] if c["padding"] == "same" else _pair(c["padding"]),
        dtype=dtype,
    ),
    "MaxPool2D": lambda nn, c, dtype, shape: nn.MaxPool2d(
        _pair(c["pool_size"]), _pair(c["stride"] or c["pool_size"])
    ),
    "AveragePool2D": lambda nn, c, dtype, shape: nn.AvgPool2d(
        _pair(c["pool_size"]), _pair(c["stride"] or c["pool_size"])
    ),
    "Flatten": lambda nn, c, dtype, shape: nn.Flatten(),
    "BatchNormalization": lambda nn, c, dtype, shape: (
        nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    )(c["n_features"], eps=c["epsilon"], momentum=c["momentum"], dtype=dtype),
}

# The tensors of each layer class with parameters: torch's name -> the portnn array it holds
# and whether it is transposed (nn.Linear's weight; Dense's (1, n) biases are 1-D in torch).
# torch's BatchNorm also counts its batches (num_batches_tracked, int64), which it uses only
# for momentum=None: portnn writes 0, and takes a file with or without it, ignoring it.
_NAMES = {
    "Dense": {"weight": ("weights", True), "bias": ("biases", False)},
    "Conv2D": {"weight": ("weights", False), "bias": ("biases", False)},
    "BatchNormalization": {
        "weight": ("weights", False),
        "bias": ("biases", False),
        "running_mean": ("running_mean", False),
        "running_var": ("running_var", False),
    },
}
_COUNTER = "num_batches_tracked"


def _pair(value: int | list[int]) -> tuple[int, int]:
    """A config's int or [height, width] as the pair torch takes."""
    return (value[0], value[1]) if isinstance(value, list) else (value, value)


# --- the layout, one place ------------------------------------------------------------------
def _described(model: Model) -> list[dict]:
    """Each layer as portnn.io describes it (class name and config); a TypeError for a layer
    without a torch equivalent here."""
    from .model import Model

    if not isinstance(model, Model):
        raise TypeError(f"expected a portnn Model, got {type(model).__name__}")
    if not model.layers:
        raise ValueError("the model has no layers; add some with Model.add(layer)")
    described = []
    for i, layer in enumerate(model.layers):
        try:
            d = io._described(layer, io._LAYERS)
        except TypeError:
            d = None
        mapped = d is not None and d["class"] in _TORCH
        if not mapped or (layer.param_names and d["class"] not in _NAMES):
            raise TypeError(
                f"layer {i} is a {type(layer).__name__}, which has no torch.nn equivalent here: "
                f"portnn maps its own layers only ({', '.join(_TORCH)})"
            )
        described.append(d)
    return described


def _torch_shapes(i: int, name: str, shapes: dict[str, tuple[int, ...]]) -> dict:
    """Layer ``i``'s (a ``name``'s) portnn array shapes as its torch module's tensor names and
    shapes: nn.Linear's weight transposed, every bias 1-D."""
    torch_shapes = {}
    for torch_name, (ours, transposed) in _NAMES.get(name, {}).items():
        shape = shapes[ours][::-1] if transposed else shapes[ours]
        torch_shapes[f"{i}.{torch_name}"] = shape[-1:] if ours == "biases" else shape
    return torch_shapes


def _counters(specs: list[tuple[str, dict]]) -> list[str]:
    """The torch names of the batch counters of the layers ``specs`` (class name, config)
    describe: BatchNorm's ``<i>.num_batches_tracked``."""
    return [f"{i}.{_COUNTER}" for i, (name, _) in enumerate(specs) if name == "BatchNormalization"]


def _tensors(model: Model) -> dict[str, np.ndarray]:
    """The model's parameters and running statistics in torch's names and layouts, on the
    host, contiguous (safetensors copies raw memory); each BatchNorm's counter as 0."""
    tensors = {}
    for i, layer in enumerate(model.layers):
        for torch_name, (ours, transposed) in _NAMES.get(type(layer).__name__, {}).items():
            array = to_numpy(getattr(layer, ours))
            array = array.T if transposed else array
            if ours == "biases":
                array = array.reshape(-1)
            tensors[f"{i}.{torch_name}"] = np.ascontiguousarray(array)
    names = [(type(layer).__name__, {}) for layer in model.layers]
    tensors.update({name: np.array(0, dtype=np.int64) for name in _counters(names)})
    return tensors


def _parameters(model: Model, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tensors in torch's names and layouts as the model's ``layers/<i>/<name>`` arrays (its
    parameters and running statistics); counters are left out."""
    params = {}
    for i, layer in enumerate(model.layers):
        for torch_name, (ours, transposed) in _NAMES.get(type(layer).__name__, {}).items():
            tensor = tensors[f"{i}.{torch_name}"]
            tensor = tensor.T if transposed else tensor
            params[f"layers/{i}/{ours}"] = tensor.reshape(tuple(getattr(layer, ours).shape))
    return params


# --- writing --------------------------------------------------------------------------------
def save_safetensors(
    model: Model, path: str | os.PathLike, *, metadata: Mapping[str, str] | None = None
) -> None:
    """Write the model's weights to ``path`` as safetensors (``torch.nn.Sequential`` names
    and layouts), with its architecture in the metadata; ``metadata`` adds string entries of
    your own. Atomic: a failed save leaves any old file whole, a file saved over keeps its
    mode."""
    safetensors = package()
    described = _described(model)
    extra = dict(metadata or {})
    odd = {k: v for k, v in extra.items() if not (isinstance(k, str) and isinstance(v, str))}
    if odd:
        raise TypeError(f"safetensors metadata maps strings to strings; got {short(odd)}")
    if METADATA_KEY in extra:
        raise ValueError(f"the metadata key {METADATA_KEY!r} is portnn's own; choose another")
    architecture = {
        "format": _npz.FORMAT,
        "version": VERSION,
        "dtype": model.backend.dtype_name,
        "layers": described,
    }
    entries = {"format": "pt", **extra, METADATA_KEY: json.dumps(architecture)}
    data = safetensors.numpy.save(_tensors(model), metadata=entries)
    if int.from_bytes(data[:8], "little") > _npz.MAX_HEADER_BYTES:
        raise ValueError(
            f"the metadata makes a header of over {_npz.MAX_HEADER_BYTES} bytes, more than "
            "portnn reads back; keep metadata short"
        )
    _npz.write_atomically(path, lambda f: f.write(data))


# --- reading --------------------------------------------------------------------------------
def load_safetensors(
    path: str | os.PathLike, model: Model | None = None, backend: str | Backend | None = None
) -> Model:
    """Load safetensors weights into ``model`` (torch's names and layouts; any float16/32/64
    tensors, set in the model's own dtype) and return it, or with ``model=None`` rebuild the
    model portnn saved there, on ``backend`` (default: the current one) in the file's dtype.
    Everything is checked first: a bad file raises ``ModelFileError`` and changes nothing."""
    path = os.fspath(path)
    if model is not None:
        if backend is not None:
            raise ValueError(
                "backend= is where a rebuilt model goes; a model loaded into stays where it "
                "is (move it with model.to(backend))"
            )
        described = [(d["class"], d["config"]) for d in _described(model)]
        with Reader(path) as file:
            tensors = _read(file, described, "the model", model.backend.dtype_name)
        model._assign(_parameters(model, tensors))
        return model

    with Reader(path) as file:
        dtype, specs = _architecture(file.metadata, path)
        tensors = _read(file, [(cls.__name__, c) for cls, c in specs], "its metadata", dtype)
    rebuilt = io._rebuilt(specs, get_backend(backend, dtype), path)
    rebuilt._assign(_parameters(rebuilt, tensors))
    return rebuilt


def _read(file: Reader, specs: list[tuple[str, dict]], whose: str, dtype: str) -> dict:
    """The tensors of the layers ``specs`` (class name, config) describe, checked and cast to
    ``dtype``; BatchNorm's batch counters, if there, are checked and dropped."""
    needed = {}
    for i, (name, config) in enumerate(specs):
        shapes = io._parameter_shapes(io._LAYERS[name], config, i, file.path)
        needed.update(_torch_shapes(i, name, shapes))
    tensors = file.read(needed, whose, counters=_counters(specs))
    return {k: _npz.fitted(file.path, f"tensor {k}", tensors[k], dtype) for k in needed}


def _architecture(metadata: dict[str, str], path: str) -> tuple[str, list[tuple[type, dict]]]:
    if METADATA_KEY not in metadata:
        raise ModelFileError(
            f"{path} has no portnn architecture in its metadata (a file from another library?); "
            "build the equivalent portnn model and load into it: load_safetensors(path, model)"
        )
    try:
        saved = json.loads(metadata[METADATA_KEY])
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"{path} has corrupt portnn metadata: {exc}") from exc
    if not isinstance(saved, dict) or saved.get("format") != _npz.FORMAT:
        raise ModelFileError(f"{path}: its {METADATA_KEY!r} metadata names no portnn format")
    _npz.check_version(
        saved.get("version"), VERSION, path, "portnn metadata", "portnn's safetensors metadata"
    )
    return io._architecture(saved, path, "metadata")


# --- torch ----------------------------------------------------------------------------------
def torch_sequential(model: Model) -> Any:
    """The equivalent ``torch.nn.Sequential``, holding a copy of the model's weights in its
    dtype, on the CPU, in eval mode (dropout off, as in ``model.predict``): the module
    ``load_state_dict(safetensors.torch.load_file(path))`` fits."""
    described = _described(model)
    try:
        import torch
        from torch import nn
    except ImportError as exc:
        raise ImportError(
            "torch_sequential needs PyTorch: pip install 'portnn[torch]' (or pip install torch)"
        ) from exc
    dtype = getattr(torch, model.backend.dtype_name)
    inputs = [model.input_shape or (None, None), *model.shapes()[:-1]]
    modules = [
        _TORCH[d["class"]](nn, d["config"], dtype, shape)
        for d, shape in zip(described, inputs, strict=True)
    ]
    sequential = nn.Sequential(*modules)
    state = {name: torch.from_numpy(tensor) for name, tensor in _tensors(model).items()}
    sequential.load_state_dict(state, strict=True)
    return sequential.eval()
