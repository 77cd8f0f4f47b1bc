"""Optimizers: the book's three calls (``pre_update_params``, ``update_params(layer)``,
``post_update_params``) or ``step(layers)``. Each subclass writes one pure ``rule`` for one
parameter, with the step's numbers (``scalars``) as data, which a compiled training step
calls too; state lives in named tuples per layer and parameter, so it can be saved."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from ._checks import integer, real, short_repr
from ._npz import short
from ._xp import adam_update, array_namespace
from .backend import Backend, backend_of, to_backend
from .layers import Layer
from .schedules import InverseTimeDecay, Schedule


def _check(name: str, value: Any, low: float, high: float = math.inf) -> float:
    return real(name, value, low, high, high_open=True)


def _like(param: Any, value: Any, what: str) -> Any:
    """``value`` as an array of ``param``'s backend, dtype and shape, or a ValueError."""
    array = backend_of(param).asarray(value)
    if tuple(array.shape) != tuple(param.shape):
        raise ValueError(
            f"optimizer state {what} has shape {tuple(array.shape)}, the parameter "
            f"{tuple(param.shape)}"
        )
    return array


class Optimizer:
    """Base class: the learning-rate schedule (the book's ``decay``: ``lr / (1 + decay * t)``),
    the step count, and per-parameter state ``self.state[layer][name]``, a named tuple of
    arrays. ``state_dict`` / ``load_state_dict`` are the one way state goes in and out.

    Update rules return new arrays and never write into the old ones, so a state dict taken
    by reference stays what it was."""

    State: type[NamedTuple] | None = None

    def __init__(
        self, learning_rate: float, decay: float = 0.0, *, schedule: Schedule | None = None
    ) -> None:
        self.learning_rate = real("learning_rate", learning_rate, 0.0, low_open=True)
        self.decay = _check("decay", decay, 0.0)
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a portnn Schedule, got {schedule!r}")
        if schedule is not None and self.decay:
            raise ValueError("give decay or a schedule, not both (decay=d is InverseTimeDecay(d))")
        self._own_schedule = schedule is not None
        self.schedule = schedule or (InverseTimeDecay(self.decay) if self.decay else None)
        self.current_learning_rate = self.learning_rate
        self.iterations = 0
        self.state: dict[Layer, dict[str, NamedTuple]] = {}

    def _init_state(self, param: Any) -> NamedTuple | None:
        xp = array_namespace(param)
        if self.State is None:
            return None
        return self.State(*(xp.zeros_like(param) for _ in self.State._fields))

    # --- the update rule: pure, with the step's numbers as data -------------------------
    def scalars(self) -> dict[str, float]:
        """The numbers this step's rule needs that change from step to step (call after
        ``pre_update_params``): the learning rate, and whatever a subclass folds into it."""
        return {"learning_rate": self.current_learning_rate}

    def rule(self, param: Any, grad: Any, state: Any, scalars: dict[str, Any]) -> tuple[Any, Any]:
        """``(new param, new state)`` for one parameter, a pure function of its arguments
        (``scalars`` as ``scalars()`` gives them, or 0-d arrays in a compiled step), which
        ``portnn.step`` calls. Subclasses write this; one that writes the older
        ``_update(param, grad, state)`` instead runs only in eager steps."""
        if type(self)._update is Optimizer._update:
            raise NotImplementedError(f"{type(self).__name__} defines neither rule nor _update")
        return self._update(param, grad, state)

    def _update(self, param: Any, grad: Any, state: Any) -> tuple[Any, Any]:
        """``rule`` with this step's ``scalars()``."""
        return self.rule(param, grad, state, self.scalars())

    def pre_update_params(self) -> None:
        if self.schedule is not None:
            self.current_learning_rate = self.schedule(self.learning_rate, self.iterations)

    def update_params(self, layer: Layer) -> None:
        states = self.state.setdefault(layer, {})
        for name in layer.param_names:
            param = getattr(layer, name)
            state = states.get(name)
            if state is None:
                state = self._init_state(param)
            param, states[name] = self._update(param, getattr(layer, "d" + name), state)
            setattr(layer, name, param)

    def post_update_params(self) -> None:
        self.iterations += 1

    def step(self, layers: Iterable[Layer]) -> None:
        """One update of every trainable layer: the three calls in order."""
        self.pre_update_params()
        for layer in layers:
            if layer.param_names:
                self.update_params(layer)
        self.post_update_params()

    # --- state in and out -----------------------------------------------------------------
    def state_dict(self, layers: Sequence[Layer] | None = None) -> dict:
        """``{"iterations", "current_learning_rate", "state": {i: {param: {field: array}}}}``,
        where ``i`` indexes ``layers`` (default: the layers in the order first updated).
        Arrays by reference (see the class docstring); layers never updated have no entry."""
        order = list(self.state) if layers is None else list(layers)
        index = {id(layer): i for i, layer in enumerate(order)}
        state = {}
        for layer, states in self.state.items():
            fields = {name: s._asdict() for name, s in states.items() if s is not None}
            if fields and id(layer) in index:
                state[index[id(layer)]] = fields
        return {
            "iterations": self.iterations,
            "current_learning_rate": self.current_learning_rate,
            "state": state,
        }

    def load_state_dict(self, state_dict: dict, layers: Sequence[Layer] | None = None) -> None:
        """Restore what ``state_dict`` gave, its indices read against ``layers`` (default: the
        layers already updated, in that order). NumPy arrays or this backend's; everything is
        checked first, so a bad dict changes nothing."""
        order = list(self.state) if layers is None else list(layers)
        _check_keys(state_dict)
        iterations = integer("iterations", state_dict["iterations"], 0)
        rate = real(
            "current_learning_rate", state_dict["current_learning_rate"], 0.0, low_open=True
        )
        fields = set(self.State._fields) if self.State is not None else set()
        new: dict[Layer, dict[str, NamedTuple]] = {}
        for i, by_param in state_dict.get("state", {}).items():
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(order):
                raise ValueError(
                    f"optimizer state for layer {i!r}, but {len(order)} layers to put it on; "
                    "pass the layers it belongs to: load_state_dict(d, layers=model.layers)"
                )
            layer = order[i]
            if not isinstance(by_param, dict) or not all(
                isinstance(v, dict) for v in by_param.values()
            ):
                raise ValueError(
                    f"optimizer state for layer {i} must map parameter names to dicts of "
                    f"fields, as state_dict() gives; got {_kinds(by_param)}"
                )
            for name, values in by_param.items():
                if name not in layer.param_names or set(values) != fields:
                    raise ValueError(
                        f"layer {i} ({layer!r}) has no {name!r} state with fields "
                        f"{sorted(fields)}; got {sorted(values)}"
                    )
                new.setdefault(layer, {})[name] = self.State(
                    **{
                        f: _like(getattr(layer, name), v, f"{i}/{name}/{f}")
                        for f, v in values.items()
                    }
                )
        self.iterations, self.current_learning_rate = iterations, rate
        self.state = new

    def get_config(self) -> dict:
        config = {"learning_rate": self.learning_rate, "decay": self.decay}
        if self._own_schedule:
            config["schedule"] = self.schedule
        return config

    def to(self, backend: str | Backend, dtype: Any = None) -> Optimizer:
        """Move the state arrays to ``backend``, as ``dtype`` if given."""
        for states in self.state.values():
            for name, s in states.items():
                if s is not None:
                    states[name] = type(s)(*(to_backend(a, backend, dtype) for a in s))
        return self

    def __repr__(self) -> str:
        return short_repr(self)


