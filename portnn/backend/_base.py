"""The Backend base class: what every array library provides, written once against the Array
API standard. A library's subclass overrides only what differs for it (thinc's Ops pattern);
the portable versions here stay the reference that the overrides are tested against."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for any library's float32 dtype (torch's prints as ``torch.float32``)."""
    if isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype).rsplit(".", 1)[-1]


def _check_numeric(x: Any) -> None:
    """Refuse data that would lose information or meaning on the way in: complex numbers
    (the imaginary part would be dropped), strings, objects, dates."""
    name = dtype_name(x.dtype)
    if not (name == "bool" or "int" in name or "float" in name) or "complex" in name:
        raise TypeError(
            f"got an array of dtype {name}; portnn takes real numbers (floats, integers or "
            "booleans): convert the data, e.g. x.real or x.astype('float32'), or encode labels "
            "as integers"
        )


@dataclass(frozen=True)
class Backend:
    """A library's Array API namespace ``xp``, the device arrays live on, and the float dtype.

    Subclasses set ``name`` (the backend's name, also the library's top-level module) and
    ``extra`` (the pip extra that installs it), and override what differs for their library.
    """

    name: ClassVar[str]
    extra: ClassVar[str]
    # Top-level modules its array types live in besides ``name`` (jax's are jaxlib's).
    modules: ClassVar[tuple[str, ...]] = ()
    # Whether portnn.distributed can sum this library's GPU arrays with NCCL (CuPy's).
    has_nccl: ClassVar[bool] = False
    # The library's compiler of a training step ("jax.jit"), None where the step runs as it
    # is; ``compiles_by_default``: whether ``Model.train`` compiles unless told otherwise.
    compiler: ClassVar[str | None] = None
    compiles_by_default: ClassVar[bool] = False
    # Whether ``compile(step, donate=...)`` lets the compiled step reuse (and so delete) the
    # buffers of the arguments named (``jax.jit``'s donated buffers).
    donates: ClassVar[bool] = False

    xp: ModuleType
    device: Any
    dtype: Any

    # --- the library and its devices ------------------------------------------------------
    @classmethod
    def load(cls) -> tuple[ModuleType, Any]:
        """The Array API namespace and the default device; ImportError (naming the pip extra)
        or RuntimeError (no usable device) when the library cannot compute here."""
        raise NotImplementedError

    @classmethod
    def resolve_device(cls, device: Any) -> Any:
        """``device`` (as a user writes it: ``1``, ``"cuda:0"``) as this library's device
        object; None is the default device."""
        _, default = cls.load()
        if device is None or str(device) == str(default):
            return default
        raise ValueError(f"the {cls.name!r} backend has one device, {default!r}; got {device!r}")

    @classmethod
    def devices(cls) -> list[str]:
        """Every device this library can compute on here, described for people."""
        return [str(cls.load()[1])]

    @classmethod
    def device_of(cls, x: Any) -> Any:
        """The device of one of this library's arrays (None: the default device)."""
        return None

    def sync(self) -> None:
        """Wait until every queued computation on the device is done (timings need it)."""

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    # --- arrays in and out ----------------------------------------------------------------
    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """NumPy data, Python numbers or this backend's arrays as an array on this device.

        Floats take this backend's dtype unless ``dtype`` says otherwise; integers stay integers.
        Arrays of another array library raise: move them with ``to_numpy`` first.
        """
        from . import library_of

        lib = library_of(x)
        if lib not in (None, "numpy", self.name):
            raise TypeError(
                f"got a {lib} array, but this model computes on the {self.name!r} backend; "
                f"move it explicitly with portnn.to_backend(x, {self.name!r}) "
                "or portnn.to_numpy(x)"
            )
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(
                "got a masked array, whose mask portnn would drop; fill the masked values "
                "(x.filled(value)) or drop those samples first"
            )
        if getattr(x, "requires_grad", False):
            raise TypeError(
                "got a torch tensor that requires grad: portnn computes its own gradients, and "
                "autograd would record every step (memory grows each epoch); pass x.detach()"
            )
        if lib is None:
            x = np.asarray(x)
        _check_numeric(x)
        if dtype is None and "float" in dtype_name(x.dtype):
            dtype = self.dtype
        elif isinstance(dtype, str):
            dtype = getattr(self.xp, dtype)
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: callers check
            if lib == self.name:
                return self.xp.asarray(x, dtype=dtype, device=self.device)
            if x.dtype.kind == "f" and x.dtype.itemsize > 8:
                x = x.astype(np.float64)  # long double: most libraries cannot take it
            return self.from_numpy(x, dtype)

    def from_numpy(self, x: np.ndarray, dtype: Any) -> Any:
        """A NumPy array as this library's array of ``dtype`` (None: keep) on this device."""
        # asarray(order="C"), not ascontiguousarray: that one makes a 0-d array 1-d.
        return self.xp.asarray(np.asarray(x, order="C"), dtype=dtype, device=self.device)

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        """One of this library's arrays copied to a NumPy array on the host."""
        return np.from_dlpack(x).copy()

    # --- random numbers (the standard has none) -------------------------------------------
    def generator(self, seed: int | None) -> Any:
        """A new generator for draws on this device, from ``seed`` (None: fresh entropy)."""
        return np.random.default_rng(seed)

    def uniform(self, generator: Any, shape: tuple[int, ...]) -> Any:
        """Uniform numbers in [0, 1) of this backend's dtype, on its device."""
        return self.from_numpy(generator.random(shape, dtype=self.dtype_name), None)

    def permutation(self, generator: Any, n: int) -> Any:
        """A random permutation of ``range(n)`` as an integer index array on the device."""
        return self.from_numpy(generator.permutation(n), None)

    # --- a step's random numbers as data (JAX's keys; None: the generator draws) ----------
    def step_key(self, generator: Any) -> Any:
        """A new key for one training step from ``generator``, or None where the layers draw
        from the generator itself (every library but JAX)."""
        return None

    @staticmethod
    def key_uniform(key: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uniform numbers in [0, 1) of ``dtype`` from ``key``."""
        raise NotImplementedError

    # --- the compiler seam ------------------------------------------------------------------
    def compile(self, step: Callable[..., Any], donate: tuple[int, ...] = ()) -> Callable[..., Any]:
        """``step`` (a pure function of arrays, dicts and tuples of them) compiled by the
        library's ``compiler``; the identity where it has none. Where the library ``donates``,
        the arguments at the positions ``donate`` are consumed: their buffers hold the results,
        and the arrays passed are deleted."""
        return step

    def step_scalars(self, values: dict[str, float]) -> dict[str, Any]:
        """A compiled step's numbers (the learning rate...) as 0-d arrays of the default
        dtype, so one compilation serves every step whatever their values."""
        xp, dtype, device = self.xp, self.dtype, self.device
        return {k: xp.asarray(v, dtype=dtype, device=device) for k, v in values.items()}

    # --- floating-point errors --------------------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def quiet_float_errors() -> Iterator[None]:
        """Silence the library's overflow/invalid warnings while training: divergence is
        detected from the loss and reported as one clear error instead."""
        yield

    # --- across processes (portnn.distributed's GPU paths, never run on a GPU yet) --------
    def to_host(self, x: Any) -> np.ndarray:
        """A C-contiguous NumPy copy of one of this backend's arrays, for an MPI collective to
        write in place (the ``staged`` path); ``from_host`` brings it back."""
        return np.ascontiguousarray(self.to_numpy(x))

    def from_host(self, host: np.ndarray) -> Any:
        """A host array (``to_host``'s, after the collective) back on this device."""
        return self.asarray(host)

    @classmethod
    def nccl_available(cls) -> bool:
        """Whether NCCL can sum this library's arrays here (``has_nccl`` and NCCL installed)."""
        return False

    def nccl_allreduce(
        self, rank: int, size: int, share: Callable[[Any], Any]
    ) -> Callable[[Any], None]:
        """An NCCL communicator of ``size`` ranks on this device, as a function that sums one
        of this library's contiguous arrays in place across them. ChainerMN's bootstrap: rank 0
        makes the unique id, and ``share`` (an MPI broadcast from rank 0) gives it to all."""
        raise RuntimeError(f"the {self.name!r} backend cannot sum its arrays with NCCL")

    # --- fused kernels: the math modules' portable code is the reference ------------------
    @classmethod
    def kernel(cls, name: str) -> Callable[..., Any] | None:
        """This library's fused kernel for one of the math modules' element-wise chains, or
        None (the portable code runs). Names and what each computes, as its portable code does:
        ``relu_backward(dvalues, inputs)``, ``softmax_cce_backward(output, y)`` (class indices)
        and ``cce_per_sample(y_pred, y, lo, hi)`` (class indices, clipped to ``[lo, hi]``); the
        CNN layers' ``batch_norm_train``, ``batch_norm_backward``, ``max_pool``,
        ``max_pool_backward``, ``im2col`` and ``col2im`` (their arguments: the calls in
        ``BatchNormalization``, ``MaxPool2D`` and ``Conv2D``). A kernel may also decline one call by
        returning None (a dtype it was not built for): then the portable code runs too."""
        return None

    # --- update rules: the portable references; a library may fuse them -------------------
    @staticmethod
    def adam_update(
        param: Any,
        grad: Any,
        m: Any,
        v: Any,
        beta_1: float,
        beta_2: float,
        scale: float,
        eps: float,
    ) -> tuple[Any, Any, Any]:
        """One Adam step with the bias corrections folded into ``scale`` and ``eps``:
        ``m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g**2; param - scale * m / (sqrt(v) + eps)``.
        Returns new (param, m, v); the arguments are never written to."""
        from .._xp import array_namespace

        xp = array_namespace(param)
        m = beta_1 * m + (1 - beta_1) * grad
        v = beta_2 * v + (1 - beta_2) * (grad * grad)
        return param - scale * m / (xp.sqrt(v) + eps), m, v

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device!r}, dtype={self.dtype_name!r})"

    def __hash__(self) -> int:
        # By the device's text: CuPy's Device objects cannot be hashed (CuPy 14).
        return hash((type(self), self.dtype_name, str(self.device)))
