"""The ``portnn`` command (also ``python -m portnn``).

- ``portnn info``: portnn's version and every backend: library version, usable here or not,
  devices and default dtype.
- ``portnn train DATASET``: train the book's network for DATASET (spiral, vertical, sine,
  fashion-mnist, digits), printing the book's progress lines and the final figures; optionally
  save the model and plot the run.
- ``portnn evaluate MODEL DATASET``: a saved model's loss and accuracy on the dataset's test
  split (the data itself where there is none).
- ``portnn predict MODEL IMAGE``: the book's chapter 22 inference on one image file.

Errors are one line on stderr, ``portnn: error: ...``, with exit status 1 (2 for a bad
command line); set ``PORTNN_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROG = "portnn"
DATASETS = ("spiral", "vertical", "sine", "fashion-mnist", "digits")


class _UsageError(Exception):
    """A bad command line: reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# --- the datasets and the book's network for each -------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """Defaults for one dataset: the book's network and optimizer, sized to train quickly."""

    about: str
    regression: bool
    epochs: int
    batch_size: int | None
    learning_rate: float
    decay: float
    hidden: int
    hidden_layers: int
    weight_scale: float = 0.01
    validate: bool = False  # evaluate the test split every epoch (else once at the end)


RECIPES = {
    "spiral": Recipe(
        "the book's chapter 10 run: spiral(100, 3), Adam(0.05, decay 5e-7)",
        regression=False,
        epochs=10001,
        batch_size=None,
        learning_rate=0.05,
        decay=5e-7,
        hidden=64,
        hidden_layers=1,
    ),
    "vertical": Recipe(
        "vertical(100, 3) with the chapter 10 network",
        regression=False,
        epochs=1001,
        batch_size=None,
        learning_rate=0.05,
        decay=5e-7,
        hidden=64,
        hidden_layers=1,
    ),
    "sine": Recipe(
        "the book's chapter 17 regression: sine_data(), Adam(0.005, decay 1e-3)",
        regression=True,
        epochs=10001,
        batch_size=None,
        learning_rate=0.005,
        decay=1e-3,
        hidden=64,
        hidden_layers=2,
        weight_scale=0.1,
    ),
    "fashion-mnist": Recipe(
        "the book's chapter 19 run: Fashion-MNIST, Adam(decay 1e-3), batches of 128",
        regression=False,
        epochs=10,
        batch_size=128,
        learning_rate=0.001,
        decay=1e-3,
        hidden=128,
        hidden_layers=2,
        validate=True,
    ),
    "digits": Recipe(
        "scikit-learn's 8x8 digits with the chapter 19 network, Adam(decay 1e-3)",
        regression=False,
        epochs=30,
        batch_size=32,
        learning_rate=0.005,
        decay=1e-3,
        hidden=128,
        hidden_layers=1,
        validate=True,
    ),
}


@dataclass
class Data:
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    n_outputs: int


def _load_data(name: str, args: argparse.Namespace) -> Data:
    """The dataset as NumPy arrays; the same seed gives the same data in train and evaluate."""
    import portnn as pn

    seed = args.seed
    if name in ("spiral", "vertical"):
        make = pn.datasets.spiral if name == "spiral" else pn.datasets.vertical
        # Training data from portnn's seeded stream (seed 0: the book's own data, and the
        # book's initial weights after it); the test draw from its own generator.
        X, y = make(100, 3)
        X_test, y_test = make(100, 3, seed=seed + 1)
        return Data(X, y, X_test, y_test, 3)
    if name == "sine":
        X, y = pn.datasets.sine(1000)
        return Data(X, y, None, None, 1)
    if name == "fashion-mnist":
        try:
            X, y, X_test, y_test = pn.datasets.fashion_mnist(args.data, download=args.download)
        except FileNotFoundError as exc:
            where = args.data if args.data else pn.datasets.default_data_dir()
            raise FileNotFoundError(
                f"Fashion-MNIST was not found in {where}; pass --download to fetch it (about "
                "30 MB), or --data FOLDER to read the four IDX files (or the book's PNG "
                "folders) from FOLDER"
            ) from exc
        return Data(X, y, X_test, y_test, 10)
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise ImportError(
                "the digits dataset comes from scikit-learn, which is not installed here; "
                "install it with: pip install scikit-learn"
            ) from exc
        digits = load_digits()
        X = (digits.data.astype(np.float32) - 8.0) / 8.0  # pixels 0..16 to [-1, 1]
        y = digits.target.astype(np.uint8)
        order = np.random.RandomState(seed).permutation(len(X))
        cut = len(X) * 4 // 5
        train, test = order[:cut], order[cut:]
        return Data(X[train], y[train], X[test], y[test], 10)
    raise AssertionError(name)  # argparse admits only DATASETS


