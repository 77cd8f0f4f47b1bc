"""One training run of a Model (``Model.train`` is ``train`` here): batches, figures kept on
the device until a logging point, divergence and history (what it prints and the progress
bars are in ``progress``).

Figures stay on the device and are read back only at logging points, so a GPU run has no
host round trip per batch. Each epoch keeps the state its first forward pass measured (a
``state_dict`` by reference: updates make new arrays; copied on JAX, whose compiled step
reuses the buffers it replaces); a finite epoch loss vouches for it, and divergence restores
the last state vouched for.

With ``comm`` (``portnn.distributed``) the run is data-parallel. A ``distributed.DataParallel``
checks that the ranks agree and takes rank 0's state. It splits each batch, makes the
all-reduced step, and sums the figures across ranks at logging points, where rank 0 alone
prints. The hooks below call it only when ``comm`` is given: without it nothing changes.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _state, random
from ._checks import integer, real
from ._inputs import prepare
from ._xp import all_finite, array_namespace, quiet_float_errors
from .backend import to_numpy
from .callbacks import Callback
from .progress import ProgressBars, book_line

if TYPE_CHECKING:
    from .model import Model

HISTORY_KEYS = (
    "epoch",
    "loss",
    "data_loss",
    "regularization_loss",
    "accuracy",
    "learning_rate",
    "val_loss",
    "val_accuracy",
)

# Epochs whose figures may wait on the device for the next logging point. Each keeps its
# starting state alive (to restore on divergence), so the wait is bounded.
MAX_PENDING = 10


def train(  # Model.train: ``self`` is the model, so help() and the API page show it so
    self,
    X: Any,
    y: Any,
    *,
    epochs: int = 1,
    batch_size: int | None = None,
    validation_data: tuple[Any, Any] | None = None,
    print_every: int | None = 1,
    shuffle: bool = True,
    progress: bool | str | None = None,
    comm: Any = None,
    sharded: bool = False,
    callbacks: Sequence[Callback] = (),
    validation_split: float = 0.0,
    validation_split_mode: str = "last",
    validation_label: str = "validation",
    initial_epoch: int = 0,
    verbose: int | None = None,
    compile: bool | None = None,
) -> dict[str, list]:
    """Train for ``epochs`` passes over (X, y) in batches of ``batch_size`` (None: all).

    Prints the book's summary line every ``print_every`` epochs (None or 0: silent) and
    returns the history: per-epoch lists under ``HISTORY_KEYS``. ``shuffle`` draws a new
    order each epoch on the device. ``progress`` shows a bar (default: on a terminal,
    when printing). A loss that turns NaN or infinite stops training at the next logging
    point (at most ``MAX_PENDING`` epochs later) with a FloatingPointError, as do NaN or
    infinite parameters after the last update; the model then keeps the parameters that
    the last finite epoch loss was measured from (that epoch's start), and the error's
    ``history`` holds the epochs before.

    ``comm``, a ``portnn.distributed.Communicator``, trains data-parallel across its MPI
    ranks. Every rank starts from rank 0's parameters and optimizer state. ``batch_size``
    is the global batch, and each rank computes its slice of every batch of rank 0's
    permutation, so N ranks reach the parameters one process reaches, to float
    tolerance. Every rank passes the same data, or with ``sharded=True`` its own rows
    (``portnn.distributed.shard``). Figures and history are reduced across ranks, and
    only rank 0 prints and shows progress.

    As in Keras: ``callbacks`` (``portnn.callbacks``: EarlyStopping, ModelCheckpoint,
    ReduceLROnPlateau, LearningRateScheduler, HistoryLogger, or your own) see each
    epoch's figures and may stop training (under ``comm``, a stop on any rank stops every
    rank after the same epoch); ``validation_split`` holds out that fraction of the
    samples as validation data: by default the last ones, before any shuffling, as Keras
    does (``validation_split_mode="last"``), or a random draw (``"shuffle"``) or a random
    draw of that fraction of every class (``"stratified"``), both from portnn's seed; a
    warning says when the held-out part has classes the training part lacks, or the other
    way round (class-ordered data, such as ``pn.datasets.spiral``'s, with ``"last"``).
    ``validation_label`` names the validation figures in the printed lines ("test" when
    they come from a test split). ``initial_epoch`` resumes a count, as Keras' does: the
    epochs run are ``initial_epoch + 1`` to ``epochs``. ``verbose`` 0 is silent, 1 shows a
    bar, 2 prints a line per epoch. ``progress="keep"`` leaves the bars on screen. Ctrl-C stops
    before the next step, so the model holds whole steps, and raises KeyboardInterrupt
    with the ``history`` of the epochs that completed.

    Each batch is one call of the model's training step (``portnn.step``), a pure function
    of its arrays. ``compile=True`` hands it to the backend's compiler (``jax.jit`` on JAX,
    ``torch.compile`` on torch; NumPy, CuPy and array-api-strict run it as it is), False runs
    it eagerly; None (default) compiles where the backend does so by default (JAX). A
    compiled step gives the eager one's parameters to float tolerance; each batch shape
    (the last, shorter batch) compiles once. A model with a layer that overrides the book's
    ``forward``/``backward`` (rather than ``apply``/``vjp``), or an optimizer that writes
    ``_update`` (rather than ``rule``), trains eagerly, and ``compile=True`` refuses it.
    """
    run = Run(
        self,
        X,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation_data,
        print_every=print_every,
        shuffle=shuffle,
        progress=progress,
        comm=comm,
        sharded=sharded,
        callbacks=callbacks,
        validation_split=validation_split,
        validation_split_mode=validation_split_mode,
        validation_label=validation_label,
        initial_epoch=initial_epoch,
        verbose=verbose,
        compile=compile,
    )
    return run.fit()


class Run:
    """``Run(model, X, y, ...).fit()``: what ``train`` does, with its bookkeeping in
    one place (the data, the batches, the epochs waiting for a logging point, the history)."""

    def __init__(
        self,
        model: Model,
        X: Any,
        y: Any,
        *,
        epochs: int,
        batch_size: int | None,
        validation_data: tuple[Any, Any] | None,
        print_every: int | None,
        shuffle: bool,
        progress: bool | str | None,
        comm: Any = None,
        sharded: bool = False,
        callbacks: Sequence[Callback] = (),
        validation_split: float = 0.0,
        validation_split_mode: str = "last",
        validation_label: str = "validation",
        initial_epoch: int = 0,
        verbose: int | None = None,
        compile: bool | None = None,
    ) -> None:
        self.model = model
        self.dp = None
        self.callbacks = _checked_callbacks(callbacks)
        self.stop_training = False  # a callback sets it to end training after this epoch
        self.interrupted = False  # Ctrl-C seen: stop at the next step's start
        self.last_epoch = 0
        print_every, progress = _verbosity(verbose, print_every, progress)
        validation_data = _split(validation_split, validation_split_mode, validation_data)
        if not isinstance(validation_label, str) or not validation_label:
            raise ValueError(f"validation_label must be a non-empty str, got {validation_label!r}")
        self.validation_label = validation_label
        # Callbacks see every epoch's figures: then every epoch is a logging point.
        self.log_every_epoch = bool(self.callbacks)
        setup = (X, y, epochs, initial_epoch, batch_size, print_every, validation_data)
        if comm is None:
            self._setup(*setup)
        else:
            from .distributed import DataParallel

            self.dp = DataParallel(comm, model, sharded)
            self.dp.together("checking the training arguments and data", self._setup, *setup)
            self._distribute(batch_size, shuffle)
        step = _step(model, compile)
        # One call a batch: the step on the batch, or (data parallel) the step wrapped in
        # the all-reduce of every rank's gradients between its two halves.
        self.step = (lambda i, batch: step(*batch())) if self.dp is None else self.dp.wrap(step)
        self.shuffle = shuffle and len(self.batches) > 1
        self.is_main = self.dp is None or self.dp.is_root  # the one rank that prints and writes
        if progress is None:
            progress = bool(self.print_every) and sys.stderr.isatty() and "CI" not in os.environ
        self.progress = ProgressBars(
            progress and self.is_main,
            self.epochs,
            len(self.batches),
            keep=progress == "keep",
            first=self.initial_epoch + 1,
        )
        self.history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
        self.pending: list[dict] = []  # epochs since the last logging point, on the device
        self.last_good = (0, _state.snapshot(model))  # (epoch, the state its loss vouched for)

    def _setup(self, X, y, epochs, initial_epoch, batch_size, print_every, validation_data) -> None:
        """Check the arguments, move the data to the device, lay out the batches."""
        model = self.model
        model._require("loss", "optimizer")
        self.epochs = integer("epochs", epochs)
        self.initial_epoch = integer("initial_epoch", initial_epoch, 0)
        if self.initial_epoch >= self.epochs:
            raise ValueError(
                f"initial_epoch={self.initial_epoch} leaves no epoch to train: as in Keras, "
                f"epochs is the number of the last epoch, so pass epochs > {self.initial_epoch} "
                f"(epochs={self.initial_epoch + 1} trains one more)"
            )
        batch_size = integer("batch_size", batch_size, allow_none=True)
        self.print_every = integer("print_every", print_every, 0, allow_none=True)
        self.X, self.y = prepare(model, X, y)
        if isinstance(validation_data, _Split):  # validation_split: held out of (X, y)
            self.X, self.y, validation_data = _held_out(
                self.X, self.y, validation_data, model.backend
            )
        self.val = None
        if validation_data is not None:
            self.val = (*prepare(model, *_pair(validation_data)), batch_size)
        model.accuracy.init(self.y)
        self.batches = batches(self.X.shape[0], batch_size)

    def _distribute(self, batch_size: int | None, shuffle: bool) -> None:
        """Data-parallel: the ranks agree and take rank 0's state; this rank keeps its part of
        each batch and of the validation data, and logs when rank 0 does."""
        val = None if self.val is None else self.val[:2]
        settings = {"epochs": self.epochs, "initial_epoch": self.initial_epoch}
        settings |= {"batch_size": batch_size, "shuffle": shuffle}
        rank0 = self.dp.start(self.X, self.y, val, {**settings, "print_every": self.print_every})
        self.print_every = rank0["print_every"]  # logging points are collective
        # So is a callback's stop: where any rank has callbacks, every rank logs each epoch and
        # the ranks agree after it whether to stop (a stop on one rank alone would leave the
        # others waiting in the next all-reduce).
        self.log_every_epoch = self.dp.any(self.log_every_epoch)
        self.batches = self.dp.batches(self.X.shape[0], batch_size)
        if self.val is not None:
            self.val = (*self.dp.part(*val), batch_size)

    def fit(self) -> dict[str, list]:
        log_every = 1 if self.log_every_epoch else self.print_every or self.epochs
        try:
            if self.dp is not None and self.print_every:
                from .distributed import announce

                announce(self.dp.describe(), self.progress.write, self.dp.comm)
            with quiet_float_errors(self.X), _interrupts(self, enabled=self.dp is None):
                self._call("on_train_begin")
                for epoch in range(self.initial_epoch + 1, self.epochs + 1):
                    self._call("on_epoch_begin", epoch)
                    self.pending.append(self._epoch(epoch))
                    if (
                        epoch % log_every == 0
                        or epoch == self.epochs
                        or len(self.pending) >= MAX_PENDING
                    ):
                        self._flush()
                    if self.dp is not None and self.log_every_epoch:
                        self.stop_training = self.dp.any(self.stop_training)
                    if self.stop_training:
                        break
                # No forward pass measures the last update: check its parameters themselves.
                parameters = self.model.get_parameters()
                if not all(all_finite(p) for pair in parameters for p in pair):
                    self._diverged(f"the update of epoch {epoch} made parameters NaN or inf")
                self._call("on_train_end")
        except _Interrupted:
            self._flush()  # the epochs that completed; the one interrupted is dropped
            error = KeyboardInterrupt()
            error.history = self.history
            raise error from None
        except BaseException as exc:
            if self.dp is not None:  # an error of this rank alone would leave the others waiting
                self.dp.abort_unless_agreed(exc)
            raise
        finally:
            self.progress.close()
        return self.history

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _epoch(self, epoch: int) -> dict:
        """One pass over the batches; the epoch's figures, still on the device."""
        model, X, y = self.model, self.X, self.y
        xp, b = model.backend.xp, model.backend
        self.progress.start_epoch(epoch)
        start = _state.snapshot(model)
        # Each batch is gathered by its slice of a device permutation: no shuffled copy of
        # the whole data set is made (nor kept alive by a layer's inputs).
        order = None
        if self.shuffle:
            order = self._permutation(X.shape[0], b)

        def batch(s: slice) -> tuple[Any, Any]:
            if order is None:
                return X[s, ...], y[s, ...]
            rows = order[s]
            return xp.take(X, rows, axis=0), xp.take(y, rows, axis=0)

        epoch_figures, reg = [], 0.0
        for i, s in enumerate(self.batches):
            if self.interrupted:  # Ctrl-C: stop between steps, never inside one
                raise _Interrupted
            if i == len(self.batches) - 1:
                reg = model.loss.regularization_total()  # the book reports the last batch's
            epoch_figures.append(self.step(i, lambda s=s: batch(s)))
            self.progress.step(lambda: means(model, epoch_figures))
        data_loss, accuracy = self._means(epoch_figures)
        record = {
            "epoch": epoch,
            "data_loss": data_loss,
            "regularization_loss": reg,
            "accuracy": accuracy,
            "learning_rate": model.optimizer.current_learning_rate,
            "start": start,
        }
        if self.val is not None:
            val_figures = evaluate_figures(model, *self.val)
            record["val_loss"], record["val_accuracy"] = self._means(val_figures)
        return record

    def _permutation(self, n: int, backend: Any) -> Any:
        """The epoch's order of the samples (distributed: rank 0's, on every rank)."""
        if self.dp is None:
            return random.permutation(n, backend)
        return self.dp.permutation(n, backend)

    def _means(self, pass_figures: list[tuple[Any, Any]]) -> tuple[Any, Any]:
        """A pass's mean loss and accuracy (distributed: this rank's sums, for ``_flush``)."""
        if self.dp is None:
            return means(self.model, pass_figures)
        return self.dp.sums(pass_figures)

    def _flush(self) -> None:
        """A logging point: read the pending epochs' figures back, stop on divergence, print."""
        pending, self.pending = self.pending, []
        if self.dp is not None:
            self.dp.reduce(pending)  # every rank's sums, summed: one all-reduce
        for record in pending:
            values = {k: as_float(v) for k, v in record.items() if k != "start"}
            values["loss"] = values["data_loss"] + values["regularization_loss"]
            if not math.isfinite(values["loss"]):
                self._diverged(f"the loss of epoch {values['epoch']} became {values['loss']}")
            self.last_good = (values["epoch"], record["start"])
            for key in HISTORY_KEYS:
                self.history[key].append(values.get(key))
            self.last_epoch = values["epoch"]
            every = self.print_every if self.is_main else 0
            if every and (values["epoch"] % every == 0 or values["epoch"] == self.epochs):
                self.progress.write(book_line(values, self.validation_label))
            self.progress.show(values)
            self._call("on_epoch_end", values["epoch"], {k: values.get(k) for k in HISTORY_KEYS})

    def _diverged(self, what: str) -> None:
        """Restore the last state a finite loss vouched for, and raise."""
        epoch, state = self.last_good
        lr = self.model.optimizer.current_learning_rate
        self.model.load_state_dict(state)
        if epoch:
            kept = f"the start of epoch {epoch}, the last whose loss was finite"
        else:
            kept = "the start of this train call (no epoch had a finite loss)"
        error = FloatingPointError(
            f"training diverged: {what}; the model keeps its parameters from {kept}. "
            f"Try a lower learning rate (it was {lr:.3g})."
        )
        error.history = self.history  # the epochs that completed, for whoever catches this
        if self.dp is not None:  # every rank sees the same reduced figures and parameters
            self.dp.mark_agreed(error)
        raise error


