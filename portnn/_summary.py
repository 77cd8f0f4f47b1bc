"""Text tables: ``Model.summary``'s (layers, output shapes, parameter counts) and the
``table`` layout it shares with ``portnn info``."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from .layers import Layer, shape_text

if TYPE_CHECKING:
    from .model import Model


def table(rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> list[str]:
    """``rows`` as lines of columns two spaces apart, each column as wide as its widest cell,
    left-aligned but for the column indexes in ``right``; no line ends in spaces."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(width) if c in right else cell.ljust(width)
            for c, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def parameter_count(layer: Layer) -> int:
    """How many numbers training adjusts in ``layer``."""
    return sum(math.prod(getattr(layer, name).shape) for name in layer.param_names)


def state_count(layer: Layer) -> int:
    """How many numbers ``layer`` keeps that no gradient adjusts (its ``state_names``:
    BatchNormalization's running statistics), Keras' non-trainable parameters."""
    return sum(math.prod(getattr(layer, name).shape) for name in layer.state_names)


def summary(model: Model) -> str:
    """Each layer with its output shape and parameter count (trained ones), the totals (and
    the layers' state, non-trainable, where any keeps some), the loss and optimizer, and
    where the model computes."""
    rows = [("layer", "output shape", "parameters")]
    digits = len(str(len(model.layers) - 1))
    for i, (layer, shape) in enumerate(zip(model.layers, model.shapes(), strict=True)):
        rows.append((f"{i:>{digits}}  {layer!r}", shape_text(shape), f"{parameter_count(layer):,}"))
    header, *lines = table(rows, right={2})
    rule = "-" * len(header)
    b = model.backend
    fixed = sum(state_count(layer) for layer in model.layers)
    return "\n".join(
        [
            header,
            rule,
            *lines,
            rule,
            f"parameters: {model.count_parameters():,}",
            *(
                [f"non-trainable: {fixed:,} (running statistics, not counted above)"]
                if fixed
                else []
            ),
            f"loss: {model.loss!r}, optimizer: {model.optimizer!r}",
            f"backend: {b.name}, device: {b.device}, dtype: {b.dtype_name}",
        ]
    )
