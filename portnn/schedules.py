"""Learning-rate schedules: ``schedule(learning_rate, iterations)`` is the rate of the step
after ``iterations`` steps. An optimizer's ``decay=d`` is the book's ``InverseTimeDecay(d)``;
``schedule=`` plugs in any other."""

from __future__ import annotations

import math

from ._checks import integer, real


class Schedule:
    """Base class: ``__call__(learning_rate, iterations) -> rate`` and ``get_config``."""

    def __call__(self, learning_rate: float, iterations: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()


class InverseTimeDecay(Schedule):
    """The book's decay: ``lr / (1 + decay * iterations)``."""

    def __init__(self, decay: float) -> None:
        self.decay = real("decay", decay, 0.0)

    def __call__(self, learning_rate: float, iterations: int) -> float:
        return learning_rate / (1.0 + self.decay * iterations)

    def get_config(self) -> dict:
        return {"decay": self.decay}


class StepDecay(Schedule):
    """``lr * factor ** (iterations // step_size)``: the rate drops by ``factor`` every
    ``step_size`` steps (Keras' staircase ``ExponentialDecay``, PyTorch's ``StepLR``)."""

    def __init__(self, step_size: int, factor: float = 0.1) -> None:
        self.step_size = integer("step_size", step_size)
        self.factor = real("factor", factor, 0.0, 1.0, low_open=True)

    def __call__(self, learning_rate: float, iterations: int) -> float:
        return learning_rate * self.factor ** (iterations // self.step_size)

    def get_config(self) -> dict:
        return {"step_size": self.step_size, "factor": self.factor}


class CosineDecay(Schedule):
    """``lr * (floor + (1 - floor) * (1 + cos(pi * min(t, steps) / steps)) / 2)``: from
    ``lr`` down to ``floor * lr`` over ``steps`` steps, then flat (Keras' ``CosineDecay``)."""

    def __init__(self, steps: int, floor: float = 0.0) -> None:
        self.steps = integer("steps", steps)
        self.floor = real("floor", floor, 0.0, 1.0)

    def __call__(self, learning_rate: float, iterations: int) -> float:
        progress = min(iterations, self.steps) / self.steps
        cosine = (1 + math.cos(math.pi * progress)) / 2
        return learning_rate * (self.floor + (1 - self.floor) * cosine)

    def get_config(self) -> dict:
        return {"steps": self.steps, "floor": self.floor}


SCHEDULES = {c.__name__: c for c in (InverseTimeDecay, StepDecay, CosineDecay)}
