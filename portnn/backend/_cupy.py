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
    # No compiler: ``compile`` is the identity. A CUDA graph of the step (stream capture,
    # replayed) cannot be made through CuPy today: while a stream captures, CuPy refuses every
    # cuBLAS call (NotImplementedError from cupy_backends/cuda/libs/cublas.pyx's setStream,
    # CuPy's main branch of 2026-08; cupy/cupy#6290), and each step's matrix products are
    # cuBLAS calls. Only the element-wise stretches between them could be captured.

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

    @classmethod
    def kernel(cls, name: str) -> Callable[..., Any] | None:
        # Written and tested against the portable code, but never yet run on a GPU: on only
        # with PORTNN_CUPY_FUSED=1 (.ci/gpu_check.sh kernels) until a GPU run proves them.
        if os.environ.get("PORTNN_CUPY_FUSED") != "1":
            return None
        return _KERNELS.get(name)  # the CNN layers' kernels are NumPy's only

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


def _relu_backward(dvalues: Any, inputs: Any) -> Any:
    """``dvalues * (inputs > 0)``, the mask's product as the portable code takes it: one
    kernel instead of a comparison, a cast and a product."""
    return _elementwise("relu_backward", "T d, T x", "T out", "out = d * (T)(x > (T)0);")(
        dvalues, inputs
    )


def _softmax_cce_backward(output: Any, y: Any) -> Any:
    """``(output - one_hot(y)) / N`` for class indices ``y``: one kernel instead of about six
    (the one-hot rows are never made)."""
    n, classes = output.shape
    dt = output.dtype.type
    return _elementwise(
        "softmax_cce_backward",
        "T p, raw I y, int64 classes, T n",
        "T out",
        "out = (p - (T)((long long)y[i / classes] == i % classes)) / n;",
    )(output, y, classes, dt(n))


def _cce_per_sample(y_pred: Any, y: Any, lo: float, hi: float) -> Any:
    """``-log(clip(y_pred[i, y[i]], lo, hi))`` per sample, NaN kept as NaN: one kernel
    instead of five."""
    import cupy

    dt = y_pred.dtype.type
    rows = cupy.ascontiguousarray(y_pred)
    return _elementwise(
        "cce_per_sample",
        "raw T p, I y, int64 classes, T lo, T hi",
        "T out",
        # Comparisons, not CUDA's min/max: those drop a NaN, which must reach the loss.
        "T q = p[i * classes + y]; q = q < lo ? lo : q; out = -log(q > hi ? hi : q);",
    )(rows, y, rows.shape[1], dt(lo), dt(hi), cupy.empty(y.shape, dtype=y_pred.dtype))


_KERNELS: dict[str, Callable[..., Any]] = {
    "relu_backward": _relu_backward,
    "softmax_cce_backward": _softmax_cce_backward,
    "cce_per_sample": _cce_per_sample,
}


@functools.cache
def _elementwise(name: str, params: str, outputs: str, body: str) -> Any:
    """One CuPy element-wise kernel, compiled on first use and kept."""
    import cupy

    return cupy.ElementwiseKernel(params, outputs, body, f"portnn_{name}")
