"""im2col and col2im by slicing, stacking and zero-padding concatenation: portable Array API
code that writes into no array (so JAX runs it, eager or under ``jax.jit``), shared by the
convolution and pooling layers of ``portnn.conv``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from array_api_compat import device

from ._xp import array_namespace

Pair = tuple[int, int]
NHWC = (0, 2, 3, 1)  # NCHW -> NHWC
NCHW = (0, 3, 1, 2)  # NHWC -> NCHW


def _zeros(x: Any, axis: int, n: int) -> Any:
    shape = list(x.shape)
    shape[axis] = n
    return array_namespace(x).zeros(tuple(shape), dtype=x.dtype, device=device(x))


def pad(x: Any, pads: tuple[Pair, Pair], axes: Pair) -> Any:
    """``x`` with ``(before, after)`` zeros on each of ``axes``, by concatenation."""
    xp = array_namespace(x)
    for (before, after), axis in zip(pads, axes, strict=True):
        if before or after:
            parts = [_zeros(x, axis, before)] if before else []
            parts += [x] + ([_zeros(x, axis, after)] if after else [])
            x = xp.concat(parts, axis=axis)
    return x


def _dilate(x: Any, stride: int, axis: int) -> Any:
    """``stride - 1`` zeros between the entries of ``x`` along ``axis``."""
    if stride == 1:
        return x
    xp = array_namespace(x)
    n = x.shape[axis]
    spread = xp.stack([x] + [xp.zeros_like(x)] * (stride - 1), axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = n * stride
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, (n - 1) * stride + 1)
    return xp.reshape(spread, tuple(shape))[tuple(index)]


def shifts(x: Any, kernel: Pair, stride: Pair, out: Pair, axes: Pair) -> Iterator[Any]:
    """The ``kh*kw`` strided views of ``x`` the kernel's offsets see, row-major: view ``(i,
    j)`` holds ``x[.., i + stride*p, .., j + stride*q, ..]`` at ``(p, q)`` on ``axes``."""
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            index = [slice(None)] * x.ndim
            index[axes[0]] = slice(i, i + stride[0] * (out[0] - 1) + 1, stride[0])
            index[axes[1]] = slice(j, j + stride[1] * (out[1] - 1) + 1, stride[1])
            yield x[tuple(index)]


def windows(x: Any, kernel: Pair, stride: Pair, out: Pair, axes: Pair) -> Any:
    """im2col: ``x``'s windows, their ``kh*kw`` offsets (row-major) on a new axis before the
    last, the windows' positions ``out`` on ``axes``. Before the last, not after it: on NHWC
    ``x`` each view is written as runs of ``c`` contiguous floats, not with a stride of
    ``kh*kw`` (4x faster for 3x3 on 32 channels)."""
    return array_namespace(x).stack(list(shifts(x, kernel, stride, out, axes)), axis=-2)


def fold(terms: list[Any], size: Pair, kernel: Pair, stride: Pair, axes: Pair) -> Any:
    """col2im, the transpose of ``_shifts``: ``terms[i * kw + j]`` holds, at each window
    position (on ``axes``), a value for kernel offset ``(i, j)``; each is added back where it
    came from, in an array of ``size`` on ``axes`` (where windows overlap, they sum)."""
    xp = array_namespace(terms[0])
    (a, b), (kh, kw) = axes, kernel
    if kernel == stride:  # windows tile: interleave the offsets, no sums
        rows = []
        for i in range(kh):
            row = xp.stack(terms[i * kw : (i + 1) * kw], axis=b + 1)  # (.., wo, kw, ..)
            shape = list(row.shape)
            shape[b : b + 2] = [shape[b] * kw]
            rows.append(xp.reshape(row, tuple(shape)))
        tiled = xp.stack(rows, axis=a + 1)  # (.., ho, kh, .., wo * kw, ..)
        shape = list(tiled.shape)
        shape[a : a + 2] = [shape[a] * kh]
        tiled = xp.reshape(tiled, tuple(shape))
        return pad(tiled, ((0, size[0] - shape[a]), (0, size[1] - shape[b])), axes)
    total = None
    for i in range(kh):  # each row of offsets summed in its own shift first: fewer full copies
        row = None
        for j in range(kw):
            term = _dilate(terms[i * kw + j], stride[1], b)
            term = pad(term, ((0, 0), (j, size[1] - j - term.shape[b])), axes)
            row = term if row is None else row + term
        row = _dilate(row, stride[0], a)
        row = pad(row, ((i, size[0] - i - row.shape[a]), (0, 0)), axes)
        total = row if total is None else total + row
    return total
