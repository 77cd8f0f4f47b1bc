"""A model's weights as safetensors, the format PyTorch, Hugging Face and most of the ecosystem
read, laid out so that they load straight into the equivalent ``torch.nn.Sequential``.

Layers map one to one (``torch_sequential`` builds the Sequential): Dense -> ``nn.Linear``,
ReLU -> ``nn.ReLU``, Softmax -> ``nn.Softmax(dim=1)``, Sigmoid -> ``nn.Sigmoid``, Tanh ->
``nn.Tanh``, LeakyReLU(alpha) -> ``nn.LeakyReLU(alpha)``, Linear and Input -> ``nn.Identity``,
Dropout(rate) -> ``nn.Dropout(rate)``. Dense layer ``i`` of ``model.layers`` is stored as
``"<i>.weight"``, shape ``(n_neurons, n_inputs)`` (nn.Linear's layout, portnn's transposed),
and ``"<i>.bias"``, shape ``(n_neurons,)``, in the model's dtype. The string metadata holds
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

# portnn's layer classes (by name, as portnn.io saves them) and their torch modules.
_TORCH = {
    "Dense": lambda nn, c, dtype: nn.utils.skip_init(
        nn.Linear, c["n_inputs"], c["n_neurons"], dtype=dtype
    ),
    "ReLU": lambda nn, c, dtype: nn.ReLU(),
    "Softmax": lambda nn, c, dtype: nn.Softmax(dim=1),
    "Sigmoid": lambda nn, c, dtype: nn.Sigmoid(),
    "Tanh": lambda nn, c, dtype: nn.Tanh(),
    "LeakyReLU": lambda nn, c, dtype: nn.LeakyReLU(c["alpha"]),
    "Linear": lambda nn, c, dtype: nn.Identity(),
    "Input": lambda nn, c, dtype: nn.Identity(),
    "Dropout": lambda nn, c, dtype: nn.Dropout(c["rate"]),
}


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
        if d is None or d["class"] not in _TORCH or (layer.param_names and d["class"] != "Dense"):
            raise TypeError(
                f"layer {i} is a {type(layer).__name__}, which has no torch.nn equivalent here: "
                f"portnn maps its own layers only ({', '.join(_TORCH)})"
            )
        described.append(d)
    return described


def _torch_shapes(i: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Dense layer ``i``'s portnn parameter shapes as nn.Linear's tensor names and shapes."""
    if not shapes:
        return {}
    n_inputs, n_neurons = shapes["weights"]
    return {f"{i}.weight": (n_neurons, n_inputs), f"{i}.bias": (n_neurons,)}


def _tensors(model: Model) -> dict[str, np.ndarray]:
    """The model's parameters in nn.Linear's names and layouts, on the host, contiguous
    (safetensors copies raw memory)."""
    tensors = {}
    for i, layer in enumerate(model.layers):
        if layer.param_names:
            tensors[f"{i}.weight"] = np.ascontiguousarray(to_numpy(layer.weights).T)
            tensors[f"{i}.bias"] = np.ascontiguousarray(to_numpy(layer.biases).reshape(-1))
    return tensors


def _parameters(model: Model, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tensors in nn.Linear's layout as the model's ``layers/<i>/<name>`` parameters."""
    params = {}
    for i, layer in enumerate(model.layers):
        if layer.param_names:
            params[f"layers/{i}/weights"] = tensors[f"{i}.weight"].T
            params[f"layers/{i}/biases"] = tensors[f"{i}.bias"].reshape(1, -1)
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
        needed = {}
        for i, described in enumerate(_described(model)):
            cls = io._LAYERS[described["class"]]
            shapes = io._parameter_shapes(cls, described["config"], i, path)
            needed.update(_torch_shapes(i, shapes))
        with Reader(path) as file:
            tensors = _fitted(file.read(needed, "the model"), model.backend.dtype_name, path)
        model._assign(_parameters(model, tensors))
        return model

    with Reader(path) as file:
        dtype, specs = _architecture(file.metadata, path)
        needed = {}
        for i, (cls, config) in enumerate(specs):
            needed.update(_torch_shapes(i, io._parameter_shapes(cls, config, i, path)))
        tensors = _fitted(file.read(needed, "its metadata"), dtype, path)
    rebuilt = io._rebuilt(specs, get_backend(backend, dtype), path)
    rebuilt._assign(_parameters(rebuilt, tensors))
    return rebuilt


def _fitted(tensors: dict[str, np.ndarray], dtype: str, path: str) -> dict[str, np.ndarray]:
    return {k: _npz.fitted(path, f"tensor {k}", v, dtype) for k, v in tensors.items()}


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
    modules = [_TORCH[d["class"]](nn, d["config"], dtype) for d in described]
    sequential = nn.Sequential(*modules)
    state = {name: torch.from_numpy(tensor) for name, tensor in _tensors(model).items()}
    sequential.load_state_dict(state, strict=True)
    return sequential.eval()