class _Interrupted(Exception):
    """Ctrl-C, seen at a step boundary."""


@contextlib.contextmanager
def _interrupts(run: Run, enabled: bool) -> Iterator[None]:
    """While training, Ctrl-C only marks the run, which stops before its next step: the model
    then holds whole steps, never half of one (PyTorch and Keras leave that to chance)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def mark(signum: int, frame: Any) -> None:
        if run.interrupted:  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        run.interrupted = True

    previous = signal.signal(signal.SIGINT, mark)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _step(model: Model, compile: bool | None) -> Any:
    """The model's training step, compiled as ``compile`` says (None: the backend's default,
    for a model a compiler can take)."""
    from .step import Step, compilable

    if compile not in (None, True, False):
        raise ValueError(f"compile must be True, False or None, got {compile!r}")
    if compile is None:
        compile = model.backend.compiles_by_default and compilable(model)
    # A compiled step is kept for the next call while what it was traced with is the same:
    # the objects and every setting a compiler takes as a constant.
    parts = (model.loss, model.accuracy, model.optimizer, *model.layers)
    key = (
        compile,
        model.backend,
        tuple(map(id, parts)),
        repr([(p.get_config(), getattr(p, "compute_dinputs", None)) for p in parts]),
    )
    cached = getattr(model, "_step_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    step = Step(model, compile=compile)
    model._step_cache = (key, step)
    return step


def _checked_callbacks(callbacks: Sequence[Callback] | None) -> list[Callback]:
    callbacks = list(callbacks or ())
    for c in callbacks:
        if not isinstance(c, Callback):
            raise TypeError(f"callbacks must be portnn.callbacks.Callback objects, got {c!r}")
    return callbacks


def _verbosity(
    verbose: int | None, print_every: int | None, progress: bool | str | None
) -> tuple[int | None, bool | str | None]:
    """Keras' ``verbose``: 0 silent, 1 a progress bar (and the book's lines), 2 one line per
    epoch and no bar; None leaves ``print_every`` and ``progress`` as given."""
    if verbose is None:
        return print_every, progress
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0, 1, 2 or None, got {verbose!r}")
    return {0: (None, False), 1: (print_every, True), 2: (1, False)}[verbose]


SPLIT_MODES = ("last", "shuffle", "stratified")


class _Split(NamedTuple):
    """``validation_split`` as ``_setup`` takes it, checked."""

    fraction: float
    mode: str


def _split(validation_split: float, mode: str, validation_data: Any) -> Any:
    """``validation_data``, or the ``_Split`` marker ``_setup`` holds out, after the checks."""
    fraction = real("validation_split", validation_split, 0.0, 1.0, high_open=True)
    if mode not in SPLIT_MODES:
        raise ValueError(f"validation_split_mode must be one of {SPLIT_MODES}, got {mode!r}")
    if not fraction:
        return validation_data
    if validation_data is not None:
        raise ValueError("give validation_data or validation_split, not both")
    return _Split(fraction, mode)


def _held_out(X: Any, y: Any, split: _Split, backend: Any) -> tuple[Any, Any, tuple[Any, Any]]:
    """``split.fraction`` of the samples as validation data, the rest for training, as
    ``random.held_out`` draws them (on the host, from the labels read back once per call).
    Each part keeps the samples' order; the last samples are taken as views."""
    n, fraction = X.shape[0], split.fraction
    kept, held, labels = random.held_out(to_numpy(y), fraction, split.mode)
    if not 0 < len(kept) < n:
        raise ValueError(
            f"validation_split={fraction} leaves {len(kept)} of {n} samples for training and "
            f"{len(held)} for validation; both need at least one"
        )
    if labels is not None:
        _warn_if_classes_differ(labels[kept], labels[held], split)
    if split.mode == "last":  # views, no copy
        cut = len(kept)
        return X[:cut, ...], y[:cut, ...], (X[cut:, ...], y[cut:, ...])
    xp = array_namespace(X)
    train_rows, val_rows = backend.asarray(kept), backend.asarray(held)

    def rows(a: Any, which: Any) -> Any:
        return xp.take(a, which, axis=0)

    return rows(X, train_rows), rows(y, train_rows), (rows(X, val_rows), rows(y, val_rows))


