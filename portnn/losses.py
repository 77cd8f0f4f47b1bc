"""Losses: ``forward(y_pred, y_true)`` gives per-sample losses, ``calculate`` their mean,
``backward(dvalues, y_true)`` the gradient of the mean. Predictions are clipped to
``[1e-7, 1 - 1e-7]`` where a log needs it, as in the book."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._xp import all_finite, array_namespace, is_kind, kernel, one_hot, pick
from .activations import Softmax
from .backend import to_numpy
from .layers import Layer
from .metrics import Accuracy, BinaryAccuracy, CategoricalAccuracy, RegressionAccuracy

EPS = 1e-7


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def _clipped(p: Any) -> Any:
    """``p`` clipped to ``[EPS, 1 - EPS]``. Written as minimum(maximum()): array-api-compat's
    ``clip`` checks and broadcasts its bounds on every call, and this runs every batch."""
    xp = array_namespace(p)
    return xp.minimum(xp.maximum(p, EPS), 1 - EPS)


def _one_hot_rows(y_true: Any, like: Any) -> Any:
    """Class indices or one-hot targets as one-hot rows of ``like``'s dtype."""
    if y_true.ndim == 1:
        return one_hot(y_true, like.shape[1], like.dtype)
    return array_namespace(like).astype(y_true, like.dtype, copy=False)


