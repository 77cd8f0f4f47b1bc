"""CuPy: NVIDIA GPUs through CUDA, one device per backend (``device=1``)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ._base import Backend


class CupyBackend(Backend):
    name = "cupy"
    extra = "'portnn[cupy]'"
    has_nccl = True

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

    @classmethod
    def nccl_available(cls) -> bool:
        try:
            from cupy.cuda import nccl
        except ImportError:
            return False
        return bool(getattr(nccl, "available", True))

    def nccl_allreduce(
        self, rank: int, size: int, share: Callable[[Any], Any]
    ) -> Callable[[Any], None]:
        # portnn.distributed's "nccl" path: written, never run on a GPU (off by default).
        import cupy
        from cupy.cuda import nccl

        uid = share(nccl.get_unique_id() if rank == 0 else None)
        with self.device:
            comm = nccl.NcclCommunicator(size, uid, rank)
        kind = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}[self.dtype_name]

        def allreduce(x: Any) -> None:
            ptr, stream = x.data.ptr, cupy.cuda.get_current_stream().ptr
            comm.allReduce(ptr, ptr, x.size, kind, nccl.NCCL_SUM, stream)

        return allreduce

    @staticmethod
    def adam_update(param, grad, m, v, beta_1, beta_2, scale, eps):
        # One kernel launch instead of about eight. It matched the portable reference to
        # float32 rounding (FMA) on an H200, through the optimizer and model suites
        # (.ci/gpu_check.sh kernels); PORTNN_CUPY_FUSED=0 runs the portable version.
        if os.environ.get("PORTNN_CUPY_FUSED") == "0":
            return Backend.adam_update(param, grad, m, v, beta_1, beta_2, scale, eps)
        dt = param.dtype.type
        constants = (beta_1, 1 - beta_1, beta_2, 1 - beta_2, scale, eps)
        return _adam_kernel()(param, grad, m, v, *(dt(c) for c in constants))


@functools.cache
def _adam_kernel() -> Any:
    """Adam as one CuPy element-wise kernel: reads p, g, m, v once and writes new p, m, v."""
    import cupy

    return cupy.ElementwiseKernel(
        "T p, T g, T m, T v, T b1, T c1, T b2, T c2, T scale, T eps",
        "T p_out, T m_out, T v_out",
        """
        T mi = b1 * m + c1 * g;
        T vi = b2 * v + c2 * (g * g);
        m_out = mi;
        v_out = vi;
        p_out = p - scale * mi / (sqrt(vi) + eps);
        """,
        "portnn_adam",
    )
