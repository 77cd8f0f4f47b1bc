"""Datasets: the book's synthetic data (spiral, vertical, sine) and Fashion-MNIST.

Each returns NumPy arrays, or the arrays of ``backend`` when given. Random data is drawn from
``seed`` when given, else from portnn's host generator (``portnn.seed`` makes it repeatable).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import random
from .._checks import integer
from ..backend import Backend, get_backend
from .fashion import CLASS_NAMES as FASHION_MNIST_CLASSES
from .fashion import default_data_dir, fashion_mnist
from .fashion import download as download_fashion_mnist

__all__ = [
    "FASHION_MNIST_CLASSES",
    "default_data_dir",
    "download_fashion_mnist",
    "fashion_mnist",
    "sine",
    "spiral",
    "vertical",
]


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
    label_dtype = _check_counts(samples, classes)
    rng = _rng(seed)
    X = np.zeros((samples * classes, 2), dtype=np.float32)
    y = np.zeros(samples * classes, dtype=label_dtype)
    for k in range(classes):
        ix = slice(samples * k, samples * (k + 1))
        r = np.linspace(0.0, 1, samples)
        t = np.linspace(k * 4, (k + 1) * 4, samples) + rng.standard_normal(samples) * 0.2
        X[ix] = np.c_[r * np.sin(t * 2.5), r * np.cos(t * 2.5)]
        y[ix] = k
    return _out(X, y, backend)


def vertical(
    samples: int = 100,
    classes: int = 3,
    *,
    seed: int | None = None,
    backend: str | Backend | None = None,
) -> tuple[Any, Any]:
    """The book's vertical data: class k around ``(k / 3, 0.5)`` with spread 0.1."""
    label_dtype = _check_counts(samples, classes)
    rng = _rng(seed)
    X = np.zeros((samples * classes, 2), dtype=np.float32)
    y = np.zeros(samples * classes, dtype=label_dtype)
    for k in range(classes):
        ix = slice(samples * k, samples * (k + 1))
        X[ix] = np.c_[
            rng.standard_normal(samples) * 0.1 + k / 3, rng.standard_normal(samples) * 0.1 + 0.5
        ]
        y[ix] = k
    return _out(X, y, backend)


def sine(samples: int = 1000, *, backend: str | Backend | None = None) -> tuple[Any, Any]:
    """The book's sine data: ``X = arange(samples) / samples``, ``y = sin(2 pi X)``, as columns."""
    _check_counts(samples, 1)
    X = (np.arange(samples, dtype=np.float64) / samples).reshape(-1, 1)
    y = np.sin(2 * np.pi * X)
    return _out(X.astype(np.float32), y.astype(np.float32), backend)
