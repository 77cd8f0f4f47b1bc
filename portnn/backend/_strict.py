"""array-api-strict: the standard and nothing else, on the CPU (NumPy underneath)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from ._base import Backend


class StrictBackend(Backend):
    name = "array_api_strict"
    extra = "'portnn[strict]'"

    @classmethod
    def load(cls) -> tuple[ModuleType, Any]:
        import array_api_strict as xp

        return xp, xp.Device("CPU_DEVICE")

    @classmethod
    def devices(cls) -> list[str]:
        return ["CPU_DEVICE"]

    @staticmethod
    @contextlib.contextmanager
    def quiet_float_errors() -> Iterator[None]:
        with np.errstate(all="ignore"):  # its arrays compute with NumPy
            yield