def _build_model(recipe: Recipe, n_inputs: int, n_outputs: int, hidden: int, lr: float):
    import portnn as pn

    scale = recipe.weight_scale
    layers: list[Any] = [pn.Dense(n_inputs, hidden, weight_scale=scale), pn.ReLU()]
    for _ in range(recipe.hidden_layers - 1):
        layers += [pn.Dense(hidden, hidden, weight_scale=scale), pn.ReLU()]
    layers.append(pn.Dense(hidden, n_outputs, weight_scale=scale))
    layers.append(pn.Linear() if recipe.regression else pn.Softmax())
    model = pn.Model(layers)
    model.set(
        loss=pn.MeanSquaredError() if recipe.regression else pn.CategoricalCrossentropy(),
        optimizer=pn.Adam(learning_rate=lr, decay=recipe.decay),
    )
    return model


def _describe(model: Any) -> str:
    from .layers import Dense

    sizes = [la.n_inputs for la in model.layers if isinstance(la, Dense)][:1]
    sizes += [la.n_neurons for la in model.layers if isinstance(la, Dense)]
    acts = [type(la).__name__ for la in model.layers if not isinstance(la, Dense)]
    return f"{'-'.join(map(str, sizes))} ({', '.join(dict.fromkeys(acts))})"


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) >= 0.01 or x == 0 else f"{x:.3g}"


def _figures(label: str, loss: float, accuracy: float) -> str:
    return f"{label}, acc: {accuracy:.3f}, loss: {_num(loss)}"


def _check_writable(path: str | None, option: str) -> None:
    """Fail before the run, not after it, when an output file cannot be written there: a
    folder, a missing folder or one without write permission (an OSError naming the path)."""
    if path is not None:
        from ._npz import check_writable

        try:
            check_writable(Path(path).expanduser())
        except OSError as exc:
            raise type(exc)(f"{option}: {exc}") from exc


# --- commands --------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    import portnn as pn

    from .backend import BACKENDS

    print(f"portnn {pn.__version__} (Python {platform.python_version()}, {platform.system()})")
    try:
        selected = pn.get_backend()
        print(f"selected backend: {selected.name} ({selected.dtype_name})")
    except (ValueError, ImportError, RuntimeError) as exc:
        print(f"selected backend: none usable ({_one_line(exc)})")
    rows, notes = [], []
    for name in BACKENDS:
        version = _library_version(name)
        try:
            backend = pn.get_backend(name)
        except (ImportError, RuntimeError) as exc:
            rows.append((name, version, "no", "-", "-"))
            notes.append(f"  {name}: {_one_line(exc)}")
            continue
        rows.append((name, version, "yes", _devices(backend), backend.dtype_name))
    header = ("backend", "library", "usable", "devices", "dtype")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(("  " + "  ".join(cells)).rstrip())
    for note in notes:
        print(note)
    return 0


def _library_version(module: str) -> str:
    """The version of the library a backend is named after (each backend's module name)."""
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        return f"{module} {importlib.import_module(module).__version__}"
    except Exception as exc:  # a broken install raises whatever its import raises
        return f"{module} (fails to import: {type(exc).__name__})"


