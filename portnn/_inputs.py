"""What goes into a Model's train, evaluate and predict: data checked against the model and
moved to its device once per call, with an error that names the problem and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._xp import all_finite, is_kind

if TYPE_CHECKING:
    from .model import Model


def prepare_x(model: Model, X: Any) -> Any:
    """X as 2-D finite floats of the model's backend, as wide as its first layer."""
    b = model.backend
    original, X = X, b.asarray(X)
    xp = b.xp
    if not xp.isdtype(X.dtype, "real floating"):
        X = xp.astype(X, b.dtype)
    width = model.n_inputs
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


def prepare(model: Model, X: Any, y: Any) -> tuple[Any, Any]:
    """X as ``prepare_x`` gives it, and y checked by the model's loss: int64 class indices or
    floats of the model's dtype."""
    X = prepare_x(model, X)
    b = model.backend
    y = b.asarray(y)
    if y.ndim == 0 or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"X and y have different lengths: {X.shape[0]} samples, "
            f"{y.shape[0] if y.ndim else 'a scalar'} targets"
        )
    model.loss.check_targets(y, X.shape[0], model.n_outputs or X.shape[1])
    if is_kind(y, "integral") and y.ndim == 1:
        y = b.xp.astype(y, b.xp.int64)  # once per call, not per batch
    elif not b.xp.isdtype(y.dtype, "real floating"):
        y = b.xp.astype(y, b.dtype)
    return X, y
