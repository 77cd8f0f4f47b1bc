"""The ``portnn`` command (also ``python -m portnn``).

- ``portnn info``: portnn's version and every backend: library version, usable here or not,
  devices and default dtype.
- ``portnn train DATASET``: train the book's network for DATASET (spiral, vertical, sine,
  fashion-mnist, digits), printing the book's progress lines and the final figures; optionally
  save the model and plot the run.
- ``portnn evaluate MODEL DATASET``: a saved model's loss and accuracy on the dataset's test
  split (the data itself where there is none).
- ``portnn predict MODEL IMAGE``: the book's chapter 22 inference on one image file.

Every command takes ``--threads N``: the threads of the BLAS/OpenMP pools and torch
(``portnn.set_num_threads``). Without it, ``train`` and ``evaluate`` use one thread for the
small datasets (``SMALL_DATASETS``) and leave the libraries' defaults for the others.

Errors are one line on stderr, ``portnn: error: ...``, with exit status 1 (2 for a bad
command line); set ``PORTNN_DEBUG=1`` to see the traceback instead. Ctrl-C ends with
``portnn: interrupted`` and status 130; output closed early (``portnn info | head -2``) ends
quietly with status 0. ``run_script`` gives a script the same behaviour (the examples use it).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import portnn as pn

from . import datasets, distributed, recipes
from ._npz import check_writable
from .about import environment_report
from .backend import BACKENDS
from .layers import Dense
from .scripts import report

PROG = "portnn"
DATASETS = tuple(recipes.RECIPES)
# One thread by default for these: their matrix products (about a thousand rows by 64 to 128
# columns at most, with the default --hidden) are too small for a second thread to pay for, and
# on a busy machine the extra threads spin (measured: README, "The portnn command").
# Fashion-MNIST's can gain on an idle machine, so it keeps the libraries' own count.
SMALL_DATASETS = ("spiral", "vertical", "sine", "digits")


class _UsageError(Exception):
    """A bad command line: reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _load_data(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """``datasets.load``: the same seed gives the same data in train and evaluate. A missing
    Fashion-MNIST names the options that find or fetch it."""
    folder = Path(args.data).expanduser() if args.data else None
    if folder is not None and args.dataset == "fashion-mnist":
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"--data {args.data}: it is a file, not a folder")
        if not folder.exists() and not args.download:  # --download creates it
            raise FileNotFoundError(
                f"--data {args.data}: the folder does not exist (--download creates it and "
                "fetches Fashion-MNIST into it)"
            )
    try:
        return datasets.load(args.dataset, path=args.data, download=args.download, seed=args.seed)
    except FileNotFoundError as exc:
        if args.dataset != "fashion-mnist":
            raise
        where = args.data if args.data else datasets.default_data_dir()
        raise FileNotFoundError(
            f"Fashion-MNIST was not found in {where}; pass --download to fetch it (about "
            "30 MB), or --data FOLDER to read the four IDX files (or the book's PNG "
            "folders) from FOLDER"
        ) from exc


def _describe(model: Any) -> str:
    sizes = [la.n_inputs for la in model.layers if isinstance(la, Dense)][:1]
    sizes += [la.n_neurons for la in model.layers if isinstance(la, Dense)]
    acts = [type(la).__name__ for la in model.layers if not isinstance(la, Dense)]
    return f"{'-'.join(map(str, sizes))} ({', '.join(dict.fromkeys(acts))})"


def _figures(label: str, loss: float, accuracy: float) -> str:
    shown = f"{loss:.3f}" if abs(loss) >= 0.01 or loss == 0 else f"{loss:.3g}"
    return f"{label}, acc: {accuracy:.3f}, loss: {shown}"


def _check_writable(path: str | None, option: str) -> None:
    """Fail before the run, not after it, when an output file cannot be written there: a
    folder, a missing folder or one without write permission (an OSError naming the path)."""
    if path is not None:
        try:
            check_writable(Path(path).expanduser())
        except OSError as exc:
            raise type(exc)(f"{option}: {exc}") from exc


# --- commands --------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    print(environment_report())
    return 0


def _device_name(device: Any) -> str:
    text = str(device)
    match = re.fullmatch(r"[\w.]*Device\('(.*)'\)", text)  # array_api_strict.Device('CPU_DEVICE')
    return match.group(1) if match else text


