"""Layers: ``forward(inputs, training=False)`` stores and returns ``.output``;
``backward(dvalues)`` stores and returns ``.dinputs`` (and ``.dweights``/``.dbiases``)."""

from __future__ import annotations

import math
from typing import Any

from . import random
from ._checks import integer, real, short_repr
from ._xp import array_namespace, sign_nonneg
from .backend import Backend, backend_of, get_backend, to_backend

INITS = ("book", "he", "glorot")


def shape_text(shape: tuple[int | None, ...]) -> str:
    """``(batch, 64)``: a shape as the summary and the errors write it, None as "batch"."""
    return f"({', '.join('batch' if n is None else str(n) for n in shape)})"


class Layer:
    """Base class. ``param_names`` lists the trainable arrays; each has a gradient ``d<name>``.

    A layer type is its math, its shapes (``output_shape``, ``parameter_shapes``) and its
    config (``get_config``, the constructor's arguments): the model, files, the summary and
    interop ask these, never the layer's class. A layer with parameters also takes
    ``backend=`` (and ``dtype=``) in its constructor, where they go.

    The math is a pure pair, which the model's training step (``portnn.step``) calls with
    the parameters as data, so a compiler can take the whole step:
    ``apply(params, inputs, training, key) -> (output, context)`` and
    ``vjp(params, context, dvalues) -> (dinputs, grads)``, where ``params`` and ``grads`` map
    ``param_names`` to arrays and ``context`` is whatever backward needs (arrays, tuples,
    dicts). The book's stateful calls wrap them: ``forward(inputs, training)`` stores
    ``.inputs`` and ``.output``, ``backward(dvalues)`` stores ``.dinputs`` and ``.d<name>``.
    A layer may instead override ``forward``/``backward`` themselves (the book's style); it
    then runs eagerly, in a step no compiler takes.
    """

    param_names: tuple[str, ...] = ()
    # Arrays a layer keeps that training does not adjust by gradient (BatchNormalization's
    # running statistics): saved and loaded with the parameters, passed to ``apply`` in
    # ``params`` beside them, and replaced after each training ``apply`` by ``new_state``.
    state_names: tuple[str, ...] = ()
    n_inputs: int | None = None  # the feature width its inputs must have (None: any)
    # Whether ``apply`` draws random numbers in training (then ``key`` is passed: a JAX key,
    # or None where the backend's own generator draws).
    random: bool = False
    # Whether a layer with parameters computes the gradient of its inputs; the model turns
    # it off for its first layer (nothing needs the gradient of the data).
    compute_dinputs: bool = True

    def output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """The shape of the output for inputs of ``input_shape`` (None: any size, such as the
        batch), or a ValueError saying why it cannot take them. Default: the same shape."""
        return tuple(input_shape)

    @classmethod
    def parameter_shapes(cls, config: dict) -> dict[str, tuple[int, ...]]:
        """Each of ``param_names``' shapes in a layer built from ``config`` (``get_config``'s),
        known before it is built (a file is checked against them before a weight is drawn);
        a ValueError if the config cannot make them."""
        return {}

    def regularization_loss(self, params: dict | None = None) -> Any:
        """What this layer adds to the loss as a penalty for ``params`` (default: its own):
        nothing by default."""
        return 0.0

    # --- the math: a pure pair --------------------------------------------------------------
    def apply(
        self, params: dict[str, Any], inputs: Any, training: bool = False, key: Any = None
    ) -> tuple[Any, Any]:
        """The output for ``inputs`` under ``params``, and the context ``vjp`` needs."""
        raise NotImplementedError(
            f"{type(self).__name__} defines neither apply/vjp nor forward/backward"
        )

    def vjp(self, params: dict[str, Any], context: Any, dvalues: Any) -> tuple[Any, dict]:
        """The gradients of the inputs (None if ``compute_dinputs`` is off) and of each
        parameter, from the gradient of the output and ``apply``'s context."""
        raise NotImplementedError(f"{type(self).__name__} defines no vjp")

    def new_state(self, params: dict[str, Any], context: Any) -> dict[str, Any]:
        """The ``state_names`` arrays after a training ``apply`` gave ``context`` (none by
        default)."""
        return {}

    @property
    def is_pure(self) -> bool:
        """Whether this layer's math is its pure pair (the book's stateful calls are the base
        class's wrappers), so a compiled step can run it."""
        cls = type(self)
        return (
            cls.forward is Layer.forward
            and cls.backward is Layer.backward
            and cls.apply is not Layer.apply
        )

    def array_names(self) -> tuple[str, ...]:
        """Every array ``apply`` takes: the parameters (a frozen one too: an instance's
        ``param_names`` may leave some of its class's out of training), then ``state_names``."""
        names = type(self).param_names
        if self.param_names != names:
            names = tuple(dict.fromkeys(names + self.param_names))
        return names + self.state_names

    def params(self) -> dict[str, Any]:
        """This layer's arrays by name, as ``apply`` takes them (``array_names``)."""
        return {name: getattr(self, name) for name in self.array_names()}

    # --- the book's stateful calls ----------------------------------------------------------
    def forward(self, inputs: Any, training: bool = False) -> Any:
        """``apply`` on this layer's parameters; stores ``.inputs`` and ``.output``."""
        self.inputs = inputs
        params = self.params()
        self.output, self._context = self.apply(params, inputs, training)
        if training and self.state_names:
            for name, value in self.new_state(params, self._context).items():
                setattr(self, name, value)
        return self.output

    def backward(self, dvalues: Any) -> Any:
        """``vjp`` of the last ``forward``; stores ``.dinputs`` and each ``.d<name>``."""
        self.dinputs, grads = self.vjp(self.params(), self._context, dvalues)
        for name, grad in grads.items():
            setattr(self, "d" + name, grad)
        return self.dinputs

    def get_config(self) -> dict:
        """Constructor arguments, so a saved model can be rebuilt without running code."""
        return {}

    def to(self, backend: str | Backend, dtype: Any = None) -> Layer:
        """Move this layer's parameters to ``backend``, as ``dtype`` if given (a no-op for
        layers without parameters)."""
        for name in self.array_names():
            setattr(self, name, to_backend(getattr(self, name), backend, dtype))
        return self

    def __repr__(self) -> str:
        return short_repr(self)


