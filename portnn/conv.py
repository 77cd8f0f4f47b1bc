"""Convolution and pooling on NCHW images: ``Conv2D``, ``MaxPool2D``, ``AveragePool2D`` and
``Flatten``, each a pure pair (``apply``/``vjp``, see ``portnn.layers.Layer``).

Images are ``(batch, channels, height, width)``, PyTorch's layout (``torch.nn.Conv2d``'s);
NHWC data (Keras', TensorFlow's) converts with ``X.transpose(0, 3, 1, 2)``. The math is
portable Array API code, with no in-place writes (so JAX runs it too): a convolution gathers
its ``kh*kw`` shifted, strided views of the padded input into one matrix (im2col, by slicing
and one ``stack``) and takes one matmul; the backward pass folds the columns' gradients back
(col2im) as a sum of zero-padded shifts (``portnn._im2col``); pooling is elementwise over
the windows' strided views, with no copy. On NumPy, numba kernels stand in for im2col, col2im
and max pooling (``Backend.kernel``, ``portnn/backend/_numba_cnn.py``), tested against this
code, which every other library runs. im2col holds ``kh*kw`` copies of the input: for a
batch of 128 28x28 images of 32 channels and a 3x3 kernel, 128*28*28*32*9 floats, 116 MB
in float32 (the same again for its gradient).
"""

from __future__ import annotations

import math
from typing import Any

from . import random
from ._checks import integer, real
from ._im2col import NCHW, NHWC, Pair, fold, pad, shifts, windows
from ._xp import array_namespace, kernel
from .backend import Backend, get_backend
from .layers import INITS, Layer, penalty, penalty_gradients, shape_text

__all__ = ["AveragePool2D", "Conv2D", "Flatten", "MaxPool2D"]


# --- sizes ----------------------------------------------------------------------------------
def _pair(name: str, value: Any, minimum: int = 1) -> Pair:
    """An int or a pair of ints (height, width), each >= ``minimum``, as a pair."""
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
        return integer(f"{name}[0]", value[0], minimum), integer(f"{name}[1]", value[1], minimum)
    n = integer(name, value, minimum)
    return n, n


def _config(pair: Pair) -> int | list[int]:
    """A pair as ``get_config`` writes it: one int where both sides agree (JSON has no tuple)."""
    return pair[0] if pair[0] == pair[1] else list(pair)


def _out_size(name: str, size: int, kernel: int, stride: int, what: str) -> int:
    if size < kernel:
        raise ValueError(f"{name}: {what}")
    return (size - kernel) // stride + 1


def _image_shape(layer: Layer, shape: tuple, channels: int | None) -> None:
    """A ValueError unless ``shape`` is NCHW (with ``channels`` channels, if given)."""
    if len(shape) != 4:
        raise ValueError(
            f"{layer!r} takes NCHW images (batch, channels, height, width), not "
            f"{shape_text(shape)}: reshape flat images, e.g. X.reshape(-1, 1, 28, 28), convert "
            "NHWC ones with X.transpose(0, 3, 1, 2), and start the model with "
            "pn.Input(shape=(channels, height, width))"
        )
    if channels is not None and shape[1] not in (None, channels):
        raise ValueError(
            f"{layer!r} takes images of {channels} channels, not {shape[1]} "
            f"(inputs {shape_text(shape)}); build it with in_channels={shape[1]}"
        )


