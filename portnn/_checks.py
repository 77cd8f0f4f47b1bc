"""Argument checks shared by every constructor and call: any integer or real number is taken
(Python's, NumPy's scalars such as ``y.max() + 1`` or ``np.float32(1e-3)``), never a bool."""

from __future__ import annotations

import math
import numbers
from typing import Any


def integer(name: str, value: Any, minimum: int = 1, *, allow_none: bool = False) -> int | None:
    """``value`` as an int >= ``minimum``, or a ValueError that names ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kinds = {1: "a positive integer", 0: "a non-negative integer"}
        kind = kinds.get(minimum, f"an integer >= {minimum}")
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be {kind}{extra}, got {value!r}")
    return int(value)


def real(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the interval, or a ValueError that names ``name``."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if ok:
        v = float(value)
        ok = (
            math.isfinite(v)
            and (low < v if low_open else low <= v)
            and (v < high if high_open else v <= high)
        )
    if not ok:
        closing = ")" if high_open or math.isinf(high) else "]"
        interval = f"{'(' if low_open or math.isinf(low) else '['}{low:g}, {high:g}{closing}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def short_repr(obj: Any) -> str:
    """``Name(arg=value, ...)`` with only the constructor arguments that differ from their
    defaults: ``Dense(784, 128)``, ``Adam(learning_rate=0.05, decay=5e-07)``."""
    import inspect

    params = inspect.signature(type(obj).__init__).parameters
    parts = []
    for name, value in obj.get_config().items():
        param = params.get(name)
        if param is not None and param.default is not inspect.Parameter.empty:
            if value == param.default:
                continue
        positional = param is not None and param.default is inspect.Parameter.empty
        parts.append(repr(value) if positional else f"{name}={value!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"