class Loss:
    """Base class: validation, the mean, the accumulated mean over batches, regularization.

    A loss may declare the output activation it fuses with (``fused_activation``): a Model
    ending in exactly that activation then calls ``fused_backward(activation_output, y)`` for
    the gradient of the activation's inputs and skips the activation's own backward. The
    declaration is inherited only while the math is: a subclass that overrides ``_forward``,
    ``backward`` or ``fused_backward`` must declare it again, or it runs unfused.
    """

    fused_activation: type[Layer] | None = None
    #: True for a loss whose ``backward`` already gives the gradient of the activation's
    #: inputs: a Model must fuse it (its output layer must be ``fused_activation``) or refuse.
    needs_fusion: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        changed = {"_forward", "backward", "fused_backward"} & vars(cls).keys()
        if changed and "fused_activation" not in vars(cls):
            cls.fused_activation = None

    def fuses_with(self, layer: Layer) -> bool:
        """Whether ``fused_backward`` may stand for this loss's backward followed by
        ``layer``'s: ``layer`` is the declared activation and computes exactly its math."""
        act = self.fused_activation
        return (
            act is not None
            and isinstance(layer, act)
            and all(
                getattr(type(layer), m) is getattr(act, m)
                for m in ("forward", "backward", "apply", "vjp")
            )
        )

    def fused_backward(self, output: Any, y_true: Any) -> Any:
        """The gradient of the mean loss with respect to the fused activation's inputs."""
        raise NotImplementedError(f"{type(self).__name__} fuses with no activation")

    def fusion_refused(self, output_layer: Layer) -> str:
        """Why a model ending in ``output_layer`` cannot use this loss that ``needs_fusion``."""
        name, act = type(self).__name__, self.fused_activation
        if act is None:
            return (
                f"{name} changes the math of a loss whose backward gives the gradient of the "
                "logits, and declares no fused_activation; declare fused_activation (and "
                "fused_backward) on it, or subclass CategoricalCrossentropy instead"
            )
        return (
            f"{name} needs the model to end in a plain pn.{act.__name__}() to fuse with, but "
            f"it ends in {output_layer!r}; end the model with pn.{act.__name__}() "
            "(CategoricalCrossentropy then fuses automatically)"
        )

    def default_accuracy(self) -> Accuracy:
        """The accuracy a Model reports with this loss when none is set."""
        return RegressionAccuracy()

    def __init__(self) -> None:
        self.trainable_layers: list[Layer] = []
        self.new_pass()

    # --- subclasses write these two -------------------------------------------------------
    def _forward(self, y_pred: Any, y_true: Any) -> Any:
        raise NotImplementedError

    def backward(self, dvalues: Any, y_true: Any) -> Any:
        raise NotImplementedError

    def check_targets(self, y_true: Any, n_samples: int, n_outputs: int, values: bool = True):
        """Raise a clear error if ``y_true`` cannot be the targets of ``n_samples`` outputs of
        width ``n_outputs``. ``values=False`` skips the checks that read values (a host sync)."""
        if _shape(y_true) != (n_samples, n_outputs):
            hint = " (reshape it with y.reshape(-1, 1))" if y_true.ndim == 1 else ""
            raise ValueError(
                f"{type(self).__name__} needs targets of shape ({n_samples}, {n_outputs}) for "
                f"outputs of that shape, got {_shape(y_true)}{hint}"
            )
        if values and is_kind(y_true, "real floating") and not all_finite(y_true):
            raise ValueError(f"{type(self).__name__} targets contain NaN or infinity")

    # --- the public API -------------------------------------------------------------------
    def forward(self, y_pred: Any, y_true: Any) -> Any:
        """Per-sample losses, after checking shapes and target values."""
        if y_pred.ndim != 2:
            raise ValueError(f"predictions must be 2-D (samples, outputs), got {_shape(y_pred)}")
        if y_true.shape[0] != y_pred.shape[0]:
            raise ValueError(
                f"predictions and targets have different lengths: {y_pred.shape[0]} samples "
                f"of predictions, {y_true.shape[0]} of targets"
            )
        self.check_targets(y_true, y_pred.shape[0], y_pred.shape[1])
        return self._forward(y_pred, y_true)

    def calculate(self, output: Any, y: Any, *, include_regularization: bool = False):
        """Mean loss of this batch as a float (and the regularization loss, if asked);
        also adds the batch to the accumulated mean."""
        sample_losses = Loss.forward(self, output, y)  # of outputs, even where forward fuses
        xp = array_namespace(sample_losses)
        self.accumulated_sum = self.accumulated_sum + xp.sum(sample_losses)
        self.accumulated_count += sample_losses.shape[0]
        data_loss = float(xp.mean(sample_losses))
        if not include_regularization:
            return data_loss
        return data_loss, self.regularization_loss()

    def calculate_accumulated(self, *, include_regularization: bool = False):
        """Mean loss over every sample since ``new_pass``."""
        if self.accumulated_count == 0:
            raise RuntimeError("no batch was calculated since new_pass()")
        data_loss = float(self.accumulated_sum) / self.accumulated_count
        if not include_regularization:
            return data_loss
        return data_loss, self.regularization_loss()

    def new_pass(self) -> None:
        self.accumulated_sum = 0.0
        self.accumulated_count = 0

    def remember_trainable_layers(self, layers: Iterable[Layer]) -> None:
        self.trainable_layers = list(layers)

    def regularization_loss(self, layer: Layer | None = None) -> float:
        """L1/L2 penalty of ``layer``, or of every remembered trainable layer, as a float."""
        return float(self.regularization_total(None if layer is None else [layer]))

    def regularization_total(self, layers: Iterable[Layer] | None = None) -> Any:
        """The same sum left on the device (no host sync): what a Model reports per epoch."""
        layers = self.trainable_layers if layers is None else layers
        return sum((la.regularization_loss() for la in layers if la.param_names), 0.0)

    def get_config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CategoricalCrossentropy(Loss):
    """Categorical cross-entropy: ``-sum(y * log p)`` per sample with p clipped, which is the
    book's ``-log p[true class]`` for class indices and one-hot rows; backward
    ``-(y / p) / N``. Targets: class indices (any integer dtype), one-hot rows, or soft labels
    (rows of probabilities summing to 1). Fused with a Softmax output, the backward of both is
    ``(softmax - y) / N``."""

    fused_activation = Softmax

    def default_accuracy(self) -> Accuracy:
        return CategoricalAccuracy()

    def check_targets(self, y_true: Any, n_samples: int, n_outputs: int, values: bool = True):
        xp = array_namespace(y_true)
        if y_true.ndim == 1:
            if y_true.shape[0] != n_samples:
                raise ValueError(f"got {y_true.shape[0]} labels for {n_samples} samples")
            if not is_kind(y_true, "integral"):
                raise TypeError(
                    f"class labels must be integers, got {y_true.dtype}; "
                    "convert them with y.astype('int64') or pass one-hot rows"
                )
            if values and y_true.shape[0]:
                # torch has no min/max for uint16/32/64
                labels = xp.astype(y_true, xp.int64, copy=False)
                low, high = int(xp.min(labels)), int(xp.max(labels))
                if low < 0 or high >= n_outputs:
                    raise ValueError(
                        f"labels must lie in [0, {n_outputs}) for {n_outputs} outputs; "
                        f"got values from {low} to {high}"
                    )
        elif y_true.ndim == 2:
            if _shape(y_true) != (n_samples, n_outputs):
                raise ValueError(
                    f"one-hot targets must have shape ({n_samples}, {n_outputs}) to match the "
                    f"outputs, got {_shape(y_true)}"
                )
            if values:
                _check_probability_rows(y_true, type(self).__name__)
        else:
            raise ValueError(
                f"targets must be class indices (N,) or one-hot (N, classes), got {_shape(y_true)}"
            )

    def _forward(self, y_pred: Any, y_true: Any) -> Any:
        xp = array_namespace(y_pred)
        if y_true.ndim == 1:  # clipping the picked column equals picking from the clipped
            fused = kernel(y_pred, "cce_per_sample")
            if fused is not None:
                return fused(y_pred, y_true, EPS, 1 - EPS)
            return -xp.log(_clipped(pick(y_pred, y_true)))
        y = xp.astype(y_true, y_pred.dtype, copy=False)
        return -xp.sum(y * xp.log(_clipped(y_pred)), axis=1)

    def backward(self, dvalues: Any, y_true: Any) -> Any:
        # Clipped as the forward is: a probability of exactly 0 would give inf and NaN.
        self.dinputs = -(_one_hot_rows(y_true, dvalues) / _clipped(dvalues)) / dvalues.shape[0]
        return self.dinputs

    def fused_backward(self, output: Any, y_true: Any) -> Any:
        """``(softmax_output - y) / N``: exact for targets whose rows sum to 1, which
        ``check_targets`` demands."""
        fused = kernel(output, "softmax_cce_backward") if y_true.ndim == 1 else None
        if fused is not None:
            return fused(output, y_true)
        return (output - _one_hot_rows(y_true, output)) / output.shape[0]