# --- L1/L2 penalties: Dense's and Conv2D's, on ``weights`` and ``biases`` ---------------------
def penalty(layer: Layer, params: dict[str, Any]) -> Any:
    """``l1w*sum|W| + l2w*sum(W*W) + l1b*sum|b| + l2b*sum(b*b)`` of ``params``' weights and
    biases, with the layer's ``weight_regularizer_l1``... factors, on the device."""
    weights, biases = params["weights"], params["biases"]
    xp = array_namespace(weights)
    total = 0.0
    for factor, p, square in (
        (layer.weight_regularizer_l1, weights, False),
        (layer.weight_regularizer_l2, weights, True),
        (layer.bias_regularizer_l1, biases, False),
        (layer.bias_regularizer_l2, biases, True),
    ):
        if factor > 0:
            total = total + factor * xp.sum(p * p if square else xp.abs(p))
    return total


def penalty_gradients(
    layer: Layer, weights: Any, biases: Any, dweights: Any, dbiases: Any
) -> tuple[Any, Any]:
    """The data gradients of the weights and biases plus those of ``penalty``."""
    if layer.weight_regularizer_l1 > 0:
        dweights = dweights + layer.weight_regularizer_l1 * sign_nonneg(weights)
    if layer.weight_regularizer_l2 > 0:
        dweights = dweights + 2 * layer.weight_regularizer_l2 * weights
    if layer.bias_regularizer_l1 > 0:
        dbiases = dbiases + layer.bias_regularizer_l1 * sign_nonneg(biases)
    if layer.bias_regularizer_l2 > 0:
        dbiases = dbiases + 2 * layer.bias_regularizer_l2 * biases
    return dweights, dbiases


