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
(``portnn.set_num_threads``). Without it, ``train`` and ``evaluate`` use the dataset's recipe's
``threads``: one for the small datasets (``SMALL_DATASETS``), the libraries' own for the others.

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
import time
from collections.abc import Callable, Sequence
from typing import Any

import portnn as pn

from . import _npz, datasets, distributed, inference, plot, recipes, threads
from .about import environment_report
from .backend import BACKENDS
from .scripts import ArgumentParser, UsageError, check_output, report
from .threads import MAX_THREADS

PROG = "portnn"
DATASETS = tuple(recipes.RECIPES)
SMALL_DATASETS = tuple(name for name, r in recipes.RECIPES.items() if r.threads == 1)
_NETWORK = ("hidden", "layers", "optimizer", "learning_rate")  # the options --resume refuses


def _load_data(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The same seed gives the same data in train and evaluate."""
    return datasets.load_for_command(
        args.dataset, args.data, download=args.download, seed=args.seed
    )


def _figures(label: str, loss: float, accuracy: float) -> str:
    shown = f"{loss:.3f}" if abs(loss) >= 0.01 or loss == 0 else f"{loss:.3g}"
    return f"{label}, acc: {accuracy:.3f}, loss: {shown}"


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
    epochs, batch_size, print_every = recipe.training(
        args.epochs, args.batch_size, args.print_every
    )
    check_output(args.save, "--save")
    if args.save is not None:  # a name the file format cannot have: a bad command line
        try:
            _npz.checked_name(args.save, "--save")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.model == "cnn" and recipe.image_shape is None:
        images = ", ".join(n for n, r in recipes.RECIPES.items() if r.image_shape is not None)
        raise UsageError(f"--model cnn needs a dataset of images ({images}), not {args.dataset}")
    check_output(args.plot, "--plot", figure=True)
    check_output(args.plot_regions, "--plot-regions", figure=True)
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
    network = {option: getattr(args, option) for option in _NETWORK}
    model = recipes.build_for_command(
        args.dataset,
        X.shape[1],
        args.resume,
        backend=args.backend,
        cnn=args.model == "cnn",
        **network,
    )
    features = X.shape[1]
    X, X_test = recipes.shaped(model, X), recipes.shaped(model, X_test)  # images for a CNN
    backend, steps = model.backend, model.optimizer.iterations
    batches = "full batch" if batch_size is None else f"batches of {batch_size}"
    about = recipe.cnn_about if recipes.is_cnn(model) else recipe.about
    say(f"portnn {pn.__version__}: {args.dataset}, {about}")
    tests = f", {len(X_test)} test samples" if X_test is not None else ""
    images = f" (as {'x'.join(map(str, X.shape[1:]))} images)" if recipes.is_cnn(model) else ""
    say(f"data: {len(X)} training samples{tests}, {features} features{images}")
    done, resumed = 0, ""
    if args.resume:
        # The epochs go on from the saved run's: as this command recorded them, else (a file
        # saved otherwise) from its steps, as whole epochs of this run's batches, else
        # (another batch size) counted from 1, as said.
        recorded = model.metadata.get("epochs")
        per = "full-batch epochs" if batch_size is None else f"epochs of {batches}"
        if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 0:
            whole, after = recorded, f"{recorded} epoch{'' if recorded == 1 else 's'}"
        else:
            whole = recipes.epochs_done(steps, len(X), batch_size)
            after = f"{whole} {per}" if whole is not None else f"not whole {per}: counted from 1"
        done = whole or 0
        resumed = f", resumed from {args.resume} at step {steps} ({after})"
    say(f"model: {recipes.describe(model, training=True)}{resumed}")
    numbered = f" ({done + 1} to {done + epochs})" if done else ""
    used = threads.describe()
    say(
        f"training: {epochs} epochs{numbered}, {batches}, "
        f"on {backend.name} ({backend.dtype_name}, {_device_name(backend.device)})"
        + (f", {used}" if used else "")
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
        epochs=done + epochs,  # Keras' numbering: epochs done + 1 to done + epochs
        initial_epoch=done,
        batch_size=batch_size,
        validation_data=validation,
        validation_label="test",
        print_every=0 if args.quiet else print_every,
        comm=comm,
    )
    tell(f"trained {epochs} epochs in {time.perf_counter() - start:.1f} s")
    if root:  # every rank holds the same parameters: rank 0 evaluates for all
        print(_figures("training", *model.evaluate(X, y, batch_size=batch_size)))
        if X_test is not None:
            print(_figures("test", *model.evaluate(X_test, y_test, batch_size=batch_size)))
    if args.save:
        # What --resume goes on from: the dataset, and the number of the last epoch trained.
        model.metadata.update(dataset=args.dataset, epochs=history["epoch"][-1])
        if comm is None:
            model.save(args.save)
        else:  # rank 0 writes; every rank learns whether it could
            distributed.save(model, args.save, comm)
        tell(f"saved the model to {args.save}")
    if not root:
        return 0
    if args.plot:
        title = f"portnn train {args.dataset}"
        plot.plot_history(history, args.plot, title=title, validation_label="test")
        print(f"saved the training plot to {args.plot}")
    if args.plot_regions:  # sine's fit, or the decision regions of spiral or vertical
        drawn = plot.plot_fit(
            model, X, y, args.plot_regions, regression=recipe.regression, title=args.dataset
        )
        print(f"saved {drawn} to {args.plot_regions}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    model = inference.load_model(args.model, args.backend)
    if model.loss is None:
        model.set(loss=recipes.get(args.dataset).loss())
    pn.seed(args.seed)
    X, y, X_test, y_test = _load_data(args)
    takes = recipes.features(model)
    if takes is not None and takes != X.shape[1]:
        raise ValueError(
            f"the model takes {takes} inputs but {args.dataset} has "
            f"{X.shape[1]} features per sample; was it trained on another dataset?"
        )
    X, X_test = recipes.shaped(model, X), recipes.shaped(model, X_test)
    label, X, y = ("data", X, y) if X_test is None else ("test", X_test, y_test)
    print(f"model: {args.model}, {recipes.describe(model)}, on {model.backend.name}")
    loss, accuracy = model.evaluate(X, y, batch_size=args.batch_size)
    print(_figures(f"{label} ({len(X)} samples)", loss, accuracy))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    names = datasets.FASHION_MNIST_CLASSES
    model = inference.load_model(args.model, args.backend)
    image = datasets.fashion_mnist_image(args.image, invert=not args.no_invert)
    takes = recipes.features(model)
    if takes is not None and takes != image.shape[1]:
        raise ValueError(
            f"the model takes {takes} inputs, but predict feeds it a 28x28 image "
            "(784 inputs), as for the book's Fashion-MNIST model"
        )
    image = recipes.shaped(model, image)
    outputs, cls, confidence = inference.classify(model, image)
    if cls is None:  # no classes: regression outputs
        print("outputs: " + ", ".join(f"{v:.3g}" for v in outputs))
        return 0
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


def _thread_count(text: str) -> int:
    n = _number(int, "a positive integer", lambda v: v >= 1)(text)
    if n > MAX_THREADS:  # checked here: torch would refuse it after the BLAS pools
        raise argparse.ArgumentTypeError(f"must be at most {MAX_THREADS}, got {text!r}")
    return n


def _parser() -> argparse.ArgumentParser:
    positive = _number(int, "a positive integer", lambda v: v >= 1)
    natural = _number(int, "a non-negative integer", lambda v: v >= 0)
    positive_real = _number(float, "a positive number", lambda v: 0 < v < math.inf)
    backend_name = _name("backend", BACKENDS, "_", {})
    dataset_name = _name("dataset", DATASETS, "-", {"fashion": "fashion-mnist"})
    parser = ArgumentParser(
        prog=PROG,
        description="Train and use the network of 'Neural Networks from Scratch in Python' "
        "on NumPy, CuPy, PyTorch or array-api-strict.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {pn.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def shared(
        p: argparse.ArgumentParser,
        run: Callable,
        threads: str,
        *,
        backend: bool = True,
        data: bool = False,
    ) -> None:
        """The options the commands share, after each one's own: --backend (all but info),
        --data, --download and --seed where ``data``, and --threads (``threads``: its default)."""
        if backend:
            p.add_argument(
                "--backend",
                type=backend_name,
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
        p.add_argument(
            "--threads",
            type=_thread_count,
            metavar="N",
            help=f"threads of the BLAS/OpenMP pools and torch, at most {MAX_THREADS}; OpenBLAS "
            f"takes at most its build's maximum (default: {threads})",
        )
        p.set_defaults(run=run)

    own = "the libraries' own"
    small = f"1 for {', '.join(SMALL_DATASETS)}, else {own}"
    info = sub.add_parser("info", help="versions, backends, devices and threads")
    shared(info, _cmd_info, own, backend=False)

    defaults = "; ".join(f"{name}: {r.settings}" for name, r in recipes.RECIPES.items())
    train = sub.add_parser(
        "train",
        help="train the book's network on a dataset",
        description="Train the book's network on DATASET and print its progress and final "
        f"figures. Defaults per dataset: {defaults}",
    )
    arg = train.add_argument
    arg("dataset", type=dataset_name, metavar="DATASET", help=", ".join(DATASETS))
    arg("--epochs", type=positive, metavar="N", help="passes over the training data")
    arg("--batch-size", type=positive, metavar="N", help="samples per step (default per dataset)")
    arg("--learning-rate", type=positive_real, metavar="LR", help="Adam's initial learning rate")
    arg("--hidden", type=positive, metavar="WIDTH", help="width of the hidden layers")
    arg("--layers", type=positive, metavar="N", help="number of hidden layers")
    arg("--optimizer", choices=tuple(recipes.OPTIMIZERS), help="the optimizer (default adam)")
    arg(
        "--model",
        choices=("mlp", "cnn"),
        default="mlp",
        help="the book's dense network (mlp, default) or a convolutional one for images (cnn: "
        "fashion-mnist, digits)",
    )
    arg("--resume", metavar="MODEL", help="continue a saved run (its network and optimizer)")
    arg(
        "--print-every",
        type=natural,
        metavar="N",
        help="epochs between progress lines (default: a tenth of the epochs; 0: none)",
    )
    arg("--save", metavar="PATH", help="save the trained model (.npz) to PATH")
    arg("--plot", metavar="PATH", help="plot loss, accuracy and lr to PATH (.png, .pdf, .svg...)")
    arg(
        "--plot-regions",
        metavar="PATH",
        help="plot the decision regions (spiral, vertical) or sine's fit to PATH (.png...)",
    )
    arg("--quiet", action="store_true", help="print only the final figures")
    shared(train, _cmd_train, small, data=True)

    evaluate = sub.add_parser(
        "evaluate",
        help="a saved model's loss and accuracy on a dataset",
        description="Evaluate a saved model on DATASET's test split (sine: the data itself).",
    )
    arg = evaluate.add_argument
    arg("model", metavar="MODEL", help="a model saved by portnn")
    arg("dataset", type=dataset_name, metavar="DATASET", help=", ".join(DATASETS))
    arg("--batch-size", type=positive, metavar="N", help="samples per forward pass")
    shared(evaluate, _cmd_evaluate, small, data=True)

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
    shared(predict, _cmd_predict, own)
    return parser


def _threads(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """``--threads`` (else the dataset's recipe's, for train and evaluate) while the command
    runs, the libraries' own after it; info sets every backend's library, the others theirs
    and their dataset's (digits: scipy's and scikit-learn's pools too)."""
    n, modules = args.threads, ()
    if args.command in ("train", "evaluate"):
        n = recipes.get(args.dataset).threads if n is None else n
        modules = datasets.LIBRARIES.get(args.dataset, ())
    return threads.limit(n, BACKENDS if args.command == "info" else [None], modules)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``portnn`` command with ``argv`` (default: ``sys.argv[1:]``); return its status."""
    parser = _parser()

    def run() -> int:
        args = parser.parse_args(argv)  # --help and --version exit with 0, usage errors 2
        if args.command is None:
            parser.print_help()
            return 2
        backend = getattr(args, "backend", None)
        with pn.use_backend(backend) if backend else contextlib.nullcontext(), _threads(args):
            return args.run(args)

    return report(run, PROG)
