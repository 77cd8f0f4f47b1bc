"""The portnn command, through main([...]), on the selected backend and on small settings."""

import errno
import gzip
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import portnn as pn
import portnn.cli
import portnn.scripts
from portnn.cli import main
from portnn.datasets import FASHION_MNIST_CLASSES as CLASS_NAMES


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch, tmp_path):
    monkeypatch.delenv("PORTNN_DEBUG", raising=False)
    # An empty data folder, so no Fashion-MNIST cached on this machine is ever found.
    monkeypatch.setenv("PORTNN_DATA", str(tmp_path / "portnn-data"))


def run(capsys, command="", *more):
    """main() on ``command`` split at spaces, then ``more`` as they are (paths)."""
    code = main(command.split() + [str(a) for a in more])
    out, err = capsys.readouterr()
    return code, out, err


def write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))


@pytest.fixture
def fashion_dir(tmp_path):
    """Tiny Fashion-MNIST files with correct IDX headers: bright pixels per class."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion"
    folder.mkdir()
    for prefix, n in (("train", 80), ("t10k", 20)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 4, :] = 250  # a band per class: learnable
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def test_info(capsys):
    code, out, err = run(capsys, "info")
    assert code == 0 and err == ""
    assert out.startswith(f"portnn {pn.__version__}")
    for name in ("numpy", "array_api_strict", "torch", "cupy"):
        assert f"\n  {name} " in out
    numpy_row = next(line for line in out.splitlines() if line.startswith("  numpy "))
    assert np.__version__ in numpy_row and "yes" in numpy_row and "float32" in numpy_row
    threads = out.splitlines()[-1]
    assert re.fullmatch(r"threads: \d+ CPUs; .+", threads), threads
    for name, n in pn.get_num_threads().items():  # info loaded every usable library
        assert f"{name} {n}" in threads


def test_info_with_threads_shows_the_counts_it_set(capsys):
    pn.available_backends()  # info loads every library: their pools are in the counts before
    before = pn.get_num_threads()
    code, out, err = run(capsys, "info --threads 3")
    assert code == 0 and err == ""
    pools = out.splitlines()[-1].split("; ", 1)[1].split(", ")
    assert pools and all(pool.endswith(" 3") for pool in pools), pools
    assert pn.get_num_threads() == before  # given back when the command ends


def test_python_m_portnn_info():
    result = subprocess.run(
        [sys.executable, "-m", "portnn", "info"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("portnn ") and "array_api_strict" in result.stdout


@pytest.mark.parametrize("argv", [["info"], ["info", "--threads", "1"]], ids=["info", "threads"])
def test_info_reports_a_broken_library_and_goes_on(tmp_path, argv):
    """A half-installed torch whose import raises something else than ImportError: its backend
    is unusable, with the error in one line, and the others are reported as ever."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        'raise AttributeError("torch._C has no attribute _cuda_init: half-installed")\n'
    )
    path = os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "PORTNN_BACKEND": "numpy"}
    result = subprocess.run(
        [sys.executable, "-m", "portnn", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    torch_row = next(line for line in lines if line.startswith("  torch "))
    assert " no " in torch_row and "fails to import: AttributeError" in torch_row
    note = "  torch: AttributeError: torch._C has no attribute _cuda_init: half-installed"
    assert note in lines
    numpy_row = next(line for line in lines if line.startswith("  numpy "))
    assert " yes " in numpy_row
    assert lines[-1].startswith("threads: ")


def test_help_and_version(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "train" in out and "predict" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"portnn {pn.__version__}"
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "--batch-size" in out


def test_train_spiral_save_plot_and_evaluate(capsys, backend_name, tmp_path):
    model_path, plot_path, regions = (tmp_path / n for n in ("m.npz", "h.png", "r.png"))
    code, out, err = run(
        capsys,
        "train spiral --epochs 50 --backend",
        backend_name,
        "--save",
        model_path,
        "--plot",
        plot_path,
        "--plot-regions",
        regions,
    )
    assert code == 0, err
    assert "epoch: 5, acc: " in out and "epoch: 50, acc: " in out
    # --plot draws the test curve: the test split every epoch, named so, and at the end
    assert out.count("\ntest, acc: ") > 2 and "validation" not in out
    assert f"on {backend_name} (float32" in out
    lines = out.splitlines()
    training = next(line for line in lines if line.startswith("training, acc: "))
    test = lines[lines.index(training) + 1]  # the final figures: after the per-epoch lines
    assert test.startswith("test, acc: ")
    for path in (model_path, plot_path, regions):
        assert path.is_file()
    assert plot_path.read_bytes()[:8] == regions.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, out, err = run(capsys, "evaluate", model_path, "spiral", "--backend", backend_name)
    assert code == 0, err
    assert "test (300 samples), acc: " in out
    # the same seed gives the same test data, so the same figures as at the end of training
    assert out.splitlines()[-1].split(", ", 1)[1] == test.split(", ", 1)[1]
    assert training != test


def test_train_quiet_prints_only_the_final_figures(capsys, backend_name):
    code, out, _ = run(capsys, "train vertical --epochs 20 --quiet --backend", backend_name)
    assert code == 0
    assert "epoch:" not in out and "model:" not in out
    assert "training, acc: " in out and "test, acc: " in out


def test_train_and_evaluate_sine(capsys, backend_name, tmp_path):
    command = "train sine --epochs 30 --hidden 16 --learning-rate 0.01 --backend"
    code, out, err = run(capsys, command, backend_name, "--save", tmp_path / "sine.npz")
    assert code == 0, err
    assert "model: 1-16-16-1 (ReLU, Linear), MeanSquaredError" in out
    assert "training, acc: " in out and "test, acc" not in out
    code, out, err = run(capsys, "evaluate", tmp_path / "sine.npz", "sine")
    assert code == 0, err
    assert "data (1000 samples), acc: " in out


def test_train_digits(capsys, backend_name):
    pytest.importorskip("sklearn")
    command = "train digits --epochs 3 --batch-size 64 --backend"
    code, out, err = run(capsys, command, backend_name)
    assert code == 0, err
    assert "1437 training samples, 360 test samples, 64 features" in out
    assert out.count("\ntest, acc: ") > 2 and "validation" not in out  # every epoch, named so
    lines = out.splitlines()
    test = lines[lines.index(next(x for x in lines if x.startswith("training, acc: "))) + 1]
    assert float(test.split("acc: ")[1].split(",")[0]) > 0.6


def test_fashion_mnist_train_evaluate_predict(capsys, backend_name, fashion_dir, tmp_path):
    model_path = tmp_path / "fashion.npz"
    command = "train fashion-mnist --epochs 3 --batch-size 16 --backend"
    code, out, err = run(capsys, command, backend_name, "--data", fashion_dir, "--save", model_path)
    assert code == 0, err
    assert "80 training samples, 20 test samples, 784 features" in out
    assert "model: 784-128-128-10 (ReLU, Softmax)" in out
    assert "batches of 16" in out and out.count("\ntest, acc: ") > 2 and "validation" not in out

    code, out, err = run(capsys, "evaluate", model_path, "fashion-mnist", "--data", fashion_dir)
    assert code == 0, err
    assert "test (20 samples), acc: " in out

    # A dark band on a light background, as the book's photos are: predict inverts it.
    Image = pytest.importorskip("PIL.Image")
    pixels = np.full((56, 56), 255, dtype=np.uint8)
    pixels[14:22, :] = 0
    image_path = tmp_path / "shirt.png"
    Image.fromarray(pixels).convert("RGB").save(image_path)
    code, out, err = run(capsys, "predict", model_path, image_path, "--backend", backend_name)
    assert code == 0, err
    name, confidence = out.strip().rsplit(", confidence: ", 1)
    assert name.split(" (class ")[0] in CLASS_NAMES
    assert 0.1 <= float(confidence) <= 1.0


def _corrupt_model(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 this is not a model")
    return [path]


def _png(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    path = tmp_path / "image.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(path)
    return path


def _spiral_model(tmp_path):
    path = tmp_path / "spiral.npz"
    assert main(["train", "spiral", "--epochs", "1", "--quiet", "--save", str(path)]) == 0
    return path


ERRORS = {
    "unknown command": (lambda t: ["fly"], "invalid choice"),
    "unknown dataset": (lambda t: ["train", "mnist"], "unknown dataset 'mnist'"),
    "unknown backend": (
        lambda t: ["train", "spiral", "--backend", "tensorflow"],
        "unknown backend 'tensorflow'",
    ),
    "bad epochs": (lambda t: ["train", "spiral", "--epochs", "ten"], "--epochs: must be a pos"),
    "zero epochs": (lambda t: ["train", "spiral", "--epochs", "0"], "--epochs: must be a pos"),
    "bad learning rate": (
        lambda t: ["train", "spiral", "--learning-rate", "-1"],
        "--learning-rate: must be a positive number",
    ),
    "missing argument": (lambda t: ["evaluate", "model.npz"], "required"),
    "missing model": (
        lambda t: ["evaluate", t / "nope.npz", "spiral"],
        "nope.npz: no such model file",
    ),
    "corrupt model": (
        lambda t: ["evaluate", *_corrupt_model(t), "spiral"],
        "not a readable portnn file",
    ),
    "missing fashion-mnist": (
        lambda t: ["train", "fashion-mnist", "--data", t],
        "Fashion-MNIST was not found in",
    ),
    "missing image": (
        lambda t: ["predict", _spiral_model(t), t / "nope.png"],
        "nope.png: no such image file",
    ),
    "model of another dataset": (
        lambda t: ["evaluate", _spiral_model(t), "sine"],
        "the model takes 2 inputs but sine has 1",
    ),
    "predict with a 2-input model": (
        lambda t: ["predict", _spiral_model(t), _png(t)],
        "the model takes 2 inputs",
    ),
    "save into a missing folder": (
        lambda t: ["train", "spiral", "--save", t / "no" / "m.npz"],
        "does not exist",
    ),
    "regions of 784-d data": (
        lambda t: ["train", "digits", "--plot-regions", t / "r.png"],
        "--plot-regions draws the decision regions of spiral or vertical, or sine's fit",
    ),
    "zero threads": (lambda t: ["info", "--threads", "0"], "--threads: must be a positive integer"),
    "threads not a number": (
        lambda t: ["train", "spiral", "--threads", "all"],
        "--threads: must be a positive integer, got 'all'",
    ),
    "model is a folder": (
        lambda t: ["evaluate", t, "spiral"],
        "it is a folder, not a model file",
    ),
    "--data folder missing": (
        lambda t: ["train", "fashion-mnist", "--data", t / "nope"],
        "nope: the folder does not exist",
    ),
    "--data is a file": (
        lambda t: ["train", "fashion-mnist", "--data", _a_file(t)],
        "notes.txt: it is a file, not a folder",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line(capsys, tmp_path, case):
    make_argv, expected = ERRORS[case]
    argv = make_argv(tmp_path)
    capsys.readouterr()
    code, out, err = run(capsys, "", *argv)
    assert code != 0
    assert "Traceback" not in err + out
    assert err.startswith("portnn: error: ") and err.endswith("\n")
    assert err.count("\n") == 1, err
    assert expected in err


def _refuse_writes_in(folder, monkeypatch):
    """os.open refuses to create files in ``folder``, as a read-only folder does for a user who
    is not root (tests may run as root, whom permissions do not stop)."""
    real_open = os.open

    def fake_open(file, flags, *args, **kwargs):
        if os.path.dirname(os.fspath(file)) == str(folder):
            raise PermissionError(errno.EACCES, "Permission denied", file)
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    return folder / "m.npz"


def _a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    return tmp_path / "notes.txt"


# (the option, where it points, what the error says after "OPTION: cannot save to PATH: ")
UNWRITABLE = {
    "save to a folder": ("--save", lambda t, mp: t, "it is a folder"),
    "save into a missing folder": ("--save", lambda t, mp: t / "no" / "m.npz", "does not exist"),
    "save into a file": ("--save", lambda t, mp: _a_file(t) / "m.npz", "is a file, not a folder"),
    "save into a read-only folder": ("--save", _refuse_writes_in, "Permission denied"),
    "plot to a folder": ("--plot", lambda t, mp: t, "it is a folder"),
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_train_checks_its_outputs_before_loading_data(capsys, monkeypatch, tmp_path, case):
    option, where, expected = UNWRITABLE[case]
    loaded = []

    def load_data(*args):
        loaded.append(args)
        raise RuntimeError("the data was loaded before the outputs were checked")

    monkeypatch.setattr(portnn.cli, "_load_data", load_data)
    path = where(tmp_path, monkeypatch)
    code, out, err = run(capsys, "train spiral --epochs 1", option, path)
    assert not loaded
    assert code == 1 and out == ""
    assert err.startswith(f"portnn: error: {option}: cannot save to {path}: ") and expected in err
    assert err.count("\n") == 1 and ".portnn-" not in err


@pytest.mark.parametrize("name", ["out.txt", "out"])
@pytest.mark.parametrize("option", ["--plot", "--plot-regions"])
def test_a_figure_in_a_format_matplotlib_cannot_write_is_a_usage_error(
    capsys, monkeypatch, tmp_path, option, name
):
    """Refused before the data is loaded: matplotlib refused out.txt after the run (the model
    trained and saved), and wrote out.png for out."""
    monkeypatch.setattr(portnn.cli, "_load_data", lambda *args: pytest.fail("data loaded"))
    path = tmp_path / name
    code, out, err = run(capsys, "train spiral --epochs 1 --save", tmp_path / "m.npz", option, path)
    assert (code, out) == (2, "")
    assert err.startswith(f"portnn: error: {option} {path}: end the name in the format to draw")
    assert ".png or one of " in err and ".pdf" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_safetensors_save_name_is_a_usage_error_before_training(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(portnn.cli, "_load_data", lambda *args: pytest.fail("data loaded"))
    code, out, err = run(capsys, "train spiral --epochs 1 --save", tmp_path / "m.safetensors")
    assert (code, out) == (2, "")
    assert err.startswith("portnn: error: cannot save to ") and err.count("\n") == 1
    assert "--save writes portnn's .npz format" in err and "save_safetensors" in err
    assert list(tmp_path.iterdir()) == []


def test_predict_rejects_a_file_that_is_not_an_image(capsys, tmp_path, fashion_dir):
    model_path = tmp_path / "f.npz"
    argv = ["train", "fashion-mnist", "--epochs", "1", "--quiet"]
    assert main([*argv, "--data", str(fashion_dir), "--save", str(model_path)]) == 0
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    capsys.readouterr()
    code, _, err = run(capsys, "predict", model_path, text)
    assert code == 1 and err.startswith("portnn: error: ") and "not a readable image" in err


@pytest.mark.parametrize(
    ("module", "argv", "expected"),
    [
        ("sklearn", ["train", "digits"], "pip install scikit-learn"),
        ("matplotlib", ["train", "spiral", "--plot", "{tmp}/h.png"], "pip install 'portnn[plot]'"),
        ("PIL", ["predict", "{tmp}/m.npz", "{tmp}/i.png"], "pip install 'portnn[images]'"),
    ],
)
def test_missing_optional_dependency(capsys, monkeypatch, tmp_path, module, argv, expected):
    if module == "PIL":
        _spiral_model(tmp_path).rename(tmp_path / "m.npz")
        capsys.readouterr()
    for name in list(sys.modules):  # hide the package and any of its modules already imported
        if name == module or name.startswith(module + "."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, module, None)
    code, out, err = run(capsys, "", *(a.format(tmp=tmp_path) for a in argv))
    assert code == 1 and out == ""
    assert err.startswith("portnn: error: ") and err.count("\n") == 1
    assert expected in err


@pytest.mark.parametrize("n", ["1025", "2147483648", "100000000000"])
def test_too_many_threads_is_a_usage_error_that_changes_nothing(capsys, n):
    before = pn.get_num_threads()
    code, out, err = run(capsys, "info --threads", n)
    assert (code, out) == (2, "")
    assert err == f"portnn: error: argument --threads: must be at most 1024, got '{n}' " + (
        "(see 'portnn info --help')\n"
    )
    assert pn.get_num_threads() == before


def test_unusable_backend_is_one_line(capsys, monkeypatch):
    if "cupy" in pn.available_backends():
        pytest.skip("cupy works here")
    code, _, err = run(capsys, "train spiral --backend cupy --epochs 1")
    assert code == 1 and err.startswith("portnn: error: ") and err.count("\n") == 1
    assert "cupy" in err


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "usage: portnn" in out


def test_download_failure_names_the_variable_not_a_python_argument(capsys, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"  # a file:// mirror that is not there: no network needed
    monkeypatch.setenv("PORTNN_FASHION_MNIST_URL", mirror.as_uri())
    code, out, err = run(capsys, "train fashion-mnist --download --data", tmp_path / "data")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("portnn: error: downloading train-images-idx3-ubyte.gz from file:")
    assert "set PORTNN_FASHION_MNIST_URL to use a mirror" in err and "base_url" not in err


# (command, threads expected while it runs: a count, or None for the libraries' own)
THREADS = {
    "train spiral": ("train spiral --epochs 1", 1),
    "train sine": ("train sine --epochs 1 --hidden 8", 1),
    "train digits": ("train digits --epochs 1", 1),
    "train --threads 2": ("train vertical --epochs 1 --threads 2", 2),
    "train fashion-mnist": ("train fashion-mnist --epochs 1 --data {fashion}", None),
    "train fashion-mnist --threads 1": (
        "train fashion-mnist --epochs 1 --threads 1 --data {fashion}",
        1,
    ),
    "evaluate spiral": ("evaluate {model} spiral", 1),
    "evaluate --threads 3": ("evaluate {model} vertical --threads 3", 3),
    "predict": ("predict {model} {image}", None),
    "predict --threads 2": ("predict {model} {image} --threads 2", 2),
    "info --threads 1": ("info --threads 1", 1),
}


@pytest.mark.parametrize("case", list(THREADS))
def test_threads_while_a_command_runs(capsys, monkeypatch, backend_name, tmp_path, case):
    command, expected = THREADS[case]
    if "digits" in command:
        pytest.importorskip("sklearn")
    paths = {}
    if "{fashion}" in command or "predict" in command:
        paths["fashion"] = _tiny_fashion(tmp_path)
    if "{model}" in command:
        paths["model"] = tmp_path / "m.npz"
        dataset = ["fashion-mnist", "--data", paths["fashion"]] if "predict" in command else []
        trained = ["train", *(dataset or ["spiral"]), "--epochs", "1", "--quiet"]
        assert main([*map(str, trained), "--save", str(paths["model"])]) == 0
    if "{image}" in command:
        paths["image"] = _png(tmp_path)
    argv = command.format(**paths).split() + ["--backend", backend_name] * (
        not command.startswith("info")
    )
    pn.get_backend(backend_name)  # its library loaded, as the command loads it
    before = pn.get_num_threads()
    seen = []
    for name in ("_cmd_info", "_cmd_train", "_cmd_evaluate", "_cmd_predict"):
        real = getattr(portnn.cli, name)
        monkeypatch.setattr(
            portnn.cli,
            name,
            lambda args, real=real: (seen.append(pn.get_num_threads()), real(args))[1],
        )
    capsys.readouterr()
    code, out, err = run(capsys, "", *argv)
    assert code == 0, err
    assert len(seen) == 1
    if expected is None:
        assert seen[0] == before
    else:
        assert set(seen[0].values()) == {expected}, seen[0]
        assert "torch" in seen[0] or backend_name != "torch"  # torch's own pool set too
    if command.startswith("train"):
        shown = f", {expected} CPU thread{'s' * (expected != 1)}" if expected else ""
        assert shown in out
    assert pn.get_num_threads() == before  # the libraries' own counts, given back


def test_train_digits_sets_the_pools_its_loader_brings():
    """scipy's OpenBLAS and scikit-learn's OpenMP load with the digits, after the command set
    the threads: in a fresh process (no earlier test loaded them), every pool loaded when
    training runs has the one thread, whatever count the pools start with."""
    pytest.importorskip("sklearn")
    code = (
        "import json, threadpoolctl, portnn as pn\n"
        "from portnn.cli import main\n"
        "seen, real = [], pn.Model.train\n"
        "def train(self, *args, **kwargs):\n"
        "    seen.extend(threadpoolctl.threadpool_info())\n"
        "    return real(self, *args, **kwargs)\n"
        "pn.Model.train = train\n"
        "assert main(['train', 'digits', '--epochs', '1', '--quiet']) == 0\n"
        "print(json.dumps({info['filepath']: info['num_threads'] for info in seen}))\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "3", "OMP_NUM_THREADS": "3"}
    env.pop("PORTNN_BACKEND", None)  # numpy: the pools are the ones the digits bring
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    pools = json.loads(result.stdout.splitlines()[-1])
    assert any("scipy" in path for path in pools) and any("scikit" in path for path in pools)
    assert set(pools.values()) == {1}, pools


def _tiny_fashion(tmp_path):
    folder = tmp_path / "tiny-fashion"
    folder.mkdir()
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def _closed_pipe():
    """The write end of a pipe whose reader has gone, as ``| head`` leaves it: every write to
    it fails (EPIPE), at the first print or at Python's last flush."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize(
    "argv",
    [
        ["info"],  # a few lines: they meet the closed pipe at the final flush
        ["train", "vertical", "--epochs", "300", "--print-every", "1"],  # 20 kB: while printing
    ],
    ids=["info", "train"],
)
def test_a_closed_pipe_ends_quietly(argv, backend_name):
    write = _closed_pipe()
    env = {**os.environ, "PORTNN_BACKEND": backend_name}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "portnn", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        os.close(write)
    assert result.returncode == 0 and result.stderr == ""


def test_interrupt_is_one_line_and_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(portnn.cli, "_cmd_train", interrupted)
    code, out, err = run(capsys, "train spiral")
    assert (code, out, err) == (130, "", "portnn: interrupted\n")


def _raise(exc):
    def main():
        raise exc

    return main


# main() of a script: (the function, its exit status, what it prints on stderr)
RUN_SCRIPT = {
    "returns None": (lambda: None, 0, ""),
    "returns a status": (lambda: 3, 3, ""),
    "error": (_raise(ValueError("bad\n  value")), 1, "demo.py: error: bad value\n"),
    "missing file": (
        _raise(FileNotFoundError(2, "No such file or directory", "x.npz")),
        1,
        "demo.py: error: x.npz: no such file or directory\n",
    ),
    "unexpected": (
        _raise(KeyError("k")),
        1,
        "demo.py: error: unexpected KeyError: 'k' (set PORTNN_DEBUG=1 for details)\n",
    ),
    "Ctrl-C": (_raise(KeyboardInterrupt()), 130, "demo.py: interrupted\n"),
    "sys.exit": (lambda: sys.exit(4), 4, ""),
    "bad command line": (
        lambda: portnn.scripts.ArgumentParser(prog="demo.py").parse_args(["--nope"]),
        2,
        "demo.py: error: unrecognized arguments: --nope (see 'demo.py --help')\n",
    ),
}


@pytest.mark.parametrize("case", list(RUN_SCRIPT))
def test_run_script(capsys, monkeypatch, case):
    main_, status, stderr = RUN_SCRIPT[case]
    monkeypatch.setattr(sys, "argv", ["/some/where/demo.py"])
    with pytest.raises(SystemExit) as exit_:
        portnn.scripts.run_script(main_)
    assert exit_.value.code == status
    assert capsys.readouterr().err == stderr


def test_run_script_with_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("PORTNN_DEBUG", "1")
    with pytest.raises(ValueError, match="bad"):
        portnn.scripts.run_script(_raise(ValueError("bad")), prog="demo")


def test_check_output_passes_an_option_not_given_and_leaves_nothing(tmp_path):
    portnn.scripts.check_output(None, "--plot", figure=True)
    portnn.scripts.check_output(tmp_path / "m.npz", "--save")
    assert list(tmp_path.iterdir()) == []


def test_resume_continues_a_saved_run_as_if_never_stopped(tmp_path, capsys):
    first, resumed, straight = (str(tmp_path / f"{n}.npz") for n in ("a", "b", "c"))
    base = ["train", "spiral", "--quiet", "--optimizer", "rmsprop", "--layers", "2"]
    assert main([*base, "--epochs", "4", "--save", first]) == 0
    assert (
        main(["train", "spiral", "--quiet", "--epochs", "3", "--resume", first, "--save", resumed])
        == 0
    )
    assert main([*base, "--epochs", "7", "--save", straight]) == 0
    a, b = pn.Model.load(resumed), pn.Model.load(straight)
    assert type(a.optimizer).__name__ == "RMSprop" and a.optimizer.iterations == 7
    assert len([la for la in a.layers if la.param_names]) == 3  # two hidden layers
    for (wa, ba), (wb, bb) in zip(a.get_parameters(), b.get_parameters(), strict=True):
        np.testing.assert_allclose(pn.to_numpy(wa), pn.to_numpy(wb), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(pn.to_numpy(ba), pn.to_numpy(bb), rtol=1e-6, atol=1e-7)
    capsys.readouterr()
    assert main(["train", "spiral", "--resume", first, "--hidden", "8"]) == 1
    assert "drop --hidden" in capsys.readouterr().err


@pytest.fixture
def drawn(monkeypatch):
    """The figures the command saves, for looking inside them (files still written)."""
    Figure = pytest.importorskip("matplotlib.figure").Figure
    figures, save = [], Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k))[1]
    )
    return figures


def test_plot_names_the_test_split(capsys, tmp_path, drawn):
    code, _, err = run(capsys, "train vertical --epochs 3 --quiet --plot", tmp_path / "h.png")
    assert code == 0, err
    loss, accuracy, _ = drawn[0].axes
    for ax in (loss, accuracy):
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training", "test"]


def test_resume_goes_on_counting_the_epochs(capsys, tmp_path, drawn):
    """The printed epochs, the history's and --plot's x axis go on from the saved run's."""
    first = tmp_path / "a.npz"
    assert main(["train", "spiral", "--epochs", "4", "--quiet", "--save", str(first)]) == 0
    command = "train spiral --epochs 3 --print-every 1 --resume"
    code, out, err = run(capsys, command, first, "--plot", tmp_path / "h.png")
    assert code == 0, err
    assert f"resumed from {first} at step 4 (4 epochs)" in out
    assert "training: 3 epochs (5 to 7), full batch" in out
    printed = re.findall(r"^epoch: (\d+),", out, flags=re.M)
    assert printed == ["5", "6", "7"] and "trained 3 epochs in " in out
    for ax in drawn[0].axes:  # the plot draws the history: its epochs
        assert [list(line.get_xdata()) for line in ax.get_lines()] in ([[5, 6, 7]] * 2, [[5, 6, 7]])


def test_resume_with_other_batches_counts_from_one_and_says_so(capsys, tmp_path):
    pytest.importorskip("sklearn")
    first = tmp_path / "d.npz"
    argv = ["train", "digits", "--epochs", "1", "--quiet", "--save", str(first)]
    assert main(argv) == 0  # 45 steps: one epoch of 1,437 samples in batches of 32
    command = "train digits --epochs 2 --print-every 1 --batch-size 100 --resume"
    code, out, err = run(capsys, command, first)
    assert code == 0, err
    assert "at step 45 (1 epoch)" in out  # as the command recorded it
    assert re.findall(r"^epoch: (\d+),", out, flags=re.M) == ["2", "3"]
    # A file saved from Python holds no epoch count: it is taken from the steps.
    bare = pn.Model.load(first)
    bare.metadata = {}
    bare.save(first)
    code, out, err = run(capsys, command, first)
    assert code == 0, err
    assert "at step 45 (3 epochs of batches of 100)" in out  # 15 a pass: 45 steps make 3
    assert re.findall(r"^epoch: (\d+),", out, flags=re.M) == ["4", "5"]
    code, out, err = run(capsys, "train digits --epochs 1 --batch-size 7 --resume", first)
    assert code == 0, err
    assert "at step 45 (not whole epochs of batches of 7: counted from 1)" in out
    assert re.findall(r"^epoch: (\d+),", out, flags=re.M) == ["1"]


def test_resume_refuses_another_dataset_of_the_same_shapes(capsys, tmp_path):
    """spiral and vertical both have 2 features and 3 classes: the file names its dataset."""
    saved = tmp_path / "spiral.npz"
    assert main(["train", "spiral", "--epochs", "2", "--quiet", "--save", str(saved)]) == 0
    assert pn.Model.load(saved).metadata == {"dataset": "spiral", "epochs": 2}
    before = saved.read_bytes()
    capsys.readouterr()
    code, out, err = run(capsys, "train vertical --epochs 1 --save", saved, "--resume", saved)
    assert (code, out) == (1, "")
    assert err == (
        f"portnn: error: {saved} was trained on spiral, not vertical: resume it with "
        f"portnn train spiral --resume {saved}, or train vertical afresh\n"
    )
    assert saved.read_bytes() == before


def test_resume_refuses_a_model_that_does_not_fit_the_dataset(capsys, tmp_path):
    """Two features, as spiral has, but two classes: refused in one line, before training."""
    model = pn.Model([pn.Dense(2, 2), pn.Softmax()])
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam())
    model.save(tmp_path / "two.npz")
    code, out, err = run(capsys, "train spiral --epochs 1 --resume", tmp_path / "two.npz")
    assert (code, out) == (1, "")
    assert err == (
        f"portnn: error: {tmp_path / 'two.npz'} gives 2 outputs, but spiral needs 3 (one per "
        "class); was it trained on another dataset?\n"
    )


def test_plot_regions_of_sine_draws_the_fit(capsys, tmp_path):
    path = tmp_path / "fit.png"
    code, out, err = run(capsys, "train sine --epochs 20 --quiet --plot-regions", path)
    assert code == 0, err
    assert "saved the prediction against the target" in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
