"""Model: a stack of layers with a loss, an optimizer and an accuracy (the book's chapters
18 to 22), trained in mini-batches on whatever backend its parameters live on.

Data crosses to the device once per call; batches are slices of device arrays; losses and
accuracies are summed on the device and read back only at logging points.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

from . import random
from ._checks import integer
from ._xp import all_finite, is_kind, quiet_float_errors
from .backend import Backend, backend_of, get_backend
from .layers import Dense, Layer
from .losses import BinaryCrossentropy, CategoricalCrossentropy, Loss
from .metrics import Accuracy, BinaryAccuracy, CategoricalAccuracy, RegressionAccuracy
from .optimizers import Optimizer

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
# parameters and optimizer state alive (to restore on divergence), so the wait is bounded.
_MAX_PENDING = 10


class Model:
    """``Model([Dense(2, 64), ReLU(), Dense(64, 3), Softmax()])``, or ``Model()`` and ``add``."""

    def __init__(self, layers: Iterable[Layer] | None = None) -> None:
        self.layers: list[Layer] = []
        self.loss: Loss | None = None
        self.optimizer: Optimizer | None = None
        self.accuracy: Accuracy | None = None
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
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        for a, b in zip(dense, dense[1:], strict=False):
            if a.n_neurons != b.n_inputs:
                raise ValueError(
                    f"layer sizes do not chain: {a!r} gives {a.n_neurons} outputs but the next "
                    f"Dense takes {b.n_inputs} inputs"
                )
        self.trainable_layers = [layer for layer in self.layers if layer.param_names]
        self._check_one_backend()
        for layer in dense:
            layer.compute_dinputs = layer is not self.layers[0]
        self.output_layer = self.layers[-1]
        # The loss says what it fuses with; the model only asks (no guess from its type).
        loss = self.loss
        self._fused = (
            loss is not None and len(self.layers) > 1 and loss.fuses_with(self.output_layer)
        )
        if loss is not None and loss.needs_fusion and not self._fused:
            raise ValueError(_fusion_refused(loss, self.output_layer))
        if self.loss is not None:
            self.loss.remember_trainable_layers(self.trainable_layers)
            if self.accuracy is None:
                self.accuracy = _default_accuracy(self.loss)
        self._finalized = True
        return self

    def _check_one_backend(self) -> None:
        """Every parameter on one backend, device and dtype: mixing them either fails deep in
        a product or silently promotes the whole model to float64."""
        found = {}
        for i, layer in enumerate(self.layers):
            for name in layer.param_names:
                found.setdefault(backend_of(getattr(layer, name)), f"layer {i} ({layer!r})")
        if len(found) > 1:
            listed = "; ".join(f"{where} is on {b}" for b, where in found.items())
            raise ValueError(
                f"the model's parameters live on different backends or dtypes: {listed}. "
                "Build every layer on one backend (pn.use_backend), or move the model with "
                "model.to(backend, dtype)"
            )

    @property
    def backend(self) -> Backend:
        """The backend of the parameters (the current backend for a model without any)."""
        for layer in self.layers:
            for name in layer.param_names:
                return backend_of(getattr(layer, name))
        return get_backend()

    @property
    def n_inputs(self) -> int | None:
        return next((la.n_inputs for la in self.layers if isinstance(la, Dense)), None)

    @property
    def n_outputs(self) -> int | None:
        return next((la.n_neurons for la in reversed(self.layers) if isinstance(la, Dense)), None)

    def to(self, backend: str | Backend, dtype: Any = None) -> Model:
        """Move every parameter and the optimizer's state to ``backend`` (and ``dtype``)."""
        target = get_backend(backend, dtype or self.backend.dtype_name)
        for layer in self.layers:
            layer.to(target, target.dtype_name)
        if self.optimizer is not None:
            self.optimizer.to(target, target.dtype_name)
        return self

    def __repr__(self) -> str:
        inner = ",\n    ".join(repr(layer) for layer in self.layers)
        return f"Model([\n    {inner}\n], loss={self.loss!r}, optimizer={self.optimizer!r})"

    # --- data -------------------------------------------------------------------------------
    def _prepare_x(self, X: Any) -> Any:
        b = self.backend
        original, X = X, b.asarray(X)
        xp = b.xp
        if not xp.isdtype(X.dtype, "real floating"):
            X = xp.astype(X, b.dtype)
        width = self.n_inputs
        if X.ndim != 2:
            raise ValueError(
                f"X must be 2-D (samples, features), got shape {tuple(X.shape)}; "
                "flatten each sample, e.g. X.reshape(len(X), -1)"
            )
        if width is not None and X.shape[1] != width:
            raise ValueError(
                f"X has {X.shape[1]} features per sample but the first layer takes {width}"
            )
        if X.shape[0] == 0:
            raise ValueError("X has no samples")
        if not all_finite(X):
            if all_finite(b.asarray(original, dtype="float64")):
                raise ValueError(
                    f"X has values beyond the range of {b.dtype_name}, which become infinite "
                    "in it; rescale the data, or compute in float64 "
                    "(pn.use_backend(..., dtype='float64'), model.to(backend, 'float64'))"
                )
            raise ValueError("X contains NaN or infinite values; clean or impute them first")
        return X

    def _prepare(self, X: Any, y: Any) -> tuple[Any, Any]:
        X = self._prepare_x(X)
        b = self.backend
        y = b.asarray(y)
        if y.ndim == 0 or y.shape[0] != X.shape[0]:
            raise ValueError(
                f"X and y have different lengths: {X.shape[0]} samples, "
                f"{y.shape[0] if y.ndim else 'a scalar'} targets"
            )
        n_outputs = self.n_outputs or X.shape[1]
        self.loss.check_targets(y, X.shape[0], n_outputs)
        if is_kind(y, "integral") and y.ndim == 1:
            y = b.xp.astype(y, b.xp.int64)  # once per call, not per batch
        elif not b.xp.isdtype(y.dtype, "real floating"):
            y = b.xp.astype(y, b.dtype)
        return X, y

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

    def _regularization(self) -> Any:
        return sum((la.regularization_loss() for la in self.trainable_layers), 0.0)

    def _figures(self, output: Any, y: Any) -> tuple[Any, Any]:
        """A batch's per-sample losses and its comparisons (True: a correct prediction)."""
        return self.loss._forward(output, y), self.accuracy.compare(self._predictions(output), y)

    def _means(self, figures: list[tuple[Any, Any]]) -> tuple[Any, Any]:
        """The mean loss and the accuracy of a pass from its batches' figures, on the device.
        One reduction each per pass: a reduction and a sum per batch cost 10 us a batch."""
        xp = self.backend.xp
        losses = xp.concat([loss for loss, _ in figures])
        hits = xp.concat([xp.reshape(comparisons, (-1,)) for _, comparisons in figures])
        return xp.mean(losses), xp.mean(xp.astype(hits, losses.dtype))

    def _predictions(self, output: Any) -> Any:
        predictions = getattr(self.output_layer, "predictions", None)
        return output if predictions is None else predictions(output)

    def _batches(self, n: int, batch_size: int | None) -> list[slice]:
        size = n if batch_size is None else min(batch_size, n)
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def _evaluate_device(self, X: Any, y: Any, batch_size: int | None) -> tuple[Any, Any]:
        batches = self._batches(X.shape[0], batch_size)
        return self._means([self._figures(self.forward(X[s, ...]), y[s, ...]) for s in batches])

    # --- the public loop --------------------------------------------------------------------
    def train(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int = 1,
        batch_size: int | None = None,
        validation_data: tuple[Any, Any] | None = None,
        print_every: int | None = 1,
        shuffle: bool = True,
        progress: bool | None = None,
    ) -> dict[str, list]:
        """Train for ``epochs`` passes over (X, y) in batches of ``batch_size`` (None: all).

        Prints the book's summary line every ``print_every`` epochs (None or 0: silent) and
        returns the history: per-epoch lists under ``HISTORY_KEYS``. ``shuffle`` draws a new
        order each epoch on the device. ``progress`` shows a bar (default: on a terminal,
        when printing). A loss that turns NaN or infinite stops training at the next logging
        point (at most ``_MAX_PENDING`` epochs later) with a FloatingPointError, as do NaN or
        infinite parameters after the last update; the model then keeps the parameters that
        the last finite epoch loss was measured from (that epoch's start), and the error's
        ``history`` holds the epochs before.
        """
        self._require("loss", "optimizer")
        epochs = integer("epochs", epochs)
        batch_size = integer("batch_size", batch_size, allow_none=True)
        print_every = integer("print_every", print_every, 0, allow_none=True)
        X, y = self._prepare(X, y)
        val = self._prepare(*_pair(validation_data)) if validation_data is not None else None
        self.accuracy.init(y)

        xp, b = self.backend.xp, self.backend
        n = X.shape[0]
        batches = self._batches(n, batch_size)
        log_every = print_every or epochs
        if progress is None:
            progress = bool(print_every) and sys.stderr.isatty() and "CI" not in os.environ
        bar = tqdm(total=epochs * len(batches), disable=not progress, unit="batch", leave=False)
        history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
        pending: list[dict] = []  # epochs since the last logging point, values still on device
        # The parameters an epoch starts from are what its first forward pass measures, so
        # each epoch keeps a snapshot of its start; a finite epoch loss vouches for it.
        last_good = (0, self._snapshot())
        try:
            with quiet_float_errors(X):
                for epoch in range(1, epochs + 1):
                    bar.set_description(f"epoch {epoch}/{epochs}", refresh=False)
                    start = self._snapshot()
                    # Each batch is gathered by its slice of a device permutation: no shuffled
                    # copy of the whole data set is made (nor kept alive by a layer's inputs).
                    order = random.permutation(n, b) if shuffle and len(batches) > 1 else None
                    figures, reg = [], 0.0
                    for i, s in enumerate(batches):
                        if order is None:
                            xb, yb = X[s, ...], y[s, ...]
                        else:
                            xb, yb = xp.take(X, order[s], axis=0), xp.take(y, order[s], axis=0)
                        output = self.forward(xb, training=True)
                        figures.append(self._figures(output, yb))
                        if i == len(batches) - 1:
                            reg = self._regularization()  # the book reports the epoch's last
                        self.backward(output, yb)
                        self.optimizer.step(self.trainable_layers)
                        bar.update()
                    data_loss, accuracy = self._means(figures)
                    record = {
                        "epoch": epoch,
                        "data_loss": data_loss,
                        "regularization_loss": reg,
                        "accuracy": accuracy,
                        "learning_rate": self.optimizer.current_learning_rate,
                        "start": start,
                    }
                    if val is not None:
                        record["val_loss"], record["val_accuracy"] = self._evaluate_device(
                            *val, batch_size
                        )
                    pending.append(record)
                    if epoch % log_every == 0 or epoch == epochs or len(pending) >= _MAX_PENDING:
                        last_good = self._flush(
                            pending, history, last_good, bar, print_every, epochs
                        )
                        pending = []
                # No forward pass measures the last update: check its parameters themselves.
                if not all(all_finite(p) for values in self._snapshot()[0] for p in values):
                    what = f"the update of epoch {epochs} made parameters NaN or infinite"
                    self._diverged(last_good, history, what)
        finally:
            bar.close()
        return history

    def _flush(self, pending, history, last_good, bar, print_every, epochs):
        """A logging point: read the pending epochs' figures back, stop on divergence, print."""
        for record in pending:
            values = {k: _float(v) for k, v in record.items() if k != "start"}
            values["loss"] = values["data_loss"] + values["regularization_loss"]
            if not math.isfinite(values["loss"]):
                what = f"the loss of epoch {values['epoch']} became {values['loss']}"
                self._diverged(last_good, history, what)
            last_good = (values["epoch"], record["start"])
            for key in HISTORY_KEYS:
                history[key].append(values.get(key))
            if print_every and (values["epoch"] % print_every == 0 or values["epoch"] == epochs):
                bar.write(_book_line(values))
        return last_good

    def _diverged(self, last_good: tuple, history: dict, what: str) -> None:
        """Restore the last parameters a finite loss vouched for, and raise."""
        epoch, snapshot = last_good
        lr = self.optimizer.current_learning_rate
        self._restore(snapshot)
        if epoch:
            kept = f"the start of epoch {epoch}, the last whose loss was finite"
        else:
            kept = "the start of this train call (no epoch had a finite loss)"
        error = FloatingPointError(
            f"training diverged: {what}; the model keeps its parameters from {kept}. "
            f"Try a lower learning rate (it was {lr:.3g})."
        )
        error.history = history  # the epochs that completed, for whoever catches this
        raise error

    def _snapshot(self) -> tuple:
        """The parameters and optimizer state by reference: updates make new arrays, never
        write into these, so keeping them costs no copy."""
        params = [[getattr(la, n) for n in la.param_names] for la in self.trainable_layers]
        opt = self.optimizer
        states = {la: dict(s) for la, s in opt.state.items()} if opt else {}
        return params, states, opt.iterations if opt else 0, opt.current_learning_rate if opt else 0

    def _restore(self, snapshot: tuple) -> None:
        params, states, iterations, lr = snapshot
        for layer, values in zip(self.trainable_layers, params, strict=True):
            for name, value in zip(layer.param_names, values, strict=True):
                setattr(layer, name, value)
        if self.optimizer is not None:
            self.optimizer.state = states
            self.optimizer.iterations, self.optimizer.current_learning_rate = iterations, lr

    def evaluate(self, X: Any, y: Any, *, batch_size: int | None = None) -> tuple[float, float]:
        """Mean data loss and accuracy over (X, y), as floats."""
        self._require("loss")
        batch_size = integer("batch_size", batch_size, allow_none=True)
        X, y = self._prepare(X, y)
        self.accuracy.init(y)
        with quiet_float_errors(X):
            loss, accuracy = self._evaluate_device(X, y, batch_size)
        return _float(loss), _float(accuracy)

    def predict(self, X: Any, *, batch_size: int | None = None) -> Any:
        """The output layer's outputs for X, stacked, on the model's backend."""
        self._require()
        batch_size = integer("batch_size", batch_size, allow_none=True)
        X = self._prepare_x(X)
        outputs = [self.forward(X[s, ...]) for s in self._batches(X.shape[0], batch_size)]
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
        layers = [la for la in self.layers if la.param_names]
        parameters = list(parameters)
        if len(parameters) != len(layers):
            raise ValueError(
                f"got {len(parameters)} parameter pairs for {len(layers)} trainable layers"
            )
        b = self.backend
        moved = []
        for i, (layer, pair) in enumerate(zip(layers, parameters, strict=True)):
            arrays = [b.asarray(p, dtype=b.dtype) for p in pair]  # a float32 model stays so
            for name, array in zip(layer.param_names, arrays, strict=True):
                want = tuple(getattr(layer, name).shape)
                if tuple(array.shape) != want:
                    raise ValueError(
                        f"layer {i} {name}: expected shape {want}, got {tuple(array.shape)}"
                    )
            moved.append(arrays)
        for layer, arrays in zip(layers, moved, strict=True):
            for name, array in zip(layer.param_names, arrays, strict=True):
                setattr(layer, name, array)

    def save_parameters(self, path: str | os.PathLike) -> None:
        from . import io

        io.save_parameters(self, path)

    def load_parameters(self, path: str | os.PathLike) -> None:
        from . import io

        io.load_parameters(self, path)

    def save(self, path: str | os.PathLike) -> None:
        """Save architecture, parameters, loss, accuracy and optimizer (with its state)."""
        from . import io

        io.save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | Backend | None = None) -> Model:
        """Rebuild a saved model on ``backend`` (default: the current backend)."""
        from . import io

        return io.load_model(path, backend)


