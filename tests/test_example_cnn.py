"""examples/cnn_fashion_mnist.py on files, not only on --synthetic (test_examples runs that):
the loader's flat rows reach the CNN as NCHW images, it learns, and its save is a CNN."""

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import portnn as pn

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "cnn_fashion_mnist.py"


def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))


@pytest.fixture
def fashion_dir(tmp_path):
    """Tiny Fashion-MNIST IDX files: 60 training and 20 test images, a bright band per class
    at its own height (what a 3x3 convolution and pooling find in a few epochs)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion"
    folder.mkdir()
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 4, :] = 250
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def _run(tmp_path, backend_name, *args):
    env = {**os.environ, "PORTNN_BACKEND": backend_name, "PORTNN_DATA": str(tmp_path / "none")}
    return subprocess.run(
        [sys.executable, "-W", "error", str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def test_the_cnn_example_learns_from_files_and_saves_a_cnn(tmp_path, backend_name, fashion_dir):
    saved = tmp_path / "cnn.npz"
    result = _run(
        tmp_path, backend_name, "--data", fashion_dir, "--epochs", "4", "--batch-size", "20",
        "--print-every", "2", "--save", saved,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-2]  # "test (20 images), acc: ..., loss: ...", "saved"
    assert last.startswith("test (20 images), acc: "), result.stdout
    assert float(last.split("acc: ")[1].split(",")[0]) >= 0.5, result.stdout  # chance: 0.1
    model = pn.Model.load(saved)
    assert model.input_shape == (None, 1, 28, 28)
    assert type(model.layers[1]).__name__ == "Conv2D"


def test_the_cnn_example_without_data_names_the_ways_to_get_it(tmp_path, backend_name):
    result = _run(tmp_path, backend_name, "--data", tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("cnn_fashion_mnist.py: error: Fashion-MNIST was not found")
    assert "--download" in result.stderr and "--synthetic" in result.stderr