# --- layers ---------------------------------------------------------------------------------
class Conv2D(Layer):
    """2-D convolution (cross-correlation, as every framework's): ``out[n, o] = b[o] +
    sum_c W[o, c] * x[n, c]`` over each window; backward ``dW = d^T @ cols``, ``db = sum(d)``,
    ``dX = col2im(d @ W)``, plus the L1/L2 penalties' gradients.

    Inputs are NCHW, ``(batch, in_channels, height, width)``, outputs ``(batch, out_channels,
    out_height, out_width)``, ``out = (size + 2 * padding - kernel) // stride + 1``; NHWC data
    converts with ``X.transpose(0, 3, 1, 2)``. ``weights`` are ``(out_channels, in_channels,
    kh, kw)`` and ``biases`` ``(out_channels,)``: ``torch.nn.Conv2d``'s layout, so weights
    move between the two as they are. ``kernel_size``, ``stride`` and ``padding`` are an int
    or a pair (height, width); ``padding="same"`` keeps the size (stride 1 only, as in
    torch; an even kernel pads one more at the bottom and right), ``"valid"`` is 0.

    ``weight_init``: ``"he"`` (the default: normal, std ``sqrt(2 / fan_in)``, for ReLU
    networks), ``"glorot"`` (uniform in ``+-sqrt(6 / (fan_in + fan_out))``) or ``"book"``
    (``weight_scale * standard_normal``, Dense's default), with ``fan_in = in_channels * kh *
    kw`` and ``fan_out = out_channels * kh * kw``. Drawn on the host, then moved once.
    """

    param_names = ("weights", "biases")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        *,
        weight_init: str = "he",
        weight_scale: float = 0.01,
        weight_regularizer_l1: float = 0.0,
        weight_regularizer_l2: float = 0.0,
        bias_regularizer_l1: float = 0.0,
        bias_regularizer_l2: float = 0.0,
        backend: str | Backend | None = None,
        dtype: Any = None,
    ) -> None:
        self.in_channels = integer("Conv2D in_channels", in_channels)
        self.out_channels = integer("Conv2D out_channels", out_channels)
        self.kernel_size = _pair("Conv2D kernel_size", kernel_size)
        self.stride = _pair("Conv2D stride", stride)
        if padding == "valid":
            padding = 0
        if padding == "same":
            if self.stride != (1, 1):
                raise ValueError(
                    f"Conv2D padding='same' needs stride 1 (as torch.nn.Conv2d), got stride "
                    f"{stride!r}; pad by a number instead, e.g. padding={self.kernel_size[0] // 2}"
                )
            self.padding: Pair | str = "same"
        elif isinstance(padding, str):
            raise ValueError(
                f"Conv2D padding must be an int, a pair, 'same' or 'valid', got {padding!r}"
            )
        else:
            self.padding = _pair("Conv2D padding", padding, 0)
        regs = {
            "weight_regularizer_l1": weight_regularizer_l1,
            "weight_regularizer_l2": weight_regularizer_l2,
            "bias_regularizer_l1": bias_regularizer_l1,
            "bias_regularizer_l2": bias_regularizer_l2,
        }
        for name, value in regs.items():
            setattr(self, name, real(f"Conv2D {name}", value, 0.0))
        if weight_init not in INITS:
            raise ValueError(f"unknown weight_init {weight_init!r}; choose one of {INITS}")
        self.weight_init = weight_init
        self.weight_scale = real("Conv2D weight_scale", weight_scale, 0.0)

        shape = self.parameter_shapes(self.get_config())["weights"]
        area = self.kernel_size[0] * self.kernel_size[1]
        fan_in, fan_out = self.in_channels * area, self.out_channels * area
        rng = random.host()
        if weight_init == "book":
            weights = self.weight_scale * rng.standard_normal(shape)
        elif weight_init == "he":
            weights = math.sqrt(2.0 / fan_in) * rng.standard_normal(shape)
        else:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            weights = rng.uniform(-limit, limit, shape)
        b = get_backend(backend, dtype)
        self.weights = b.asarray(weights)
        self.biases = b.xp.zeros((self.out_channels,), dtype=b.dtype, device=b.device)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """The inputs it takes: ``(batch, in_channels, height, width)``, any height and width."""
        return (None, self.in_channels, None, None)

    def _padding(self) -> tuple[Pair, Pair]:
        """(top, bottom), (left, right) zeros; "same" puts an odd one at the bottom/right."""
        if self.padding == "same":
            (kh, kw) = self.kernel_size
            return ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)
        ph, pw = self.padding
        return (ph, ph), (pw, pw)

    def _out(self, height: int | None, width: int | None) -> tuple[int | None, int | None]:
        sizes = []
        for axis, size, (before, after), k, s in zip(
            ("height", "width"),
            (height, width),
            self._padding(),
            self.kernel_size,
            self.stride,
            strict=True,
        ):
            if size is None:
                sizes.append(None)
                continue
            padded = size + before + after
            sizes.append(
                _out_size(
                    repr(self),
                    padded,
                    k,
                    s,
                    f"its kernel's {axis} {k} is larger than the padded input's {padded} "
                    f"({size} + padding {before + after}); use a smaller kernel_size, more "
                    "padding (padding='same'), or larger images",
                )
            )
        return sizes[0], sizes[1]

    def output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``(batch, out_channels, out_height, out_width)`` from NCHW inputs."""
        _image_shape(self, tuple(input_shape), self.in_channels)
        return (input_shape[0], self.out_channels, *self._out(input_shape[2], input_shape[3]))

    def apply(self, params, inputs, training=False, key=None):
        if getattr(inputs, "requires_grad", False):  # autograd would record every update
            raise TypeError("Conv2D got a torch tensor that requires grad; pass inputs.detach()")
        shape = tuple(inputs.shape)
        _image_shape(self, shape, self.in_channels)
        n, c, _, _ = shape
        ho, wo = self._out(shape[2], shape[3])
        xp = array_namespace(inputs)
        fused = kernel(inputs, "im2col")  # padding, transpose and copy in one pass (or None)
        sizes = (self.kernel_size, self.stride, self._padding(), (ho, wo))
        cols = None if fused is None else fused(inputs, *sizes)
        if cols is None:
            x = pad(xp.permute_dims(inputs, NHWC), self._padding(), (1, 2))
            cols = windows(x, self.kernel_size, self.stride, (ho, wo), (1, 2))  # (n, ho, wo, K, c)
            cols = xp.reshape(cols, (n * ho * wo, -1))
        weights = self._columns(params["weights"])
        out = xp.reshape(cols @ weights.T + params["biases"], (n, ho, wo, self.out_channels))
        return xp.permute_dims(out, NCHW), (cols, shape)

    def vjp(self, params, context, dvalues):
        cols, shape = context
        xp = array_namespace(dvalues)
        weights, biases = params["weights"], params["biases"]
        n, _, ho, wo = dvalues.shape
        d = xp.reshape(xp.permute_dims(dvalues, NHWC), (n * ho * wo, self.out_channels))
        kh, kw = self.kernel_size
        dweights = xp.reshape(d.T @ cols, (self.out_channels, kh, kw, shape[1]))
        dweights = xp.permute_dims(dweights, (0, 3, 1, 2))  # back to (out, in, kh, kw)
        dbiases = xp.sum(d, axis=0)
        dweights, dbiases = penalty_gradients(self, weights, biases, dweights, dbiases)
        grads = {"weights": dweights, "biases": dbiases}
        if not self.compute_dinputs:
            return None, grads
        dcols = d @ self._columns(weights)
        fused = kernel(dcols, "col2im")  # the offsets' sums in one pass (or None)
        sizes = (self.kernel_size, self.stride, self._padding(), (ho, wo))
        dx = None if fused is None else fused(dcols, shape, *sizes)
        if dx is not None:
            return dx, grads
        (top, bottom), (left, right) = self._padding()
        size = (shape[2] + top + bottom, shape[3] + left + right)
        dcols = xp.reshape(dcols, (n, ho, wo, kh * kw, shape[1]))
        terms = [dcols[..., k, :] for k in range(kh * kw)]
        dx = fold(terms, size, self.kernel_size, self.stride, (1, 2))  # (n, h, w, c) padded
        dx = dx[:, top : top + shape[2], left : left + shape[3], :]
        return xp.permute_dims(dx, NCHW), grads

    def _columns(self, weights: Any) -> Any:
        """The weights as the columns' matrix, ``(out, kh*kw*in)``: im2col orders a column
        ``(kh, kw, c)``, so torch's ``(out, in, kh, kw)`` (the layout kept) is permuted."""
        xp = array_namespace(weights)
        return xp.reshape(xp.permute_dims(weights, (0, 2, 3, 1)), (self.out_channels, -1))

    @classmethod
    def parameter_shapes(cls, config: dict) -> dict[str, tuple[int, ...]]:
        """``weights (out_channels, in_channels, kh, kw)``, ``biases (out_channels,)``."""
        try:
            c_in = integer("in_channels", config.get("in_channels"))
            c_out = integer("out_channels", config.get("out_channels"))
            kh, kw = _pair("kernel_size", config.get("kernel_size"))
        except ValueError as exc:
            raise ValueError(f"a Conv2D whose {exc}") from None
        return {"weights": (c_out, c_in, kh, kw), "biases": (c_out,)}

    def regularization_loss(self, params: dict | None = None) -> Any:
        """``l1w*sum|W| + l2w*sum(W*W) + l1b*sum|b| + l2b*sum(b*b)``, on the device."""
        return penalty(self, params or self.params())

    def get_config(self) -> dict:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": _config(self.kernel_size),
            "stride": _config(self.stride),
            "padding": self.padding if self.padding == "same" else _config(self.padding),
            "weight_init": self.weight_init,
            "weight_scale": self.weight_scale,
            "weight_regularizer_l1": self.weight_regularizer_l1,
            "weight_regularizer_l2": self.weight_regularizer_l2,
            "bias_regularizer_l1": self.bias_regularizer_l1,
            "bias_regularizer_l2": self.bias_regularizer_l2,
        }