def _check_probability_rows(y_true: Any, who: str) -> None:
    """2-D targets must be rows of probabilities: every value in [0, 1], each row summing to 1
    (NaN fails both). Anything else has no cross-entropy the fused gradient agrees with."""
    xp = array_namespace(y_true)
    y = y_true if is_kind(y_true, "real floating") else xp.astype(y_true, xp.float32)
    in_range = xp.all((y >= 0) & (y <= 1), axis=1)
    ok = in_range & (xp.abs(xp.sum(y, axis=1) - 1) <= 1e-3)
    if not bool(xp.all(ok)):
        row = to_numpy(ok).tolist().index(False)
        raise ValueError(
            f"{who} targets of shape (samples, classes) must be one-hot or soft-label rows: "
            f"values in [0, 1] that sum to 1 per row; row {row} is {to_numpy(y_true[row, ...])}. "
            "Pass class indices, or fix or drop that row"
        )


class BinaryCrossentropy(Loss):
    """Binary cross-entropy: ``mean(-(y log p + (1 - y) log(1 - p)))`` over outputs, p clipped;
    backward ``-(y / p - (1 - y) / (1 - p)) / outputs / N``. Targets: 0/1, the outputs' shape."""

    def default_accuracy(self) -> Accuracy:
        return BinaryAccuracy()

    def check_targets(self, y_true: Any, n_samples: int, n_outputs: int, values: bool = True):
        super().check_targets(y_true, n_samples, n_outputs, values)
        if values and not is_kind(y_true, "bool"):  # booleans are 0 and 1 already
            xp = array_namespace(y_true)
            if not bool(xp.all((y_true >= 0) & (y_true <= 1))):
                raise ValueError("BinaryCrossentropy targets must lie in [0, 1]")

    def _forward(self, y_pred: Any, y_true: Any) -> Any:
        xp = array_namespace(y_pred)
        p = _clipped(y_pred)
        y = xp.astype(y_true, p.dtype, copy=False)
        return xp.mean(-(y * xp.log(p) + (1 - y) * xp.log(1 - p)), axis=-1)

    def backward(self, dvalues: Any, y_true: Any) -> Any:
        xp = array_namespace(dvalues)
        n, outputs = dvalues.shape
        c = _clipped(dvalues)
        y = xp.astype(y_true, dvalues.dtype, copy=False)
        self.dinputs = -(y / c - (1 - y) / (1 - c)) / outputs / n
        return self.dinputs