def _cmd_train(args: argparse.Namespace) -> int:
    recipe = recipes.get(args.dataset)
    epochs = args.epochs or recipe.epochs
    batch_size = args.batch_size or recipe.batch_size
    print_every = args.print_every if args.print_every is not None else recipe.print_every(epochs)
    _check_writable(args.save, "--save")
    _check_writable(args.plot, "--plot")
    _check_writable(args.plot_regions, "--plot-regions")
    if args.plot or args.plot_regions:
        from .plot import _matplotlib

        _matplotlib()  # fail now, not after training, when matplotlib is missing
    if args.plot_regions and args.dataset not in ("spiral", "vertical", "sine"):
        raise ValueError(
            "--plot-regions draws the decision regions of spiral or vertical, or sine's fit"
        )

    comm = distributed.from_environment()  # under mpiexec -n N (N > 1): data-parallel
    root = comm is None or comm.is_root  # only rank 0 prints and writes files
    tell = print if root else (lambda *a: None)
    say = (lambda *a: None) if args.quiet else tell
    pn.seed(args.seed)
    X, y, X_test, y_test = _load_data(args)
    if args.resume:
        model = _resumed(args, X.shape[1])
    else:
        model = recipe.build(
            X.shape[1],
            hidden=args.hidden,
            learning_rate=args.learning_rate,
            layers=args.layers,
            optimizer=args.optimizer or "adam",
        )
    backend, opt = model.backend, model.optimizer
    say(f"portnn {pn.__version__}: {args.dataset}, {recipe.about}")
    tests = f", {len(X_test)} test samples" if X_test is not None else ""
    say(f"data: {len(X)} training samples{tests}, {X.shape[1]} features")
    resumed = f", resumed from {args.resume} at step {opt.iterations}" if args.resume else ""
    say(
        f"model: {_describe(model)}, {type(model.loss).__name__}, "
        f"{type(opt).__name__}(learning_rate={opt.learning_rate:g}, decay={opt.decay:g}){resumed}"
    )
    batches = "full batch" if batch_size is None else f"batches of {batch_size}"
    say(
        f"training: {epochs} epochs, {batches}, "
        f"on {backend.name} ({backend.dtype_name}, {_device_name(backend.device)}){_threads_used()}"
    )
    if comm is not None:  # the first line: the ranks and the path the gradients take
        distributed.announce(distributed.describe(model, comm, batch_size), say, comm)
    # The test split every epoch where the recipe asks, and for --plot's test curve.
    validate = recipe.validate or bool(args.plot)
    validation = (X_test, y_test) if validate and X_test is not None else None
    start = time.perf_counter()
    history = model.train(
        X,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation,
        print_every=0 if args.quiet else print_every,
        comm=comm,
    )
    tell(f"trained {epochs} epochs in {time.perf_counter() - start:.1f} s")
    if root:  # every rank holds the same parameters: rank 0 evaluates for all
        print(_figures("training", *model.evaluate(X, y, batch_size=batch_size)))
        if X_test is not None:
            print(_figures("test", *model.evaluate(X_test, y_test, batch_size=batch_size)))
    if args.save:
        if comm is None:
            model.save(args.save)
        else:  # rank 0 writes; every rank learns whether it could
            distributed.save(model, args.save, comm)
        tell(f"saved the model to {args.save}")
    if not root:
        return 0
    if args.plot:
        from .plot import plot_history

        plot_history(history, args.plot, title=f"portnn train {args.dataset}")
        print(f"saved the training plot to {args.plot}")
    if args.plot_regions:
        from .plot import plot_decision_regions, plot_regression

        if args.dataset == "sine":  # a regression: the prediction against the target
            plot_regression(model, X, y, args.plot_regions, title=args.dataset)
            print(f"saved the prediction against the target to {args.plot_regions}")
        else:
            plot_decision_regions(model, X, y, args.plot_regions, title=args.dataset)
            print(f"saved the decision regions to {args.plot_regions}")
    return 0


def _threads_used() -> str:
    """``, 1 CPU thread``, or each pool's count where they differ; empty where none is seen."""
    counts = pn.get_num_threads()
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return f", {n} CPU thread{'s' if n > 1 else ''}"
    return (", CPU threads: " + ", ".join(f"{k} {n}" for k, n in counts.items())) if counts else ""


