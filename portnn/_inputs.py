"""What goes into a Model's train, evaluate and predict: data checked against the model and
moved to its device once per call, with an error that names the problem and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._xp import all_finite, is_kind

if TYPE_CHECKING:
    from .model import Model


def prepare_x(model: Model, X: Any) -> Any:
    """X as finite floats of the model's backend, of the shape its first layers take (2-D
    and as wide as the first layer, or NCHW images of its channels and size)."""
    b = model.backend
    original, X = X, b.asarray(X)
    xp = b.xp
    if not xp.isdtype(X.dtype, "real floating"):
        X = xp.astype(X, b.dtype)
    _check_shape(model.input_shape, tuple(X.shape))
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


def _check_shape(shape: tuple[int | None, ...] | None, found: tuple[int, ...]) -> None:
    """A ValueError unless data of shape ``found`` fits a model of inputs ``shape`` (None:
    any shape with a batch axis and features; otherwise its rank, and every size it fixes)."""
    rank = 2 if shape is None else len(shape)
    if rank == 2 and (len(found) != 2 if shape is not None else len(found) < 2):
        raise ValueError(
            f"X must be 2-D (samples, features), got shape {found}; "
            "flatten each sample, e.g. X.reshape(len(X), -1)"
        )
    if shape is None:
        return
    if rank == 2:
        if shape[1] is not None and found[1] != shape[1]:
            raise ValueError(
                f"X has {found[1]} features per sample but the first layer takes {shape[1]}"
            )
        return
    names = (
        ("samples", "channels", "height", "width")
        if rank == 4
        else ("samples",) + ("any",) * (rank - 1)
    )
    sizes = [name if n is None else str(n) for name, n in zip(names, shape, strict=True)]
    wanted = f"({', '.join(sizes)})"
    hint = ""
    if rank == 4:
        hint = (
            f"; the model takes NCHW images (samples, channels, height, width): reshape flat "
            f"ones with X.reshape(len(X), {', '.join(sizes[1:])}), convert NHWC ones with "
            "X.transpose(0, 3, 1, 2)"
        )
    if len(found) != rank or any(
        n is not None and n != m for n, m in zip(shape, found, strict=True)
    ):
        raise ValueError(f"X has shape {found}, but the model takes {wanted}{hint}")


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
