"""Fashion-MNIST, as the book uses it: 28x28 grey images of 10 kinds of clothing.

``fashion_mnist()`` reads the original distribution (four IDX files, gzipped or not) or the
book's PNG folders (``train/<label>/*.png`` and ``test/<label>/*.png``), from ``path`` or from
portnn's data folder (``default_data_dir()``), and with ``download=True`` fetches the IDX files
there first, checking each against its published MD5 checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import Backend, get_backend

__all__ = [
    "CHECKSUMS",
    "CLASS_NAMES",
    "DEFAULT_URL",
    "FILES",
    "default_data_dir",
    "download",
    "fashion_mnist",
]

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# The four files of the original distribution, in the order fashion_mnist() returns them.
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# MD5 checksums published in the zalandoresearch/fashion-mnist README ("Get the Data").
CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

# The mirror the Fashion-MNIST README links to. Amazon S3 website endpoints serve plain HTTP
# only (no HTTPS), so the files' integrity rests on the MD5 checksums above, checked on arrival.
DEFAULT_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
URL_ENV = "PORTNN_FASHION_MNIST_URL"
DATA_ENV = "PORTNN_DATA"

_SIDE = 28
_CLASSES = len(CLASS_NAMES)
_IDX_UBYTE = 0x08
_CHUNK = 1 << 16
_TIMEOUT_S = 60.0


def default_data_dir() -> Path:
    """Where portnn keeps Fashion-MNIST: ``$PORTNN_DATA/fashion-mnist`` if ``PORTNN_DATA`` is
    set, else ``$XDG_CACHE_HOME/portnn/fashion-mnist``, else ``~/.cache/portnn/fashion-mnist``.
    """
    root = os.environ.get(DATA_ENV, "").strip()
    if root:
        return Path(root).expanduser() / "fashion-mnist"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    cache = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else None
    if cache is None:
        cache = Path.home() / ".cache"
    return cache / "portnn" / "fashion-mnist"


def fashion_mnist(
    path: str | os.PathLike[str] | None = None,
    download: bool = False,
    *,
    base_url: str | None = None,
    backend: str | Backend | None = None,
) -> tuple[Any, Any, Any, Any]:
    """Fashion-MNIST as ``(X, y, X_test, y_test)``, scaled and flattened as the book does.

    ``X`` is float32 ``(N, 784)`` holding ``(pixels - 127.5) / 127.5`` (so in ``[-1, 1]``), ``y``
    uint8 ``(N,)`` with labels 0-9 naming ``CLASS_NAMES``; 60,000 training and 10,000 test
    samples in the files' order (IDX) or by label, then file name (PNG folders); not shuffled.

    Looks in ``path`` (IDX files or the book's PNG folders), then in ``default_data_dir()``.
    When nothing is found and ``download`` is true, fetches the IDX files from ``base_url``
    (default ``$PORTNN_FASHION_MNIST_URL``, else ``DEFAULT_URL``) into ``path`` if given, else
    into ``default_data_dir()``. Returns NumPy arrays, or ``backend``'s arrays when given.
    """
    folders = _search_folders(path)
    found = _find(folders)
    if found is None:
        if not download:
            raise FileNotFoundError(_not_found_message(folders, base_url))
        dest = folders[0]
        _download(dest, base_url, CHECKSUMS)
        found = ("idx", [dest / name for name in FILES])
    kind, where = found
    if kind == "idx":
        X, y = _load_idx_pair(where[0], where[1])
        X_test, y_test = _load_idx_pair(where[2], where[3])
    else:
        X, y = _load_png_split(where[0])
        X_test, y_test = _load_png_split(where[1])
    arrays = (_scale(X), y, _scale(X_test), y_test)
    if backend is None:
        return arrays
    b = get_backend(backend)
    return tuple(b.asarray(a) for a in arrays)  # type: ignore[return-value]


def download(
    dest: str | os.PathLike[str],
    base_url: str | None = None,
    checksums: Mapping[str, str] | None = CHECKSUMS,
) -> Path:
    """Fetch the four gzipped IDX files from ``base_url`` into the folder ``dest``.

    ``base_url`` defaults to ``$PORTNN_FASHION_MNIST_URL``, else ``DEFAULT_URL``. Each file is
    checked against ``checksums`` (file name -> MD5 hex digest; ``None`` checks nothing) and
    written atomically: a failed or mismatching download leaves no file behind. Files already in
    ``dest`` whose checksum matches are kept, not fetched again. Returns ``dest`` as a Path.
    """
    return _download(dest, base_url, checksums)


def _download(
    dest: str | os.PathLike[str], base_url: str | None, checksums: Mapping[str, str] | None
) -> Path:
    base = _base_url(base_url)
    if checksums is not None:
        missing = [name for name in FILES if name not in checksums]
        if missing:
            raise ValueError(f"checksums has no MD5 for {', '.join(missing)}")
    folder = Path(dest).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        expected = None if checksums is None else str(checksums[name]).strip().lower()
        target = folder / name
        if target.is_file() and (expected is None or _md5_of(target) == expected):
            continue
        _fetch(base + name, target, expected)
    return folder


# --- finding the files ------------------------------------------------------------------------


def _search_folders(path: str | os.PathLike[str] | None) -> list[Path]:
    folders = [] if path is None else [Path(path).expanduser()]
    cache = default_data_dir()
    if cache not in folders:
        folders.append(cache)
    return folders


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _find(folders: list[Path]) -> tuple[str, list[Path]] | None:
    for folder in folders:
        idx = [_idx_file(folder, name) for name in FILES]
        if all(p is not None for p in idx):
            return "idx", idx  # type: ignore[return-value]
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return "png", [folder / "train", folder / "test"]
    return None


def _not_found_message(folders: list[Path], base_url: str | None) -> str:
    try:
        base = _base_url(base_url)
    except ValueError:
        base = DEFAULT_URL
    searched = []
    for folder in folders:
        have = [name for name in FILES if _idx_file(folder, name) is not None]
        note = f" (has only {', '.join(have)})" if have else ""
        searched.append(f"  {folder}{note}")
    files = "\n".join(f"  {base}{name}" for name in FILES)
    return (
        "Fashion-MNIST was not found. portnn looks for the four IDX files "
        f"{', '.join(FILES)} (gzipped or not), or for the book's PNG folders "
        "train/<label>/*.png and test/<label>/*.png, in these folders:\n"
        + "\n".join(searched)
        + f"\nFetch the four files from\n{files}\ninto {folders[0]}, or call "
        "fashion_mnist(download=True), which fetches them there and checks their MD5 checksums. "
        f"Set {DATA_ENV} to keep datasets elsewhere, or {URL_ENV} (or base_url=) to use a mirror."
    )


# --- reading IDX files ------------------------------------------------------------------------


def _read_bytes(file: Path) -> bytes:
    with open(file, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(
                f"{file}: not a readable gzip file ({exc}); delete it and fetch it again"
            ) from exc
    return data


def _read_idx(file: Path, ndim: int) -> np.ndarray:
    data = _read_bytes(file)
    if len(data) < 4:
        raise ValueError(f"{file}: truncated IDX file ({len(data)} bytes, no header)")
    if data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE or data[3] != ndim:
        raise ValueError(
            f"{file}: bad IDX magic number 0x{data[:4].hex()}; expected 0x000008{ndim:02x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{file}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if ndim == 3 and shape[1:] != (_SIDE, _SIDE):
        raise ValueError(
            f"{file}: images are {shape[1]}x{shape[2]}, Fashion-MNIST's are {_SIDE}x{_SIDE}"
        )
    size = math.prod(shape)
    got = len(data) - header
    if got < size:
        raise ValueError(
            f"{file}: truncated IDX data: the header promises {size} bytes for shape {shape}, "
            f"the file holds {got}; delete it and fetch it again"
        )
    if got > size:
        raise ValueError(
            f"{file}: wrong size: {got - size} bytes after the {size} the header promises "
            f"for shape {shape}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _load_idx_pair(images_file: Path, labels_file: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(images_file, 3)
    labels = _read_idx(labels_file, 1)
    if len(images) != len(labels):
        raise ValueError(
            f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} labels"
        )
    if labels.size and int(labels.max()) >= _CLASSES:
        raise ValueError(f"{labels_file}: label {int(labels.max())} is out of range 0-9")
    return images, labels


# --- reading the book's PNG folders -----------------------------------------------------------


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            "reading Fashion-MNIST from PNG folders needs Pillow, which is not installed here; "
            "install it with: pip install 'portnn[images]' (or use the IDX files)"
        ) from exc
    return Image


def _load_png_split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    Image = _pillow()
    label_dirs = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not (entry.name.isdigit() and int(entry.name) < _CLASSES):
            raise ValueError(
                f"{entry}: label folders must be named 0 to 9, after the class they hold"
            )
        label_dirs.append((int(entry.name), entry))
    images, labels = [], []
    for label, label_dir in sorted(label_dirs):
        for file in sorted(p for p in label_dir.iterdir() if p.suffix.lower() == ".png"):
            try:
                with Image.open(file) as img:
                    mode, size = img.mode, img.size
                    pixels = np.asarray(img) if mode == "L" else None
            except OSError as exc:
                raise ValueError(f"{file}: not a readable PNG image ({exc})") from exc
            if mode != "L" or size != (_SIDE, _SIDE):
                raise ValueError(
                    f"{file}: expected a {_SIDE}x{_SIDE} greyscale (mode 'L') image, "
                    f"got {size[0]}x{size[1]} mode {mode!r}"
                )
            images.append(pixels)
            labels.append(label)
    if not images:
        raise ValueError(f"{folder}: no PNG images found in label folders 0 to 9")
    return np.stack(images).astype(np.uint8, copy=False), np.asarray(labels, dtype=np.uint8)


def _scale(images: np.ndarray) -> np.ndarray:
    # The book: (X.reshape(N, -1).astype(float32) - 127.5) / 127.5
    return (images.reshape(images.shape[0], -1).astype(np.float32) - 127.5) / 127.5


# --- downloading ------------------------------------------------------------------------------


def _base_url(base_url: str | None) -> str:
    base = base_url or os.environ.get(URL_ENV, "").strip() or DEFAULT_URL
    scheme = urllib.parse.urlsplit(base).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"base_url must be an http, https or file address, got {base!r}")
    return base.rstrip("/") + "/"


def _md5_of(file: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _fetch(url: str, target: Path, expected: str | None) -> None:
    from tqdm import tqdm

    name = target.name
    tmp = target.with_name(f".{name}.{secrets.token_hex(6)}.part")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)  # honours the umask, unlike mkstemp's 0600
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
            h = hashlib.md5(usedforsecurity=False)
            try:
                with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    with tqdm(
                        total=total,
                        desc=name,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        disable=not _stderr_is_tty(),
                        leave=False,
                    ) as bar:
                        received = 0
                        while block := response.read(_CHUNK):
                            out.write(block)
                            h.update(block)
                            received += len(block)
                            bar.update(len(block))
            except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()  # it holds the open response
                    reason: object = exc
                else:
                    reason = getattr(exc, "reason", exc)
                raise OSError(
                    f"downloading {name} from {url} failed: {reason}. Check the address (set "
                    f"base_url= or {URL_ENV} to use a mirror) or fetch the file by hand into "
                    f"{target.parent}"
                ) from exc
            if total is not None and received != total:
                raise OSError(
                    f"downloading {name} from {url} stopped after {received} of {total} bytes"
                )
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if expected is not None and actual != expected:
            raise ValueError(
                f"checksum mismatch for {name} downloaded from {url}: expected MD5 {expected}, "
                f"got {actual}; the file was not kept. The mirror may be serving a damaged or "
                "different file"
            )
        os.replace(tmp, target)
        done = True
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
