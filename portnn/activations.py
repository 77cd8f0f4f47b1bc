"""Activations: layers without parameters, each a pure pair (``apply``/``vjp``, see
``portnn.layers.Layer``) with ``predictions(outputs)``."""

from __future__ import annotations

from typing import Any

from ._checks import real
from ._xp import array_namespace, kernel
from .layers import Layer


class ReLU(Layer):
    """ReLU: ``max(0, x)``; backward passes dvalues where ``x > 0``."""

    def apply(self, params, inputs, training=False, key=None):
        return array_namespace(inputs).maximum(inputs, 0.0), inputs

    def vjp(self, params, context, dvalues):
        fused = kernel(dvalues, "relu_backward")
        if fused is not None:
            return fused(dvalues, context), {}
        xp = array_namespace(dvalues)
        # A product with the 0/1 mask, not ``where(x > 0, d, 0.0)``: NumPy's ``where`` with a
        # scalar branch takes a slow generic path, and this runs every batch.
        return dvalues * xp.astype(context > 0, dvalues.dtype), {}

    def predictions(self, outputs: Any) -> Any:
        return outputs


class Softmax(Layer):
    """Softmax: ``exp(x - max x) / sum exp(x - max x)`` per row;
    backward ``s * (d - sum(d * s))``, the Jacobian product without a per-sample loop."""

    def apply(self, params, inputs, training=False, key=None):
        xp = array_namespace(inputs)
        exp = xp.exp(inputs - xp.max(inputs, axis=1, keepdims=True))
        output = exp / xp.sum(exp, axis=1, keepdims=True)
        return output, output

    def vjp(self, params, context, dvalues):
        xp = array_namespace(dvalues)
        return context * (dvalues - xp.sum(dvalues * context, axis=1, keepdims=True)), {}

    def predictions(self, outputs: Any) -> Any:
        return array_namespace(outputs).argmax(outputs, axis=1)


class Sigmoid(Layer):
    """Sigmoid: ``1 / (1 + exp(-x))``, via ``exp(-|x|)`` so no input overflows;
    backward ``d * (1 - s) * s``. Predictions: 1 where ``s > 0.5``."""

    def apply(self, params, inputs, training=False, key=None):
        xp = array_namespace(inputs)
        e = xp.exp(-xp.abs(inputs))
        output = xp.where(inputs >= 0, 1 / (1 + e), e / (1 + e))
        return output, output

    def vjp(self, params, context, dvalues):
        return dvalues * (1 - context) * context, {}

    def predictions(self, outputs: Any) -> Any:
        xp = array_namespace(outputs)
        return xp.astype(outputs > 0.5, xp.int64)


class Linear(Layer):
    """Linear: identity both ways (regression outputs)."""

    def apply(self, params, inputs, training=False, key=None):
        return inputs, None

    def vjp(self, params, context, dvalues):
        return dvalues, {}

    def predictions(self, outputs: Any) -> Any:
        return outputs


class Tanh(Layer):
    """Tanh: ``tanh(x)``; backward ``d * (1 - t**2)``. Predictions: the outputs."""

    def apply(self, params, inputs, training=False, key=None):
        output = array_namespace(inputs).tanh(inputs)
        return output, output

    def vjp(self, params, context, dvalues):
        return dvalues * (1 - context * context), {}

    def predictions(self, outputs: Any) -> Any:
        return outputs


class LeakyReLU(Layer):
    """LeakyReLU: ``x`` where ``x > 0`` else ``alpha * x``; backward likewise on dvalues."""

    def __init__(self, alpha: float = 0.01) -> None:
        self.alpha = real("LeakyReLU alpha", alpha, 0.0, 1.0, high_open=True)

    def apply(self, params, inputs, training=False, key=None):
        xp = array_namespace(inputs)
        return xp.where(inputs > 0, inputs, self.alpha * inputs), inputs

    def vjp(self, params, context, dvalues):
        xp = array_namespace(dvalues)
        return xp.where(context > 0, dvalues, self.alpha * dvalues), {}

    def predictions(self, outputs: Any) -> Any:
        return outputs

    def get_config(self) -> dict:
        return {"alpha": self.alpha}
