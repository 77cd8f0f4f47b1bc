"""Optimizers: the book's three calls (``pre_update_params``, ``update_params(layer)``,
``post_update_params``) or ``step(layers)``. Each subclass writes one ``_update`` rule for one
parameter; state lives in named tuples per layer and parameter, so it can be saved."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

from ._checks import real
from ._xp import adam_update, array_namespace
from .backend import Backend, to_backend
from .layers import Layer


def _check(name: str, value: Any, low: float, high: float = math.inf) -> float:
    return real(name, value, low, high, high_open=True)


class Optimizer:
    """Base class: learning-rate decay ``lr / (1 + decay * iterations)``, the step count,
    and per-parameter state ``self.state[layer][name]``."""

    State: type[NamedTuple] | None = None

    def __init__(self, learning_rate: float, decay: float = 0.0) -> None:
        self.learning_rate = real("learning_rate", learning_rate, 0.0, low_open=True)
        self.decay = _check("decay", decay, 0.0)
        self.current_learning_rate = self.learning_rate
        self.iterations = 0
        self.state: dict[Layer, dict[str, NamedTuple]] = {}

    def _init_state(self, param: Any) -> NamedTuple | None:
        xp = array_namespace(param)
        if self.State is None:
            return None
        return self.State(*(xp.zeros_like(param) for _ in self.State._fields))

    def _update(self, param: Any, grad: Any, state: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def pre_update_params(self) -> None:
        if self.decay:
            self.current_learning_rate = self.learning_rate / (1.0 + self.decay * self.iterations)

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

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate, "decay": self.decay}

    def to(self, backend: str | Backend, dtype: Any = None) -> Optimizer:
        """Move the state arrays to ``backend``, as ``dtype`` if given."""
        for states in self.state.values():
            for name, s in states.items():
                if s is not None:
                    states[name] = type(s)(*(to_backend(a, backend, dtype) for a in s))
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGDState(NamedTuple):
    momentum: Any


class SGD(Optimizer):
    """SGD: ``p -= lr * g``; with momentum ``m = momentum * m - lr * g; p += m``."""

    def __init__(self, learning_rate: float = 1.0, decay: float = 0.0, momentum: float = 0.0):
        super().__init__(learning_rate, decay)
        self.momentum = _check("momentum", momentum, 0.0, 1.0)
        self.State = SGDState if self.momentum else None

    def _update(self, param, grad, state):
        if state is None:
            return param - self.current_learning_rate * grad, None
        m = self.momentum * state.momentum - self.current_learning_rate * grad
        return param + m, SGDState(m)

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}


class CacheState(NamedTuple):
    cache: Any


class Adagrad(Optimizer):
    """Adagrad: ``cache += g**2; p -= lr * g / (sqrt(cache) + eps)``."""

    State = CacheState

    def __init__(self, learning_rate: float = 1.0, decay: float = 0.0, epsilon: float = 1e-7):
        super().__init__(learning_rate, decay)
        self.epsilon = _check("epsilon", epsilon, 0.0)

    def _update(self, param, grad, state):
        xp = array_namespace(param)
        cache = state.cache + grad * grad
        step = self.current_learning_rate * grad / (xp.sqrt(cache) + self.epsilon)
        return param - step, CacheState(cache)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop: ``cache = rho * cache + (1 - rho) * g**2; p -= lr * g / (sqrt(cache) + eps)``."""

    State = CacheState

    def __init__(
        self,
        learning_rate: float = 0.001,
        decay: float = 0.0,
        epsilon: float = 1e-7,
        rho: float = 0.9,
    ):
        super().__init__(learning_rate, decay)
        self.epsilon = _check("epsilon", epsilon, 0.0)
        self.rho = _check("rho", rho, 0.0, 1.0)

    def _update(self, param, grad, state):
        xp = array_namespace(param)
        cache = self.rho * state.cache + (1 - self.rho) * (grad * grad)
        step = self.current_learning_rate * grad / (xp.sqrt(cache) + self.epsilon)
        return param - step, CacheState(cache)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon, "rho": self.rho}


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
    ):
        super().__init__(learning_rate, decay)
        self.epsilon = _check("epsilon", epsilon, 0.0)
        self.beta_1 = _check("beta_1", beta_1, 0.0, 1.0)
        self.beta_2 = _check("beta_2", beta_2, 0.0, 1.0)

    def _update(self, param, grad, state):
        b1, b2, t = self.beta_1, self.beta_2, self.iterations + 1
        # The book's formula with both corrections folded into two scalars:
        # (m / c1) / (sqrt(v / c2) + eps) == (sqrt(c2) / c1) * m / (sqrt(v) + eps * sqrt(c2)).
        root_c2 = math.sqrt(1 - b2**t)
        scale = self.current_learning_rate * root_c2 / (1 - b1**t)
        param, m, v = adam_update(
            param, grad, state.momentum, state.cache, b1, b2, scale, self.epsilon * root_c2
        )
        return param, AdamState(m, v)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
        }
