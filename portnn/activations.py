"""Activations: layers without parameters, each with ``predictions(outputs)``."""

from __future__ import annotations

from typing import Any

from ._checks import real
from ._xp import array_namespace, kernel
from .layers import Layer


class ReLU(Layer):
    """ReLU: ``max(0, x)``; backward passes dvalues where ``x > 0``."""

    def forward(self, inputs: Any, training: bool = False) -> Any:
        xp = array_namespace(inputs)
        self.inputs = inputs
        self.output = xp.maximum(inputs, 0.0)
        return self.output

    def backward(self, dvalues: Any) -> Any:
        fused = kernel(dvalues, "relu_backward")
        if fused is not None:
            self.dinputs = fused(dvalues, self.inputs)
            return self.dinputs
        xp = array_namespace(dvalues)
        # A product with the 0/1 mask, not ``where(x > 0, d, 0.0)``: NumPy's ``where`` with a
        # scalar branch takes a slow generic path, and this runs every batch.
        self.dinputs = dvalues * xp.astype(self.inputs > 0, dvalues.dtype)
        return self.dinputs

    def predictions(self, outputs: Any) -> Any:
        return outputs


class Softmax(Layer):
    """Softmax: ``exp(x - max x) / sum exp(x - max x)`` per row;
    backward ``s * (d - sum(d * s))``, the Jacobian product without a per-sample loop."""

    def forward(self, inputs: Any, training: bool = False) -> Any:
        xp = array_namespace(inputs)
        self.inputs = inputs
        exp = xp.exp(inputs - xp.max(inputs, axis=1, keepdims=True))
        self.output = exp / xp.sum(exp, axis=1, keepdims=True)
        return self.output

    def backward(self, dvalues: Any) -> Any:
        xp = array_namespace(dvalues)
        s = self.output
        self.dinputs = s * (dvalues - xp.sum(dvalues * s, axis=1, keepdims=True))
        return self.dinputs

    def predictions(self, outputs: Any) -> Any:
        return array_namespace(outputs).argmax(outputs, axis=1)


class Sigmoid(Layer):
    """Sigmoid: ``1 / (1 + exp(-x))``, via ``exp(-|x|)`` so no input overflows;
    backward ``d * (1 - s) * s``. Predictions: 1 where ``s > 0.5``."""

    def forward(self, inputs: Any, training: bool = False) -> Any:
        xp = array_namespace(inputs)
        self.inputs = inputs
        e = xp.exp(-xp.abs(inputs))
        self.output = xp.where(inputs >= 0, 1 / (1 + e), e / (1 + e))
        return self.output

    def backward(self, dvalues: Any) -> Any:
        self.dinputs = dvalues * (1 - self.output) * self.output
        return self.dinputs

    def predictions(self, outputs: Any) -> Any:
        xp = array_namespace(outputs)
        return xp.astype(outputs > 0.5, xp.int64)


class Linear(Layer):
    """Linear: identity both ways (regression outputs)."""

    def forward(self, inputs: Any, training: bool = False) -> Any:
        self.inputs = inputs
        self.output = inputs
        return self.output

    def backward(self, dvalues: Any) -> Any:
        self.dinputs = dvalues
        return self.dinputs

    def predictions(self, outputs: Any) -> Any:
        return outputs


class Tanh(Layer):
    """Tanh: ``tanh(x)``; backward ``d * (1 - t**2)``. Predictions: the outputs."""

    def forward(self, inputs: Any, training: bool = False) -> Any:
        xp = array_namespace(inputs)
        self.inputs = inputs
        self.output = xp.tanh(inputs)
        return self.output

    def backward(self, dvalues: Any) -> Any:
        self.dinputs = dvalues * (1 - self.output * self.output)
        return self.dinputs

    def predictions(self, outputs: Any) -> Any:
        return outputs


class LeakyReLU(Layer):
    """LeakyReLU: ``x`` where ``x > 0`` else ``alpha * x``; backward likewise on dvalues."""

    def __init__(self, alpha: float = 0.01) -> None:
        self.alpha = real("LeakyReLU alpha", alpha, 0.0, 1.0, high_open=True)

    def forward(self, inputs: Any, training: bool = False) -> Any:
        xp = array_namespace(inputs)
        self.inputs = inputs
        self.output = xp.where(inputs > 0, inputs, self.alpha * inputs)
        return self.output

    def backward(self, dvalues: Any) -> Any:
        xp = array_namespace(dvalues)
        self.dinputs = xp.where(self.inputs > 0, dvalues, self.alpha * dvalues)
        return self.dinputs

    def predictions(self, outputs: Any) -> Any:
        return outputs

    def get_config(self) -> dict:
        return {"alpha": self.alpha}
