"""Model: a stack of layers with a loss, an optimizer and an accuracy (the book's chapters
18 to 22), trained in mini-batches on whatever backend its parameters live on.

Data crosses to the device once per call; batches are slices of device arrays; losses and
accuracies are summed on the device and read back only at logging points.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

from ._checks import integer
from ._inputs import prepare, prepare_x
from ._xp import quiet_float_errors
from .backend import Backend, backend_of, common_backend, get_backend
from .callbacks import Callback
from .layers import Dense, Layer
from .losses import Loss
from .metrics import Accuracy
from .optimizers import Optimizer
from .training import HISTORY_KEYS, MAX_PENDING, Run, as_float, batches, evaluate_device

__all__ = ["HISTORY_KEYS", "MAX_PENDING", "Model"]


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
        common_backend(
            {
                f"layer {i} ({la!r})": getattr(la, n)
                for i, la in enumerate(self.layers)
                for n in la.param_names
            }
        )
        for layer in dense:
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
        sizes = "-".join(str(n) for n in self._sizes()) or "no Dense layers"
        return (
            f"Model({sizes}, {len(self.layers)} layers, {self.count_parameters():,} parameters, "
            f"loss={self.loss!r}, optimizer={self.optimizer!r})"
        )

    def _sizes(self) -> list[int]:
        dense = [la for la in self.layers if isinstance(la, Dense)]
        return [dense[0].n_inputs, *(la.n_neurons for la in dense)] if dense else []

    def count_parameters(self) -> int:
        """How many numbers training adjusts (weights and biases of every layer)."""
        return sum(math.prod(getattr(la, n).shape) for la in self.layers for n in la.param_names)

    def summary(self, *, file: Any = None) -> None:
        """Print each layer with its output shape and parameter count, the totals, the loss
        and optimizer, and where the model computes (Keras' ``model.summary()``)."""
        rows = [("layer", "output shape", "parameters")]
        width = self.n_inputs
        for i, layer in enumerate(self.layers):
            width = layer.n_neurons if isinstance(layer, Dense) else width
            count = sum(math.prod(getattr(layer, n).shape) for n in layer.param_names)
            rows.append((f"{i}  {layer!r}", f"(batch, {width})", f"{count:,}"))
        widths = [max(len(row[c]) for row in rows) for c in range(3)]
        lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
        rule = "-" * len(lines[0])
        b = self.backend
        print(
            "\n".join(
                [
                    lines[0],
                    rule,
                    *lines[1:],
                    rule,
                    f"parameters: {self.count_parameters():,}",
                    f"loss: {self.loss!r}, optimizer: {self.optimizer!r}",
                    f"backend: {b.name}, device: {b.device}, dtype: {b.dtype_name}",
                ]
            ),
            file=file,
        )

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
        progress: bool | str | None = None,
        comm: Any = None,
        sharded: bool = False,
        callbacks: Sequence[Callback] = (),
        validation_split: float = 0.0,
        verbose: int | None = None,
    ) -> dict[str, list]:
        """Train for ``epochs`` passes over (X, y) in batches of ``batch_size`` (None: all).

        Prints the book's summary line every ``print_every`` epochs (None or 0: silent) and
        returns the history: per-epoch lists under ``HISTORY_KEYS``. ``shuffle`` draws a new
        order each epoch on the device. ``progress`` shows a bar (default: on a terminal,
        when printing). A loss that turns NaN or infinite stops training at the next logging
        point (at most ``MAX_PENDING`` epochs later) with a FloatingPointError, as do NaN or
        infinite parameters after the last update; the model then keeps the parameters that
        the last finite epoch loss was measured from (that epoch's start), and the error's
        ``history`` holds the epochs before.

        ``comm``, a ``portnn.distributed.Communicator``, trains data-parallel across its MPI
        ranks. Every rank starts from rank 0's parameters and optimizer state. ``batch_size``
        is the global batch, and each rank computes its slice of every batch of rank 0's
        permutation, so N ranks reach the parameters one process reaches, to float
        tolerance. Every rank passes the same data, or with ``sharded=True`` its own rows
        (``portnn.distributed.shard``). Figures and history are reduced across ranks, and
        only rank 0 prints and shows progress.

        As in Keras: ``callbacks`` (``portnn.callbacks``: EarlyStopping, ModelCheckpoint,
        ReduceLROnPlateau, LearningRateScheduler, HistoryLogger, or your own) see each
        epoch's figures and may stop training; ``validation_split`` holds out that fraction
        of the last samples as validation data; ``verbose`` 0 is silent, 1 shows a bar, 2
        prints a line per epoch. ``progress="keep"`` leaves the bars on screen. Ctrl-C stops
        before the next step, so the model holds whole steps, and raises KeyboardInterrupt
        with the ``history`` of the epochs that completed.
        """
        run = Run(
            self,
            X,
            y,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=validation_data,
            print_every=print_every,
            shuffle=shuffle,
            progress=progress,
            comm=comm,
            sharded=sharded,
            callbacks=callbacks,
            validation_split=validation_split,
            verbose=verbose,
        )
        return run.fit()

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
        layers = [la for la in self.layers if la.param_names]
        parameters = list(parameters)
        if len(parameters) != len(layers):
            raise ValueError(
                f"got {len(parameters)} parameter pairs for {len(layers)} trainable layers"
            )
        index = {id(la): i for i, la in enumerate(self.layers)}
        self._assign(
            {
                f"layers/{index[id(layer)]}/{name}": value
                for layer, pair in zip(layers, parameters, strict=True)
                for name, value in zip(layer.param_names, pair, strict=True)
            }
        )

    def state_dict(self) -> dict[str, Any]:
        """Every parameter as ``layers/<i>/<name>`` and, with an optimizer, its state as
        ``optimizer/<i>/<name>/<field>``, ``optimizer/iterations`` and
        ``optimizer/current_learning_rate`` (``i`` indexes ``self.layers``): a plain dict of
        arrays and numbers, the arrays by reference (updates make new arrays). The files of
        ``save``, the divergence snapshot and checkpoints are all made of it."""
        state = {
            f"layers/{i}/{name}": getattr(layer, name)
            for i, layer in enumerate(self.layers)
            for name in layer.param_names
        }
        if self.optimizer is not None:
            opt = self.optimizer.state_dict(self.layers)
            state["optimizer/iterations"] = opt["iterations"]
            state["optimizer/current_learning_rate"] = opt["current_learning_rate"]
            for i, by_param in opt["state"].items():
                for name, fields in by_param.items():
                    for field, value in fields.items():
                        state[f"optimizer/{i}/{name}/{field}"] = value
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` gave (NumPy or this backend's arrays). Everything is
        checked before anything is set, so a bad dict changes nothing."""
        params = {k: v for k, v in state_dict.items() if k.startswith("layers/")}
        moved = self._checked_parameters(params)
        opt_keys = {k for k in state_dict if k.startswith("optimizer/")}
        if opt_keys and self.optimizer is None:
            raise ValueError("the state holds optimizer state but the model has no optimizer")
        if self.optimizer is not None and opt_keys:
            nested: dict[int, dict[str, dict[str, Any]]] = {}
            for key in opt_keys - {"optimizer/iterations", "optimizer/current_learning_rate"}:
                _, i, name, field = key.split("/")
                nested.setdefault(int(i), {}).setdefault(name, {})[field] = state_dict[key]
            self.optimizer.load_state_dict(
                {
                    "iterations": state_dict["optimizer/iterations"],
                    "current_learning_rate": state_dict["optimizer/current_learning_rate"],
                    "state": nested,
                },
                self.layers,
            )
        self._set(moved)

    def _assign(self, params: dict[str, Any]) -> None:
        self._set(self._checked_parameters(params))

    def _checked_parameters(self, params: dict[str, Any]) -> dict[tuple[Layer, str], Any]:
        """``layers/<i>/<name>`` arrays moved to this model's backend and dtype, each checked
        against the parameter it replaces."""
        expected = {
            f"layers/{i}/{name}": (layer, name)
            for i, layer in enumerate(self.layers)
            for name in layer.param_names
        }
        if set(params) != set(expected):
            missing, extra = (
                sorted(set(expected) - set(params)),
                sorted(set(params) - set(expected)),
            )
            raise ValueError(f"parameters do not fit the model: missing {missing}, extra {extra}")
        b = self.backend
        moved = {}
        for key, (layer, name) in expected.items():
            array = b.asarray(params[key], dtype=b.dtype)  # a float32 model stays so
            want = tuple(getattr(layer, name).shape)
            if tuple(array.shape) != want:
                raise ValueError(f"{key}: expected shape {want}, got {tuple(array.shape)}")
            moved[(layer, name)] = array
        return moved

    @staticmethod
    def _set(moved: dict[tuple[Layer, str], Any]) -> None:
        for (layer, name), array in moved.items():
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
