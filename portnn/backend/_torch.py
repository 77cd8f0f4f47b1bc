"""PyTorch tensors, on the CPU or any device torch has (``device="cuda:0"``, ``"mps"``)."""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

import numpy as np

from ._base import Backend


class TorchBackend(Backend):
    name = "torch"
    extra = "'portnn[torch]'"
    compiler = "torch.compile"  # opt-in (train(compile=True)): it starts slowly

    @classmethod
    def load(cls) -> tuple[ModuleType, Any]:
        import array_api_compat.torch as xp
        import torch

        return xp, torch.device("cpu")

    @classmethod
    def resolve_device(cls, device: Any) -> Any:
        import torch

        if device is None:
            return torch.device("cpu")
        device = torch.device(device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(f"torch device {device} asked for, but torch sees no CUDA GPU")
            index = torch.cuda.current_device() if device.index is None else device.index
            if index >= torch.cuda.device_count():
                raise ValueError(
                    f"torch has {torch.cuda.device_count()} CUDA devices; got {device}"
                )
            device = torch.device("cuda", index)  # "cuda" and "cuda:0" are one device
        return device

    @classmethod
    def devices(cls) -> list[str]:
        import torch

        found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            found.append("mps")
        return found

    @classmethod
    def device_of(cls, x: Any) -> Any:
        return x.device

    def sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def generator(self, seed: int | None) -> Any:
        import torch

        g = torch.Generator(device=self.device)
        if seed is None:
            g.seed()
        else:
            g.manual_seed(seed)
        return g

    def uniform(self, generator: Any, shape: tuple[int, ...]) -> Any:
        import torch

        return torch.rand(shape, generator=generator, device=self.device, dtype=self.dtype)

    def permutation(self, generator: Any, n: int) -> Any:
        import torch

        return torch.randperm(n, generator=generator, device=self.device)

    def compile(self, step: Any, donate: tuple[int, ...] = ()) -> Any:
        import torch

        compiled = torch.compile(step, dynamic=False)

        def run(*args: Any) -> Any:
            # Dynamo says once per cached helper it traces (array-api-compat's, portnn's
            # type lookups) that it ignores the cache: true, and harmless for these.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Dynamo detected a call to a `functools")
                return compiled(*args)

        return run
