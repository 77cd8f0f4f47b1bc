"""JAX: immutable arrays on any device jax has (the CPU, ``device="cuda:0"``, a TPU), run
eagerly: the portable code, which writes new arrays everywhere, is what it runs.

Loading the backend turns on ``jax_enable_x64`` for the whole process: without it JAX makes
float64 and int64 requests float32 and int32 (with a warning), and portnn offers float64 and
indexes with int64. The flag only widens what may be asked for: portnn's float32 stays
float32, since every array it makes names its dtype. Other JAX code in the same process then
sees JAX's 64-bit defaults (``jnp.arange(3)`` is int64): set the flag yourself before
importing portnn's jax backend if that matters, and name dtypes.
"""

from __future__ import annotations

import secrets
from types import ModuleType
from typing import Any

import numpy as np

from ._base import Backend


class _Keys:
    """A ``jax.random`` key that moves on at each draw: JAX's keys are values, the Backend's
    generator API is stateful, so the generator is this holder and each draw splits it."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def next(self) -> Any:
        import jax

        self.key, sub = jax.random.split(self.key)
        return sub

    def __repr__(self) -> str:
        return f"_Keys({self.key!r})"


class JaxBackend(Backend):
    name = "jax"
    extra = "'portnn[jax]'"
    modules = ("jaxlib",)  # jax's arrays are jaxlib's ArrayImpl
    compiler = "jax.jit"
    compiles_by_default = True  # eager JAX dispatches each operation alone: slow
    donates = True

    @classmethod
    def load(cls) -> tuple[ModuleType, Any]:
        import jax
        import jax.numpy as xp  # the Array API namespace itself (array-api-compat returns it)

        jax.config.update("jax_enable_x64", True)  # float64 and int64 on request: see above
        return xp, jax.devices()[0]

    @classmethod
    def resolve_device(cls, device: Any) -> Any:
        import jax

        cls.load()
        if device is None:
            return jax.devices()[0]
        if isinstance(device, jax.Device):
            return device
        text = str(device).strip().lower()
        platform, _, index = text.rpartition(":") if ":" in text else ("", "", text)
        if not index.isdigit():  # "cpu", "gpu": that platform's first device
            platform, index = text, "0"
        try:
            found = jax.devices(platform) if platform else jax.devices()
        except RuntimeError as exc:
            have = ", ".join(str(d) for d in jax.devices())
            raise RuntimeError(
                f"jax device {device!r} asked for, but jax has no {platform!r} device here "
                f"(its devices: {have})"
            ) from exc
        if int(index) >= len(found):
            raise ValueError(
                f"jax has {len(found)} {found[0].platform} devices "
                f"({', '.join(str(d) for d in found)}); got device {device!r}"
            )
        return found[int(index)]

    @classmethod
    def devices(cls) -> list[str]:
        import jax

        cls.load()
        found = list(jax.devices())
        if found[0].platform != "cpu":
            found += jax.devices("cpu")
        return [str(d) if d.platform == "cpu" else f"{d} ({d.device_kind})" for d in found]

    @classmethod
    def device_of(cls, x: Any) -> Any:
        return x.device

    def sync(self) -> None:
        # JAX has no "wait for the device": dispatch is asynchronous per array. Waiting for
        # every live array on this device waits for all the work whose results anyone holds.
        import jax

        jax.block_until_ready([a for a in jax.live_arrays() if self.device in a.devices()])

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        return np.array(x)  # a copy: np.asarray would be a read-only view of jax's buffer

    # --- random numbers: keys, split at each draw -------------------------------------------
    def generator(self, seed: int | None) -> Any:
        import jax

        seed = secrets.randbits(63) if seed is None else seed
        return _Keys(jax.device_put(jax.random.key(seed), self.device))

    def uniform(self, generator: Any, shape: tuple[int, ...]) -> Any:
        import jax

        return jax.random.uniform(generator.next(), shape, dtype=self.dtype)

    def permutation(self, generator: Any, n: int) -> Any:
        import jax

        return jax.random.permutation(generator.next(), n)

    # --- the step: keys as data, compiled by XLA --------------------------------------------
    def step_key(self, generator: Any) -> Any:
        return generator.next()

    @staticmethod
    def key_uniform(key: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        import jax

        return jax.random.uniform(key, shape, dtype=dtype)

    def step_scalars(self, values: dict[str, float]) -> dict[str, Any]:
        # Host 0-d arrays: jax.jit moves them in its own dispatch, where jnp.asarray costs a
        # Python-level transfer each (measured: 3 a step were two thirds of an epoch's time).
        import numpy as np

        return {k: np.asarray(v, dtype=self.dtype_name) for k, v in values.items()}

    def compile(self, step: Any, donate: tuple[int, ...] = ()) -> Any:
        import jax

        return jax.jit(step, donate_argnums=donate)
