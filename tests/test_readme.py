"""The README's Python snippets run verbatim, in order, and do what they say."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def snippets(title: str) -> list[str]:
    """The ```python blocks of the README's section ``title``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def run(code: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stderr, done.stderr  # the stratified split: no class warning
    return done.stdout


@pytest.mark.slow
def test_use_it_and_the_keras_users_snippets_train_as_they_say(tmp_path):
    (use,) = snippets("Use it")
    (keras,) = snippets("What Keras and PyTorch users reach for")
    checks = """
import json
loss, accuracy = model.evaluate(X, y)
figures = {"accuracy": accuracy, "val": history["val_accuracy"], "epochs": history["epoch"]}
print(json.dumps(figures))
"""
    out = run(use + keras + checks, tmp_path)
    lines = out.splitlines()
    assert any(line.startswith("epoch: 10000, acc: 0.9") for line in lines), out
    assert re.search(r"^\(0\.\d+, 0\.9\d+\)$", out, flags=re.MULTILINE), out  # evaluate's figures
    figures = json.loads(lines[-1])
    # Every class is in the held-out part, so validation accuracy stays high, and
    # restore_best keeps a model as good as the one it started from.
    assert min(figures["val"]) > 0.8, figures
    assert figures["accuracy"] > 0.9, figures
    assert (tmp_path / "spiral.npz").exists() and (tmp_path / "best.npz").exists()
    assert (tmp_path / "history.csv").read_text().count("\n") == len(figures["epochs"]) + 1
    assert (tmp_path / "model.safetensors").exists()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the snippet uses torch")
def test_the_switch_backend_snippet_runs(tmp_path):
    (switch,) = snippets("Switch backend")
    out = run(switch, tmp_path)
    assert re.fullmatch(r"\[\[\S+ +\S+ +\S+\]\]\n", out), out


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="the snippet uses jax")
def test_the_compile_snippet_trains_through_jax_jit(tmp_path):
    (compiled,) = snippets("Compile the step")
    checks = "\nprint(model._step_cache[1].compiled, model.evaluate(X, y)[1])\n"
    out = run(compiled + checks, tmp_path)
    flag, accuracy = out.splitlines()[-1].split()
    assert flag == "True", out
    assert float(accuracy) > 0.8, out


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="digits need sklearn")
def test_the_cnn_snippet_reaches_98_percent_on_digits(tmp_path):
    (cnn,) = snippets("Convolutional networks")
    out = run(cnn, tmp_path)
    assert "(batch, 16, 4, 4)" in out, out  # the summary's shapes, from Input(shape=...)
    accuracy = float(out.splitlines()[-1].split()[-1])
    assert accuracy >= 0.98, out