class _Pool2D(Layer):
    """Pooling over ``pool_size`` windows ``stride`` apart (default: ``pool_size``, windows
    that tile, as Keras and torch), no padding; a remainder too small for a window is
    dropped (torch's ``ceil_mode=False``). NCHW inputs; every channel on its own."""

    def __init__(
        self, pool_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None
    ) -> None:
        name = type(self).__name__
        self.pool_size = _pair(f"{name} pool_size", pool_size)
        self.stride = self.pool_size if stride is None else _pair(f"{name} stride", stride)

    def _out(self, height: int | None, width: int | None) -> tuple[int | None, int | None]:
        sizes = []
        for axis, size, k, s in zip(
            ("height", "width"), (height, width), self.pool_size, self.stride, strict=True
        ):
            what = (
                f"its pool's {axis} {k} is larger than the input's {size}; use a smaller "
                "pool_size, or pad the layer before (Conv2D padding='same')"
            )
            sizes.append(None if size is None else _out_size(repr(self), size, k, s, what))
        return sizes[0], sizes[1]

    def output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``(batch, channels, out_height, out_width)``, ``out = (size - pool) // stride + 1``."""
        _image_shape(self, tuple(input_shape), None)
        return (*input_shape[:2], *self._out(input_shape[2], input_shape[3]))

    def _views(self, inputs: Any) -> list[Any]:
        """The ``kh*kw`` strided views of ``inputs`` a window's offsets see (row-major), each
        ``(n, c, out_height, out_width)``: pooling is elementwise over them, no im2col copy."""
        shape = tuple(inputs.shape)
        _image_shape(self, shape, None)
        out = self._out(shape[2], shape[3])
        return list(shifts(inputs, self.pool_size, self.stride, out, (2, 3)))

    def _fold(self, terms: list[Any], shape: tuple) -> Any:
        return fold(terms, (shape[2], shape[3]), self.pool_size, self.stride, (2, 3))

    def get_config(self) -> dict:
        stride = None if self.stride == self.pool_size else _config(self.stride)
        return {"pool_size": _config(self.pool_size), "stride": stride}


