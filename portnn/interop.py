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

import contextlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _npz, io, random
from ._npz import ModelFileError, short
from .backend import DTYPES, Backend, get_backend, to_numpy

if TYPE_CHECKING:
    from .model import Model

__all__ = ["METADATA_KEY", "VERSION", "load_safetensors", "save_safetensors", "torch_sequential"]

METADATA_KEY = "portnn"  # the metadata entry holding the architecture, as JSON
VERSION = 1
_FLOATS = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
_EXTRA = "pip install 'portnn[safetensors]' (or pip install safetensors)"

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
    safetensors = _safetensors()
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
    _write(path, data)


def _write(path: str | os.PathLike, data: bytes) -> None:
    """``_npz.write``'s atomic write, for bytes already made."""
    path = os.fspath(path)
    old_mode = _npz._mode_of(path)
    fd, tmp = _npz._temporary(path, 0o666 if old_mode is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if old_mode is not None:
            os.chmod(tmp, old_mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise _npz._save_error(type(exc), exc.errno, path, exc.strerror or str(exc)) from exc
        raise


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
            layer = model.layers[i]
            if described["class"] == "Dense":
                shapes = {"weights": (layer.n_inputs, layer.n_neurons)}
                needed.update(_torch_shapes(i, shapes))
        with _Reader(path) as file:
            tensors = file.read(needed, "the model")
        model._assign(_parameters(model, tensors))
        return model

    from .model import Model

    with _Reader(path) as file:
        dtype, specs = _architecture(file.metadata, path)
        needed = {}
        for i, (cls, config) in enumerate(specs):
            needed.update(_torch_shapes(i, io._parameter_shapes(cls, config, i, path)))
        tensors = file.read(needed, "its metadata")
    target = get_backend(backend, dtype)
    try:
        with random.kept_state():  # rebuilding draws nothing
            rebuilt = Model([io._layer(cls, config, target) for cls, config in specs])
        rebuilt.finalize()  # layer sizes that do not chain fail here, not at first use
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: the saved architecture cannot be rebuilt: {exc}") from exc
    rebuilt._assign(_parameters(rebuilt, tensors))
    return rebuilt


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
    version = saved.get("version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"{path} has an invalid portnn metadata version {short(version)}")
    if version > VERSION:
        raise ModelFileError(
            f"{path} was written in portnn's safetensors metadata version {version}, newer than "
            f"this portnn reads (up to {VERSION}); upgrade portnn to read it"
        )
    dtype = saved.get("dtype")
    if dtype not in DTYPES:
        raise ModelFileError(f"{path}: unsupported dtype {short(dtype)} in the metadata")
    described = saved.get("layers")
    if not isinstance(described, list) or not described:
        raise ModelFileError(f"{path}: the saved architecture cannot be rebuilt: no layers")
    return dtype, [io._spec(d, io._LAYERS, "layer", path) for d in described]


class _Reader:
    """An open safetensors file. On entry its header is read (up to a cap) and checked for
    form; ``metadata`` is its string metadata, and ``read(needed)`` returns every tensor,
    once all have been checked against ``needed`` and the file's size."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> _Reader:
        with contextlib.ExitStack() as stack:
            self._file = stack.enter_context(open(self.path, "rb"))  # FileNotFoundError as is
            with self._translated():
                self._size = os.fstat(self._file.fileno()).st_size
                self._read_header()
            self._close = stack.pop_all().close
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def _error(self, reason: str) -> ModelFileError:
        return ModelFileError(
            f"{self.path} is not a readable safetensors file (truncated, corrupt or another "
            f"format): {reason}"
        )

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except ModelFileError:
            raise
        except (OSError, ValueError, EOFError, RecursionError) as exc:
            raise self._error(str(exc)) from exc

    def _read_header(self) -> None:
        prefix = self._file.read(8)
        if len(prefix) < 8:
            raise self._error(f"it is {self._size} bytes long, shorter than a safetensors header")
        n = int.from_bytes(prefix, "little")
        hint = " (it looks like a zip or .npz: portnn's own files load with pn.Model.load)"
        hint = hint if prefix.startswith(b"PK") else ""
        if n > _npz.MAX_HEADER_BYTES:
            raise self._error(
                f"its first 8 bytes declare a header of {n} bytes, more than a header portnn "
                f"reads can be ({_npz.MAX_HEADER_BYTES}){hint}"
            )
        if 8 + n > self._size:
            raise self._error(f"it declares a header of {n} bytes in a file of {self._size}")
        try:
            header = json.loads(self._file.read(n).decode("utf-8"), object_pairs_hook=_unique)
        except _Twice as exc:
            raise self._error(str(exc)) from exc
        except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, a 5000-digit int
            raise self._error(f"its header is not valid JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise self._error("its header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise self._error(f"its metadata is not a JSON object: {short(metadata)}")
        odd = {k: v for k, v in metadata.items() if not isinstance(v, str)}
        if odd:
            raise self._error(f"its metadata holds values that are not strings: {short(odd)}")
        self.metadata: dict[str, str] = metadata
        self._start = 8 + n
        self._entries: dict[str, tuple[str, tuple[int, ...], tuple[int, int]]] = {}
        for name, entry in header.items():
            spec = entry if isinstance(entry, dict) else {}
            dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
            if not (
                isinstance(dtype, str)
                and isinstance(shape, list)
                and all(_natural(d) for d in shape)
                and isinstance(offsets, list)
                and len(offsets) == 2
                and all(_natural(o) for o in offsets)
            ):
                raise self._error(f"tensor {short(name)} has a malformed entry {short(entry)}")
            self._entries[name] = (dtype, tuple(shape), (offsets[0], offsets[1]))

    def read(self, needed: dict[str, tuple[int, ...]], whose: str) -> dict[str, np.ndarray]:
        """Every tensor, in native byte order: the names must be ``needed``'s, the dtypes
        real floats and the shapes ``needed``'s, and the byte ranges must tile the data that
        follows the header, all checked before anything is read."""
        found = set(self._entries)
        if found != set(needed):
            raise ModelFileError(
                f"{self.path} holds tensors {short(sorted(found))} but {whose} needs "
                f"{sorted(needed)}: missing {sorted(set(needed) - found)}, unexpected "
                f"{short(sorted(found - set(needed)))}"
            )
        for name in sorted(needed):
            dtype, shape, _ = self._entries[name]
            if dtype not in _FLOATS:
                hint = "; convert it with tensor.float() before saving" if dtype == "BF16" else ""
                raise ModelFileError(
                    f"{self.path}: tensor {name} has dtype {short(dtype)}; it needs a real float "
                    f"dtype ({', '.join(_FLOATS)}){hint}"
                )
            if shape != needed[name]:
                hint = (
                    " (transposed: safetensors files hold torch's nn.Linear layout, "
                    "(n_neurons, n_inputs))"
                    if shape == needed[name][::-1]
                    else ""
                )
                raise ModelFileError(
                    f"{self.path}: tensor {name} has shape {shape}; {whose} needs "
                    f"{needed[name]}{hint}"
                )
        end = 0
        for name, (dtype, shape, (begin, stop)) in sorted(
            self._entries.items(), key=lambda item: item[1][2]
        ):
            size = math.prod(shape) * np.dtype(_FLOATS[dtype]).itemsize
            if begin != end or stop - begin != size:
                raise self._error(
                    f"tensor {name} of shape {shape} needs {size} bytes from byte {end} (the "
                    f"tensors tile the data), but its data_offsets are [{begin}, {stop}]"
                )
            end = stop
        if self._start + end != self._size:
            raise self._error(
                f"its header declares {end} bytes of tensors after it, the file holds "
                f"{self._size - self._start}"
            )
        safetensors = _safetensors()
        with self._translated():
            self._file.seek(0)
            data = self._file.read(self._size)
            if len(data) != self._size:
                raise self._error("it changed while being read")
            try:
                tensors = safetensors.numpy.load(data)
            except safetensors.SafetensorError as exc:  # anything the checks above missed
                raise self._error(str(exc)) from exc
        # Copies the model owns: what safetensors returns may be views of one buffer (read-only
        # in some versions), and a backend may update parameters in place.
        tensors = {k: np.array(v, dtype=v.dtype.newbyteorder("=")) for k, v in tensors.items()}
        for name, tensor in tensors.items():
            if not np.isfinite(tensor).all():
                raise ModelFileError(f"{self.path}: tensor {name} holds NaN or infinite values")
        return tensors


def _natural(value: Any) -> bool:
    return type(value) is int and value >= 0


class _Twice(ValueError):
    """A JSON object naming a key twice (json.loads would keep the last silently)."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):
        twice = sorted(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
        raise _Twice(f"its header names {short(twice)} twice")
    return found


def _safetensors() -> Any:
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as exc:
        raise ImportError(f"safetensors files need the safetensors package: {_EXTRA}") from exc
    return safetensors


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
