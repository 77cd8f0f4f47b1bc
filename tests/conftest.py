"""One backend per test run: ``PORTNN_BACKEND`` (or ``--backend``) picks it, so a plain
``pytest`` tests the selected backend and nox runs the suite once per backend."""

import os

import numpy as np
import pytest

import portnn as pn


def pytest_addoption(parser):
    parser.addoption("--backend", default=None, help="numpy, array_api_strict, torch or cupy")


def pytest_configure(config):
    name = config.getoption("--backend")
    if name:
        os.environ["PORTNN_BACKEND"] = name


def _device():
    """``PORTNN_DEVICE`` (e.g. ``cuda`` for the torch suite on a GPU), else the default."""
    return os.environ.get("PORTNN_DEVICE", "").strip() or None


def _name():
    return os.environ.get("PORTNN_BACKEND", "numpy").strip() or "numpy"


@pytest.fixture(scope="session")
def backend_name():
    name = _name()
    try:
        pn.get_backend(name)
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"backend {name!r} is not usable here: {exc}")
    if name == "torch":
        import torch

        # The tests' arrays are tiny: one thread avoids the thread pool spinning on a busy
        # 2-core machine (seen: 10 ms per 64x64 product with two threads under load).
        torch.set_num_threads(1)
    return name


@pytest.fixture
def backend(backend_name):
    """The selected backend in float32, active for the whole test."""
    with pn.use_backend(backend_name, device=_device()) as b:
        yield b


@pytest.fixture
def backend64(backend_name):
    """The selected backend in float64 (for finite-difference gradient checks)."""
    with pn.use_backend(backend_name, dtype="float64", device=_device()) as b:
        yield b


@pytest.fixture(autouse=True)
def _seeded():
    pn.seed(0)
    yield


def numpy_of(x):
    return np.asarray(pn.to_numpy(x))
