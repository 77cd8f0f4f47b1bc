"""The portnn file on disk: a NumPy ``.npz`` archive written atomically and read without
trusting a byte of it (``io.py`` documents the layout and builds models from it).

Reading is bounded by the file's size: members must be stored uncompressed, as ``np.savez``
writes them, so a small file cannot declare or decompress to gigabytes; the header is read
only up to ``MAX_HEADER_BYTES``; and each array's ``.npy`` header is checked against the
shape and dtype the portnn header implies, and its member against the bytes that header
implies (no fewer, no more: NumPy would ignore bytes after the data), before any array's
data is read.

Its error, its atomic write and the checks at its end serve safetensors files too
(``_safetensors.py``, ``interop.py``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import stat
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

FORMAT = "portnn"
VERSION = 1
HEADER = "__portnn__"
MAX_HEADER_BYTES = 4 * 2**20  # a real header is a few KB; this only bounds a hostile one
FLOATS = ("float16", "float32", "float64")
_NPY_MAGIC = b"\x93NUMPY"


class ModelFileError(ValueError):
    """A file that is not a readable portnn file: corrupt, truncated, foreign or too new."""


# --- writing --------------------------------------------------------------------------------
def write(path: str | os.PathLike, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """The portnn file: the header and the arrays as an ``.npz``, written atomically."""
    payload = {HEADER: np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays}
    write_atomically(path, lambda f: np.savez(f, **payload))


def write_atomically(path: str | os.PathLike, dump: Callable[[Any], None]) -> None:
    """``dump(file)`` into a temporary file beside ``path``, then one rename, so a failed
    save leaves any old file whole. A new file gets the mode ``open`` would give it; a file
    saved over keeps its mode. Errors name ``path``, never the temporary file."""
    path = os.fspath(path)
    old_mode = _mode_of(path)
    # 0o666 is what open() asks for, so the umask applies as usual. Over an old file, write
    # privately and set its mode at the end: the umask may clear bits it had.
    fd, tmp = _temporary(path, 0o666 if old_mode is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            dump(f)
            f.flush()
            os.fsync(f.fileno())
        if old_mode is not None:
            os.chmod(tmp, old_mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise _save_error(type(exc), exc.errno, path, exc.strerror or str(exc)) from exc
        raise


def check_writable(path: str | os.PathLike) -> None:
    """Raise an ``OSError`` naming ``path`` if a file cannot be saved there, for callers that
    must know before a long run rather than after it."""
    fd, tmp = _temporary(os.fspath(path), 0o600)
    os.close(fd)
    os.remove(tmp)


def _mode_of(path: str) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:  # no file there yet (if none can be, _temporary says why)
        return None


def _temporary(path: str, mode: int) -> tuple[int, str]:
    """A new hidden file in ``path``'s folder, opened for writing."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        reason = "it is a folder; give the path of a file in it"
        raise _save_error(IsADirectoryError, errno.EISDIR, path, reason)
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            reason = f"{folder} is a file, not a folder"
            raise _save_error(NotADirectoryError, errno.ENOTDIR, path, reason)
        reason = f"the folder {folder} does not exist; create it first"
        raise _save_error(FileNotFoundError, errno.ENOENT, path, reason)
    tmp = os.path.join(folder, f".portnn-{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        return os.open(tmp, flags, mode), tmp
    except OSError as exc:
        reason = f"cannot write in the folder {folder}: {exc.strerror or exc}"
        raise _save_error(type(exc), exc.errno, path, reason) from exc


def _save_error(cls: type[OSError], code: int | None, path: str, reason: str) -> OSError:
    error = cls(f"cannot save to {path}: {reason}")
    error.errno = code
    return error


# --- reading --------------------------------------------------------------------------------
class Reader:
    """An open portnn file. On entry the archive's layout and the JSON ``header`` are checked;
    ``keys`` are its arrays' names, and ``read(shapes)`` returns them once every one has been
    checked against ``shapes``. Errors are ``ModelFileError``s naming the file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)

    def __enter__(self) -> Reader:
        with contextlib.ExitStack() as stack:
            file = stack.enter_context(open(self.path, "rb"))  # FileNotFoundError as itself
            with self._translated():
                start = file.read(9)
                if start.startswith(_NPY_MAGIC):
                    raise ModelFileError(f"{self.path} is a single NumPy array, not a portnn file")
                if start[8:] == b"{":  # a safetensors header's length, then its JSON
                    raise ModelFileError(
                        f"{self.path} is a safetensors file, not a portnn file; load it with "
                        "portnn.interop.load_safetensors(path)"
                    )
                file.seek(0)
                self._zip = stack.enter_context(zipfile.ZipFile(file))
                self._members = self._index(os.fstat(file.fileno()).st_size)
                self.header = self._header()
            self._close = stack.pop_all().close
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        """The many ways a damaged archive fails, as one ``ModelFileError`` naming the file."""
        # RuntimeError covers an encrypted member and NotImplementedError (unknown zip features).
        damaged = (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError)
        message = (
            f"{self.path} is not a readable portnn file (truncated, corrupt, or another format; "
            "portnn never unpickles)"
        )
        return translated(message, *damaged)

    @property
    def keys(self) -> set[str]:
        return set(self._members)

    def read(self, shapes: dict[str, tuple[int, ...]], dtype: str) -> dict[str, np.ndarray]:
        """Every array, in native byte order; each must be named in ``shapes``, have that shape
        and the file's ``dtype`` (portnn writes every array in the model's). All are checked
        before any is read."""
        unknown = sorted(self.keys - set(shapes))
        if unknown:
            raise ModelFileError(
                f"{self.path} holds arrays its header does not describe: {short(unknown)}"
            )

        def check(key: str, shape: tuple, found: np.dtype) -> None:
            what = "optimizer state" if key.startswith("optimizer/") else "parameter"
            if shape != shapes[key] or found.name not in FLOATS:
                raise ModelFileError(
                    f"{self.path}: {what} {key} has shape {shape} and dtype {found}; it needs "
                    f"shape {shapes[key]} and a real float dtype ({', '.join(FLOATS)})"
                )
            if found.name != dtype:
                raise ModelFileError(
                    f"{self.path} is corrupt: {what} {key} is {found}, but its header says the "
                    f"file is {dtype}, and portnn writes every array in the model's dtype"
                )

        with self._translated():
            for key in self._members:
                self._inspect(key, check)
            return {key: self._array(key) for key in self._members}

    def _index(self, size: int) -> dict[str, zipfile.ZipInfo]:
        """The members by array name, once the zip directory is known to be ours and to
        declare no more data than the file holds."""
        infos = self._zip.infolist()
        names = [info.filename for info in infos]
        odd = sorted(name for name in names if not name.endswith(".npy"))
        if odd:
            raise ModelFileError(
                f"{self.path} is a zip archive but not a portnn file: {short(odd)} are not arrays"
            )
        if len(set(names)) < len(names):
            raise ModelFileError(f"{self.path} is corrupt: it holds a member twice")
        packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
        if packed:
            raise ModelFileError(
                f"{self.path}: {short(packed)} are compressed; portnn files hold arrays "
                "uncompressed (np.savez, not np.savez_compressed), so that what a file "
                "declares is what it holds"
            )
        declared = sum(info.file_size for info in infos)
        if declared > size or any(i.file_size != i.compress_size for i in infos):
            raise ModelFileError(
                f"{self.path} is truncated or corrupt: its zip directory declares {declared} "
                f"bytes of arrays in a file of {size} bytes"
            )
        return {name[: -len(".npy")]: info for name, info in zip(names, infos, strict=True)}

    def _header(self) -> dict:
        if HEADER not in self._members:
            raise ModelFileError(f"{self.path} is a NumPy archive without a portnn header")
        if self._members[HEADER].file_size > MAX_HEADER_BYTES:
            raise ModelFileError(
                f"{self.path}: its portnn header is {self._members[HEADER].file_size} bytes, "
                f"more than a portnn header can be ({MAX_HEADER_BYTES})"
            )

        def check(key: str, shape: tuple, dtype: np.dtype) -> None:
            if dtype != np.uint8 or len(shape) != 1:
                raise ModelFileError(f"{self.path} is a NumPy archive without a portnn header")

        self._inspect(HEADER, check)
        raw = self._array(HEADER)
        del self._members[HEADER]
        try:
            header = json.loads(raw.tobytes().decode())
        except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, a 5000-digit int
            raise ModelFileError(f"{self.path} has a corrupt portnn header: {exc}") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ModelFileError(
                f"{self.path} is not a portnn file (its header names no portnn format)"
            )
        check_version(header.get("version"), VERSION, self.path, "format", "portnn file format")
        return header

    def _inspect(self, key: str, check: Callable[[str, tuple, np.dtype], None]) -> None:
        """Read only ``key``'s .npy header: ``check`` its shape and dtype, then make sure the
        data it implies is exactly what the zip declares, before anything is allocated."""
        info = self._members[key]
        with self._zip.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ModelFileError(f"{self.path}: {key} is in .npy format {version}, not 1 or 2")
            if dtype.hasobject:
                raise ModelFileError(
                    f"{self.path}: {key} holds Python objects, which portnn never unpickles"
                )
            check(key, shape, dtype)
            implied = stream.tell() + math.prod(shape) * dtype.itemsize
        if implied != info.file_size:
            raise ModelFileError(
                f"{self.path} is corrupt: {key} declares {implied} bytes, the zip {info.file_size}"
            )

    def _array(self, key: str) -> np.ndarray:
        with self._zip.open(self._members[key]) as stream:
            array = np.lib.format.read_array(stream, allow_pickle=False)
        return array.astype(array.dtype.newbyteorder("="), copy=False)


# --- checks both formats share --------------------------------------------------------------
@contextlib.contextmanager
def translated(message: str, *kinds: type[Exception]) -> Iterator[None]:
    """Any of ``kinds`` raised inside as one ``ModelFileError``: ``message``, a colon and the
    error's own words (a ``ModelFileError``, itself a ValueError, passes as it is). For the
    many ways a damaged file fails, and a header that describes what cannot be built."""
    try:
        yield
    except ModelFileError:
        raise
    except kinds as exc:
        raise ModelFileError(f"{message}: {exc}") from exc


def check_version(version: Any, newest: int, path: str, what: str, what_in_full: str) -> None:
    """``version``, of the ``what`` (``what_in_full``) in ``path``, is one this portnn reads:
    an integer from 1 to ``newest``."""
    if type(version) is not int or version < 1:  # type() rules out bool
        raise ModelFileError(f"{path} has an invalid {what} version {short(version)}")
    if version > newest:
        raise ModelFileError(
            f"{path} was written in {what_in_full} version {version}, newer than "
            f"this portnn reads (up to {newest}); upgrade portnn to read it"
        )


def check_finite(path: str, what: str, array: np.ndarray) -> None:
    """``what``, an array read from ``path``, holds no NaN or infinity."""
    if not np.isfinite(array).all():
        raise ModelFileError(f"{path}: {what} holds NaN or infinite values")


def fitted(path: str, what: str, array: np.ndarray, dtype: str) -> np.ndarray:
    """``what``, a finite array read from ``path``, as ``dtype``, the model's: a float64 file
    loads into a float32 model only if every value fits (a cast would make the others inf)."""
    with np.errstate(over="ignore"):
        cast = array.astype(dtype, copy=False)
    if not np.isfinite(cast).all():
        raise ModelFileError(
            f"{path}: {what} holds values beyond {dtype}'s range; load the file into a "
            f"{array.dtype} model (pn.use_backend(..., dtype={array.dtype.name!r}))"
        )
    return cast


def short(value: object, limit: int = 200) -> str:
    """``repr(value)`` cut to fit one line of an error message, however long a file made it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checked_name(path: str | os.PathLike, method: str) -> str:
    """``path``, unless its name says safetensors: every other tool would misread a portnn
    file under that name, and safetensors cannot hold all ``model.save`` keeps. ``method``
    (``model.save``, ``--save``, ``ModelCheckpoint``) names what would write it. Checked by
    the writers, and before a run by whatever saves after it (the command, checkpoints)."""
    path = os.fspath(path)
    if os.fsdecode(path).lower().endswith(".safetensors"):
        raise ValueError(
            f"cannot save to {os.fsdecode(path)}: {method} writes portnn's .npz format, not "
            "safetensors; give a .npz name, or write safetensors (architecture and weights; "
            "no optimizer, loss or accuracy) with portnn.interop.save_safetensors"
        )
    return path
