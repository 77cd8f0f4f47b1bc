"""Every script in examples/ runs to the end on the selected backend, with few epochs,
prints the book's lines and writes its plot; every one counts epochs alike and reports
errors as the portnn command does."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# script: (extra arguments, lines the output must contain), each run for 3 epochs printing
# every 2: every script counts epochs from 1 and prints every --print-every and the last.
RUNS = {
    "ch10_spiral_adam.py": ([], ["epoch: 3, acc: "]),
    "ch14_l2_regularization.py": ([], ["epoch: 3, acc: ", "reg_loss: ", "validation, acc: "]),
    "ch15_dropout.py": ([], ["epoch: 3, acc: ", "validation, acc: "]),
    "ch16_binary_logistic.py": ([], ["epoch: 3, acc: ", "validation, acc: "]),
    "ch17_regression.py": ([], ["final, acc: "]),
    "ch18_model.py": ([], ["epoch: 3, acc: ", "validation"]),
    "ch19_fashion_mnist.py": (
        ["--synthetic", "--samples", "600"],
        ["epoch: 3, acc: ", "test (100 images), acc: "],
    ),
    "cnn_fashion_mnist.py": (
        ["--synthetic", "--samples", "300"],
        ["epoch: 3, acc: ", "test (50 images), acc: "],
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
    epochs = ["--epochs", "3", "--print-every", "2"]
    result = _python(
        tmp_path, env, "-W", "error", str(EXAMPLES / script), *epochs, *args, "--plot", str(plot)
    )
    assert result.returncode == 0, result.stderr
    for line in expected:
        assert line in result.stdout, result.stdout
    assert re.findall(r"^epoch: (\d+)", result.stdout, re.MULTILINE) == ["2", "3"]
    assert f"saved {plot}" in result.stdout
    assert plot.read_bytes()[:8] == PNG_SIGNATURE


def test_example_takes_backend_flag(tmp_path, backend_name):
    env = {k: v for k, v in os.environ.items() if k != "PORTNN_BACKEND"}
    script = str(EXAMPLES / "ch10_spiral_adam.py")
    result = _python(
        tmp_path, env, "-W", "error", script, "--epochs", "1", "--backend", backend_name
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "epoch: 1, acc: 0.360, loss: 1.099, lr: 0.05\n"


def test_fashion_mnist_example_without_data_explains(tmp_path):
    env = {**os.environ, "PORTNN_DATA": str(tmp_path)}
    script = EXAMPLES / "ch19_fashion_mnist.py"
    result = _python(tmp_path, env, str(script), "--data", str(tmp_path))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("ch19_fashion_mnist.py: error: Fashion-MNIST was not found")
    assert result.stderr.count("\n") == 1 and "--synthetic" in result.stderr


def test_fashion_mnist_download_failure_is_one_line(tmp_path):
    mirror = (tmp_path / "mirror").as_uri()  # not there: fails at once, with no network
    env = {**os.environ, "PORTNN_DATA": str(tmp_path), "PORTNN_FASHION_MNIST_URL": mirror}
    result = _python(tmp_path, env, str(EXAMPLES / "ch19_fashion_mnist.py"), "--download")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("ch19_fashion_mnist.py: error: downloading ")
    assert result.stderr.count("\n") == 1
    assert "set PORTNN_FASHION_MNIST_URL to use a mirror" in result.stderr


def test_an_error_is_one_line(tmp_path):
    script = str(EXAMPLES / "ch16_binary_logistic.py")
    result = _python(tmp_path, dict(os.environ), script, "--backend", "tensorflow")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("ch16_binary_logistic.py: error: unknown backend 'tensorflow'")
    assert result.stderr.count("\n") == 1


def test_ctrl_c_exits_130_quietly(tmp_path, backend_name):
    env = {**os.environ, "PORTNN_BACKEND": backend_name, "PYTHONUNBUFFERED": "1"}
    script = str(EXAMPLES / "ch10_spiral_adam.py")
    args = ["--epochs", "100000000", "--print-every", "1"]
    # Python installs its Ctrl-C handler only where SIGINT is not ignored at start, and a suite
    # run in the background (nox &, nohup) inherits it ignored. A handler of this process's
    # (not SIG_IGN) becomes the default disposition in the child (no preexec_fn: it forks, and
    # fork warns once JAX's threads run).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [sys.executable, script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    with process:
        try:
            assert process.stdout.readline().startswith("epoch: 1, ")  # training has begun
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=120)
        finally:
            process.kill()
    assert process.returncode == 130
    assert err == "ch10_spiral_adam.py: interrupted\n"
