"""Test sessions, one per array backend (read from backends/*.txt), plus lint and bench.

nox                        # numpy, array_api_strict, cupy (skips without a GPU), distributed,
                           # lint, docs
nox -s "tests(torch)"      # PyTorch, on request (a large install)
nox -s "tests(jax)"        # JAX, on request (about 10 minutes)
nox -s distributed         # data-parallel over MPI: mpiexec -n 2 and 3 against one process
nox -s bench -- --quick    # the side-by-side training benchmark
nox -s bench-cnn -- --quick  # the same for the CNN epoch (portnn, PyTorch, JAX, the GEMMs)
"""

import re
import shutil
import subprocess
from pathlib import Path

import nox

ROOT = Path(__file__).parent
BACKENDS = sorted(p.stem for p in (ROOT / "backends").glob("*.txt"))
ON_REQUEST = {"torch", "jax"}  # large installs, slower suites: nox -s "tests(jax)"

nox.options.sessions = [f"tests({b})" for b in BACKENDS if b not in ON_REQUEST]
nox.options.sessions += ["distributed", "lint", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"  # no probing for uv, which prints a warning per session

# The tests' arrays are tiny: one BLAS thread each, as extra threads only contend on a busy
# machine (measured: a chapter-17 run took 2 s on one thread and 17 s with the default pool).
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


@nox.session
@nox.parametrize("backend", BACKENDS, ids=BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """The whole test suite with PORTNN_BACKEND set to one backend."""
    if backend == "cupy" and not _has_nvidia_gpu():
        session.skip("the cupy backend needs an NVIDIA GPU, and nvidia-smi finds none here")
    session.install(".[test]", "-r", f"backends/{backend}.txt")
    session.run(
        "pytest",
        *session.posargs,
        env={"PORTNN_BACKEND": backend, "PYTHONUNBUFFERED": "1", **ONE_THREAD},
    )


@nox.session
def distributed(session: nox.Session) -> None:
    """portnn.distributed: tests that launch mpiexec -n 2 and 3 (pip's mpich) and compare
    with one process, on numpy and array_api_strict."""
    session.install(".[test,mpi]", "-r", "backends/array_api_strict.txt")
    session.run(
        "pytest",
        "tests/test_distributed.py",
        *session.posargs,
        env={"PYTHONUNBUFFERED": "1", **ONE_THREAD},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.17,<0.18")  # formats Markdown code blocks too
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """The API reference, built by pdoc from the docstrings into build/docs. A pdoc warning
    fails it, and so does a ``portnn.`` name in a docstring that pdoc cannot link."""
    session.install(".[docs]")
    out = ROOT / "build" / "docs"
    shutil.rmtree(out, ignore_errors=True)
    # portnn's own page takes the submodules it imports (recipes, schedules, interop...).
    modules = ["portnn", "portnn.nnfs", "portnn.io", "portnn.plot", "portnn.cli"]
    modules += ["portnn.distributed", "portnn.callbacks"]
    session.run("python", "-W", "error::UserWarning", "-m", "pdoc", "-o", str(out), *modules)
    broken = sorted(
        {
            name
            for page in out.rglob("*.html")
            for name in re.findall(r"<code>(portnn\.[\w.]+)</code>", page.read_text("utf-8"))
        }
    )
    if broken:
        session.error(f"docstrings name what the API reference lacks: {', '.join(broken)}")


@nox.session
def bench(session: nox.Session) -> None:
    """Training epochs side by side: portnn, a bare Array API loop, PyTorch, the GEMM floor."""
    session.install(".", "-r", "backends/torch.txt")
    session.run("python", "benchmarks/bench_train.py", *session.posargs)


@nox.session(name="bench-cnn")
def bench_cnn(session: nox.Session) -> None:
    """A CNN epoch side by side: portnn on NumPy and JAX, PyTorch eager, JAX jit, the GEMMs."""
    session.install(".", "-r", "backends/torch.txt", "-r", "backends/jax.txt")
    session.run("python", "benchmarks/bench_cnn.py", *session.posargs)
