"""Datasets: the book's synthetic data (spiral, vertical, sine), Fashion-MNIST and
scikit-learn's digits; ``load(name)`` gives any of them split for training and testing, and
``load_for_command`` the same with its errors in a command line's words (``--data``).

Each returns NumPy arrays, or the arrays of ``backend`` when given. Random data is drawn from
``seed`` when given, else from portnn's host generator (``portnn.seed`` makes it repeatable).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import random
from .._checks import integer, real
from ..backend import Backend, get_backend
from ..recipes import RECIPES
from .fashion import CLASS_NAMES as FASHION_MNIST_CLASSES
from .fashion import default_data_dir, fashion_mnist
from .fashion import download as download_fashion_mnist
from .images import fashion_mnist_image

__all__ = [
    "FASHION_MNIST_CLASSES",
    "LIBRARIES",
    "NAMES",
    "default_data_dir",
    "digits",
    "download_fashion_mnist",
    "fashion_mnist",
    "fashion_mnist_image",
    "load",
    "load_for_command",
    "sine",
    "spiral",
    "split",
    "vertical",
]

# What load() knows: the datasets the book's networks have a recipe for, in the CLI's order.
NAMES = tuple(RECIPES)

# The modules a dataset's loader imports that bring thread pools of their own (scipy's
# OpenBLAS, scikit-learn's OpenMP): the portnn command loads them before it sets the threads,
# which reach only the libraries loaded by then.
LIBRARIES: dict[str, tuple[str, ...]] = {"digits": ("sklearn.datasets",)}


def _rng(seed: int | None) -> np.random.RandomState:
    # The legacy generator, as nnfs uses: seed 0 gives the book's own data.
    return random.host() if seed is None else np.random.RandomState(seed)


def _check_counts(samples: int, classes: int) -> np.dtype:
    """Check the counts; the smallest unsigned dtype for the labels (uint8 up to 256 classes)."""
    integer("samples", samples)
    integer("classes", classes)
    return np.min_scalar_type(int(classes) - 1)


def _out(X: np.ndarray, y: np.ndarray, backend: str | Backend | None) -> tuple[Any, Any]:
    if backend is None:
        return X, y
    b = get_backend(backend)
    return b.asarray(X), b.asarray(y)


def spiral(
    samples: int = 100,
    classes: int = 3,
    *,
    seed: int | None = None,
    backend: str | Backend | None = None,
) -> tuple[Any, Any]:
    """The book's spiral: ``samples`` points per class on ``classes`` interleaved arms.

    For class k: ``r = linspace(0, 1)``, ``t = linspace(4k, 4(k+1)) + 0.2 * normal``,
    ``X = [r sin(2.5 t), r cos(2.5 t)]``. Returns X ``(samples * classes, 2)`` float32 and
    labels ``(samples * classes,)`` uint8 (wider beyond 256 classes), in class order (not shuffled).
    """

    def arm(rng: np.random.RandomState, k: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.linspace(0.0, 1, samples)
        t = np.linspace(k * 4, (k + 1) * 4, samples) + rng.standard_normal(samples) * 0.2
        return r * np.sin(t * 2.5), r * np.cos(t * 2.5)

    return _per_class(samples, classes, arm, seed, backend)


def vertical(
    samples: int = 100,
    classes: int = 3,
    *,
    seed: int | None = None,
    backend: str | Backend | None = None,
) -> tuple[Any, Any]:
    """The book's vertical data: class k around ``(k / 3, 0.5)`` with spread 0.1."""

    def blob(rng: np.random.RandomState, k: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.standard_normal(samples) * 0.1 + k / 3, rng.standard_normal(samples) * 0.1 + 0.5

    return _per_class(samples, classes, blob, seed, backend)


def _per_class(
    samples: int,
    classes: int,
    points: Callable[[np.random.RandomState, int], tuple[np.ndarray, np.ndarray]],
    seed: int | None,
    backend: str | Backend | None,
) -> tuple[Any, Any]:
    """2-D data in class order: ``samples`` points of class k at ``points(rng, k)`` (x, y)."""
    label_dtype = _check_counts(samples, classes)
    rng = _rng(seed)
    X = np.zeros((samples * classes, 2), dtype=np.float32)
    y = np.zeros(samples * classes, dtype=label_dtype)
    for k in range(classes):
        ix = slice(samples * k, samples * (k + 1))
        X[ix] = np.c_[points(rng, k)]
        y[ix] = k
    return _out(X, y, backend)


def sine(samples: int = 1000, *, backend: str | Backend | None = None) -> tuple[Any, Any]:
    """The book's sine data: ``X = arange(samples) / samples``, ``y = sin(2 pi X)``, as columns."""
    _check_counts(samples, 1)
    X = (np.arange(samples, dtype=np.float64) / samples).reshape(-1, 1)
    y = np.sin(2 * np.pi * X)
    return _out(X.astype(np.float32), y.astype(np.float32), backend)


def digits(*, backend: str | Backend | None = None) -> tuple[Any, Any]:
    """scikit-learn's bundled handwritten digits: 1,797 8x8 images of the digits 0-9.

    Returns X float32 ``(1797, 64)``, the pixels' 0..16 scaled to ``[-1, 1]`` as
    ``(x - 8) / 8``, and labels uint8 ``(1797,)``, in scikit-learn's order. Needs scikit-learn
    (``pip install scikit-learn``), which ships the data, so nothing is downloaded.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "the digits dataset comes from scikit-learn, which is not installed here; "
            "install it with: pip install scikit-learn"
        ) from exc
    data = load_digits()
    X = (data.data.astype(np.float32) - 8.0) / 8.0
    return _out(X, data.target.astype(np.uint8), backend)


def split(
    X: Any, y: Any, test_fraction: float = 0.2, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle (X, y) and split it as ``(X, y, X_test, y_test)``, the order ``load`` returns.

    The test part holds ``ceil(test_fraction * N)`` samples (as scikit-learn's
    ``train_test_split``), drawn by ``np.random.RandomState(seed).permutation``; the same seed
    gives the same split. Takes and returns NumPy arrays.
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0 or len(X) != len(y):
        raise ValueError(
            f"X and y must hold one sample per row, as many of each; got shapes {X.shape} "
            f"and {y.shape}"
        )
    fraction = real("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    seed = integer("seed", seed, 0)
    n = len(X)
    n_test = math.ceil(round(fraction * n, 9))  # round first: 0.1 * 30 is 3.0000000000000004
    if not 0 < n_test < n:
        raise ValueError(
            f"test_fraction {fraction:g} of {n} samples leaves {n - n_test} to train on and "
            f"{n_test} to test; both need at least one"
        )
    order = np.random.RandomState(seed).permutation(n)
    train, test = order[: n - n_test], order[n - n_test :]
    return X[train], y[train], X[test], y[test]


def load(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    download: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The dataset ``name`` (one of ``NAMES``) as NumPy ``(X, y, X_test, y_test)``, as
    ``portnn train`` and ``portnn evaluate`` use it.

    - ``spiral``, ``vertical``: 100 samples of 3 classes each. The training data are drawn
      from portnn's host generator, so ``portnn.seed(0)`` first gives the book's own data (and
      the book's initial weights after it); the test data from ``seed + 1``.
    - ``sine``: the book's 1,000 points; there is no test split (``X_test``, ``y_test`` None).
    - ``fashion-mnist``: ``fashion_mnist(path, download)``, its own 60,000/10,000 split.
    - ``digits``: ``digits()`` split by ``split(X, y, 0.2, seed=seed)``: 1,437 and 360.
    """
    seed = integer("seed", seed, 0)
    if name in ("spiral", "vertical"):
        make = spiral if name == "spiral" else vertical
        X, y = make(100, 3)
        return (X, y, *make(100, 3, seed=seed + 1))
    if name == "sine":
        return (*sine(1000), None, None)
    if name == "fashion-mnist":
        return fashion_mnist(path, download=download)
    if name == "digits":
        return split(*digits(), 0.2, seed=seed)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(NAMES)}")


def load_for_command(
    name: str, data: str | None = None, *, download: bool = False, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``load(name, path=data, download=download, seed=seed)`` for a command line with the
    options ``--data FOLDER`` and ``--download``, as ``portnn train`` and ``portnn evaluate``
    have: a ``--data`` that is a file, or a missing folder without ``--download`` (which
    creates it), is refused before anything is read, and a Fashion-MNIST that is not found
    names the options that find or fetch it."""
    folder = Path(data).expanduser() if data else None
    if folder is not None and name == "fashion-mnist":
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"--data {data}: it is a file, not a folder")
        if not folder.exists() and not download:  # --download creates it
            raise FileNotFoundError(
                f"--data {data}: the folder does not exist (--download creates it and "
                "fetches Fashion-MNIST into it)"
            )
    try:
        return load(name, path=data, download=download, seed=seed)
    except FileNotFoundError as exc:
        if name != "fashion-mnist":
            raise
        raise FileNotFoundError(
            f"Fashion-MNIST was not found in {data or default_data_dir()}; pass --download to "
            "fetch it (about 30 MB), or --data FOLDER to read the four IDX files (or the "
            "book's PNG folders) from FOLDER"
        ) from exc
