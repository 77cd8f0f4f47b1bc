"""A small mutation harness: plant one known bug at a time and check that a test fails.

Each mutation replaces one exact snippet of portnn's source. For each, the harness copies
the working tree's ``portnn/``, ``tests/`` and ``pyproject.toml`` once into a temporary
directory (the tree itself is never touched), writes the mutated file there, runs
``pytest -x -q`` on the mutation's test files with ``PORTNN_BACKEND`` set, restores the
file, and reports whether a test caught the bug. Every snippet must occur exactly once in
the current source: one that does not is reported as stale (the code moved on; adapt the
table) before anything runs.

    python benchmarks/mutants.py                     # every mutation, NumPy
    python benchmarks/mutants.py --list              # the table
    python benchmarks/mutants.py --only relu-derivative-at-zero,shuffle-x-only
    python benchmarks/mutants.py --tests tests/test_train_loop.py   # only these test files

Exit status: 0 when every mutation is caught, 1 when one survives, 2 when a snippet is stale
or the unmutated tests fail.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("portnn", "tests", "pyproject.toml")

LOOP = ("tests/test_train_loop.py", "tests/test_model.py")
UNITS = (
    "tests/test_activations.py",
    "tests/test_layers.py",
    "tests/test_losses.py",
    "tests/test_metrics.py",
    "tests/test_optimizers.py",
    "tests/test_train_loop.py",
)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    snippet: str
    replacement: str
    description: str
    tests: tuple[str, ...] = UNITS


MUTATIONS = [
    # --- the training loop ----------------------------------------------------------------
    Mutation(
        "train-forward-not-training",
        "portnn/training.py",
        "output = model.forward(xb, training=True)",
        "output = model.forward(xb)",
        "Model.train runs its forward pass without training=True (Dropout never acts)",
        LOOP,
    ),
    Mutation(
        "shuffle-order-drawn-once",
        "portnn/training.py",
        "order = self._permutation(X.shape[0], b)",
        "order = self._order = self._order if epoch > 1 else self._permutation(X.shape[0], b)",
        "the shuffle order is drawn in the first epoch and reused by every later one",
        LOOP,
    ),
    Mutation(
        "shuffle-x-only",
        "portnn/training.py",
        "xp.take(y, rows, axis=0)",
        "y[s, ...]",
        "shuffling gathers X by the permutation but takes y in its original order",
        LOOP,
    ),
    Mutation(
        "regularization-loss-of-first-batch",
        "portnn/training.py",
        "if i == len(self.batches) - 1:",
        "if i == 0:",
        "the history's regularization loss is the epoch's first batch's, not its last",
        LOOP,
    ),
    Mutation(
        "evaluate-resets-regression-precision",
        "portnn/model.py",
        "self.accuracy.init(y)\n        with quiet_float_errors(X):",
        "self.accuracy.init(y, reinit=True)\n        with quiet_float_errors(X):",
        "evaluate() refits RegressionAccuracy's precision to the evaluated targets",
        LOOP,
    ),
    Mutation(
        "evaluate-in-training-mode",
        "portnn/training.py",
        "model.forward(X[s, ...])",
        "model.forward(X[s, ...], training=True)",
        "evaluate() and the validation figures run Dropout as in training",
        LOOP,
    ),
    Mutation(
        "predict-in-training-mode",
        "portnn/model.py",
        "outputs = [self.forward(X[s, ...]) for s in",
        "outputs = [self.forward(X[s, ...], training=True) for s in",
        "predict() runs Dropout as in training",
        LOOP,
    ),
    # --- activations --------------------------------------------------------------------
    Mutation(
        "relu-derivative-at-zero",
        "portnn/activations.py",
        "xp.astype(self.inputs > 0, dvalues.dtype)",
        "xp.astype(self.inputs >= 0, dvalues.dtype)",
        "ReLU's backward passes dvalues at exactly 0 (the book zeroes where x <= 0)",
    ),
    Mutation(
        "leaky-relu-derivative-at-zero",
        "portnn/activations.py",
        "xp.where(self.inputs > 0, dvalues, self.alpha * dvalues)",
        "xp.where(self.inputs >= 0, dvalues, self.alpha * dvalues)",
        "LeakyReLU's backward takes the slope 1 at exactly 0",
    ),
    Mutation(
        "softmax-predictions-argmax-axis-0",
        "portnn/activations.py",
        "argmax(outputs, axis=1)",
        "argmax(outputs, axis=0)",
        "Softmax predictions take the argmax over samples instead of classes",
    ),
    Mutation(
        "sigmoid-backward-sign",
        "portnn/activations.py",
        "dvalues * (1 - self.output) * self.output",
        "dvalues * (self.output - 1) * self.output",
        "Sigmoid's backward has its sign flipped",
    ),
    # --- metrics ------------------------------------------------------------------------
    Mutation(
        "one-hot-labels-argmax-axis-0",
        "portnn/metrics.py",
        "y = xp.argmax(y, axis=1)",
        "y = xp.argmax(y, axis=0)",
        "CategoricalAccuracy turns one-hot labels into classes over the wrong axis",
    ),
    # --- losses -------------------------------------------------------------------------
    Mutation(
        "fused-backward-without-1/N",
        "portnn/losses.py",
        "return (output - _one_hot_rows(y_true, output)) / output.shape[0]",
        "return output - _one_hot_rows(y_true, output)",
        "the fused softmax + cross-entropy backward is the sum's gradient, not the mean's",
    ),
    Mutation(
        "mse-backward-without-1/N",
        "portnn/losses.py",
        "copy=False) - dvalues) / outputs / n",
        "copy=False) - dvalues) / outputs",
        "mean squared error's backward forgets to divide by the number of samples",
    ),
    Mutation(
        "bce-backward-without-1/N",
        "portnn/losses.py",
        "-(y / c - (1 - y) / (1 - c)) / outputs / n",
        "-(y / c - (1 - y) / (1 - c)) / outputs",
        "binary cross-entropy's backward forgets to divide by the number of samples",
    ),
    Mutation(
        "mae-backward-sign",
        "portnn/losses.py",
        "xp.sign(dvalues - xp.astype(y_true, dvalues.dtype, copy=False))",
        "xp.sign(xp.astype(y_true, dvalues.dtype, copy=False) - dvalues)",
        "mean absolute error's backward with the sign flipped (the book's own slip)",
    ),
    # --- layers -------------------------------------------------------------------------
    Mutation(
        "l2-gradient-sign",
        "portnn/layers.py",
        "dweights = dweights + 2 * self.weight_regularizer_l2 * self.weights",
        "dweights = dweights - 2 * self.weight_regularizer_l2 * self.weights",
        "the L2 weight penalty's gradient pushes weights away from 0",
    ),
    Mutation(
        "dropout-not-inverted",
        "portnn/layers.py",
        "xp.astype(draw < keep, inputs.dtype) / keep",
        "xp.astype(draw < keep, inputs.dtype)",
        "Dropout drops without scaling the kept values by 1 / (1 - rate)",
    ),
    Mutation(
        "dropout-keeps-its-first-mask",
        "portnn/layers.py",
        "draw = random.uniform(tuple(inputs.shape), backend_of(inputs))",
        'draw = self.__dict__.setdefault("_draw", '
        "random.uniform(tuple(inputs.shape), backend_of(inputs)))",
        "Dropout draws one mask and reuses it on every later batch",
    ),
    # --- optimizers ---------------------------------------------------------------------
    Mutation(
        "adam-bias-correction-one-step-late",
        "portnn/optimizers.py",
        "t = self.beta_1, self.beta_2, self.iterations + 1",
        "t = self.beta_1, self.beta_2, self.iterations + 2",
        "Adam corrects its moments with 1 - beta ** (iterations + 2)",
    ),
    Mutation(
        "sgd-momentum-sign",
        "portnn/optimizers.py",
        "m = self.momentum * state.momentum - self.current_learning_rate * grad",
        "m = -self.momentum * state.momentum - self.current_learning_rate * grad",
        "SGD momentum subtracts the previous update instead of keeping it",
    ),
    Mutation(
        "decay-one-step-late",
        "portnn/schedules.py",
        "learning_rate / (1.0 + self.decay * iterations)",
        "learning_rate / (1.0 + self.decay * (iterations + 1))",
        "learning-rate decay counts one step too many",
    ),
]


def check_snippets(tree: Path, mutations: list[Mutation]) -> list[str]:
    """One line per mutation whose snippet does not occur exactly once in ``tree``."""
    problems = []
    for m in mutations:
        path = tree / m.file
        if not path.exists():
            problems.append(f"{m.name}: {m.file} does not exist")
            continue
        count = path.read_text().count(m.snippet)
        if count != 1:
            problems.append(
                f"{m.name}: the snippet occurs {count} times in {m.file} (must be once); "
                f"the source changed, adapt the table:\n    {m.snippet!r}"
            )
    return problems


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def environment(tree: Path, backend: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PORTNN_BACKEND"] = backend
    env["PYTHONPATH"] = str(tree)  # the copy, before the editable install of the real tree
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant of the same size and second: no stale .pyc
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_pytest(tree: Path, files: tuple[str, ...], backend: str, timeout: float, extra=()):
    """(returncode or None on timeout, seconds, output) of ``pytest -x -q`` on ``files``."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *extra, *files]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            cmd,
            cwd=tree,
            env=environment(tree, backend),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        return None, time.perf_counter() - start, out if isinstance(out, str) else out.decode()
    return done.returncode, time.perf_counter() - start, done.stdout + done.stderr


