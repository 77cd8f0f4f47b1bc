"""Callbacks: code that runs at the edges of a training run, as in Keras.

``model.train(X, y, callbacks=[EarlyStopping(patience=5), ModelCheckpoint("best.npz")])``.
A callback sees the run (``run.model``, ``run.history``, ``run.epochs``) and each epoch's
figures as floats (``logs``: the keys of ``HISTORY_KEYS``); setting ``run.stop_training``
ends training cleanly after the current epoch. With callbacks, figures are read back every
epoch (one host sync per epoch) instead of at logging points only.
"""

from __future__ import annotations

import csv
import json
import math
import os
import string
from collections.abc import Callable
from typing import Any

from . import _state
from ._checks import integer, real
from ._npz import checked_name

__all__ = [
    "Callback",
    "EarlyStopping",
    "HistoryLogger",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
]


class Callback:
    """Base class: override any of the hooks; each gets the run."""

    def on_train_begin(self, run: Any) -> None:
        """Before the first epoch."""

    def on_epoch_begin(self, run: Any, epoch: int) -> None:
        """Before epoch ``epoch`` (from 1, or from ``initial_epoch + 1`` when resumed)."""

    def on_epoch_end(self, run: Any, epoch: int, logs: dict[str, Any]) -> None:
        """After epoch ``epoch``, its figures in ``logs`` (validation ones where computed)."""

    def on_train_end(self, run: Any) -> None:
        """After the last epoch, or after training stopped early; not after an error."""


class _Monitor(Callback):
    """What EarlyStopping, ModelCheckpoint and ReduceLROnPlateau share: one figure to
    watch, whether lower (``mode="min"``) or higher (``"max"``) is better (``"auto"``: higher
    for a figure whose name holds "accuracy", lower otherwise), and what counts as an
    improvement."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            mode = "max" if "accuracy" in monitor else "min"
        self.monitor, self.mode = monitor, mode
        self.min_delta = real("min_delta", min_delta, 0.0)
        self.best: float | None = None

    def _value(self, logs: dict[str, Any]) -> float:
        value = logs.get(self.monitor)
        if value is None:
            known = ", ".join(k for k, v in logs.items() if v is not None)
            hint = " (pass validation_data or validation_split)" if "val" in self.monitor else ""
            raise ValueError(
                f"{type(self).__name__} monitors {self.monitor!r}, which this run does not "
                f"report{hint}; it reports {known}"
            )
        return float(value)

    def _improved(self, value: float) -> bool:
        """Keras' rule: ``value + min_delta < best`` (min) or ``value - min_delta > best``
        (max), so an improvement beats the best by more than ``min_delta``; the first figure
        is one, a NaN never is (Keras would take a first NaN as the best)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < self.best
        return value - self.min_delta > self.best


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved (by more than ``min_delta``) for ``patience``
    epochs, counted as Keras counts: ``wait`` is the number of epochs since the best one,
    and training stops after the epoch where ``wait >= patience``, never after epoch 1
    (``patience`` 0 and 1 both stop at the first epoch without improvement, 2 at the
    second). ``stopped_epoch`` is then that epoch (None if none). ``restore_best=True`` puts
    back the parameters and optimizer state of the best epoch when training ends, stopped
    early or not. Keras' ``EarlyStopping(restore_best_weights=...)``."""

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        *,
        mode: str = "auto",
        restore_best: bool = False,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = integer("patience", patience, 0)
        self.restore_best = bool(restore_best)

    def on_train_begin(self, run: Any) -> None:
        self.best, self.best_epoch, self.wait, self._state = None, None, 0, None
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, run: Any, epoch: int, logs: dict[str, Any]) -> None:
        value = self._value(logs)
        self.wait += 1
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                # By reference (updates make new arrays, so this stays the best epoch's),
                # or copied where a compiled step reuses the buffers it is given.
                self._state = _state.snapshot(run.model)
            return
        if self.wait >= self.patience and epoch > 1:  # Keras: `and epoch > 0`, from 0
            self.stopped_epoch = epoch
            run.stop_training = True

    def on_train_end(self, run: Any) -> None:
        if self._state is not None and self.best_epoch != run.last_epoch:  # restore_best
            run.model.load_state_dict(self._state)


