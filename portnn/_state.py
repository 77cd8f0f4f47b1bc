"""A Model's state as one flat dict of arrays and numbers, the format ``Model.state_dict``
gives and ``save``, checkpoints, the divergence snapshot and interop are made of:
``layers/<i>/<name>`` for each parameter (``i`` indexes ``model.layers``) and, with an
optimizer, ``optimizer/iterations``, ``optimizer/current_learning_rate`` and
``optimizer/<i>/<name>/<field>``. What comes in is checked whole before anything is set,
so a bad dict changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .layers import Layer
    from .model import Model

# The optimizer's numbers, stored beside its per-parameter arrays.
_SCALARS = ("iterations", "current_learning_rate")


def state_dict(model: Model) -> dict[str, Any]:
    """``Model.state_dict``: the parameters and the optimizer's state, arrays by reference."""
    state = {key: getattr(layer, name) for key, (layer, name) in _parameters(model).items()}
    if model.optimizer is not None:
        opt = model.optimizer.state_dict(model.layers)
        for scalar in _SCALARS:
            state[f"optimizer/{scalar}"] = opt[scalar]
        for i, by_param in opt["state"].items():
            for name, fields in by_param.items():
                for field, value in fields.items():
                    state[f"optimizer/{i}/{name}/{field}"] = value
    return state


def load_state_dict(model: Model, state: dict[str, Any]) -> None:
    """``Model.load_state_dict``: check the parameters and the optimizer's state, then set."""
    moved = _checked(model, {k: v for k, v in state.items() if k.startswith("layers/")})
    opt_keys = {k for k in state if k.startswith("optimizer/")}
    if opt_keys and model.optimizer is None:
        raise ValueError("the state holds optimizer state but the model has no optimizer")
    if opt_keys:
        nested: dict[int, dict[str, dict[str, Any]]] = {}
        for key in opt_keys - {f"optimizer/{scalar}" for scalar in _SCALARS}:
            _, i, name, field = key.split("/")
            nested.setdefault(int(i), {}).setdefault(name, {})[field] = state[key]
        model.optimizer.load_state_dict(
            {
                "iterations": state["optimizer/iterations"],
                "current_learning_rate": state["optimizer/current_learning_rate"],
                "state": nested,
            },
            model.layers,
        )
    _set(moved)


def assign(model: Model, params: dict[str, Any]) -> None:
    """Set every parameter from ``layers/<i>/<name>`` arrays (NumPy or the model's backend),
    all checked first."""
    _set(_checked(model, params))


def from_pairs(model: Model, parameters: Iterable[tuple[Any, Any]]) -> dict[str, Any]:
    """``Model.set_parameters``' (weights, biases) pairs, one per trainable layer, as the
    ``layers/<i>/<name>`` entries ``assign`` takes."""
    layers = [(i, layer) for i, layer in enumerate(model.layers) if layer.param_names]
    parameters = list(parameters)
    if len(parameters) != len(layers):
        raise ValueError(
            f"got {len(parameters)} parameter pairs for {len(layers)} trainable layers"
        )
    return {
        f"layers/{i}/{name}": value
        for (i, layer), pair in zip(layers, parameters, strict=True)
        for name, value in zip(layer.param_names, pair, strict=True)
    }


def _parameters(model: Model) -> dict[str, tuple[Layer, str]]:
    """Each parameter's key, with the layer and attribute that hold it."""
    return {
        f"layers/{i}/{name}": (layer, name)
        for i, layer in enumerate(model.layers)
        for name in layer.param_names
    }


def _checked(model: Model, params: dict[str, Any]) -> dict[tuple[Layer, str], Any]:
    """``layers/<i>/<name>`` arrays moved to the model's backend and dtype, each checked
    against the parameter it replaces."""
    expected = _parameters(model)
    if set(params) != set(expected):
        missing, extra = (
            sorted(set(expected) - set(params)),
            sorted(set(params) - set(expected)),
        )
        raise ValueError(f"parameters do not fit the model: missing {missing}, extra {extra}")
    b = model.backend
    moved = {}
    for key, (layer, name) in expected.items():
        array = b.asarray(params[key], dtype=b.dtype)  # a float32 model stays so
        want = tuple(getattr(layer, name).shape)
        if tuple(array.shape) != want:
            raise ValueError(f"{key}: expected shape {want}, got {tuple(array.shape)}")
        moved[(layer, name)] = array
    return moved


def _set(moved: dict[tuple[Layer, str], Any]) -> None:
    for (layer, name), array in moved.items():
        setattr(layer, name, array)
