"""Model: a stack of layers with a loss, an optimizer and an accuracy (the book's chapters
18 to 22), trained in mini-batches on whatever backend its parameters live on.

Data crosses to the device once per call; batches are slices of device arrays; losses and
accuracies are summed on the device and read back only at logging points.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from . import _state, _summary, training
from ._checks import integer
from ._inputs import prepare, prepare_x
from ._xp import quiet_float_errors
from .backend import Backend, backend_of, common_backend, get_backend
from .layers import Layer
from .losses import Loss
from .metrics import Accuracy
from .optimizers import Optimizer
from .training import HISTORY_KEYS, MAX_PENDING, as_float, batches, evaluate_device

__all__ = ["HISTORY_KEYS", "MAX_PENDING", "Model"]


class Model:
    """``Model([Dense(2, 64), ReLU(), Dense(64, 3), Softmax()])``, or ``Model()`` and ``add``."""

    def __init__(self, layers: Iterable[Layer] | None = None) -> None:
        self.layers: list[Layer] = []
        self.loss: Loss | None = None
        self.optimizer: Optimizer | None = None
        self.accuracy: Accuracy | None = None
        # What a run wants to find again with the model (``save`` keeps it, ``load`` gives it
        # back): names and plain numbers, e.g. the command's dataset and epochs trained.
        self.metadata: dict[str, str | int | float | bool | None] = {}
        self._finalized = False
        for layer in layers or ():
            self.add(layer)

    # --- building ---------------------------------------------------------------------------
    def add(self, layer: Layer) -> Model:
        if not isinstance(layer, Layer):
            raise TypeError(f"Model.add expects a portnn layer, got {type(layer).__name__}")
        self.layers.append(layer)
        self._finalized = False
        return self

    def set(
        self,
        *,
        loss: Loss | None = None,
        optimizer: Optimizer | None = None,
        accuracy: Accuracy | None = None,
    ) -> Model:
        """Set any of the loss, optimizer and accuracy (the others stay as they are)."""
        for name, value, kind in (
            ("loss", loss, Loss),
            ("optimizer", optimizer, Optimizer),
            ("accuracy", accuracy, Accuracy),
        ):
            if value is not None:
                if not isinstance(value, kind):
                    raise TypeError(f"{name} must be a portnn {kind.__name__}, got {value!r}")
                setattr(self, name, value)
        self._finalized = False
        return self

    def finalize(self) -> Model:
        """Link the layers (implicit on first use): fuse a Softmax output with categorical
        cross-entropy, skip the data gradient of the first layer, choose a default accuracy."""
        if not self.layers:
            raise ValueError("the model has no layers; add some with Model.add(layer)")
        self.shapes()  # layers whose sizes do not chain fail here, not at the first batch
        self.trainable_layers = [layer for layer in self.layers if layer.param_names]
        common_backend(
            {
                f"layer {i} ({la!r})": getattr(la, n)
                for i, la in enumerate(self.layers)
                for n in la.param_names
            }
        )
        for layer in self.layers:  # a layer with parameters skips the data's gradient
            layer.compute_dinputs = layer is not self.layers[0]
        self.output_layer = self.layers[-1]
        # The loss says what it fuses with; the model only asks (no guess from its type).
        loss = self.loss
        self._fused = (
            loss is not None and len(self.layers) > 1 and loss.fuses_with(self.output_layer)
        )
        if loss is not None and loss.needs_fusion and not self._fused:
            raise ValueError(loss.fusion_refused(self.output_layer))
        if self.loss is not None:
            self.loss.remember_trainable_layers(self.trainable_layers)
            if self.accuracy is None:
                self.accuracy = self.loss.default_accuracy()
        self._finalized = True
        return self

    @property
    def backend(self) -> Backend:
        """The backend of the parameters (the current backend for a model without any)."""
        for layer in self.layers:
            for name in layer.param_names:
                return backend_of(getattr(layer, name))
        return get_backend()

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """The shape a batch of inputs must have (None: any size, such as the batch's), from
        the first layer that says: an ``Input(shape=...)``, or one that fixes its inputs
        (Dense: ``(batch, n_inputs)``; Conv2D: ``(batch, in_channels, height, width)``),
        looked for past layers that keep their inputs' shape (activations, Dropout) but not
        past one that changes it (Flatten, pooling); None where none says."""
        for layer in self.layers:
            shape = getattr(layer, "input_shape", None)  # Input(shape=...)'s, Conv2D's
            if shape is not None:
                return tuple(shape)
            if layer.n_inputs is not None:
                return (None, layer.n_inputs)
            if type(layer).output_shape is not Layer.output_shape:
                return None
        return None

    @property
    def n_inputs(self) -> int | None:
        """The features a sample must have, for a model of 2-D inputs (None: any, or inputs
        of another rank, such as images)."""
        shape = self.input_shape
        return shape[1] if shape is not None and len(shape) == 2 else None

    @property
    def n_outputs(self) -> int | None:
        """The width of the model's output (None where no layer fixes it)."""
        return self.shapes()[-1][-1] if self.layers else None

    def shapes(self) -> list[tuple[int | None, ...]]:
        """Each layer's output shape (None: the batch, or any size), from ``input_shape``
        (``(None, None)`` where unknown); a ValueError naming the first layer that cannot take
        its inputs."""
        shape: tuple[int | None, ...] = self.input_shape or (None, None)
        out = []
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise ValueError(f"layer sizes do not chain at layer {i}: {exc}") from None
            out.append(shape)
        return out

    def to(self, backend: str | Backend, dtype: Any = None) -> Model:
        """Move every parameter and the optimizer's state to ``backend`` (and ``dtype``)."""
        target = get_backend(backend, dtype or self.backend.dtype_name)
        for layer in self.layers:
            layer.to(target, target.dtype_name)
        if self.optimizer is not None:
            self.optimizer.to(target, target.dtype_name)
        return self

    def __repr__(self) -> str:
        sizes = "-".join(str(n) for n in self._sizes()) or "no layers with parameters"
        return (
            f"Model({sizes}, {len(self.layers)} layers, {self.count_parameters():,} parameters, "
            f"loss={self.loss!r}, optimizer={self.optimizer!r})"
        )

    def _sizes(self) -> list[int]:
        """The widths ``2-64-3`` names: the inputs, then each layer with parameters' output
        (features, or channels for images)."""
        if not any(la.param_names for la in self.layers):
            return []
        shapes = self.shapes()
        widths = [s[1] for la, s in zip(self.layers, shapes, strict=True) if la.param_names]
        return [(self.input_shape or (None, None))[1], *widths]

    def count_parameters(self) -> int:
        """How many numbers training adjusts (weights and biases of every layer)."""
        return sum(_summary.parameter_count(layer) for layer in self.layers)

    def summary(self, *, file: Any = None) -> None:
        """Print each layer with its output shape and parameter count, the totals, the loss
        and optimizer, and where the model computes (Keras' ``model.summary()``)."""
        print(_summary.summary(self), file=file)

    # --- data -------------------------------------------------------------------------------
    def _require(self, *names: str) -> None:
        if not self._finalized:
            self.finalize()
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise RuntimeError(
                f"the model has no {' or '.join(missing)}; set it with "
                f"model.set({', '.join(f'{n}=...' for n in missing)})"
            )

    # --- the passes -------------------------------------------------------------------------
    def forward(self, X: Any, training: bool = False) -> Any:
        for layer in self.layers:
            X = layer.forward(X, training=training)
        return X

    def backward(self, output: Any, y: Any) -> None:
        if self._fused:
            dvalues = self.loss.fused_backward(output, y)
            layers = self.layers[:-1]
        else:
            dvalues = self.loss.backward(output, y)
            layers = self.layers
        for layer in reversed(layers):
            dvalues = layer.backward(dvalues)

    def _predictions(self, output: Any) -> Any:
        predictions = getattr(self.output_layer, "predictions", None)
        return output if predictions is None else predictions(output)

    # One training run; its arguments, checks and loop are training.py's.
    train = training.train

    def evaluate(self, X: Any, y: Any, *, batch_size: int | None = None) -> tuple[float, float]:
        """Mean data loss and accuracy over (X, y), as floats."""
        self._require("loss")
        batch_size = integer("batch_size", batch_size, allow_none=True)
        X, y = prepare(self, X, y)
        self.accuracy.init(y)
        with quiet_float_errors(X):
            loss, accuracy = evaluate_device(self, X, y, batch_size)
        return as_float(loss), as_float(accuracy)

    def predict(self, X: Any, *, batch_size: int | None = None) -> Any:
        """The output layer's outputs for X, stacked, on the model's backend."""
        self._require()
        batch_size = integer("batch_size", batch_size, allow_none=True)
        X = prepare_x(self, X)
        outputs = [self.forward(X[s, ...]) for s in batches(X.shape[0], batch_size)]
        return outputs[0] if len(outputs) == 1 else self.backend.xp.concat(outputs, axis=0)

    def predict_classes(self, X: Any, *, batch_size: int | None = None) -> Any:
        """The output layer's ``predictions`` of X: class indices for Softmax, 0/1 for
        Sigmoid, the outputs themselves for regression; on the model's backend."""
        return self._predictions(self.predict(X, batch_size=batch_size))

    # --- parameters and files ---------------------------------------------------------------
    def get_parameters(self) -> list[tuple[Any, Any]]:
        """A (weights, biases) pair per trainable layer, on the model's backend."""
        return [(la.weights, la.biases) for la in self.layers if la.param_names]

    def set_parameters(self, parameters: Iterable[tuple[Any, Any]]) -> None:
        """Set every trainable layer's (weights, biases); NumPy or this backend's arrays.
        Checks every shape first, so a bad list changes nothing."""
        self._assign(_state.from_pairs(self, parameters))

    def state_dict(self) -> dict[str, Any]:
        """Every parameter as ``layers/<i>/<name>`` and, with an optimizer, its state as
        ``optimizer/<i>/<name>/<field>``, ``optimizer/iterations`` and
        ``optimizer/current_learning_rate`` (``i`` indexes ``self.layers``): a plain dict of
        arrays and numbers, the arrays by reference (updates make new arrays). The files of
        ``save``, the divergence snapshot and checkpoints are all made of it."""
        return _state.state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` gave (NumPy or this backend's arrays). Everything is
        checked before anything is set, so a bad dict changes nothing."""
        _state.load_state_dict(self, state_dict)

    def _assign(self, params: dict[str, Any]) -> None:
        """Set the parameters from ``layers/<i>/<name>`` arrays, all checked first (io and
        interop load files through it)."""
        _state.assign(self, params)

    def save_parameters(self, path: str | os.PathLike) -> None:
        from . import io

        io.save_parameters(self, path)

    def load_parameters(self, path: str | os.PathLike) -> None:
        from . import io

        io.load_parameters(self, path)

    def save(self, path: str | os.PathLike) -> None:
        """Save architecture, parameters, loss, accuracy and optimizer (with its state) in
        portnn's .npz format, atomically, under exactly the name given (no suffix is added;
        ``.npz`` is the custom). A ``.safetensors`` name is refused rather than given a zip:
        safetensors holds tensors and string metadata, so portnn's safetensors file (written
        by ``portnn.interop.save_safetensors``, read by ``portnn.interop.load_safetensors``)
        keeps the architecture and weights but no optimizer state, loss or accuracy.
        ``self.metadata`` (str keys, plain values) is kept too, and ``load`` gives it back."""
        from . import io

        io.save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | Backend | None = None) -> Model:
        """Rebuild a model ``save`` wrote, on ``backend`` (default: the current backend). The
        file's contents decide, not its name; a safetensors file is refused with a pointer to
        ``portnn.interop.load_safetensors``."""
        from . import io

        return io.load_model(path, backend)
