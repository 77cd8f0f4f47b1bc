"""DistributedOptimizer: a portnn optimizer whose updates use the gradients summed over every
rank, weighted by each rank's samples, in one all-reduce of one flat buffer per step
(Horovod's ``hvd.DistributedOptimizer``, ChainerMN's multi-node optimizer)."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

from .._checks import real
from ..layers import Layer
from ..optimizers import Optimizer
from .buffers import _describe_path, _DeviceBuffer, _gradient_buffer, _HostBuffer, _layout
from .comm import Communicator, _mark

_PLANS = 8  # sequences of layers whose plans are kept (a step(layers) loop needs one)


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

    The registered layers are those given here, as they are now. Each sequence of layers
    (the registered, or one given to ``step``) is sorted out once: which have parameters, and
    the buffer laid out for those. A buffer is laid out anew when the parameters' library,
    device, dtype or shapes change (``model.to(...)``); that must happen on every rank alike.
    """

    def __init__(
        self, optimizer: Optimizer, comm: Communicator, layers: Iterable[Layer] | None = None
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a portnn Optimizer, got {optimizer!r}")
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a portnn.distributed.Communicator, got {comm!r}")
        self.optimizer, self.comm = optimizer, comm
        self._plans: dict[tuple[int, ...], _Plan] = {}
        self._registered: _Plan | None = None
        self.layers = layers
        self._reduced: frozenset[int] = frozenset()
        self._last: _Plan | None = None  # the plan of the step under way

    def __getattr__(self, name: str) -> Any:  # the wrapped optimizer's state and settings
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.optimizer!r}, {self.comm!r})"

    @property
    def layers(self) -> list[Layer] | None:
        """The registered layers that have parameters (a copy: assign to register others)."""
        return None if self._registered is None else list(self._registered.layers)

    @layers.setter
    def layers(self, layers: Iterable[Layer] | None) -> None:
        # step(the same layers) then shares the plan and its buffer
        self._registered = None if layers is None else self._plan(layers)

    def buffer(self, layers: Iterable[Layer] | None = None) -> _HostBuffer | _DeviceBuffer:
        """The flat buffer of these layers' gradients (the registered layers' when None), laid
        out on first use."""
        return self._layers(layers).laid_out(self.comm)

    def describe(self, layers: Iterable[Layer] | None = None) -> str:
        plan = self._layers(layers)
        return _describe_path(plan.laid_out(self.comm), plan.params())

    def _plan(self, layers: Iterable[Layer]) -> _Plan:
        given = layers if isinstance(layers, list | tuple) else list(layers)
        key = tuple(map(id, given))
        plan = self._plans.get(key)
        if plan is not None and plan.names == _names(given):
            return plan
        # New, or a layer's param_names changed (one frozen or unfrozen): sorted out anew,
        # as Optimizer.step reads param_names afresh every step.
        if plan is None and len(self._plans) >= _PLANS:  # caches go; the registered stays
            registered = self._registered
            self._plans = {} if registered is None else {registered.key: registered}
        plan = self._plans[key] = _Plan(given, key)
        if self._registered is not None and self._registered.key == key:
            self._registered = plan
        return plan

    def _layers(self, layers: Iterable[Layer] | None) -> _Plan:
        if layers is not None:
            plan = self._plan(layers)
            if not plan.layers:
                raise ValueError(f"none of these layers has parameters: {list(plan.given)!r}")
            return plan
        plan = None if self._registered is None else self._plan(self._registered.given)
        if plan is None or not plan.layers:
            raise RuntimeError(
                "DistributedOptimizer does not know the layers to reduce: register them, "
                "DistributedOptimizer(opt, comm, layers=[...]), or call step(layers)"
            )
        return plan

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
        self._allreduce(self._layers(layers), samples, total, failure)

    def _allreduce(
        self, plan: _Plan, samples: float, total: float | None, failure: BaseException | None
    ) -> None:
        samples = real("samples", samples, 0.0)
        scale = samples if total is None else samples / real("total", total, 0.0, low_open=True)
        buffer = plan.laid_out(self.comm)  # the first time may refuse a GPU path, on every rank
        try:  # anew if the parameters changed: on every rank, whether it failed or not
            buffer = plan.current(self.comm)
        except Exception as exc:  # then this step sums in the old buffer, and fails
            failure = failure or exc
        if failure is None:
            try:
                buffer.pack(plan.grads(), scale)
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
        outs = buffer.unpack(summed if total is None else 1)
        for (layer, grad_name), out in zip(plan.grad_slots, outs, strict=True):
            setattr(layer, grad_name, out)
        self._reduced, self._last = plan.ids, plan

    def step(
        self,
        layers: Iterable[Layer] | None = None,
        *,
        samples: float = 1,
        total: float | None = None,
        failure: BaseException | None = None,
    ) -> None:
        """Sum the gradients across ranks (one all-reduce), then the wrapped optimizer's step
        (the registered layers when ``layers`` is None; ``samples``, ``total`` and
        ``failure`` as in ``allreduce_gradients``)."""
        plan = self._layers(layers)
        self._allreduce(plan, samples, total, failure)
        self.optimizer.step(plan.layers)
        self._updated()

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
        self._updated()

    def _updated(self) -> None:
        if self._last is not None:  # the parameters as updated: next step's check is quick
            self._last.seen = self._last.params()
        self._reduced, self._last = frozenset(), None


class _Plan:
    """One sequence of layers, sorted out once: those with parameters, where each parameter
    and gradient lives, and the gradient buffer laid out for the parameters."""

    __slots__ = (
        "buffer",
        "given",
        "grad_slots",
        "ids",
        "key",
        "layers",
        "names",
        "param_slots",
        "seen",
    )

    def __init__(self, given: list[Layer] | tuple[Layer, ...], key: tuple[int, ...]) -> None:
        self.given, self.key = tuple(given), key  # held, so no other layer takes their ids
        self.names = _names(given)  # what the plan was sorted out for
        self.layers = [la for la in given if la.param_names]
        self.param_slots = [(la, name) for la in self.layers for name in la.param_names]
        self.grad_slots = [(la, "d" + name) for la, name in self.param_slots]
        self.ids = frozenset(map(id, self.layers))
        self.buffer: _HostBuffer | _DeviceBuffer | None = None
        self.seen: list = []  # the parameters the buffer was last checked against

    def params(self) -> list:
        return [getattr(la, name) for la, name in self.param_slots]

    def grads(self) -> list:
        return [getattr(la, name) for la, name in self.grad_slots]

    def laid_out(self, comm: Communicator) -> _HostBuffer | _DeviceBuffer:
        if self.buffer is None:
            self.buffer = _gradient_buffer(comm, self.params())
        return self.buffer

    def current(self, comm: Communicator) -> _HostBuffer | _DeviceBuffer:
        """The buffer for the parameters as they are now: the same one unless their library,
        device, dtype or shapes changed. The optimizer's updates keep all four, so parameters
        seen after the last update need no closer look."""
        params = self.params()
        if len(params) != len(self.seen) or not all(map(operator.is_, params, self.seen)):
            if _layout(params) != self.buffer.layout:  # alike on every rank: decided together
                self.buffer = comm.together(
                    "laying out a new gradient buffer", _gradient_buffer, comm, params
                )
            self.seen = params
        return self.buffer


def _names(layers: Iterable[Layer]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(la.param_names) for la in layers)