def _check_keys(state_dict: Any) -> None:
    """``state_dict`` has the keys ``Optimizer.state_dict`` gives, or a ValueError naming the
    odd ones."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"an optimizer state dict is a dict, got {_kinds(state_dict)}")
    missing = sorted({"iterations", "current_learning_rate"} - set(state_dict))
    unknown = sorted(map(str, set(state_dict) - {"iterations", "current_learning_rate", "state"}))
    if missing or unknown:
        flat = any(k.startswith(("layers/", "optimizer/")) for k in unknown)
        hint = "; a model's flat state dict goes to model.load_state_dict(d)" if flat else ""
        raise ValueError(
            f"an optimizer state dict holds iterations, current_learning_rate and state, as "
            f"opt.state_dict() gives; missing {missing}, unknown {short(unknown)}{hint}"
        )
    if not isinstance(state_dict.get("state", {}), dict):
        raise ValueError(
            f"optimizer state must map layer indices to dicts, got {_kinds(state_dict['state'])}"
        )


def _kinds(value: Any) -> str:
    """What ``value`` is, for an error: a dict by its values' types (arrays would print over
    many lines)."""
    if isinstance(value, dict):
        return short({k: type(v).__name__ for k, v in value.items()})
    return f"a {type(value).__name__}"


class SGDState(NamedTuple):
    momentum: Any


class SGD(Optimizer):
    """SGD: ``p -= lr * g``; with momentum ``m = momentum * m - lr * g; p += m``."""

    def __init__(
        self,
        learning_rate: float = 1.0,
        decay: float = 0.0,
        momentum: float = 0.0,
        *,
        schedule: Schedule | None = None,
    ):
        super().__init__(learning_rate, decay, schedule=schedule)
        self.momentum = _check("momentum", momentum, 0.0, 1.0)
        self.State = SGDState if self.momentum else None

    def rule(self, param, grad, state, scalars):
        lr = scalars["learning_rate"]
        if state is None:
            return param - lr * grad, None
        m = self.momentum * state.momentum - lr * grad
        return param + m, SGDState(m)

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}


class CacheState(NamedTuple):
    cache: Any


class _Cached(Optimizer):
    """Adagrad's and RMSprop's step, ``p -= lr * g / (sqrt(cache) + eps)``; each subclass
    says how its cache of squared gradients grows (``_cache``)."""

    State = CacheState

    def __init__(self, learning_rate, decay, epsilon, *, schedule) -> None:
        super().__init__(learning_rate, decay, schedule=schedule)
        self.epsilon = _check("epsilon", epsilon, 0.0)

    def _cache(self, cache: Any, grad: Any) -> Any:
        raise NotImplementedError

    def rule(self, param, grad, state, scalars):
        xp = array_namespace(param)
        cache = self._cache(state.cache, grad)
        step = scalars["learning_rate"] * grad / (xp.sqrt(cache) + self.epsilon)
        return param - step, CacheState(cache)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


class Adagrad(_Cached):
    """Adagrad: ``cache += g**2; p -= lr * g / (sqrt(cache) + eps)``."""

    def __init__(
        self,
        learning_rate: float = 1.0,
        decay: float = 0.0,
        epsilon: float = 1e-7,
        *,
        schedule: Schedule | None = None,
    ):
        super().__init__(learning_rate, decay, epsilon, schedule=schedule)

    def _cache(self, cache, grad):
        return cache + grad * grad


class RMSprop(_Cached):
    """RMSprop: ``cache = rho * cache + (1 - rho) * g**2; p -= lr * g / (sqrt(cache) + eps)``."""

    def __init__(
        self,
        learning_rate: float = 0.001,
        decay: float = 0.0,
        epsilon: float = 1e-7,
        rho: float = 0.9,
        *,
        schedule: Schedule | None = None,
    ):
        super().__init__(learning_rate, decay, epsilon, schedule=schedule)
        self.rho = _check("rho", rho, 0.0, 1.0)

    def _cache(self, cache, grad):
        return self.rho * cache + (1 - self.rho) * (grad * grad)

    def get_config(self) -> dict:
        return {**super().get_config(), "rho": self.rho}


class AdamState(NamedTuple):
    momentum: Any
    cache: Any


class Adam(Optimizer):
    """Adam: ``m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g**2;
    p -= lr * (m / (1 - b1**(t+1))) / (sqrt(v / (1 - b2**(t+1))) + eps)``."""

    State = AdamState

    def __init__(
        self,
        learning_rate: float = 0.001,
        decay: float = 0.0,
        epsilon: float = 1e-7,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        *,
        schedule: Schedule | None = None,
    ):
        super().__init__(learning_rate, decay, schedule=schedule)
        self.epsilon = _check("epsilon", epsilon, 0.0)
        self.beta_1 = _check("beta_1", beta_1, 0.0, 1.0)
        self.beta_2 = _check("beta_2", beta_2, 0.0, 1.0)

    def scalars(self) -> dict[str, float]:
        """The book's formula with both corrections folded into two numbers:
        ``(m / c1) / (sqrt(v / c2) + eps) == (sqrt(c2) / c1) * m / (sqrt(v) + eps * sqrt(c2))``,
        so ``scale = lr * sqrt(c2) / c1`` and ``epsilon = eps * sqrt(c2)``."""
        b1, b2, t = self.beta_1, self.beta_2, self.iterations + 1
        root_c2 = math.sqrt(1 - b2**t)
        lr = self.current_learning_rate
        return {
            "learning_rate": lr,
            "scale": lr * root_c2 / (1 - b1**t),
            "epsilon": self.epsilon * root_c2,
        }

    def rule(self, param, grad, state, scalars):
        param, m, v = adam_update(
            param,
            grad,
            state.momentum,
            state.cache,
            self.beta_1,
            self.beta_2,
            scalars["scale"],
            scalars["epsilon"],
        )
        return param, AdamState(m, v)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
        }
