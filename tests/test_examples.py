"""Every script in examples/ runs to the end on the selected backend, with few epochs,
prints the book's lines and writes its plot."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# script: (extra arguments, lines the output must contain)
RUNS = {
    "ch10_spiral_adam.py": (["--epochs", "21", "--print-every", "10"], ["epoch: 20, acc: "]),
    "ch14_l2_regularization.py": (
        ["--epochs", "21", "--print-every", "10"],
        ["epoch: 20, acc: ", "reg_loss: ", "validation, acc: "],
    ),
    "ch15_dropout.py": (
        ["--epochs", "3", "--print-every", "1"],
        ["epoch: 2, acc: ", "validation, acc: "],
    ),
    "ch16_binary_logistic.py": (
        ["--epochs", "20", "--print-every", "10"],
        ["epoch: 20, acc: ", "validation, acc: "],
    ),
    "ch17_regression.py": (["--epochs", "20", "--print-every", "10"], ["final, acc: "]),
    "ch18_model.py": (["--epochs", "3", "--print-every", "1"], ["epoch: 3, acc: ", "validation"]),
    "ch19_fashion_mnist.py": (
        ["--synthetic", "--samples", "600", "--epochs", "2"],
        ["epoch: 2, acc: ", "test (100 images), acc: "],
    ),
}


def _python(cwd, env, *args):
    """``python *args`` in ``cwd`` with ``env``, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(RUNS)


@pytest.mark.parametrize("script", list(RUNS))
def test_example_runs(script, backend_name, tmp_path):
    args, expected = RUNS[script]
    plot = tmp_path / "plot.png"
    env = {**os.environ, "PORTNN_BACKEND": backend_name}
    result = _python(
        tmp_path, env, "-W", "error", str(EXAMPLES / script), *args, "--plot", str(plot)
    )
    assert result.returncode == 0, result.stderr
    for line in expected:
        assert line in result.stdout, result.stdout
    assert f"saved {plot}" in result.stdout
    assert plot.read_bytes()[:8] == PNG_SIGNATURE


def test_example_takes_backend_flag(tmp_path, backend_name):
    env = {k: v for k, v in os.environ.items() if k != "PORTNN_BACKEND"}
    script = str(EXAMPLES / "ch10_spiral_adam.py")
    result = _python(
        tmp_path, env, "-W", "error", script, "--epochs", "2", "--backend", backend_name
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("epoch: 0, acc: 0.360, loss: 1.099, lr: 0.05")


def test_fashion_mnist_example_without_data_explains(tmp_path):
    env = {**os.environ, "PORTNN_DATA": str(tmp_path)}
    result = _python(
        tmp_path, env, str(EXAMPLES / "ch19_fashion_mnist.py"), "--data", str(tmp_path)
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Fashion-MNIST was not found" in result.stderr and "--synthetic" in result.stderr
