"""Batch normalization, a pure pair (``apply``/``vjp``, see ``portnn.layers.Layer``) with
running statistics kept as layer state (``state_names``), not as parameters."""

from __future__ import annotations

from typing import Any

from ._checks import integer, real
from ._xp import array_namespace, kernel
from .backend import Backend, get_backend
from .layers import Layer, shape_text

__all__ = ["BatchNormalization"]


class BatchNormalization(Layer):
    """Batch normalization, as ``torch.nn.BatchNorm1d`` (inputs ``(batch, n_features)``) and
    ``BatchNorm2d`` (NCHW images, ``(batch, n_features, h, w)``, one feature per channel):
    ``y = weights * (x - mean) / sqrt(var + epsilon) + biases`` per feature.

    In training ``mean`` and ``var`` are the batch's (the biased variance, over the batch and,
    for images, every pixel), and the running statistics move towards them:
    ``running = (1 - momentum) * running + momentum * batch``, with the unbiased variance
    (``n / (n - 1)``) for ``running_var``, exactly as torch. In evaluation (``predict``,
    ``evaluate``, validation) ``running_mean`` and ``running_var`` normalise instead.
    Forward as one scale and shift per feature, ``x * (w * inv) + (b - mean * w * inv)`` with
    ``inv = 1 / sqrt(var + epsilon)``. Backward: ``dweights = inv * sum(d * (x - mean))``,
    ``dbiases = sum(d)`` and, in training, ``dX = a * d + b * (x - mean) + c`` per feature,
    ``a = weights * inv``, ``b = -a * inv * dweights / n``, ``c = -a * dbiases / n`` (the
    usual ``(n dx^ - sum dx^ - x^ sum(dx^ x^)) / (n sqrt(var + eps))``, ``dx^ = d * weights``,
    with its sums written through ``dweights`` and ``dbiases``); in evaluation ``dX = a * d``.

    ``weights`` (gamma, ones) and ``biases`` (beta, zeros) are the trained parameters, shape
    ``(n_features,)``, torch's ``weight`` and ``bias``. ``running_mean`` (zeros) and
    ``running_var`` (ones) are state: saved, loaded and in ``state_dict``, never stepped by
    the optimizer nor counted as trainable. Under data parallel they are not all-reduced:
    each rank's running statistics follow its own batches, like ``torch.nn.BatchNorm2d``
    under DistributedDataParallel and unlike Horovod's ``SyncBatchNorm``; rank 0's are the
    ones a checkpoint keeps.
    """

    param_names = ("weights", "biases")
    state_names = ("running_mean", "running_var")

    def __init__(
        self,
        n_features: int,
        momentum: float = 0.1,
        epsilon: float = 1e-5,
        *,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        self.n_features = integer("BatchNormalization n_features", n_features)
        self.momentum = real("BatchNormalization momentum", momentum, 0.0, 1.0)
        self.epsilon = real("BatchNormalization epsilon", epsilon, 0.0, low_open=True)
        b = get_backend(backend, dtype)
        xp, shape = b.xp, (self.n_features,)
        self.weights = xp.ones(shape, dtype=b.dtype, device=b.device)
        self.biases = xp.zeros(shape, dtype=b.dtype, device=b.device)
        self.running_mean = xp.zeros(shape, dtype=b.dtype, device=b.device)
        self.running_var = xp.ones(shape, dtype=b.dtype, device=b.device)

    def output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """The input shape: ``(batch, n_features)`` or ``(batch, n_features, h, w)``."""
        if len(input_shape) not in (2, 4) or input_shape[1] not in (None, self.n_features):
            raise ValueError(
                f"{self!r} takes inputs of shape (batch, {self.n_features}) or NCHW images "
                f"(batch, {self.n_features}, height, width), not {shape_text(input_shape)}; "
                f"build it with n_features equal to the inputs' features or channels"
            )
        return tuple(input_shape)

    def apply(self, params, inputs, training=False, key=None):
        shape = tuple(inputs.shape)
        self.output_shape(shape)
        xp = array_namespace(inputs)
        axes = (0,) if len(shape) == 2 else (0, 2, 3)
        per = (1, self.n_features) + (1,) * (len(shape) - 2)  # broadcasts along the features
        n = shape[0] * (1 if len(shape) == 2 else shape[2] * shape[3])
        weights, biases, out = params["weights"], params["biases"], None
        if training:
            if n < 2:
                raise ValueError(
                    f"{self!r} needs more than one value per feature to train (got inputs "
                    f"{shape_text(shape)}, as torch refuses); use batches of 2 or more"
                )
            fused = kernel(inputs, "batch_norm_train")  # one library's passes in one (or None)
            done = None if fused is None else fused(inputs, weights, biases, self.epsilon)
            if done is None:
                mean = xp.mean(inputs, axis=axes, keepdims=True)
                centered = inputs - mean
                var = xp.mean(centered * centered, axis=axes, keepdims=True)
            else:
                out, mean, var = done[0], xp.reshape(done[1], per), xp.reshape(done[2], per)
            inv = 1.0 / xp.sqrt(var + self.epsilon)
            context = (True, inputs, mean, inv, axes, n, var)
        else:
            mean = xp.reshape(params["running_mean"], per)
            inv = xp.reshape(1.0 / xp.sqrt(params["running_var"] + self.epsilon), per)
            context = (False, inputs, mean, inv, axes)
        if out is None:  # the affine folded into one scale and shift per feature: two passes
            scale = xp.reshape(weights, per) * inv
            out = inputs * scale + (xp.reshape(biases, per) - mean * scale)
        return out, context

    def vjp(self, params, context, dvalues):
        training, inputs, mean, inv, axes = context[:5]
        xp = array_namespace(dvalues)
        fused = kernel(dvalues, "batch_norm_backward") if training else None
        done = (
            None
            if fused is None
            else fused(dvalues, inputs, mean, inv, params["weights"], self.compute_dinputs)
        )
        if done is not None:
            return done[0], {"weights": done[1], "biases": done[2]}
        per = tuple(inv.shape)
        centered = inputs - mean
        dbiases = xp.sum(dvalues, axis=axes)
        dweights = xp.sum(dvalues * centered, axis=axes) * xp.reshape(inv, (self.n_features,))
        grads = {"weights": dweights, "biases": dbiases}
        if not self.compute_dinputs:
            return None, grads
        a = xp.reshape(params["weights"], per) * inv
        if not training:
            return a * dvalues, grads
        n = context[5]
        b = -a * inv * xp.reshape(dweights, per) / n
        c = -a * xp.reshape(dbiases, per) / n
        return a * dvalues + b * centered + c, grads

    def new_state(self, params: dict[str, Any], context: Any) -> dict[str, Any]:
        """The running statistics moved ``momentum`` of the way to the batch's."""
        mean, n, var = context[2], context[5], context[6]
        xp = array_namespace(mean)
        m, shape = self.momentum, (self.n_features,)
        unbiased = xp.reshape(var, shape) * (n / (n - 1))
        return {
            "running_mean": (1 - m) * params["running_mean"] + m * xp.reshape(mean, shape),
            "running_var": (1 - m) * params["running_var"] + m * unbiased,
        }

    @classmethod
    def parameter_shapes(cls, config: dict) -> dict[str, tuple[int, ...]]:
        """``weights``, ``biases``, ``running_mean`` and ``running_var``: ``(n_features,)``
        each (the state's shapes too, which a file holds beside the parameters)."""
        n = config.get("n_features")
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            raise ValueError(f"a BatchNormalization with n_features={n!r}, not a positive integer")
        return dict.fromkeys(cls.param_names + cls.state_names, (n,))

    def get_config(self) -> dict:
        return {"n_features": self.n_features, "momentum": self.momentum, "epsilon": self.epsilon}
