"""Reading a safetensors file without trusting it: the header is read only up to a cap and
checked for form, and every tensor's name, dtype, shape and byte range is checked against
what the caller needs and the file's size before any tensor is read (``interop.py`` says
what the tensors mean)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import Counter
from collections.abc import Collection
from typing import Any

import numpy as np

from . import _npz
from ._npz import ModelFileError, short

_FLOATS = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
_COUNTS = {"I64": np.int64, "I32": np.int32}  # a counter's dtypes (torch's num_batches_tracked)
_DTYPES = {**_FLOATS, **_COUNTS}
_EXTRA = "pip install 'portnn[safetensors]' (or pip install safetensors)"


class Reader:
    """An open safetensors file. On entry its header is read (up to a cap) and checked for
    form; ``metadata`` is its string metadata, and ``read(needed)`` returns every tensor,
    once all have been checked against ``needed`` and the file's size."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._unreadable = (
            f"{path} is not a readable safetensors file (truncated, corrupt or another format)"
        )

    def __enter__(self) -> Reader:
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
        return ModelFileError(f"{self._unreadable}: {reason}")

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        return _npz.translated(self._unreadable, OSError, ValueError, EOFError, RecursionError)

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

    def read(
        self, needed: dict[str, tuple[int, ...]], whose: str, counters: Collection[str] = ()
    ) -> dict[str, np.ndarray]:
        """Every tensor, in native byte order: the names must be ``needed``'s, the dtypes
        real floats and the shapes ``needed``'s, and the byte ranges must tile the data that
        follows the header, all checked before anything is read. ``counters`` may be there
        too, or not: integers of shape () (torch's BatchNorm ``num_batches_tracked``)."""
        counted = set(self._entries) & set(counters)
        for name in sorted(counted):
            dtype, shape, _ = self._entries[name]
            if dtype not in _COUNTS or shape != ():
                raise ModelFileError(
                    f"{self.path}: tensor {name} has dtype {short(dtype)} and shape {shape}; "
                    f"a batch counter is an integer ({', '.join(_COUNTS)}) of shape ()"
                )
        found = set(self._entries) - counted
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
            size = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
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
        safetensors = package()
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
            _npz.check_finite(self.path, f"tensor {name}", tensor)
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


def package() -> Any:
    """The safetensors package, or an ImportError that says how to install it."""
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as exc:
        raise ImportError(f"safetensors files need the safetensors package: {_EXTRA}") from exc
    return safetensors
