"""Seeded random numbers, one generator per backend (the Array API standard has none).

Initial weights are drawn on the host with NumPy (``host()``), so one seed gives the same
initial model on every backend; dropout masks and shuffles are drawn on the device
(``uniform``, ``permutation``), so training never copies random numbers to the GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._checks import integer
from .backend import Backend

_seed: int | None = None
_host: np.random.RandomState | None = None
_device: dict[tuple[str, str], Any] = {}


def seed(value: int | None) -> None:
    """Make every generator repeatable from ``value`` (None: fresh entropy)."""
    global _seed, _host
    _seed = integer("seed", value, 0, allow_none=True)
    _host = np.random.RandomState(_seed)
    _device.clear()


def host() -> np.random.RandomState:
    """The host generator that draws initial weights and datasets.

    It is NumPy's legacy Mersenne Twister on purpose: ``seed(0)`` then gives the very stream
    of the book's ``nnfs.init()`` (``np.random.seed(0)``), so the book's data and initial
    weights, and hence its printed figures, come out exactly.
    """
    global _host
    if _host is None:
        _host = np.random.RandomState(_seed)
    return _host


def _device_seed() -> int | None:
    # A stream separate from the host's, so drawing a mask does not shift the next weights.
    return None if _seed is None else _seed + 1


def _generator(backend: Backend) -> Any:
    key = (backend.name, str(backend.device))
    if key not in _device:
        _device[key] = backend.generator(_device_seed())
    return _device[key]


def split_generator() -> np.random.Generator:
    """A host generator for ``validation_split``'s random draws, made anew from the seed at
    each call: one seed, one split (every rank of a distributed run draws the same one), and
    the host stream of weights and data is left where it was."""
    return np.random.default_rng(None if _seed is None else _seed + 2)


def held_out(
    y: np.ndarray, fraction: float, mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``validation_split``'s rows of targets ``y`` (on the host): the rows kept for training
    and the rows held out, each in order, and each sample's class (None for targets that
    are not classes). ``mode`` "last" holds out the last ``fraction`` of the rows,
    "shuffle" a random draw of them, "stratified" a random draw of that fraction of every
    class, both from ``split_generator``."""
    n = len(y)
    labels = _class_labels(y)
    if mode == "last":
        held = np.arange(n - int(round(n * fraction)), n)
    elif mode == "shuffle":
        held = split_generator().permutation(n)[: int(round(n * fraction))]
    else:
        if labels is None:
            raise ValueError(
                "validation_split_mode='stratified' needs class labels (class indices, one-hot "
                "or 0/1 rows); these targets are not: use 'shuffle'"
            )
        rng = split_generator()
        held = np.concatenate(
            [
                rng.permutation(members)[: int(round(members.size * fraction))]
                for members in (np.flatnonzero(labels == c) for c in np.unique(labels))
            ]
        )
    keep = np.ones(n, bool)
    keep[held] = False
    return np.flatnonzero(keep), np.flatnonzero(~keep), labels


def _class_labels(y: np.ndarray) -> np.ndarray | None:
    """One class per sample from classification targets (indices, one-hot rows, 0/1 rows:
    each distinct row a class), or None for other targets (a regression's)."""
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        return y
    if y.ndim != 2 or not np.isin(y, (0, 1)).all():
        return None
    if y.shape[1] > 1 and (y.sum(axis=1) == 1).all():
        return y.argmax(axis=1)
    return np.unique(y, axis=0, return_inverse=True)[1].reshape(-1)


def uniform(shape: tuple[int, ...], backend: Backend) -> Any:
    """Uniform numbers in [0, 1) of the backend's dtype, drawn on its device."""
    return backend.uniform(_generator(backend), shape)


def step_key(backend: Backend) -> Any:
    """A training step's random numbers as data, from the backend's generator: a JAX key
    (a compiled step draws anew each call from the key it is given), or None elsewhere
    (the layers draw from the generator, ``uniform``)."""
    return backend.step_key(_generator(backend))


class Key:
    """A layer's random numbers inside a step (``Dropout.apply``'s ``key``): ``uniform``
    draws from its JAX key, or with none (``raw`` None) from the backend's generator, named
    by the step rather than read off an array (which a compiler's traced arrays cannot
    answer)."""

    __slots__ = ("backend", "raw")

    def __init__(self, backend: Backend, raw: Any) -> None:
        self.backend, self.raw = backend, raw

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Any:
        if self.raw is None:
            return uniform(shape, self.backend)
        return self.backend.key_uniform(self.raw, shape, dtype)


def permutation(n: int, backend: Backend) -> Any:
    """A random permutation of ``range(n)`` as an integer index array on the device."""
    return backend.permutation(_generator(backend), n)


@contextlib.contextmanager
def kept_state() -> Iterator[None]:
    """Run a block without moving the host stream (rebuilding a saved model draws nothing)."""
    rng = host()
    state = rng.get_state()
    try:
        yield
    finally:
        rng.set_state(state)