def _fusion_refused(loss: Loss, output_layer: Layer) -> str:
    name, act = type(loss).__name__, loss.fused_activation
    if act is None:
        return (
            f"{name} changes the math of a loss whose backward gives the gradient of the "
            "logits, and declares no fused_activation; declare fused_activation (and "
            "fused_backward) on it, or subclass CategoricalCrossentropy instead"
        )
    return (
        f"{name} needs the model to end in a plain pn.{act.__name__}() to fuse with, but it "
        f"ends in {output_layer!r}; end the model with pn.{act.__name__}() "
        "(CategoricalCrossentropy then fuses automatically)"
    )


def _default_accuracy(loss: Loss) -> Accuracy:
    if isinstance(loss, CategoricalCrossentropy):
        return CategoricalAccuracy()
    if isinstance(loss, BinaryCrossentropy):
        return BinaryAccuracy()
    return RegressionAccuracy()


def _float(value: Any) -> Any:
    return value if isinstance(value, int | float) or value is None else float(value)


def _pair(validation_data: Any) -> tuple[Any, Any]:
    if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (X_val, y_val)")
    return validation_data[0], validation_data[1]


def _book_line(v: dict) -> str:
    line = (
        f"epoch: {v['epoch']}, acc: {v['accuracy']:.3f}, loss: {v['loss']:.3f} "
        f"(data_loss: {v['data_loss']:.3f}, reg_loss: {v['regularization_loss']:.3f}), "
        f"lr: {v['learning_rate']:.10g}"
    )
    if v.get("val_loss") is not None:
        line += f"\nvalidation, acc: {v['val_accuracy']:.3f}, loss: {v['val_loss']:.3f}"
    return line
