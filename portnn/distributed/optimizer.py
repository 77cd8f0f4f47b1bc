"""DistributedOptimizer: a portnn optimizer whose updates use the gradients summed over every
rank, weighted by each rank's samples, in one all-reduce of one flat buffer per step
(Horovod's ``hvd.DistributedOptimizer``, ChainerMN's multi-node optimizer)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._checks import real
from ..layers import Layer
from ..optimizers import Optimizer
from .buffers import _describe_path, _DeviceBuffer, _gradient_buffer, _HostBuffer
from .comm import Communicator, _mark


class DistributedOptimizer:
    """An optimizer whose updates use the gradients summed over every rank (weighted by
    each rank's samples: the global batch's mean gradient), in one all-reduce per step.

    Horovod's pattern: ``opt.step(layers, samples=len(batch))``, or ``opt.step(layers,
    samples=n_r, total=B)`` when every rank knows the global batch B. For the book's three calls,
    register the layers once; ``pre_update_params`` then sums every registered layer's
    gradients in its one all-reduce, before any ``update_params``::

        opt = DistributedOptimizer(pn.Adam(), comm, layers=[dense1, dense2])
        opt.pre_update_params(); opt.update_params(dense1); opt.update_params(dense2)
        opt.post_update_params()

    ``pre_update_params`` weights every rank alike, which is exact when every rank has the
    same batch size. For uneven batches, call ``opt.allreduce_gradients(samples=len(batch))``
    first; ``pre_update_params`` then sees the step done and does not reduce again.
    ``update_params`` refuses a layer that was not reduced, rather than let the ranks drift
    apart. Everything else (``current_learning_rate``, ``iterations``, ``state_dict``...) is
    the wrapped optimizer's.
    """

    def __init__(
        self, optimizer: Optimizer, comm: Communicator, layers: Iterable[Layer] | None = None
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a portnn Optimizer, got {optimizer!r}")
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a portnn.distributed.Communicator, got {comm!r}")
        self.optimizer, self.comm = optimizer, comm
        self.layers = None if layers is None else _trainable(layers)
        self._buffers: dict[tuple[int, ...], _HostBuffer | _DeviceBuffer] = {}
        self._reduced: frozenset[int] = frozenset()

    def __getattr__(self, name: str) -> Any:  # the wrapped optimizer's state and settings
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.optimizer!r}, {self.comm!r})"

    def buffer(self, layers: list[Layer]) -> _HostBuffer | _DeviceBuffer:
        """The flat buffer of these layers' gradients, laid out on first use."""
        key = tuple(id(la) for la in layers)
        found = self._buffers.get(key)
        if found is None:
            params = [getattr(la, name) for la in layers for name in la.param_names]
            found = self._buffers[key] = _gradient_buffer(self.comm, params)
        return found

    def describe(self, layers: Iterable[Layer] | None = None) -> str:
        layers = self._layers(layers)
        params = [getattr(la, name) for la in layers for name in la.param_names]
        return _describe_path(self.buffer(layers), params)

    def _layers(self, layers: Iterable[Layer] | None) -> list[Layer]:
        if layers is not None:
            return _trainable(layers)
        if not self.layers:
            raise RuntimeError(
                "DistributedOptimizer does not know the layers to reduce: register them, "
                "DistributedOptimizer(opt, comm, layers=[...]), or call step(layers)"
            )
        return self.layers

    def allreduce_gradients(
        self,
        layers: Iterable[Layer] | None = None,
        *,
        samples: float = 1,
        total: float | None = None,
        failure: BaseException | None = None,
    ) -> None:
        """Replace every layer's ``d<name>`` by ``sum_r samples_r * d<name>_r / sum_r
        samples_r`` over the ranks (the registered layers when ``layers`` is None).

        ``samples`` is this rank's batch size, which may be 0. ``total``, the step's samples
        over every rank, may be given when every rank knows it (``Model.train`` does). Each
        rank then scales as it packs, and no pass divides after the sum. A rank whose forward
        or backward raised passes that exception as ``failure``, and still joins. Then every
        rank raises here together, and no gradient is touched."""
        samples = real("samples", samples, 0.0)
        scale = samples if total is None else samples / real("total", total, 0.0, low_open=True)
        layers = self._layers(layers)  # the same on every rank: raising here is agreed
        buffer = self.buffer(layers)  # laid out once; creating it may refuse a GPU path
        if failure is None:
            try:
                grads = [getattr(la, "d" + name) for la in layers for name in la.param_names]
                buffer.pack(grads, scale)
            except Exception as exc:  # a layer without a gradient, a wrong shape...
                failure = exc
        failed = failure is not None
        summed, failures = buffer.reduce(0.0 if failed else samples, failed)
        if failures:  # every rank learns it in the same all-reduce, and stops here
            self.comm.fail_together(failure, f"in update {self.optimizer.iterations + 1}")
        if summed == 0:
            raise _mark(ValueError("no rank had a sample in this step: nothing to average"))
        if total is not None and summed != total:
            raise ValueError(f"the ranks' samples sum to {summed:g}, not the total {total:g}")
        grads = iter(buffer.unpack(summed if total is None else 1))
        for la in layers:
            for name in la.param_names:
                setattr(la, "d" + name, next(grads))
        self._reduced = frozenset(id(la) for la in layers)

    def step(
        self,
        layers: Iterable[Layer],
        *,
        samples: float = 1,
        total: float | None = None,
        failure: BaseException | None = None,
    ) -> None:
        """Sum the gradients across ranks (one all-reduce), then the wrapped optimizer's step
        (``samples``, ``total`` and ``failure`` as in ``allreduce_gradients``)."""
        layers = _trainable(layers)
        self.allreduce_gradients(layers, samples=samples, total=total, failure=failure)
        self.optimizer.step(layers)
        self._reduced = frozenset()

    # --- the book's three calls -----------------------------------------------------------
    def pre_update_params(self) -> None:
        if not self._reduced:
            self.allreduce_gradients()
        self.optimizer.pre_update_params()

    def update_params(self, layer: Layer) -> None:
        if id(layer) not in self._reduced:
            raise RuntimeError(
                f"{layer!r}: its gradients were not summed across ranks this step, so the "
                "ranks would drift apart; register it (DistributedOptimizer(..., layers=[...])) "
                "and call pre_update_params() first"
            )
        self.optimizer.update_params(layer)

    def post_update_params(self) -> None:
        self.optimizer.post_update_params()
        self._reduced = frozenset()


def _trainable(layers: Iterable[Layer]) -> list[Layer]:
    return [la for la in layers if la.param_names]