def _resumed(args: argparse.Namespace, n_inputs: int) -> Any:
    """The saved model of ``--resume``, with its optimizer state, to train on."""
    names = ("hidden", "layers", "optimizer", "learning_rate")
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]
    if given:
        raise ValueError(
            f"--resume continues the saved network and optimizer; drop {', '.join(given)}"
        )
    model = _load_model(args.resume, args.backend)
    if model.optimizer is None:
        raise ValueError(f"{args.resume} holds no optimizer to resume; save it with model.save")
    if model.n_inputs != n_inputs:
        raise ValueError(
            f"{args.resume} takes {model.n_inputs} features, but {args.dataset} has {n_inputs}"
        )
    return model


def _load_model(path: str, backend: str | None) -> Any:
    if Path(path).expanduser().is_dir():
        raise IsADirectoryError(f"{path}: it is a folder, not a model file")
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    return pn.Model.load(Path(path).expanduser(), backend=backend)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    model = _load_model(args.model, args.backend)
    if model.loss is None:
        model.set(loss=recipes.get(args.dataset).loss())
    pn.seed(args.seed)
    X, y, X_test, y_test = _load_data(args)
    if model.n_inputs is not None and model.n_inputs != X.shape[1]:
        raise ValueError(
            f"the model takes {model.n_inputs} inputs but {args.dataset} has "
            f"{X.shape[1]} features per sample; was it trained on another dataset?"
        )
    label, X, y = ("data", X, y) if X_test is None else ("test", X_test, y_test)
    print(f"model: {args.model}, {_describe(model)}, on {model.backend.name}")
    loss, accuracy = model.evaluate(X, y, batch_size=args.batch_size)
    print(_figures(f"{label} ({len(X)} samples)", loss, accuracy))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    names = datasets.FASHION_MNIST_CLASSES
    model = _load_model(args.model, args.backend)
    image = datasets.fashion_mnist_image(args.image, invert=not args.no_invert)
    if model.n_inputs is not None and model.n_inputs != image.shape[1]:
        raise ValueError(
            f"the model takes {model.n_inputs} inputs, but predict feeds it a 28x28 image "
            "(784 inputs), as for the book's Fashion-MNIST model"
        )
    # One forward pass: the outputs for the confidence, the classes by the output layer's
    # own rule (argmax for Softmax, > 0.5 for Sigmoid), as predict_classes applies it.
    predicted = model.predict(image)
    outputs = np.asarray(pn.to_numpy(predicted)).reshape(-1)
    classes = np.asarray(pn.to_numpy(model._predictions(predicted))).reshape(-1)
    if classes.size != 1 or classes.dtype.kind not in "biu":  # no classes: regression outputs
        print("outputs: " + ", ".join(f"{v:.3g}" for v in outputs))
        return 0
    cls = int(classes[0])
    confidence = outputs[cls] if outputs.size > 1 else (outputs[0] if cls else 1 - outputs[0])
    name = f"{names[cls]} (class {cls})" if outputs.size == len(names) else f"class {cls}"
    print(f"{name}, confidence: {confidence:.3f}")
    return 0


# --- the command line ------------------------------------------------------------------------
def _number(cast: Callable[[str], Any], what: str, ok: Callable[[Any], bool]) -> Callable:
    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def _name(kind: str, names: Sequence[str], sep: str, aliases: dict[str, str]) -> Callable:
    """A parser of a backend or dataset name: any case, ``-`` or ``_`` (as ``sep``), aliases."""

    def parse(text: str) -> str:
        name = text.strip().lower().replace("_" if sep == "-" else "-", sep)
        name = aliases.get(name, name)
        if name not in names:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {text!r}; choose from {', '.join(names)}"
            )
        return name

    return parse


