"""What a training run shows: the book's line per epoch and the progress bars, whose
figures are read back from the device at most every half second."""

from __future__ import annotations

import time
from typing import Any

from tqdm.auto import tqdm


class ProgressBars:
    """The run's progress: one bar for the whole run, or one per epoch when epochs are long
    (``LONG_EPOCH`` batches or more), with the latest loss and accuracy beside it (read
    back at most every ``interval`` seconds, so the bar costs no sync per batch). ``keep``
    leaves the bars on screen at the end."""

    LONG_EPOCH = 100

    def __init__(
        self, enabled: bool, epochs: int, steps: int, keep: bool = False, first: int = 1
    ) -> None:
        self.enabled, self.epochs, self.steps, self.keep = enabled, epochs, steps, keep
        self.first = first  # the first epoch's number (a resumed run's count goes on)
        self.per_epoch = steps >= self.LONG_EPOCH
        self.interval, self._shown = 0.5, time.monotonic()
        total = steps if self.per_epoch else (epochs - first + 1) * steps
        self.bar = tqdm(total=total, disable=not enabled, unit="batch", leave=keep)

    def start_epoch(self, epoch: int) -> None:
        if self.per_epoch and epoch > self.first and self.enabled:
            self.bar.close()
            self.bar = tqdm(total=self.steps, unit="batch", leave=self.keep)
        self.bar.set_description(f"epoch {epoch}/{self.epochs}", refresh=False)

    def step(self, running: Any) -> None:
        """One batch done; ``running()`` gives the epoch's figures so far, when shown."""
        self.bar.update()
        if self.enabled and time.monotonic() - self._shown > self.interval:
            loss, accuracy = running()
            self.bar.set_postfix(loss=number(float(loss)), acc=f"{float(accuracy):.3f}")
            self._shown = time.monotonic()

    def show(self, values: dict) -> None:
        """An epoch's final figures."""
        if self.enabled:
            self.bar.set_postfix(loss=number(values["loss"]), acc=f"{values['accuracy']:.3f}")

    @staticmethod
    def write(line: str) -> None:
        """Print ``line`` above the bars, not through them."""
        tqdm.write(line)

    def close(self) -> None:
        self.bar.close()


def number(value: float) -> str:
    """Three decimals, or three significant digits for what would print as 0.000."""
    return f"{value:.3e}" if value != 0 and abs(value) < 5e-4 else f"{value:.3f}"


def book_line(v: dict, validation_label: str = "validation") -> str:
    """The book's progress line for one epoch's figures (and its validation line, named
    ``validation_label``: the book's "validation", or "test" for a test split)."""
    line = (
        f"epoch: {v['epoch']}, acc: {v['accuracy']:.3f}, loss: {number(v['loss'])} "
        f"(data_loss: {number(v['data_loss'])}, reg_loss: {number(v['regularization_loss'])}), "
        f"lr: {v['learning_rate']:.10g}"
    )
    if v.get("val_loss") is not None:
        line += f"\n{validation_label}, acc: {v['val_accuracy']:.3f}, loss: {number(v['val_loss'])}"
    return line
