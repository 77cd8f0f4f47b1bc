"""CuPy: NVIDIA GPUs through CUDA, one device per backend (``device=1``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from ._base import Backend


class CupyBackend(Backend):
    name = "cupy"
    extra = "'portnn[cupy]'"

    @classmethod
    def load(cls) -> tuple[ModuleType, Any]:
        import array_api_compat.cupy as xp
        import cupy

        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own types
            message = f"the 'cupy' backend needs a CUDA GPU, and none answers: {exc}"
            raise RuntimeError(message) from exc
        if count < 1:
            raise RuntimeError("the 'cupy' backend needs a CUDA GPU, and none was found")
        return xp, cupy.cuda.Device(0)

    @classmethod
    def resolve_device(cls, device: Any) -> Any:
        import cupy

        if device is None:
            return cls.load()[1]
        index = getattr(device, "id", device)
        if isinstance(index, str):  # "cuda:1" or "1"
            index = index.rsplit(":", 1)[-1]
        count = cupy.cuda.runtime.getDeviceCount()
        if not str(index).isdigit() or int(index) >= count:
            raise ValueError(f"CuPy sees {count} GPUs (devices 0 to {count - 1}); got {device!r}")
        return cupy.cuda.Device(int(index))

    @classmethod
    def devices(cls) -> list[str]:
        import cupy

        found = []
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            name = cupy.cuda.runtime.getDeviceProperties(i)["name"]
            found.append(f"cuda:{i} ({name.decode() if isinstance(name, bytes) else name})")
        return found

    @classmethod
    def device_of(cls, x: Any) -> Any:
        return x.device

    def sync(self) -> None:
        self.device.synchronize()

    def from_numpy(self, x: np.ndarray, dtype: Any) -> Any:
        with self.device:
            return self.xp.asarray(np.asarray(x, order="C"), dtype=dtype)

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        return x.get()

    def generator(self, seed: int | None) -> Any:
        import cupy

        with self.device:
            return cupy.random.default_rng(seed)

    def uniform(self, generator: Any, shape: tuple[int, ...]) -> Any:
        with self.device:
            return generator.random(shape, dtype=self.dtype_name)

    def permutation(self, generator: Any, n: int) -> Any:
        return self.xp.argsort(self.uniform(generator, (n,)))
