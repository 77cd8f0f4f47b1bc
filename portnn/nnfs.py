"""The book's own names, so its code runs on portnn with its imports changed (on NumPy;
other backends need the changes listed below).

``from portnn.nnfs import *`` gives the classes of *Neural Networks from Scratch in Python*
(``Layer_Dense``, ``Activation_ReLU``, ``Optimizer_Adam``, ``Model``...) and the ``nnfs``
package's ``init`` and data functions. Most names are portnn's classes themselves; these adapt
a difference of the book's usage:

- ``init()`` calls ``np.random.seed(0)``, as ``nnfs.init()`` does, and seeds portnn with 0.
- ``Layer_Dropout.forward(inputs, training=True)``: chapter 15 calls ``forward(inputs)`` and
  expects dropout, so training is the default here (portnn's ``Dropout`` defaults to off).
- ``Activation_Softmax_Loss_CategoricalCrossentropy`` has the ``.loss`` attribute of the book's
  class (chapter 14: ``loss_activation.loss.regularization_loss(dense1)``).
- ``Model.train`` is the book's loop and prints the book's lines when the book does (chapter 18
  without ``batch_size``, chapters 19 to 22 with it); ``Model.evaluate`` prints the book's
  ``validation, acc: ..., loss: ...`` line; ``Model.output_layer_activation`` is the output
  layer, whose ``predictions`` chapter 22 calls.
- ``spiral_data``, ``vertical_data`` and ``sine_data`` return arrays of the current backend
  (NumPy by default).

Where the book differs from portnn's defaults:

- Chapter 17 only: the book's ``Layer_Dense`` draws ``0.1 * np.random.randn`` (every other
  chapter 0.01, portnn's default). Write ``Layer_Dense(1, 64, weight_scale=0.1)`` (and so for
  each of its three layers) to train the book's network; at 0.01 the sine fit climbs far more
  slowly (on NumPy, accuracy 0.82 against 0.94 at epoch 1,000).
- ``init()`` gives the book's data and initial weights to float32 rounding, not bit for bit:
  ``nnfs.init()`` also makes ``np.dot``, ``np.zeros``, ``np.eye`` and ``np.random.randn``
  return float32, by replacing them in NumPy for the whole process; portnn replaces nothing
  (it computes in float32 itself), so the book's own ``np.random.randn`` calls give float64.

On NumPy (the default backend) the book's code runs as printed. On torch and array-api-strict
the layers' outputs are that library's arrays, and the book's drivers hand them to NumPy; these
lines need ``pn.to_numpy`` (``import portnn as pn``) or the Array API's spelling (found with
torch 2.13 and array-api-strict 2.6; CuPy not tried):

- chapters 3, 4, 5, 9: ``print(dense1.output[:5])`` -> ``print(pn.to_numpy(dense1.output)[:5])``
  (array-api-strict refuses ``[:5]`` on a 2-D array).
- chapters 9 to 15: ``predictions = np.argmax(pn.to_numpy(loss_activation.output),
  axis=1)`` and ``accuracy = np.mean(predictions == pn.to_numpy(y))`` (and ``y_test``).
- chapter 6 changes the weights as NumPy arrays (``.copy()``, ``+= 0.05 *
  np.random.randn(2, 3)``): run it on NumPy.
- chapter 16: ``y = y.reshape(-1, 1)`` -> ``y = pn.get_backend().xp.reshape(y, (-1, 1))`` on
  array-api-strict (its arrays have no ``.reshape``; also chapter 18's binary model);
  ``predictions = (pn.to_numpy(activation2.output) > 0.5) * 1`` and
  ``np.mean(predictions == pn.to_numpy(y))``.
- chapter 17: ``np.std(pn.to_numpy(y))`` and
  ``np.absolute(pn.to_numpy(predictions) - pn.to_numpy(y))``.
- chapter 22: ``predictions = pn.to_numpy(model.output_layer_activation.predictions(
  confidences))`` before looking labels up in the dict (a tensor is no dict key).

The Model chapters 18 to 21 run unchanged on every backend (but for that reshape): the Model
moves NumPy data to its backend and prints Python floats.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import activations, datasets, layers, losses, metrics, optimizers
from . import random as _random
from ._checks import integer
from ._inputs import prepare
from .backend import Backend, get_backend
from .model import Model as _Model
from .training import HISTORY_KEYS, batches

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

Layer_Dense = layers.Dense
Layer_Input = layers.Input
Activation_ReLU = activations.ReLU
Activation_Softmax = activations.Softmax
Activation_Sigmoid = activations.Sigmoid
Activation_Linear = activations.Linear
Loss = losses.Loss
Loss_CategoricalCrossentropy = losses.CategoricalCrossentropy
Loss_BinaryCrossentropy = losses.BinaryCrossentropy
Loss_MeanSquaredError = losses.MeanSquaredError
Loss_MeanAbsoluteError = losses.MeanAbsoluteError
Optimizer_SGD = optimizers.SGD
Optimizer_Adagrad = optimizers.Adagrad
Optimizer_RMSprop = optimizers.RMSprop
Optimizer_Adam = optimizers.Adam
# The book's Accuracy_Categorical(binary=True) works as written.
Accuracy_Categorical = metrics.CategoricalAccuracy
Accuracy_Regression = metrics.RegressionAccuracy


class Layer_Dropout(layers.Dropout):
    """The book's dropout layer: ``forward(inputs)`` drops (chapter 15); the model passes
    ``training=False`` when evaluating and predicting (chapters 18 to 22)."""

    def forward(self, inputs: Any, training: bool = True) -> Any:
        return super().forward(inputs, training=training)


class Activation_Softmax_Loss_CategoricalCrossentropy(losses.SoftmaxCategoricalCrossentropy):
    """Softmax and cross-entropy in one (chapters 9 to 17): ``forward(inputs, y_true)`` returns
    the mean loss and sets ``.output``; ``backward(dvalues, y_true)`` sets ``.dinputs``."""

    def forward(self, inputs: Any, y_true: Any) -> float:  # type: ignore[override]
        """The book's call: the mean loss as a float (portnn's forward gives per-sample)."""
        self.output = self.activation.forward(inputs)
        return self.calculate(self.output, y_true)

    @property
    def loss(self) -> losses.SoftmaxCategoricalCrossentropy:
        # The book's class holds a separate loss object; portnn's is that loss itself.
        return self


class Model(_Model):
    """The book's ``Model`` (chapters 18 to 22): portnn's Model with the book's ``train`` loop
    and an ``evaluate`` that prints the book's validation line."""

    @property
    def output_layer_activation(self) -> Any:
        """The output layer (the book's name for it), whose ``predictions`` gives classes."""
        if not self._finalized:
            self.finalize()
        return self.output_layer

    def train(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int = 1,
        batch_size: int | None = None,
        print_every: int | None = 1,
        validation_data: tuple[Any, Any] | None = None,
    ) -> dict[str, list]:
        """The book's ``Model.train``, written with portnn's pieces; prints what it prints.

        With ``batch_size`` (chapters 19 to 22): ``epoch: N`` as each epoch starts, a
        ``step: ...`` line every ``print_every`` steps and at the epoch's last step, then the
        epoch's ``training, ...`` line and, given ``validation_data``, a ``validation, ...``
        line. Without it (chapter 18): one step per epoch, an ``epoch: N, ...`` line every
        ``print_every`` epochs, and one ``validation, ...`` line after the last epoch. Batches
        are taken in order, never shuffled, as in the book (the book shuffles the data once,
        before training). ``print_every=0`` or None prints nothing. Returns portnn's history
        (per-epoch lists under ``HISTORY_KEYS``; validation figures where they were computed).
        """
        self._require("loss", "optimizer")
        batch_size = integer("batch_size", batch_size, allow_none=True)
        print_every = integer("print_every", print_every, 0, allow_none=True)
        say = print if print_every else _silent
        X, y = prepare(self, X, y)
        self.accuracy.init(y)
        chapter_18 = batch_size is None
        steps = batches(X.shape[0], batch_size)
        history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
        for epoch in range(1, epochs + 1):
            if not chapter_18:
                say(f"epoch: {epoch}")
            self.loss.new_pass()
            self.accuracy.new_pass()
            for step, batch in enumerate(steps):
                batch_X, batch_y = X[batch, ...], y[batch, ...]
                output = self.forward(batch_X, training=True)
                data_loss, reg_loss = self.loss.calculate(
                    output, batch_y, include_regularization=True
                )
                predictions = self.output_layer_activation.predictions(output)
                accuracy = self.accuracy.calculate(predictions, batch_y)
                self.backward(output, batch_y)
                self.optimizer.step(self.trainable_layers)
                lr = self.optimizer.current_learning_rate
                if not print_every:
                    continue
                if chapter_18 and not epoch % print_every:
                    print(f"epoch: {epoch}, {_figures(accuracy, data_loss, reg_loss, lr)}")
                if not chapter_18 and (not step % print_every or step == len(steps) - 1):
                    print(f"step: {step}, {_figures(accuracy, data_loss, reg_loss, lr)}")
            if not chapter_18:
                data_loss, reg_loss = self.loss.calculate_accumulated(include_regularization=True)
                accuracy = self.accuracy.calculate_accumulated()
                say(f"training, {_figures(accuracy, data_loss, reg_loss, lr)}")
            val_loss = val_accuracy = None
            if validation_data is not None and (not chapter_18 or epoch == epochs):
                val_loss, val_accuracy = _Model.evaluate(
                    self, *validation_data, batch_size=batch_size
                )
                say(f"validation, acc: {val_accuracy:.3f}, loss: {val_loss:.3f}")
            row = {
                "epoch": epoch,
                "loss": data_loss + reg_loss,
                "data_loss": data_loss,
                "regularization_loss": reg_loss,
                "accuracy": accuracy,
                "learning_rate": lr,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
            }
            for key in HISTORY_KEYS:
                history[key].append(row.get(key))
        return history

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


def _figures(accuracy: float, data_loss: float, reg_loss: float, lr: float) -> str:
    """The book's figures after ``epoch: N, ``, ``step: N, `` or ``training, ``."""
    return (
        f"acc: {accuracy:.3f}, loss: {data_loss + reg_loss:.3f} (data_loss: {data_loss:.3f}, "
        f"reg_loss: {reg_loss:.3f}), lr: {lr}"
    )


def _silent(*args: Any) -> None:
    pass


def init() -> None:
    """``nnfs.init()``: seed NumPy's global generator with 0 (``np.random.seed(0)``), so the
    book's own ``np.random`` calls (chapter 6's ``randn``, chapter 19's ``shuffle``) repeat,
    and seed portnn's generators with 0, so the book's data and initial weights come out, to
    float32 rounding. The two are separate streams: the book drew its data, weights and
    shuffles from one, so a shuffle repeats but is not the book's. (nnfs also replaces
    ``np.dot``, ``np.zeros``, ``np.eye`` and ``np.random.randn`` process-wide with float32
    versions; portnn leaves NumPy alone and computes in float32 itself.)"""
    np.random.seed(0)  # noqa: NPY002 - the global generator the book's code draws from
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