def _warn_if_classes_differ(train: Any, held: Any, split: _Split) -> None:
    only_held = sorted(set(held.tolist()) - set(train.tolist()))
    only_train = sorted(set(train.tolist()) - set(held.tolist()))
    if not (only_held or only_train):
        return
    problems = []
    if only_held:
        problems.append(f"the validation part has classes the training part lacks {only_held}")
    if only_train:
        problems.append(f"the training part has classes the validation part lacks {only_train}")
    how = {"last": "the last samples", "shuffle": "a random draw", "stratified": "every class"}
    advice = (
        " (the data looks ordered by class): pass validation_split_mode='stratified', or "
        "shuffle the data first"
        if split.mode == "last"
        else ": too few samples of those classes to hold some out"
    )
    warnings.warn(
        f"validation_split={split.fraction} ({how[split.mode]}): {' and '.join(problems)}{advice}",
        UserWarning,
        stacklevel=6,
    )


def batches(n: int, batch_size: int | None) -> list[slice]:
    """Consecutive slices of ``batch_size`` (None: one of all ``n``); the last may be short."""
    size = n if batch_size is None else min(batch_size, n)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)] if n else []


def figures(model: Model, output: Any, y: Any) -> tuple[Any, Any]:
    """A batch's per-sample losses and its comparisons (True: a correct prediction)."""
    return model.loss._forward(output, y), model.accuracy.compare(model._predictions(output), y)


