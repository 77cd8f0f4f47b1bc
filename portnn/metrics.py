"""Accuracies: ``calculate(predictions, y)`` gives the mean of ``compare`` as a float and
adds the batch to the accumulated mean (``calculate_accumulated``, ``new_pass``)."""

from __future__ import annotations

import math
from typing import Any

from ._checks import real
from ._xp import array_namespace


class Accuracy:
    """Base class: the mean of ``compare``, per batch and accumulated over batches."""

    def __init__(self) -> None:
        self.new_pass()

    def init(self, y: Any, reinit: bool = False) -> None:
        """Learn what the metric needs from the training targets (only RegressionAccuracy)."""

    def compare(self, predictions: Any, y: Any) -> Any:
        raise NotImplementedError

    def calculate(self, predictions: Any, y: Any) -> float:
        comparisons = self.compare(predictions, y)
        xp = array_namespace(comparisons)
        # A Python int: a float + integer-array sum is refused by array_api_strict.
        hits = int(xp.sum(xp.astype(comparisons, xp.int64)))
        self.accumulated_sum += hits
        self.accumulated_count += math.prod(comparisons.shape)
        return hits / max(math.prod(comparisons.shape), 1)

    def calculate_accumulated(self) -> float:
        if self.accumulated_count == 0:
            raise RuntimeError("no batch was calculated since new_pass()")
        return float(self.accumulated_sum) / self.accumulated_count

    def new_pass(self) -> None:
        self.accumulated_sum = 0
        self.accumulated_count = 0

    def get_config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _same_dtype(y: Any, like: Any) -> Any:
    xp = array_namespace(like)
    return y if y.dtype == like.dtype else xp.astype(y, like.dtype)


class CategoricalAccuracy(Accuracy):
    """Fraction of rows whose predicted class equals the label (one-hot labels are argmaxed);
    ``binary=True`` compares predictions and labels element by element."""

    def __init__(self, *, binary: bool = False) -> None:
        super().__init__()
        self.binary = binary

    def compare(self, predictions: Any, y: Any) -> Any:
        xp = array_namespace(predictions)
        if not self.binary and y.ndim == 2:
            y = xp.argmax(y, axis=1)
        return predictions == _same_dtype(y, predictions)

    def get_config(self) -> dict:
        return {"binary": self.binary}


class BinaryAccuracy(CategoricalAccuracy):
    """Fraction of 0/1 outputs equal to the targets (sigmoid outputs)."""

    def __init__(self) -> None:
        super().__init__(binary=True)

    def get_config(self) -> dict:
        return {}


class RegressionAccuracy(Accuracy):
    """Fraction of outputs within ``precision`` of the target; the precision is
    ``std(y) / 250`` of the training targets, fixed by ``init`` (the book's rule)."""

    def __init__(self, precision: float | None = None, divisor: float = 250.0) -> None:
        super().__init__()
        self.precision = None if precision is None else real("precision", precision, 0.0)
        self.divisor = real("divisor", divisor, 0.0, low_open=True)

    def init(self, y: Any, reinit: bool = False) -> None:
        if self.precision is None or reinit:
            xp = array_namespace(y)
            if not xp.isdtype(y.dtype, "real floating"):
                y = xp.astype(y, xp.float32)
            self.precision = float(xp.std(y)) / self.divisor

    def compare(self, predictions: Any, y: Any) -> Any:
        if self.precision is None:
            raise RuntimeError("RegressionAccuracy needs init(y_train) first, to fix its precision")
        xp = array_namespace(predictions)
        return xp.abs(predictions - _same_dtype(y, predictions)) < self.precision

    def get_config(self) -> dict:
        return {"precision": self.precision, "divisor": self.divisor}
