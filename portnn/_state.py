"""A Model's state as one flat dict of arrays and numbers, the format ``Model.state_dict``
gives and ``save``, checkpoints, the divergence snapshot and interop are made of:
``layers/<i>/<name>`` for each parameter and each layer's state (``state_names``; ``i``
indexes ``model.layers``) and, with an optimizer, ``optimizer/iterations``,
``optimizer/current_learning_rate`` and ``optimizer/<i>/<name>/<field>``. What comes in is
checked whole before anything is set, so a bad dict changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._npz import short

if TYPE_CHECKING:
    from .layers import Layer
    from .model import Model

# The optimizer's numbers, stored beside its per-parameter arrays.
_SCALARS = ("iterations", "current_learning_rate")
_PREFIXES = ("layers/", "optimizer/")
_INDEX = re.compile(r"0|[1-9][0-9]*")  # a layer index as state_dict writes it: "3", not "03"


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


def snapshot(model: Model) -> dict[str, Any]:
    """``state_dict`` to keep while training goes on (the state to restore on divergence, the
    best epoch's): its arrays by reference, or copies where the backend's compiled step may
    reuse the buffers of the arrays the model holds (``Backend.donates``: JAX)."""
    state = state_dict(model)
    if not model.backend.donates:
        return state
    copy = model.backend.xp.asarray
    return {k: v if isinstance(v, int | float) else copy(v, copy=True) for k, v in state.items()}


def load_state_dict(model: Model, state: dict[str, Any]) -> None:
    """``Model.load_state_dict``: check the parameters and the optimizer's state, then set."""
    misplaced = [k for k in state if not (isinstance(k, str) and k.startswith(_PREFIXES))]
    if misplaced:
        raise ValueError(
            f"the state dict holds {short(misplaced)}, neither parameters (layers/<i>/<name>) "
            "nor optimizer state (optimizer/...); pass only the keys model.state_dict() gives"
        )
    moved = _checked(model, {k: v for k, v in state.items() if k.startswith("layers/")})
    opt_keys = sorted(k for k in state if k.startswith("optimizer/"))
    if opt_keys:
        opt_state = _optimizer_state(model, state, opt_keys)
        model.optimizer.load_state_dict(opt_state, model.layers)
    _set(moved)


def _optimizer_state(model: Model, state: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The ``optimizer/...`` entries of a flat state dict, checked against the model and its
    optimizer, as ``Optimizer.load_state_dict`` takes them."""
    opt = model.optimizer
    if opt is None:
        raise ValueError(
            f"the state dict holds optimizer state ({short(keys)}) but the model has no "
            "optimizer; set one first with model.set(optimizer=...), or leave out the "
            "optimizer/ keys"
        )
    for scalar in _SCALARS:
        if f"optimizer/{scalar}" not in state:
            raise ValueError(
                f"the state dict holds optimizer state but no optimizer/{scalar}; give "
                "optimizer/iterations and optimizer/current_learning_rate with it, as "
                "model.state_dict() does"
            )
    fields = opt.State._fields if opt.State is not None else ()
    nested: dict[int, dict[str, dict[str, Any]]] = {}
    for key in keys:
        if key.removeprefix("optimizer/") in _SCALARS:
            continue
        parts = key.split("/")
        if len(parts) != 4:
            raise ValueError(
                f"state dict key {short(key)} is not optimizer/<i>/<name>/<field>, "
                "optimizer/iterations or optimizer/current_learning_rate"
            )
        _, i, name, field = parts
        if not _INDEX.fullmatch(i) or int(i) >= len(model.layers):
            raise ValueError(
                f"state dict key {short(key)}: {short(i)} is not the index of one of the "
                f"model's {len(model.layers)} layers (0 to {len(model.layers) - 1})"
            )
        layer = model.layers[int(i)]
        if name not in layer.param_names:
            raise ValueError(
                f"state dict key {short(key)}: layer {i} ({layer!r}) has no parameter "
                f"{short(name)} (its parameters: {list(layer.param_names)})"
            )
        if field not in fields:
            raise ValueError(
                f"state dict key {short(key)}: {type(opt).__name__} keeps no {short(field)} "
                f"state (its fields: {', '.join(fields) or 'none'})"
            )
        nested.setdefault(int(i), {}).setdefault(name, {})[field] = state[key]
    for i, by_param in nested.items():
        for name, given in by_param.items():
            missing = [f"optimizer/{i}/{name}/{f}" for f in fields if f not in given]
            if missing:
                raise ValueError(
                    f"the state dict holds optimizer/{i}/{name}/{next(iter(given))} but not "
                    f"{missing}; {type(opt).__name__} needs all its fields {list(fields)} for "
                    "each parameter"
                )
    return {
        "iterations": state["optimizer/iterations"],
        "current_learning_rate": state["optimizer/current_learning_rate"],
        "state": nested,
    }


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
    params = {
        f"layers/{i}/{name}": value
        for (i, layer), pair in zip(layers, parameters, strict=True)
        for name, value in zip(layer.param_names, pair, strict=True)
    }
    # Layer state (running statistics) is not a parameter: the pairs leave it as it is.
    for i, layer in enumerate(model.layers):
        params.update({f"layers/{i}/{name}": getattr(layer, name) for name in layer.state_names})
    return params


def _parameters(model: Model) -> dict[str, tuple[Layer, str]]:
    """Each parameter's key, and each layer state's (``state_names``: BatchNormalization's
    running statistics, saved and loaded beside the parameters, never stepped), with the
    layer and attribute that hold it."""
    return {
        f"layers/{i}/{name}": (layer, name)
        for i, layer in enumerate(model.layers)
        for name in layer.param_names + layer.state_names
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
        raise ValueError(
            f"parameters do not fit the model: missing {short(missing)}, extra {short(extra)}; "
            "give exactly the model's layers/<i>/<name> keys, as its state_dict() does"
        )
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