def means(model: Model, pass_figures: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """The mean loss and the accuracy of a pass from its batches' figures, on the device:
    one reduction each per pass rather than one per batch."""
    xp = model.backend.xp
    losses, hits = concatenated(model, pass_figures)
    return xp.mean(losses), xp.mean(hits)


def concatenated(model: Model, pass_figures: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """A pass's per-sample losses and hits (1 for a correct prediction, in the losses' dtype),
    each in one array."""
    xp = model.backend.xp
    losses = xp.concat([loss for loss, _ in pass_figures])
    hits = xp.concat([xp.reshape(comparisons, (-1,)) for _, comparisons in pass_figures])
    return losses, xp.astype(hits, losses.dtype)


def evaluate_device(model: Model, X: Any, y: Any, batch_size: int | None) -> tuple[Any, Any]:
    """Mean loss and accuracy over (X, y) in inference mode, left on the device."""
    return means(model, evaluate_figures(model, X, y, batch_size))


def evaluate_figures(model: Model, X: Any, y: Any, batch_size: int | None) -> list:
    """Each batch's ``figures`` over (X, y) in inference mode."""
    return [
        figures(model, model.forward(X[s, ...]), y[s, ...]) for s in batches(X.shape[0], batch_size)
    ]


def as_float(value: Any) -> Any:
    """A device scalar as a Python float (numbers and None pass through)."""
    return value if isinstance(value, int | float) or value is None else float(value)


def _pair(validation_data: Any) -> tuple[Any, Any]:
    if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (X_val, y_val)")
    return validation_data[0], validation_data[1]