def first_failure(output: str) -> str:
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return found[1] if found else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--only", help="comma-separated mutation names")
    parser.add_argument("--tests", nargs="+", help="run these test files for every mutation")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per pytest run")
    parser.add_argument(
        "--pytest-args",
        default="",
        help='more pytest arguments, one string: "--deselect tests/test_x.py::test_y"',
    )
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    args = parser.parse_args(argv)

    mutations = MUTATIONS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {m.name for m in MUTATIONS}
        if unknown:
            parser.error(f"unknown mutations: {', '.join(sorted(unknown))}")
        mutations = [m for m in MUTATIONS if m.name in wanted]
    if args.list:
        for m in mutations:
            print(f"{m.name:40} {m.file:22} {m.description}")
        return 0

    with tempfile.TemporaryDirectory(prefix="portnn-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)  # one snapshot: edits made to the real tree meanwhile do not leak in
        stale = check_snippets(tree, mutations)
        if stale:
            print("stale mutations (nothing was run):", *stale, sep="\n  ")
            return 2
        where = subprocess.run(
            [sys.executable, "-c", "import portnn; print(portnn.__file__)"],
            cwd=tree,
            env=environment(tree, args.backend),
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not where.startswith(str(tree)):
            print(f"the copy does not shadow the installed portnn (imported {where!r})")
            return 2

        extra = shlex.split(args.pytest_args)

        def files_of(m: Mutation) -> tuple[str, ...]:
            return tuple(args.tests) if args.tests else m.tests

        if not args.no_baseline:
            every = tuple(dict.fromkeys(f for m in mutations for f in files_of(m)))
            code, seconds, output = run_pytest(tree, every, args.backend, args.timeout, extra)
            if code != 0:
                print(f"the unmutated tests fail ({seconds:.1f} s); fix them first:")
                print(output[-3000:])
                return 2
            print(f"baseline: {len(every)} test files pass unmutated ({seconds:.1f} s)\n")

        print(f"{'mutation':40} {'result':16} {'secs':>6}  first failing test")
        caught = 0
        survivors = []
        for m in mutations:
            path = tree / m.file
            original = path.read_text()
            path.write_text(original.replace(m.snippet, m.replacement, 1))
            try:
                code, seconds, output = run_pytest(
                    tree, files_of(m), args.backend, args.timeout, extra
                )
            finally:
                path.write_text(original)
            if code is None:
                result, failure = "caught (timeout)", ""
            elif code == 0:
                result, failure = "SURVIVED", ""
            elif code == 1:
                result, failure = "caught", first_failure(output)
            else:  # 2: interrupted (e.g. an import error), 3/4: pytest trouble
                result, failure = f"caught (exit {code})", first_failure(output)
            if code == 0:
                survivors.append(m)
            else:
                caught += 1
            print(f"{m.name:40} {result:16} {seconds:6.1f}  {failure}", flush=True)

    print(f"\nscore: {caught}/{len(mutations)} caught")
    for m in survivors:
        print(f"  survived: {m.name}: {m.description} ({m.file})")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