class MeanSquaredError(Loss):
    """Mean squared error: ``mean((y - p)**2)`` over outputs;
    backward ``-2 (y - p) / outputs / N``."""

    def _forward(self, y_pred: Any, y_true: Any) -> Any:
        xp = array_namespace(y_pred)
        diff = xp.astype(y_true, y_pred.dtype, copy=False) - y_pred
        return xp.mean(diff * diff, axis=-1)

    def backward(self, dvalues: Any, y_true: Any) -> Any:
        xp = array_namespace(dvalues)
        n, outputs = dvalues.shape
        self.dinputs = -2 * (xp.astype(y_true, dvalues.dtype, copy=False) - dvalues) / outputs / n
        return self.dinputs


class MeanAbsoluteError(Loss):
    """Mean absolute error: ``mean(|y - p|)`` over outputs; backward ``sign(p - y) / outputs / N``
    (the true gradient; the book's code has the sign flipped)."""

    def _forward(self, y_pred: Any, y_true: Any) -> Any:
        xp = array_namespace(y_pred)
        return xp.mean(xp.abs(xp.astype(y_true, y_pred.dtype, copy=False) - y_pred), axis=-1)

    def backward(self, dvalues: Any, y_true: Any) -> Any:
        xp = array_namespace(dvalues)
        n, outputs = dvalues.shape
        self.dinputs = xp.sign(dvalues - xp.astype(y_true, dvalues.dtype, copy=False)) / outputs / n
        return self.dinputs


class SoftmaxCategoricalCrossentropy(CategoricalCrossentropy):
    """Softmax and categorical cross-entropy in one step, with the fast fused backward
    ``(softmax_output - y_onehot) / N``.

    ``forward(logits, y)`` gives the per-sample losses, as every loss's forward does, and sets
    ``.output`` (the probabilities); ``calculate(probabilities, y)`` their mean;
    ``backward(self.output, y)`` the gradient of the logits. (The book's class, whose forward
    returns the mean, is ``portnn.nnfs.Activation_Softmax_Loss_CategoricalCrossentropy``.)
    As a Model's loss it needs a Softmax output layer, which it fuses with (so does
    CategoricalCrossentropy).
    """

    fused_activation = Softmax
    needs_fusion = True

    def __init__(self) -> None:
        super().__init__()
        self.activation = Softmax()

    def forward(self, inputs: Any, y_true: Any) -> Any:
        self.output = self.activation.forward(inputs)
        return super().forward(self.output, y_true)

    def backward(self, dvalues: Any, y_true: Any) -> Any:
        self.dinputs = self.fused_backward(dvalues, y_true)
        return self.dinputs