class MaxPool2D(_Pool2D):
    """Max pooling: the largest value of each window; backward passes each window's
    gradient to its maximum, the first in row-major order where several tie (as torch)."""

    def apply(self, params, inputs, training=False, key=None):
        xp = array_namespace(inputs)
        views = self._views(inputs)
        fused = kernel(inputs, "max_pool")  # value and first argmax in one pass (or None)
        done = None if fused is None else fused(inputs, self.pool_size, self.stride)
        if done is not None:
            return done[0], (inputs, done[0], done[1])
        out = views[0]
        for view in views[1:]:
            out = xp.maximum(out, view)
        return out, (inputs, out, None)

    def vjp(self, params, context, dvalues):
        inputs, out, argmax = context
        fused = None if argmax is None else kernel(dvalues, "max_pool_backward")
        if fused is not None:
            shape = tuple(inputs.shape)
            return fused(dvalues, argmax, shape, self.pool_size, self.stride), {}
        xp = array_namespace(dvalues)
        left, terms = dvalues, []  # the gradient not yet given to an earlier maximum
        for view in self._views(inputs):
            given = left * xp.astype(view == out, dvalues.dtype)
            left = left - given
            terms.append(given)
        return self._fold(terms, tuple(inputs.shape)), {}


class AveragePool2D(_Pool2D):
    """Average pooling: the mean of each window; backward spreads each window's gradient
    evenly over it (torch's ``avg_pool2d`` without padding)."""

    def apply(self, params, inputs, training=False, key=None):
        views = self._views(inputs)
        total = views[0]
        for view in views[1:]:
            total = total + view
        return total / len(views), tuple(inputs.shape)

    def vjp(self, params, context, dvalues):
        share = dvalues / (self.pool_size[0] * self.pool_size[1])
        return self._fold([share] * (self.pool_size[0] * self.pool_size[1]), context), {}


class Flatten(Layer):
    """Flatten: ``(batch, c, h, w)`` to ``(batch, c*h*w)`` in C order (``torch.flatten(x,
    1)``, ``nn.Flatten()``), so a Dense after it sees torch's feature order; backward
    reshapes the gradient back."""

    def output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        if len(input_shape) < 2:
            raise ValueError(f"Flatten takes (batch, ...) inputs, not {shape_text(input_shape)}")
        rest = input_shape[1:]
        return (input_shape[0], None if None in rest else math.prod(rest))

    def apply(self, params, inputs, training=False, key=None):
        shape = tuple(inputs.shape)
        self.output_shape(shape)
        return array_namespace(inputs).reshape(inputs, (shape[0], -1)), shape

    def vjp(self, params, context, dvalues):
        return array_namespace(dvalues).reshape(dvalues, context), {}