def _devices(backend: Any) -> str:
    """The devices the backend's library can compute on here."""
    return ", ".join(type(backend).devices())


def _device_name(device: Any) -> str:
    text = str(device)
    match = re.fullmatch(r"[\w.]*Device\('(.*)'\)", text)  # array_api_strict.Device('CPU_DEVICE')
    return match.group(1) if match else text


def _cmd_train(args: argparse.Namespace) -> int:
    import portnn as pn

    recipe = RECIPES[args.dataset]
    epochs = args.epochs or recipe.epochs
    batch_size = args.batch_size or recipe.batch_size
    lr = args.learning_rate or recipe.learning_rate
    hidden = args.hidden or recipe.hidden
    print_every = args.print_every if args.print_every is not None else max(1, epochs // 10)
    _check_writable(args.save, "--save")
    _check_writable(args.plot, "--plot")
    _check_writable(args.plot_regions, "--plot-regions")
    if args.plot or args.plot_regions:
        from .plot import _matplotlib

        _matplotlib()  # fail now, not after training, when matplotlib is missing
    if args.plot_regions and args.dataset not in ("spiral", "vertical"):
        raise ValueError("--plot-regions draws 2-D data: use it with spiral or vertical")

    say = (lambda *a: None) if args.quiet else print
    pn.seed(args.seed)
    data = _load_data(args.dataset, args)
    model = _build_model(recipe, data.X.shape[1], data.n_outputs, hidden, lr)
    backend = model.backend
    say(f"portnn {pn.__version__}: {args.dataset}, {recipe.about}")
    tests = f", {len(data.X_test)} test samples" if data.X_test is not None else ""
    say(f"data: {len(data.X)} training samples{tests}, {data.X.shape[1]} features")
    opt = model.optimizer
    say(
        f"model: {_describe(model)}, {type(model.loss).__name__}, "
        f"Adam(learning_rate={opt.learning_rate:g}, decay={opt.decay:g})"
    )
    batches = "full batch" if batch_size is None else f"batches of {batch_size}"
    say(
        f"training: {epochs} epochs, {batches}, "
        f"on {backend.name} ({backend.dtype_name}, {_device_name(backend.device)})"
    )
    validation = None
    if recipe.validate and data.X_test is not None:
        validation = (data.X_test, data.y_test)
    start = time.perf_counter()
    history = model.train(
        data.X,
        data.y,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation,
        print_every=0 if args.quiet else print_every,
    )
    seconds = time.perf_counter() - start
    print(f"trained {epochs} epochs in {seconds:.1f} s")
    print(_figures("training", *model.evaluate(data.X, data.y, batch_size=batch_size)))
    if data.X_test is not None:
        print(_figures("test", *model.evaluate(data.X_test, data.y_test, batch_size=batch_size)))
    if args.save:
        model.save(args.save)
        print(f"saved the model to {args.save}")
    if args.plot:
        from .plot import plot_history

        plot_history(history, args.plot, title=f"portnn train {args.dataset}")
        print(f"saved the training plot to {args.plot}")
    if args.plot_regions:
        from .plot import plot_decision_regions

        plot_decision_regions(model, data.X, data.y, args.plot_regions, title=args.dataset)
        print(f"saved the decision regions to {args.plot_regions}")
    return 0


def _load_model(path: str, backend: str | None) -> Any:
    import portnn as pn

    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    return pn.Model.load(Path(path).expanduser(), backend=backend)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import portnn as pn

    model = _load_model(args.model, args.backend)
    recipe = RECIPES[args.dataset]
    if model.loss is None:
        model.set(loss=pn.MeanSquaredError() if recipe.regression else pn.CategoricalCrossentropy())
    pn.seed(args.seed)
    data = _load_data(args.dataset, args)
    if model.n_inputs is not None and model.n_inputs != data.X.shape[1]:
        raise ValueError(
            f"the model takes {model.n_inputs} inputs but {args.dataset} has "
            f"{data.X.shape[1]} features per sample; was it trained on another dataset?"
        )
    if data.X_test is not None:
        label, X, y = "test", data.X_test, data.y_test
    else:
        label, X, y = "data", data.X, data.y
    print(f"model: {args.model}, {_describe(model)}, on {model.backend.name}")
    loss, accuracy = model.evaluate(X, y, batch_size=args.batch_size)
    print(_figures(f"{label} ({len(X)} samples)", loss, accuracy))
    return 0


def _read_image(path: str, invert: bool) -> np.ndarray:
    """The book's chapter 22 preprocessing: greyscale, 28x28, inverted, scaled to [-1, 1]."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise ImportError(
            "predict reads images with Pillow, which is not installed here; "
            "install it with: pip install 'portnn[images]'"
        ) from exc
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(file) as img:
            grey = img.convert("L").resize((28, 28), Image.Resampling.BILINEAR)
            pixels = np.asarray(grey, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not a readable image ({_one_line(exc)})") from exc
    if invert:
        pixels = 255.0 - pixels  # the book's photos are dark on light; Fashion-MNIST is light
    return ((pixels - 127.5) / 127.5).reshape(1, -1)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .activations import Sigmoid, Softmax
    from .backend import to_numpy
    from .datasets import FASHION_MNIST_CLASSES as CLASS_NAMES

    model = _load_model(args.model, args.backend)
    image = _read_image(args.image, invert=not args.no_invert)
    if model.n_inputs is not None and model.n_inputs != image.shape[1]:
        raise ValueError(
            f"the model takes {model.n_inputs} inputs, but predict feeds it a 28x28 image "
            "(784 inputs), as for the book's Fashion-MNIST model"
        )
    outputs = np.asarray(to_numpy(model.predict(image)))[0]
    output_layer = model.layers[-1]
    if isinstance(output_layer, Sigmoid) and outputs.shape[0] == 1:
        cls = int(outputs[0] > 0.5)
        confidence = outputs[0] if cls else 1 - outputs[0]
    else:
        cls = int(np.argmax(outputs))
        confidence = outputs[cls]
    name = CLASS_NAMES[cls] if outputs.shape[0] == len(CLASS_NAMES) else f"class {cls}"
    detail = f" (class {cls})" if outputs.shape[0] == len(CLASS_NAMES) else ""
    if isinstance(output_layer, Softmax | Sigmoid):
        print(f"{name}{detail}, confidence: {confidence:.3f}")
    else:
        print(f"{name}{detail}, output: {confidence:.3g}")
    return 0


# --- the command line ------------------------------------------------------------------------
def _int_type(low: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _backend_type(text: str) -> str:
    from .backend import BACKENDS

    name = text.strip().lower().replace("-", "_")
    if name not in BACKENDS:
        raise argparse.ArgumentTypeError(
            f"unknown backend {text!r}; choose from {', '.join(BACKENDS)}"
        )
    return name


def _dataset_type(text: str) -> str:
    name = text.strip().lower().replace("_", "-")
    if name == "fashion":
        name = "fashion-mnist"
    if name not in DATASETS:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {text!r}; choose from {', '.join(DATASETS)}"
        )
    return name


def _parser() -> argparse.ArgumentParser:
    positive = _int_type(1, "a positive integer")
    parser = _Parser(
        prog=PROG,
        description="Train and use the network of 'Neural Networks from Scratch in Python' "
        "on NumPy, CuPy, PyTorch or array-api-strict.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def backend_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--backend",
            type=_backend_type,
            metavar="NAME",
            help="numpy, array_api_strict, torch or cupy (default: $PORTNN_BACKEND or numpy)",
        )

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", metavar="PATH", help="folder of the Fashion-MNIST files")
        p.add_argument(
            "--download", action="store_true", help="fetch Fashion-MNIST if it is missing"
        )
        p.add_argument(
            "--seed",
            type=_int_type(0, "a non-negative integer"),
            default=0,
            metavar="N",
            help="seed of the data and initial weights (default 0: the book's)",
        )

    info = sub.add_parser("info", help="versions, backends and devices")
    info.set_defaults(run=_cmd_info)

    train = sub.add_parser(
        "train",
        help="train the book's network on a dataset",
        description="Train the book's network on DATASET and print its progress and final "
        "figures. Defaults per dataset: "
        + "; ".join(
            f"{name}: {r.epochs} epochs, "
            f"{'full batch' if r.batch_size is None else f'batch {r.batch_size}'}, "
            f"lr {r.learning_rate}, hidden {r.hidden}"
            for name, r in RECIPES.items()
        ),
    )
    train.add_argument("dataset", type=_dataset_type, metavar="DATASET", help=", ".join(DATASETS))
    backend_option(train)
    train.add_argument("--epochs", type=positive, metavar="N", help="passes over the training data")
    train.add_argument(
        "--batch-size", type=positive, metavar="N", help="samples per step (default per dataset)"
    )
    train.add_argument(
        "--learning-rate", type=_positive_float, metavar="LR", help="Adam's initial learning rate"
    )
    train.add_argument(
        "--hidden", type=positive, metavar="WIDTH", help="width of the hidden layers"
    )
    train.add_argument(
        "--print-every",
        type=_int_type(0, "a non-negative integer"),
        metavar="N",
        help="epochs between progress lines (default: a tenth of the epochs; 0: none)",
    )
    train.add_argument("--save", metavar="PATH", help="save the trained model (.npz) to PATH")
    train.add_argument("--plot", metavar="PATH", help="plot loss, accuracy and lr to a PNG")
    train.add_argument(
        "--plot-regions", metavar="PATH", help="plot the decision regions to a PNG (2-D data)"
    )
    train.add_argument("--quiet", action="store_true", help="print only the final figures")
    data_options(train)
    train.set_defaults(run=_cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="a saved model's loss and accuracy on a dataset",
        description="Evaluate a saved model on DATASET's test split (sine: the data itself).",
    )
    evaluate.add_argument("model", metavar="MODEL", help="a model saved by portnn")
    evaluate.add_argument(
        "dataset", type=_dataset_type, metavar="DATASET", help=", ".join(DATASETS)
    )
    backend_option(evaluate)
    evaluate.add_argument(
        "--batch-size", type=positive, metavar="N", help="samples per forward pass"
    )
    data_options(evaluate)
    evaluate.set_defaults(run=_cmd_evaluate)

    predict = sub.add_parser(
        "predict",
        help="classify an image with a saved Fashion-MNIST model",
        description="The book's chapter 22 inference: the image is read as greyscale, resized "
        "to 28x28, inverted (255 - x), scaled to [-1, 1] and classified.",
    )
    predict.add_argument("model", metavar="MODEL", help="a model saved by portnn")
    predict.add_argument("image", metavar="IMAGE", help="an image file (PNG, JPEG...)")
    backend_option(predict)
    predict.add_argument(
        "--no-invert",
        action="store_true",
        help="the image is already light on dark, as Fashion-MNIST's are",
    )
    predict.set_defaults(run=_cmd_predict)
    return parser


def _version() -> str:
    from . import __version__

    return f"{PROG} {__version__}"


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _message(exc: BaseException) -> str:
    from .io import ModelFileError

    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        return f"{exc.filename}: no such file or directory"
    if isinstance(exc, ModelFileError | OSError | ValueError | ImportError | RuntimeError):
        return _one_line(exc)
    if isinstance(exc, ArithmeticError | TypeError):
        return _one_line(exc)
    return f"unexpected {type(exc).__name__}: {_one_line(exc)} (set PORTNN_DEBUG=1 for details)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``portnn`` command with ``argv`` (default: ``sys.argv[1:]``); return its status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if getattr(args, "backend", None) is None:
            return args.run(args)
        import portnn as pn

        with pn.use_backend(args.backend):
            return args.run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("PORTNN_DEBUG"):
            raise
        print(f"{PROG}: error: {_message(exc)}", file=sys.stderr)
        return 1
