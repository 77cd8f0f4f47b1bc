"""Figures of a training run, drawn with matplotlib (``pip install 'portnn[plot]'``).

Figures are drawn on matplotlib's ``Figure`` objects directly, never through ``pyplot``: no
window opens, no global backend is switched, and nothing stays open after the file is written,
so these work on a server, in tests and inside a notebook alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .backend import to_numpy

__all__ = ["formats", "plot_decision_regions", "plot_fit", "plot_history", "plot_regression"]

PathLike = str | os.PathLike


def _matplotlib() -> Any:
    """matplotlib's ``Figure`` class and ``colors`` module, imported only when plotting."""
    try:
        from matplotlib import colors
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "plotting needs matplotlib, which is not installed here; "
            "install it with: pip install 'portnn[plot]'"
        ) from exc
    return Figure, colors


def formats() -> list[str]:
    """The file formats matplotlib writes here, as the suffixes a figure's path may end in
    (``png``, ``pdf``, ``svg``...); an ImportError where matplotlib is missing."""
    _matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def _series(history: Mapping[str, Sequence], key: str) -> list | None:
    values = history.get(key)
    if not values or all(v is None for v in values):
        return None
    return [np.nan if v is None else float(v) for v in values]


def plot_history(
    history: Mapping[str, Sequence],
    path: PathLike,
    *,
    title: str = "",
    validation_label: str = "validation",
) -> PathLike:
    """Loss, accuracy and learning rate per epoch (validation where present), side by side.

    ``history`` is what ``Model.train`` returns (per-epoch lists under ``HISTORY_KEYS``), or any
    mapping with some of ``loss``, ``accuracy``, ``learning_rate``, ``val_loss``,
    ``val_accuracy`` and optionally ``epoch`` (the x axis; else 1, 2...). The validation
    curves are labelled ``validation_label`` ("test" for a test split). Writes an image (PNG
    unless ``path`` names another format) and returns ``path``.
    """
    panels = [
        (name, [(label, s) for label, s in lines if s is not None])
        for name, lines in (
            (
                "loss",
                [
                    ("training", _series(history, "loss")),
                    (validation_label, _series(history, "val_loss")),
                ],
            ),
            (
                "accuracy",
                [
                    ("training", _series(history, "accuracy")),
                    (validation_label, _series(history, "val_accuracy")),
                ],
            ),
            ("learning rate", [("learning rate", _series(history, "learning_rate"))]),
        )
    ]
    panels = [(name, lines) for name, lines in panels if lines]
    if not panels:
        raise ValueError(
            "the history holds no loss, accuracy or learning_rate values to plot; "
            "pass what Model.train returns"
        )
    length = max(len(s) for _, lines in panels for _, s in lines)
    epochs = history.get("epoch") or range(1, length + 1)
    epochs = list(epochs)

    Figure, _ = _matplotlib()
    fig = Figure(figsize=(4.5 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, lines) in zip(axes, panels, strict=True):
        for label, values in lines:
            ax.plot(epochs[: len(values)], values, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        if name != "accuracy" and _spans_decades([v for _, s in lines for v in s]):
            ax.set_yscale("log")  # a loss from 1 to 1e-6 is a flat line on a linear scale
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def _spans_decades(values: Sequence[float], decades: float = 2.0) -> bool:
    """Whether positive ``values`` span more than ``decades`` powers of ten."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if finite.size < 2 or finite.min() <= 0:
        return False
    return bool(np.log10(finite.max() / finite.min()) > decades)


def _classes(model: Any, points: np.ndarray) -> np.ndarray:
    """One class per point: ``model.predict_classes`` (the output layer's own rule), or what
    a callable returns; anything else (probabilities, regression outputs) is refused."""
    predict = getattr(model, "predict_classes", model)
    result = np.asarray(to_numpy(predict(points)))
    if result.ndim == 2 and result.shape[1] == 1:
        result = result[:, 0]  # a Sigmoid's column of 0/1
    indices = result.dtype.kind in "biu" or (
        result.dtype.kind == "f" and bool(np.all(result == np.round(result)))
    )
    if result.shape != (points.shape[0],) or not indices or (result.size and result.min() < 0):
        raise ValueError(
            "decision regions need one class index per point, but the model gave "
            f"{result.dtype} values of shape {result.shape} for {points.shape[0]} points; pass "
            "a portnn Model with a classifying output layer (Softmax, Sigmoid), or a callable "
            "that returns class indices, such as model.predict_classes"
        )
    return result.astype(np.int64)


def plot_decision_regions(
    model: Any,
    X: Any,
    y: Any,
    path: PathLike,
    *,
    resolution: int = 300,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> PathLike:
    """The plane colored by the class ``model`` predicts at each point, the data on top,
    with a legend of the classes (``class_names``, else "class 0", "class 1"...).

    ``model`` is a trained portnn Model on 2-D inputs, whose ``predict_classes`` colors the
    plane, or any callable from points to class indices (such as ``model.predict_classes``);
    ``X`` is ``(N, 2)``, ``y`` the class labels (``(N,)`` or a ``(N, 1)`` column of 0/1), on
    any backend. The grid of ``resolution`` x ``resolution`` points spans the data with a
    margin. Writes an image (PNG unless ``path`` names another format) and returns ``path``.
    """
    Figure, colors = _matplotlib()
    X = np.asarray(to_numpy(X), dtype=np.float64)
    y = np.asarray(to_numpy(y)).reshape(-1)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"decision regions need 2-D points, X of shape (N, 2); got {X.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} points but y has {y.shape[0]} labels")
    if not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")

    low, high = X.min(axis=0), X.max(axis=0)
    margin = 0.1 * np.maximum(high - low, 1e-3)
    xs = np.linspace(low[0] - margin[0], high[0] + margin[0], resolution)
    ys = np.linspace(low[1] - margin[1], high[1] + margin[1], resolution)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float32)
    regions = _classes(model, grid).reshape(gx.shape)

    labels = y.astype(np.int64)
    n_classes = int(max(regions.max(initial=0), labels.max(initial=0))) + 1
    cmap = colors.ListedColormap([f"C{k % 10}" for k in range(n_classes)])
    norm = colors.BoundaryNorm(np.arange(n_classes + 1) - 0.5, n_classes)

    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    ax.contourf(gx, gy, regions, levels=np.arange(n_classes + 1) - 0.5, cmap=cmap, alpha=0.3)
    ax.scatter(
        X[:, 0], X[:, 1], c=labels, cmap=cmap, norm=norm, s=12, edgecolors="k", linewidths=0.3
    )
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(title or "decision regions")
    names = list(class_names) if class_names is not None else []
    names += [f"class {k}" for k in range(len(names), n_classes)]
    handles = [
        ax.scatter([], [], color=f"C{k % 10}", s=30, edgecolors="k", linewidths=0.3, label=name)
        for k, name in enumerate(names[:n_classes])
    ]
    ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.8)
    fig.savefig(path, dpi=100)
    return path


def plot_regression(model: Any, X: Any, y: Any, path: PathLike, *, title: str = "") -> PathLike:
    """Prediction against target for a regression on one input (the book's sine): the
    targets as points, the model's outputs as a line, over X in order.

    ``model`` is a portnn Model (its ``predict`` is used) or a callable from X to outputs;
    ``X`` is ``(N, 1)`` and ``y`` ``(N,)`` or ``(N, 1)``, on any backend. Writes an image and
    returns ``path``."""
    Figure, _ = _matplotlib()
    X = np.asarray(to_numpy(X), dtype=np.float64)
    y = np.asarray(to_numpy(y), dtype=np.float64).reshape(-1)
    if X.ndim != 2 or X.shape[1] != 1:
        raise ValueError(f"a regression plot needs one input per sample, X (N, 1); got {X.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]} targets")
    predict = getattr(model, "predict", model)
    predicted = np.asarray(to_numpy(predict(X.astype(np.float32)))).reshape(X.shape[0], -1)
    if predicted.shape[1] != 1:
        raise ValueError(f"a regression plot needs one output per sample, got {predicted.shape}")
    order = np.argsort(X[:, 0])
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(X[order, 0], y[order], s=6, color="C0", label="target")
    ax.plot(X[order, 0], predicted[order, 0], color="C1", linewidth=2, label="prediction")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "prediction against target")
    fig.savefig(path, dpi=100)
    return path


def plot_fit(
    model: Any, X: Any, y: Any, path: PathLike, *, regression: bool, title: str = ""
) -> str:
    """Draw how the trained ``model`` fits (X, y) to the PNG ``path`` and say what was drawn:
    a ``regression``'s prediction against its target (``plot_regression``), else the decision
    regions of its classes on the plane (``plot_decision_regions``)."""
    if regression:
        plot_regression(model, X, y, path, title=title)
        return "the prediction against the target"
    plot_decision_regions(model, X, y, path, title=title)
    return "the decision regions"
