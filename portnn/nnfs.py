"""The book's own names, so its code runs on portnn with one changed import.

``from portnn.nnfs import *`` gives the classes of *Neural Networks from Scratch in Python*
(``Layer_Dense``, ``Activation_ReLU``, ``Optimizer_Adam``, ``Model``...) and the ``nnfs``
package's ``init`` and data functions. Most names are portnn's classes themselves; four adapt
a small difference of the book's usage:

- ``Layer_Dropout.forward(inputs, training=True)``: chapter 15 calls ``forward(inputs)`` and
  expects dropout, so training is the default here (portnn's ``Dropout`` defaults to off).
- ``Activation_Softmax_Loss_CategoricalCrossentropy`` has the ``.loss`` attribute of the book's
  class (chapter 14: ``loss_activation.loss.regularization_loss(dense1)``).
- ``Model.evaluate`` prints the book's ``validation, acc: ..., loss: ...`` line (and returns
  ``(loss, accuracy)``); ``Model.output_layer_activation`` is the output layer, whose
  ``predictions`` chapter 22 calls.
- ``spiral_data``, ``vertical_data`` and ``sine_data`` return arrays of the current backend
  (NumPy by default), so the book's component-style loops run on any backend.
"""

from __future__ import annotations

import os
from typing import Any

from . import datasets
from . import random as _random
from .activations import Linear, ReLU, Sigmoid, Softmax
from .backend import Backend, get_backend
from .layers import Dense, Dropout, Input
from .losses import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    Loss,
    MeanAbsoluteError,
    MeanSquaredError,
    SoftmaxCategoricalCrossentropy,
)
from .metrics import CategoricalAccuracy, RegressionAccuracy
from .model import Model as _Model
from .optimizers import SGD, Adagrad, Adam, RMSprop

__all__ = [
    "Accuracy_Categorical",
    "Accuracy_Regression",
    "Activation_Linear",
    "Activation_ReLU",
    "Activation_Sigmoid",
    "Activation_Softmax",
    "Activation_Softmax_Loss_CategoricalCrossentropy",
    "Layer_Dense",
    "Layer_Dropout",
    "Layer_Input",
    "Loss",
    "Loss_BinaryCrossentropy",
    "Loss_CategoricalCrossentropy",
    "Loss_MeanAbsoluteError",
    "Loss_MeanSquaredError",
    "Model",
    "Optimizer_Adagrad",
    "Optimizer_Adam",
    "Optimizer_RMSprop",
    "Optimizer_SGD",
    "init",
    "sine_data",
    "spiral_data",
    "vertical_data",
]

Layer_Dense = Dense
Layer_Input = Input
Activation_ReLU = ReLU
Activation_Softmax = Softmax
Activation_Sigmoid = Sigmoid
Activation_Linear = Linear
Loss_CategoricalCrossentropy = CategoricalCrossentropy
Loss_BinaryCrossentropy = BinaryCrossentropy
Loss_MeanSquaredError = MeanSquaredError
Loss_MeanAbsoluteError = MeanAbsoluteError
Optimizer_SGD = SGD
Optimizer_Adagrad = Adagrad
Optimizer_RMSprop = RMSprop
Optimizer_Adam = Adam
Accuracy_Categorical = CategoricalAccuracy  # Accuracy_Categorical(binary=True) as in the book
Accuracy_Regression = RegressionAccuracy


class Layer_Dropout(Dropout):
    """The book's dropout layer: ``forward(inputs)`` drops (chapter 15); the model passes
    ``training=False`` when evaluating and predicting (chapters 18 to 22)."""

    def forward(self, inputs: Any, training: bool = True) -> Any:
        return super().forward(inputs, training=training)


class Activation_Softmax_Loss_CategoricalCrossentropy(SoftmaxCategoricalCrossentropy):
    """Softmax and cross-entropy in one (chapters 9 to 17): ``forward(inputs, y_true)`` returns
    the mean loss and sets ``.output``; ``backward(dvalues, y_true)`` sets ``.dinputs``."""

    @property
    def loss(self) -> SoftmaxCategoricalCrossentropy:
        # The book's class holds a separate loss object; portnn's is that loss itself.
        return self


class Model(_Model):
    """The book's ``Model`` (chapters 18 to 22): portnn's Model, whose ``evaluate`` also prints
    the book's validation line."""

    @property
    def output_layer_activation(self) -> Any:
        """The output layer (the book's name for it), whose ``predictions`` gives classes."""
        if not self._finalized:
            self.finalize()
        return self.output_layer

    def evaluate(self, X_val: Any, y_val: Any, *, batch_size: int | None = None):
        loss, accuracy = super().evaluate(X_val, y_val, batch_size=batch_size)
        print(f"validation, acc: {accuracy:.3f}, loss: {loss:.3f}")
        return loss, accuracy

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | Backend | None = None) -> Model:
        loaded = _Model.load(path, backend)
        model = cls(loaded.layers)
        model.set(loss=loaded.loss, optimizer=loaded.optimizer, accuracy=loaded.accuracy)
        return model


def init() -> None:
    """``nnfs.init()``: seed portnn's generators with 0, so the book's data and initial
    weights come out exactly. (nnfs also sets NumPy's default dtype and dot product, which
    portnn does not need: it computes in float32 everywhere.)"""
    _random.seed(0)


def spiral_data(samples: int, classes: int) -> tuple[Any, Any]:
    """``nnfs.datasets.spiral_data``: ``samples`` points per class on ``classes`` arms."""
    return datasets.spiral(samples, classes, backend=get_backend())


def vertical_data(samples: int, classes: int) -> tuple[Any, Any]:
    """``nnfs.datasets.vertical_data``: classes as vertical clusters."""
    return datasets.vertical(samples, classes, backend=get_backend())


def sine_data(samples: int = 1000) -> tuple[Any, Any]:
    """``nnfs.datasets.sine_data``: ``X = arange(samples) / samples``, ``y = sin(2 pi X)``."""
    return datasets.sine(samples, backend=get_backend())
