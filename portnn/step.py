"""The training step as one pure function, the seam a compiler takes.

``Step(model)`` holds a model's layers, loss, accuracy and optimizer as the constants of::

    run(params, state, opt_state, x, y, scalars, key) -> (params, state, opt_state, figures)

where every array is data: ``params`` and ``state`` map ``state_dict`` keys
(``layers/<i>/<name>``) to the parameters and the layers' ``state_names`` arrays,
``opt_state`` maps the same keys to the optimizer's named tuples, ``scalars`` are the
step-dependent numbers (the decayed learning rate, Adam's corrections), ``key`` is the step's
random numbers where the backend threads them as data (JAX: a key per layer that draws),
and ``figures`` the batch's per-sample losses and hits, left on the device. Nothing in it
reads the host, so one call of ``Backend.compile`` (``jax.jit``, ``torch.compile``) serves
every step: scalars enter as 0-d arrays when compiled. ``gradients`` and ``update`` are its
two halves, for data parallel, which sums the gradients across ranks between them.

Each call reads the model's arrays (``gather``) and writes the new ones back (``scatter``),
so the model, its ``state_dict`` and the book's attributes stay the truth between steps. A
layer that overrides the book's stateful ``forward``/``backward`` runs through them here:
such a step is eager, and ``compile`` refuses it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from . import random
from .optimizers import Optimizer

if TYPE_CHECKING:
    from .model import Model


def compilable(model: Model) -> bool:
    """Whether a compiler can take the model's step: every layer's math is its pure pair and
    the optimizer writes ``rule`` (not the older ``_update``, which reads its own numbers)."""
    return all(layer.is_pure for layer in model.layers) and (
        type(model.optimizer)._update is Optimizer._update
    )


class Step:
    """A model's training step as a pure function of its arrays (see the module docstring);
    ``compile=True`` hands it to the backend's compiler."""

    def __init__(self, model: Model, compile: bool = False) -> None:
        model._require("loss", "optimizer")
        self.model, self.backend = model, model.backend
        self.layers = list(model.layers)
        self.loss, self.accuracy, self.optimizer = model.loss, model.accuracy, model.optimizer
        self.fused = model._fused
        self._lay_out()
        impure = [f"layer {i} ({la!r})" for i, la in enumerate(self.layers) if not la.is_pure]
        if compile and impure:
            raise ValueError(
                f"cannot compile the training step: {', '.join(impure)} overrides forward/"
                "backward (the book's stateful calls) rather than defining apply/vjp, so its "
                "math is not a pure function; write it as apply/vjp, or train with compile=False"
            )
        # An optimizer that writes the older ``_update`` (reading its own attributes) rather
        # than ``rule`` runs as it is, eagerly: a compiler would freeze its numbers.
        self.eager_rule = type(self.optimizer)._update is not Optimizer._update
        if compile and self.eager_rule:
            raise ValueError(
                f"cannot compile the training step: {type(self.optimizer).__name__} overrides "
                "_update, which reads the step's numbers from the optimizer itself; write it as "
                "rule(param, grad, state, scalars), or train with compile=False"
            )
        self.pure = not impure
        # Compiled: by the backend's compiler, where it has one (NumPy's step runs as it is).
        self.compiled = bool(compile) and self.backend.compiler is not None
        self.run = self.backend.compile(self._run) if self.compiled else self._run
        # Where the compiler can reuse the buffers of the arrays a step replaces (jax.jit's
        # donation: no second copy of the parameters and optimizer state), a second
        # compilation does, taken for the steps whose arrays nobody else holds (``_unshared``).
        self.donating = None
        if self.compiled and self.backend.donates:
            self.donating = self.backend.compile(self._run, donate=(0, 1, 2))

    def _lay_out(self) -> None:
        """Which arrays are trained (``params_keys``: each layer's ``param_names`` now) and
        which are only data (``state_keys``: frozen parameters and ``state_names``), and per
        layer each array's name, key and whether it is trained (``slots``)."""
        self.names = tuple(layer.param_names for layer in self.layers)
        self.slots, self.params_keys, self.state_keys = [], [], []
        for i, layer in enumerate(self.layers):
            slots = []
            for name in layer.array_names():
                key, trained = f"layers/{i}/{name}", name in layer.param_names
                (self.params_keys if trained else self.state_keys).append((key, layer, name))
                slots.append((name, key, trained))
            self.slots.append(slots)

    # --- the model's arrays in and out ------------------------------------------------------
    def gather(self) -> tuple[dict, dict, dict]:
        """The model's parameters, layer state and optimizer state, keyed as ``state_dict``;
        optimizer state not made yet is made here (zeros), so every step has one structure."""
        opt = self.optimizer
        params = {key: getattr(layer, name) for key, layer, name in self.params_keys}
        state = {key: getattr(layer, name) for key, layer, name in self.state_keys}
        opt_state = {}
        for key, layer, name in self.params_keys:
            found = opt.state.get(layer, {}).get(name)
            opt_state[key] = opt._init_state(params[key]) if found is None else found
        return params, state, opt_state

    def scatter(self, params: dict, state: dict, opt_state: dict) -> None:
        """Set the model's arrays from a step's results."""
        states = self.optimizer.state
        for key, layer, name in self.params_keys:
            setattr(layer, name, params[key])
            states.setdefault(layer, {})[name] = opt_state[key]
        for key, layer, name in self.state_keys:
            setattr(layer, name, state[key])

    def scalars(self) -> dict[str, Any]:
        """This step's numbers (call after ``pre_update_params``): Python floats, or 0-d
        arrays of the parameters' dtype for a compiled step, so one compilation serves all."""
        values = self.optimizer.scalars()
        if not self.compiled:
            return values
        return self.backend.step_scalars(values)

    def key(self) -> Any:
        """This step's random numbers as data: for a compiled step, a tuple of JAX keys, one
        per layer that draws, taken from the backend's generator in the order the layers' own
        draws would take them (so a step and the book's loop drop the same units); None
        elsewhere, where the layers draw from the generator themselves as they run."""
        drawing = sum(layer.random for layer in self.layers)
        if not drawing or not self.compiled:
            return None
        first = random.step_key(self.backend)
        if first is None:
            return None
        return (first, *(random.step_key(self.backend) for _ in range(drawing - 1)))

    def __call__(self, x: Any, y: Any) -> tuple[Any, Any]:
        """One step on the batch (x, y): the update made and written back to the model; the
        batch's figures (per-sample losses and hits) returned, on the device."""
        if tuple(layer.param_names for layer in self.layers) != self.names:
            self._lay_out()  # a layer frozen or unfrozen (its param_names set) since
        self.optimizer.pre_update_params()
        params, state, opt_state = self.gather()
        run = self.run
        if self.donating is not None and _unshared(params, state, opt_state):
            run = self.donating
        params, state, opt_state, figures = run(
            params, state, opt_state, x, y, self.scalars(), self.key()
        )
        self.scatter(params, state, opt_state)
        self.optimizer.post_update_params()
        return figures

    # --- the pure function ------------------------------------------------------------------
    def _run(self, params, state, opt_state, x, y, scalars, key):
        grads, state, figures = self.gradients(params, state, x, y, key)
        params, opt_state = self.update(params, opt_state, grads, scalars)
        return params, state, opt_state, figures

    def gradients(self, params: dict, state: dict, x: Any, y: Any, key: Any) -> tuple:
        """The forward pass in training mode and the backward pass: ``(grads, new state,
        (per-sample losses, hits))``."""
        keys = iter(key or ())
        contexts, new_state = [], dict(state)
        for i, layer in enumerate(self.layers):
            p = {name: (params if trained else state)[k] for name, k, trained in self.slots[i]}
            if layer.is_pure:
                draw = random.Key(self.backend, next(keys, None)) if layer.random else None
                x, context = layer.apply(p, x, True, draw)
                if layer.state_names:
                    for name, value in layer.new_state(p, context).items():
                        new_state[f"layers/{i}/{name}"] = value
            else:
                x, context = layer.forward(x, training=True), None
            contexts.append((p, context))
        output = x
        figures = (
            self.loss._forward(output, y),
            self.accuracy.compare(self.model._predictions(output), y),
        )
        layers = list(enumerate(self.layers))
        if self.fused:
            dvalues = self.loss.fused_backward(output, y)
            layers = layers[:-1]
        else:
            dvalues = self.loss.backward(output, y)
        grads = {}
        for i, layer in reversed(layers):
            p, context = contexts[i]
            if layer.is_pure:
                dvalues, by_name = layer.vjp(p, context, dvalues)
            else:
                dvalues = layer.backward(dvalues)
                by_name = {name: getattr(layer, "d" + name) for name in layer.param_names}
            for name, k, trained in self.slots[i]:
                if trained:
                    grads[k] = by_name[name]
        return grads, new_state, figures

    def update(self, params: dict, opt_state: dict, grads: dict, scalars: dict) -> tuple:
        """The optimizer's rule on every parameter: ``(new params, new optimizer state)``."""
        opt = self.optimizer
        if self.eager_rule:
            rule = lambda p, g, s, _: opt._update(p, g, s)  # noqa: E731
        else:
            rule = opt.rule
        new_params, new_opt = {}, {}
        for key in params:
            new_params[key], new_opt[key] = rule(params[key], grads[key], opt_state[key], scalars)
        return new_params, new_opt


def _most_references(objects: list) -> int:
    """The largest reference count among ``objects`` (``sys.getrefcount``)."""
    return max(map(sys.getrefcount, objects), default=0)


# What that count is for an object only the list holds: the list's reference, and the call's.
_ALONE = _most_references([object()])


def _unshared(params: dict, state: dict, opt_state: dict) -> bool:
    """Whether only the model and these dicts hold the step's arrays, so a compiled step may
    reuse their buffers (and delete the arrays). Anything else holding one (a ``state_dict``
    kept, ``w = layer.weights``, a callback's list) keeps them all; CPython's reference counts
    tell, and where there are none (PyPy) nothing is reused."""
    if not hasattr(sys, "getrefcount"):
        return False
    records = [s for s in opt_state.values() if s is not None]
    # Each object in one list, which adds a reference: the model holds each array and record
    # once (a layer's attribute, the optimizer's state), and so do these dicts; the record
    # alone holds its arrays.
    fields = [a for record in records for a in record]
    held = [*params.values(), *state.values(), *records]
    del records
    return _most_references(held) <= _ALONE + 2 and _most_references(fields) <= _ALONE + 1