def _parser() -> argparse.ArgumentParser:
    positive = _number(int, "a positive integer", lambda v: v >= 1)
    natural = _number(int, "a non-negative integer", lambda v: v >= 0)
    positive_real = _number(float, "a positive number", lambda v: 0 < v < math.inf)
    backend = _name("backend", BACKENDS, "_", {})
    dataset = _name("dataset", DATASETS, "-", {"fashion": "fashion-mnist"})
    parser = _Parser(
        prog=PROG,
        description="Train and use the network of 'Neural Networks from Scratch in Python' "
        "on NumPy, CuPy, PyTorch or array-api-strict.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {pn.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def threads(p: argparse.ArgumentParser, default: str) -> None:
        p.add_argument(
            "--threads",
            type=positive,
            metavar="N",
            help=f"threads of the BLAS/OpenMP pools and torch (default: {default})",
        )

    def common(p: argparse.ArgumentParser, *, data: bool) -> None:
        p.add_argument(
            "--backend",
            type=backend,
            metavar="NAME",
            help="numpy, array_api_strict, torch or cupy (default: $PORTNN_BACKEND or numpy)",
        )
        if data:
            p.add_argument("--data", metavar="PATH", help="folder of the Fashion-MNIST files")
            p.add_argument("--download", action="store_true", help="fetch Fashion-MNIST if missing")
            p.add_argument(
                "--seed",
                type=natural,
                default=0,
                metavar="N",
                help="seed of the data and initial weights (default 0: the book's)",
            )

    info = sub.add_parser("info", help="versions, backends, devices and threads")
    threads(info, "the libraries' own")
    info.set_defaults(run=_cmd_info)
    small = f"1 for {', '.join(SMALL_DATASETS)}, else the libraries' own"

    defaults = "; ".join(f"{name}: {r.settings}" for name, r in recipes.RECIPES.items())
    train = sub.add_parser(
        "train",
        help="train the book's network on a dataset",
        description="Train the book's network on DATASET and print its progress and final "
        f"figures. Defaults per dataset: {defaults}",
    )
    arg = train.add_argument
    arg("dataset", type=dataset, metavar="DATASET", help=", ".join(DATASETS))
    arg("--epochs", type=positive, metavar="N", help="passes over the training data")
    arg("--batch-size", type=positive, metavar="N", help="samples per step (default per dataset)")
    arg("--learning-rate", type=positive_real, metavar="LR", help="Adam's initial learning rate")
    arg("--hidden", type=positive, metavar="WIDTH", help="width of the hidden layers")
    arg("--layers", type=positive, metavar="N", help="number of hidden layers")
    arg("--optimizer", choices=tuple(recipes.OPTIMIZERS), help="the optimizer (default adam)")
    arg("--resume", metavar="MODEL", help="continue a saved run (its network and optimizer)")
    arg(
        "--print-every",
        type=natural,
        metavar="N",
        help="epochs between progress lines (default: a tenth of the epochs; 0: none)",
    )
    arg("--save", metavar="PATH", help="save the trained model (.npz) to PATH")
    arg("--plot", metavar="PATH", help="plot loss, accuracy and lr to a PNG")
    arg(
        "--plot-regions",
        metavar="PATH",
        help="plot the decision regions (spiral, vertical) or sine's fit to a PNG",
    )
    arg("--quiet", action="store_true", help="print only the final figures")
    common(train, data=True)
    threads(train, small)
    train.set_defaults(run=_cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="a saved model's loss and accuracy on a dataset",
        description="Evaluate a saved model on DATASET's test split (sine: the data itself).",
    )
    arg = evaluate.add_argument
    arg("model", metavar="MODEL", help="a model saved by portnn")
    arg("dataset", type=dataset, metavar="DATASET", help=", ".join(DATASETS))
    arg("--batch-size", type=positive, metavar="N", help="samples per forward pass")
    common(evaluate, data=True)
    threads(evaluate, small)
    evaluate.set_defaults(run=_cmd_evaluate)

    predict = sub.add_parser(
        "predict",
        help="classify an image with a saved Fashion-MNIST model",
        description="The book's chapter 22 inference: the image is read as greyscale, resized "
        "to 28x28, inverted (255 - x), scaled to [-1, 1] and classified.",
    )
    arg = predict.add_argument
    arg("model", metavar="MODEL", help="a model saved by portnn")
    arg("image", metavar="IMAGE", help="an image file (PNG, JPEG...)")
    arg(
        "--no-invert",
        action="store_true",
        help="the image is already light on dark, as Fashion-MNIST's are",
    )
    common(predict, data=False)
    threads(predict, "the libraries' own")
    predict.set_defaults(run=_cmd_predict)
    return parser


def _threads(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """``--threads`` (or the small datasets' 1) for the command, the libraries' own after it.
    The libraries come first, so that torch's own pool is among those set."""
    n = args.threads
    if n is None and args.command in ("train", "evaluate") and args.dataset in SMALL_DATASETS:
        n = 1
    if n is None:
        return contextlib.nullcontext()
    for name in BACKENDS if args.command == "info" else [None]:
        with contextlib.suppress(ImportError, RuntimeError, ValueError):  # the command says so
            pn.get_backend(name)
    return pn.num_threads(n)


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

    def run() -> int:
        backend = getattr(args, "backend", None)
        with pn.use_backend(backend) if backend else contextlib.nullcontext(), _threads(args):
            return args.run(args)

    return report(run, PROG)