class ModelCheckpoint(_Monitor):
    """Save the model (``model.save``: atomic, portnn's safe format) after each epoch, or
    only when ``monitor`` improved (``save_best_only=True``, as ``EarlyStopping`` judges).

    ``path`` is a ``str.format`` template: it may name ``{epoch}`` and the figures of
    ``HISTORY_KEYS`` (``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``), and a brace of the name
    itself is written twice (a folder named ``run{1}``: ``"run{{1}}/best.npz"``). A path
    without braces is taken as it is. Anything else in braces, a bad format spec, or a
    validation figure in a run without validation data is a ValueError before training."""

    def __init__(
        self,
        path: str | os.PathLike,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        *,
        mode: str = "auto",
        min_delta: float = 0.0,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.path = checked_name(path, "ModelCheckpoint")  # a .safetensors name: refused now
        self._fields = _template_fields(self.path)
        self.save_best_only = bool(save_best_only)
        self.saved: list[str] = []

    def on_train_begin(self, run: Any) -> None:
        self.best = None
        missing = [name for name in self._fields if name.startswith("val_")]
        if run.val is None and missing:
            raise ValueError(
                f"ModelCheckpoint path {self.path!r} names {', '.join(missing)}, which a run "
                "without validation data does not report: pass validation_data or "
                "validation_split, or take it out of the path"
            )

    def on_epoch_end(self, run: Any, epoch: int, logs: dict[str, Any]) -> None:
        if self.save_best_only:
            value = self._value(logs)
            if not self._improved(value):
                return
            self.best = value
        if getattr(run, "is_main", True):  # one writer in a distributed run
            path = self.path.format(**{k: v for k, v in logs.items() if v is not None})
            run.model.save(path)
            self.saved.append(path)


class ReduceLROnPlateau(_Monitor):
    """Multiply the optimizer's learning rate by ``factor`` when ``monitor`` has not
    improved (by more than ``min_delta``) for ``patience`` epochs, down to ``min_lr``:
    Keras' callback of that name, and its rule. After each epoch: in cooldown, count the
    cooldown down; then on an improvement ``wait = 0``; else, out of cooldown,
    ``wait += 1``, and if ``wait >= patience`` and the rate is above ``min_lr``,
    ``rate = max(rate * factor, min_lr)``, ``wait = 0`` and ``cooldown`` epochs of
    cooldown begin (so ``cooldown=c`` leaves ``c - 1`` epochs uncounted). It scales the
    base rate, so a schedule (the book's decay) goes on from the lower rate."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        *,
        mode: str = "auto",
        min_lr: float = 0.0,
        cooldown: int = 0,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.factor = real("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
        self.patience = integer("patience", patience, 0)
        self.min_lr = real("min_lr", min_lr, 0.0)
        self.cooldown = integer("cooldown", cooldown, 0)

    def on_train_begin(self, run: Any) -> None:
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_epoch_end(self, run: Any, epoch: int, logs: dict[str, Any]) -> None:
        value = self._value(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
        if self._improved(value):
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            opt = run.model.optimizer
            if self.wait >= self.patience and opt.learning_rate > self.min_lr:
                opt.learning_rate = max(opt.learning_rate * self.factor, self.min_lr)
                # The rate of the next step: a schedule's, from the new base rate.
                opt.current_learning_rate = opt.learning_rate
                if opt.schedule is not None:
                    opt.current_learning_rate = opt.schedule(opt.learning_rate, opt.iterations)
                self.cooldown_counter, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate before each epoch to ``schedule(epoch, rate)``
    (``epoch`` from 1; ``rate`` the current base rate), Keras' per-epoch scheduler. For a
    rate that changes every step, give the optimizer a ``portnn.schedules`` schedule."""

    def __init__(self, schedule: Callable[[int, float], float]) -> None:
        if not callable(schedule):
            raise TypeError(f"schedule must be callable as schedule(epoch, rate), got {schedule!r}")
        self.schedule = schedule

    def on_epoch_begin(self, run: Any, epoch: int) -> None:
        opt = run.model.optimizer
        rate = real("the scheduled learning rate", self.schedule(epoch, opt.learning_rate), 0.0)
        if rate <= 0:
            raise ValueError(f"the schedule gave learning rate {rate} for epoch {epoch}")
        opt.learning_rate = opt.current_learning_rate = rate


class HistoryLogger(Callback):
    """Write each epoch's figures to ``path`` as they come: CSV (``.csv``, one row per
    epoch, a header first) or JSON lines (``.json``/``.jsonl``, one object per epoch).
    ``append=True`` continues an existing file (a resumed run)."""

    def __init__(self, path: str | os.PathLike, *, append: bool = False) -> None:
        self.path = os.fspath(path)
        suffix = os.path.splitext(self.path)[1].lower()
        if suffix not in (".csv", ".json", ".jsonl"):
            raise ValueError(f"HistoryLogger writes .csv, .json or .jsonl files, got {self.path}")
        self.format = "csv" if suffix == ".csv" else "json"
        self.append = bool(append)

    def on_train_begin(self, run: Any) -> None:
        # Opened per epoch, not held: a run that raises leaves no open file behind.
        self._write = getattr(run, "is_main", True)
        if self._write and not self.append:
            open(self.path, "w").close()

    def on_epoch_end(self, run: Any, epoch: int, logs: dict[str, Any]) -> None:
        if not self._write:
            return
        with open(self.path, "a", newline="") as f:
            if self.format == "json":
                f.write(json.dumps(logs) + "\n")
                return
            writer = csv.DictWriter(f, fieldnames=list(logs))
            if f.tell() == 0:
                writer.writeheader()
            writer.writerow({k: "" if v is None else v for k, v in logs.items()})


def _template_fields(path: str) -> list[str]:
    """The figures that ``path``, a ``str.format`` template, names; a ValueError for
    anything else in braces, so a bad path fails before training, not after an epoch."""
    from .training import HISTORY_KEYS  # training imports this module

    try:
        names = [name for _, name, _, _ in string.Formatter().parse(path) if name is not None]
    except ValueError as exc:
        raise ValueError(
            f"ModelCheckpoint path {path!r}: {exc}; a brace meant as itself is written twice, "
            "'{{' or '}}'"
        ) from None
    for name in names:
        if name not in HISTORY_KEYS:
            raise ValueError(
                f"ModelCheckpoint path {path!r} has {{{name}}}, but a path may name only "
                f"{', '.join(HISTORY_KEYS)}; for the braces themselves write {{{{{name}}}}}"
            )
    try:  # the format specs and conversions, on figures of the kinds a run reports
        path.format(**{key: 1 if key == "epoch" else 0.5 for key in HISTORY_KEYS})
    except (ValueError, LookupError) as exc:
        raise ValueError(
            f"ModelCheckpoint path {path!r} does not format: {exc} (epoch is an integer, the "
            "figures are floats)"
        ) from None
    return names