class Input(Layer):
    """Input: passes the data on unchanged (the book's ``Layer_Input``).

    ``shape`` (optional) is one sample's shape, without the batch: ``(784,)`` for flat
    features, ``(1, 28, 28)`` for NCHW images. A model that starts with it knows its inputs
    before the first batch: its sizes are checked, and its summary shows them, at
    ``finalize``; data of another shape is refused."""

    def __init__(self, shape: tuple[int, ...] | list[int] | None = None) -> None:
        if shape is not None:
            if not isinstance(shape, tuple | list) or not shape:
                raise ValueError(
                    f"Input shape must be a sample's shape, a tuple of positive integers such "
                    f"as (1, 28, 28), got {shape!r}"
                )
            shape = tuple(integer(f"Input shape[{i}]", n) for i, n in enumerate(shape))
        self.shape = shape

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """The shape a batch must have, ``(batch, *shape)`` (None: not given)."""
        return None if self.shape is None else (None, *self.shape)

    def get_config(self) -> dict:
        return {} if self.shape is None else {"shape": list(self.shape)}

    def apply(self, params, inputs, training=False, key=None):
        return inputs, None

    def vjp(self, params, context, dvalues):
        return dvalues, {}


class Dense(Layer):
    """Dense: ``inputs @ weights + biases``; backward ``dW = X.T @ d``, ``db = sum(d)``,
    ``dX = d @ W.T``, plus the L1/L2 penalties' gradients.

    ``weight_init``: ``"book"`` draws ``weight_scale * standard_normal`` (the book's 0.01),
    ``"he"`` normal with std ``sqrt(2 / n_inputs)``, ``"glorot"`` uniform in
    ``+-sqrt(6 / (n_inputs + n_neurons))``. Weights are drawn on the host, then moved once.
    """

    param_names = ("weights", "biases")

    def __init__(
        self,
        n_inputs: int,
        n_neurons: int,
        weight_regularizer_l1: float = 0.0,
        weight_regularizer_l2: float = 0.0,
        bias_regularizer_l1: float = 0.0,
        bias_regularizer_l2: float = 0.0,
        *,
        weight_init: str = "book",
        weight_scale: float = 0.01,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        n_inputs = integer("Dense n_inputs", n_inputs)
        n_neurons = integer("Dense n_neurons", n_neurons)
        regs = {
            "weight_regularizer_l1": weight_regularizer_l1,
            "weight_regularizer_l2": weight_regularizer_l2,
            "bias_regularizer_l1": bias_regularizer_l1,
            "bias_regularizer_l2": bias_regularizer_l2,
        }
        regs = {name: real(f"Dense {name}", value, 0.0) for name, value in regs.items()}
        if weight_init not in INITS:
            raise ValueError(f"unknown weight_init {weight_init!r}; choose one of {INITS}")
        self.n_inputs, self.n_neurons = n_inputs, n_neurons
        self.weight_regularizer_l1 = regs["weight_regularizer_l1"]
        self.weight_regularizer_l2 = regs["weight_regularizer_l2"]
        self.bias_regularizer_l1 = regs["bias_regularizer_l1"]
        self.bias_regularizer_l2 = regs["bias_regularizer_l2"]
        self.weight_init = weight_init
        self.weight_scale = real("Dense weight_scale", weight_scale, 0.0)

        rng = random.host()
        shape = (n_inputs, n_neurons)
        if weight_init == "book":
            weights = self.weight_scale * rng.standard_normal(shape)
        elif weight_init == "he":
            weights = math.sqrt(2.0 / n_inputs) * rng.standard_normal(shape)
        else:
            limit = math.sqrt(6.0 / (n_inputs + n_neurons))
            weights = rng.uniform(-limit, limit, shape)
        b = get_backend(backend, dtype)
        self.weights = b.asarray(weights)
        self.biases = b.xp.zeros((1, n_neurons), dtype=b.dtype, device=b.device)

    def apply(self, params, inputs, training=False, key=None):
        if inputs.ndim != 2 or inputs.shape[1] != self.n_inputs:
            raise ValueError(
                f"Dense expects inputs of shape (batch, {self.n_inputs}), got "
                f"{tuple(inputs.shape)}; reshape the data or build the layer with "
                f"n_inputs={inputs.shape[-1] if inputs.ndim else 1}"
            )
        if getattr(inputs, "requires_grad", False):  # autograd would record every update
            raise TypeError("Dense got a torch tensor that requires grad; pass inputs.detach()")
        return inputs @ params["weights"] + params["biases"], inputs

    def vjp(self, params, context, dvalues):
        xp = array_namespace(dvalues)
        weights, biases = params["weights"], params["biases"]
        dweights = context.T @ dvalues
        dbiases = xp.sum(dvalues, axis=0, keepdims=True)
        dweights, dbiases = penalty_gradients(self, weights, biases, dweights, dbiases)
        dinputs = dvalues @ weights.T if self.compute_dinputs else None
        return dinputs, {"weights": dweights, "biases": dbiases}

    def output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``(batch, n_neurons)`` from ``(batch, n_inputs)``."""
        if len(input_shape) != 2 or input_shape[-1] not in (None, self.n_inputs):
            raise ValueError(
                f"{self!r} takes inputs of shape (batch, {self.n_inputs}), "
                f"not {shape_text(input_shape)}"
            )
        return (input_shape[0], self.n_neurons)

    @classmethod
    def parameter_shapes(cls, config: dict) -> dict[str, tuple[int, ...]]:
        """``weights (n_inputs, n_neurons)``, ``biases (1, n_neurons)``."""
        sizes = config.get("n_inputs"), config.get("n_neurons")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
            raise ValueError(
                f"a Dense with n_inputs={sizes[0]!r} and n_neurons={sizes[1]!r}, not positive "
                "integers"
            )
        n_inputs, n_neurons = sizes
        return {"weights": (n_inputs, n_neurons), "biases": (1, n_neurons)}

    def regularization_loss(self, params: dict | None = None) -> Any:
        """``l1w*sum|W| + l2w*sum(W*W) + l1b*sum|b| + l2b*sum(b*b)``, on the device."""
        return penalty(self, params or self.params())

    def get_config(self) -> dict:
        return {
            "n_inputs": self.n_inputs,
            "n_neurons": self.n_neurons,
            "weight_regularizer_l1": self.weight_regularizer_l1,
            "weight_regularizer_l2": self.weight_regularizer_l2,
            "bias_regularizer_l1": self.bias_regularizer_l1,
            "bias_regularizer_l2": self.bias_regularizer_l2,
            "weight_init": self.weight_init,
            "weight_scale": self.weight_scale,
        }


class Dropout(Layer):
    """Inverted dropout: drops a ``rate`` fraction, scales the rest by ``1 / (1 - rate)``;
    backward multiplies by the same mask. Identity when not training.

    The mask is drawn from the backend's generator, or from ``key`` where the step passes
    one (``random.Key``: on JAX, so that a compiled step draws a new mask each call)."""

    def __init__(self, rate: float) -> None:
        self.rate = real("Dropout rate (the fraction dropped)", rate, 0.0, 1.0, high_open=True)

    @property
    def random(self) -> bool:
        """Whether a training ``apply`` draws (a rate of 0 draws nothing)."""
        return self.rate > 0

    def apply(self, params, inputs, training=False, key=None):
        if not training or self.rate == 0:
            return inputs, None
        xp = array_namespace(inputs)
        keep = 1.0 - self.rate
        shape = tuple(inputs.shape)
        if key is None:
            draw = random.uniform(shape, backend_of(inputs))
        else:
            draw = key.uniform(shape, inputs.dtype)
        mask = xp.astype(draw < keep, inputs.dtype) / keep
        return inputs * mask, mask

    def vjp(self, params, context, dvalues):
        return (dvalues if context is None else dvalues * context), {}

    @property
    def mask(self) -> Any:
        """The last training forward's mask (None: not training), the book's attribute."""
        return getattr(self, "_context", None)

    def get_config(self) -> dict:
        return {"rate": self.rate}
