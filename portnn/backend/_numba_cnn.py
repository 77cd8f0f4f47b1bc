"""NumPy's fused CNN kernels, compiled by numba: BatchNormalization's training forward and
backward, max pooling's forward (value and first argmax in one pass) and backward (a scatter),
and Conv2D's im2col and col2im as loops (zero padding, the NCHW/NHWC transposes and the
offsets' sums in one pass each, instead of copies, concatenations and a sum of shifted terms).

NumPy runs a CNN's element-wise work as one pass per operation on one core (BatchNormalization
alone was about 16 passes over its input); these read and write each array once or twice,
on one core too. Not ``parallel=True``: on the 2-core VM a second thread halved a
BatchNormalization pass (3.2 -> 1.6 ms) but OpenMP's threads, spinning after each kernel,
then slowed the next GEMM on OpenBLAS's threads (9.7 -> 34 ms; with OMP_WAIT_POLICY=PASSIVE
no slowdown, and no gain either), and CNN steps alternate the two. They work on
channels-last memory, which is what a CNN's arrays already are: Conv2D returns an NCHW view of
NHWC rows, and the element-wise layers after it keep that layout, so the rows are a view, not
a copy (any other layout is copied once). Each is tested against the layers' portable code
(tests/test_cnn_kernels.py), which stays the reference and runs on every other library.

A kernel gets the layer's arrays and returns None where it declines (a dtype other than
float32 or float64): the layer's portable code runs then. Compiled once per installation
(``cache=True``) and per dtype, a second or two each, on the first CNN step that uses it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

# Row chunks each partial sum covers (as float64 sums): a few shorter sums, a little more
# accurate than one; a fixed count, so a parallel version would give the same bits.
_CHUNKS = 16
_FLOATS = (np.float32, np.float64)


def kernel(name: str) -> Any:
    """The kernel ``name`` (a key of ``_WRAPPERS``), or None: for any other name (without
    loading numba), and without numba."""
    found = _WRAPPERS.get(name)
    return None if found is None or _compiled() is None else found


def _rows(a: np.ndarray) -> np.ndarray:
    """``(batch, C)`` or NCHW ``a`` as C-contiguous ``(rows, C)``, channels last: a view of
    NHWC memory, a copy of anything else."""
    if a.ndim == 4:
        a = np.ascontiguousarray(a.transpose(0, 2, 3, 1))
    return np.ascontiguousarray(a).reshape(-1, a.shape[-1])


def _unrows(rows: np.ndarray, shape: tuple) -> np.ndarray:
    """``_rows``'s inverse: an NCHW view of NHWC ``rows`` (or the rows, for 2-D)."""
    if len(shape) == 2:
        return rows
    n, c, h, w = shape
    return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def batch_norm_train(x, weights, biases, epsilon):
    """Training forward: ``(out, mean, var)``, the batch's biased statistics per feature
    (``(C,)``, in float64 sums) and ``out = x * scale + shift`` with ``scale = w / sqrt(var +
    eps)``, ``shift = b - mean * scale``; None for a dtype it does not take."""
    if x.dtype.type not in _FLOATS:
        return None
    rows = _rows(x)
    out = np.empty_like(rows)
    mean, var = np.empty(rows.shape[1]), np.empty(rows.shape[1])
    w, b = (np.ascontiguousarray(a, dtype=np.float64) for a in (weights, biases))
    _compiled()["bn_forward"](rows, w, b, float(epsilon), out, mean, var)
    return _unrows(out, x.shape), mean.astype(x.dtype), var.astype(x.dtype)


def batch_norm_backward(dvalues, x, mean, inv, weights, dinputs):
    """Training backward from the forward's ``x``, ``mean`` and ``inv = 1 / sqrt(var + eps)``
    (``(C,)`` each): ``(dx, dweights, dbiases)``, ``dweights = inv * sum(d * (x - mean))``,
    ``dbiases = sum(d)``, ``dx = a * d + b * (x - mean) + c`` with per-feature ``a = w * inv``,
    ``b = -a * inv * dweights / n``, ``c = -a * dbiases / n`` (dx None unless ``dinputs``)."""
    if dvalues.dtype.type not in _FLOATS:
        return None
    d, rows = _rows(dvalues), _rows(x)
    dx = np.empty_like(d) if dinputs else np.empty((0, d.shape[1]), d.dtype)
    dweights, dbiases = np.empty(d.shape[1]), np.empty(d.shape[1])
    mean, inv, w = (np.ascontiguousarray(a, dtype=np.float64).ravel() for a in (mean, inv, weights))
    _compiled()["bn_backward"](d, rows, mean, inv, w, dx, dweights, dbiases)
    dt = dvalues.dtype
    return (_unrows(dx, x.shape) if dinputs else None), dweights.astype(dt), dbiases.astype(dt)


def max_pool(x, pool, stride):
    """Forward: ``(out, argmax)``, each window's largest value and the offset ``i * kw + j``
    of its first (row-major) maximum, as torch picks on ties; a NaN wins its window, as in
    torch. NCHW views of NHWC arrays; None for a dtype it does not take."""
    if x.dtype.type not in _FLOATS:
        return None
    (kh, kw), (sh, sw) = pool, stride
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.empty((n, ho, wo, c), x.dtype)
    argmax = np.empty((n, ho, wo, c), np.int32)
    _compiled()["pool_forward"](_nhwc(x), kh, kw, sh, sw, out, argmax)
    return out.transpose(0, 3, 1, 2), argmax.transpose(0, 3, 1, 2)


def max_pool_backward(dvalues, argmax, shape, pool, stride):
    """Backward: each window's gradient added where its ``argmax`` is, in zeros of the
    inputs' NCHW ``shape`` (overlapping windows that share a maximum sum there)."""
    n, c, h, w = shape
    d, argmax = _nhwc(dvalues), _nhwc(argmax)
    if pool == stride and (h, w) == (d.shape[1] * pool[0], d.shape[2] * pool[1]):
        # Windows that tile the input: each entry written once, in order, with no zeros first.
        dx = np.empty((n, h, w, c), dvalues.dtype)
        _compiled()["pool_backward_tiled"](d, argmax, pool[0], pool[1], dx)
    else:
        dx = np.zeros((n, h, w, c), dvalues.dtype)
        _compiled()["pool_backward"](d, argmax, pool[1], stride[0], stride[1], dx)
    return dx.transpose(0, 3, 1, 2)


def im2col(x, kernel, stride, padding, out):
    """Conv2D's columns ``(n * ho * wo, kh * kw * c)``, each ordered ``(kh, kw, c)``, of NCHW
    ``x`` zero-padded by ``padding`` ``((top, bottom), (left, right))``, for the windows
    ``stride`` apart at the ``out`` positions; None for a dtype it does not take."""
    if x.dtype.type not in _FLOATS:
        return None
    (kh, kw), (ho, wo), n, c = kernel, out, x.shape[0], x.shape[1]
    cols = np.empty((n, ho, wo, kh, kw, c), x.dtype)
    _compiled()["columns"](_nhwc(x), stride[0], stride[1], padding[0][0], padding[1][0], cols)
    return cols.reshape(n * ho * wo, -1)


def col2im(dcols, shape, kernel, stride, padding, out):
    """``im2col``'s transpose: the columns' gradient ``(n * ho * wo, kh * kw * c)`` added back
    where each entry came from, the padding dropped: the NCHW ``shape`` inputs' gradient."""
    if dcols.dtype.type not in _FLOATS:
        return None
    n, c, h, w = shape
    (kh, kw), (ho, wo) = kernel, out
    dx = np.zeros((n, h, w, c), dcols.dtype)
    d = np.ascontiguousarray(dcols).reshape(n, ho, wo, kh, kw, c)
    _compiled()["fold"](d, stride[0], stride[1], padding[0][0], padding[1][0], dx)
    return dx.transpose(0, 3, 1, 2)


_WRAPPERS = {
    "batch_norm_train": batch_norm_train,
    "batch_norm_backward": batch_norm_backward,
    "max_pool": max_pool,
    "max_pool_backward": max_pool_backward,
    "im2col": im2col,
    "col2im": col2im,
}


@functools.cache
def _compiled() -> Any:
    """The numba functions by name (compiled lazily, per dtype, on first call), or None
    without numba."""
    try:
        import numba
    except ImportError:
        return None
    # numpy's error model: x / 0 is inf, not an exception (and the loops vectorize).
    jit = functools.partial(numba.njit, nogil=True, error_model="numpy", cache=True)
    chunks = _CHUNKS

    @jit
    def bn_forward(x, w, b, eps, out, mean, var):  # pragma: no cover (compiled)
        m, c = x.shape
        step = (m + chunks - 1) // chunks
        part = np.zeros((chunks, c))
        for t in range(chunks):
            for r in range(t * step, min(m, (t + 1) * step)):
                for k in range(c):
                    part[t, k] += x[r, k]
        for k in range(c):
            mean[k] = part[:, k].sum() / m
        part2 = np.zeros((chunks, c))
        for t in range(chunks):
            for r in range(t * step, min(m, (t + 1) * step)):
                for k in range(c):
                    dev = x[r, k] - mean[k]
                    part2[t, k] += dev * dev
        scale = np.empty(c, x.dtype)
        shift = np.empty(c, x.dtype)
        for k in range(c):
            var[k] = part2[:, k].sum() / m
            s = w[k] / np.sqrt(var[k] + eps)
            scale[k] = s
            shift[k] = b[k] - mean[k] * s
        for r in range(m):
            for k in range(c):
                out[r, k] = x[r, k] * scale[k] + shift[k]

    @jit
    def bn_backward(d, x, mean, inv, w, dx, dweights, dbiases):  # pragma: no cover
        m, c = d.shape
        step = (m + chunks - 1) // chunks
        sd = np.zeros((chunks, c))
        sdx = np.zeros((chunks, c))
        mu = mean.astype(x.dtype)
        for t in range(chunks):
            for r in range(t * step, min(m, (t + 1) * step)):
                for k in range(c):
                    dk = d[r, k]
                    sd[t, k] += dk
                    sdx[t, k] += dk * (x[r, k] - mu[k])
        a = np.empty(c, d.dtype)
        b = np.empty(c, d.dtype)
        e = np.empty(c, d.dtype)
        for k in range(c):
            dbiases[k] = sd[:, k].sum()
            dweights[k] = inv[k] * sdx[:, k].sum()
            ak = w[k] * inv[k]
            a[k] = ak
            b[k] = -ak * inv[k] * dweights[k] / m
            e[k] = -ak * dbiases[k] / m
        if dx.shape[0] == 0:
            return
        for r in range(m):
            for k in range(c):
                dx[r, k] = a[k] * d[r, k] + b[k] * (x[r, k] - mu[k]) + e[k]

    @jit
    def pool_forward(x, kh, kw, sh, sw, out, argmax):  # pragma: no cover
        n, ho, wo, c = out.shape
        for s in range(n):
            for p in range(ho):
                for q in range(wo):
                    for k in range(c):
                        out[s, p, q, k] = x[s, p * sh, q * sw, k]
                        argmax[s, p, q, k] = 0
                    for i in range(kh):
                        for j in range(kw):
                            if i == 0 and j == 0:
                                continue
                            for k in range(c):
                                v = x[s, p * sh + i, q * sw + j, k]
                                if v > out[s, p, q, k] or v != v:
                                    out[s, p, q, k] = v
                                    argmax[s, p, q, k] = i * kw + j

    @jit
    def pool_backward(d, argmax, kw, sh, sw, dx):  # pragma: no cover
        n, ho, wo, c = d.shape
        for s in range(n):
            for p in range(ho):
                for q in range(wo):
                    for k in range(c):
                        a = argmax[s, p, q, k]
                        dx[s, p * sh + a // kw, q * sw + a % kw, k] += d[s, p, q, k]

    @jit
    def columns(x, sh, sw, top, left, cols):  # pragma: no cover
        n, h, w, c = x.shape
        _, ho, wo, kh, kw, _ = cols.shape
        for s in range(n):
            for p in range(ho):
                for q in range(wo):
                    for i in range(kh):
                        y = p * sh + i - top
                        for j in range(kw):
                            z = q * sw + j - left
                            if 0 <= y < h and 0 <= z < w:
                                for k in range(c):
                                    cols[s, p, q, i, j, k] = x[s, y, z, k]
                            else:
                                for k in range(c):
                                    cols[s, p, q, i, j, k] = 0

    @jit
    def fold(d, sh, sw, top, left, dx):  # pragma: no cover
        n, h, w, c = dx.shape
        _, ho, wo, kh, kw, _ = d.shape
        for s in range(n):
            for p in range(ho):
                for q in range(wo):
                    for i in range(kh):
                        y = p * sh + i - top
                        for j in range(kw):
                            z = q * sw + j - left
                            if 0 <= y < h and 0 <= z < w:
                                for k in range(c):
                                    dx[s, y, z, k] += d[s, p, q, i, j, k]

    @jit
    def pool_backward_tiled(d, argmax, kh, kw, dx):  # pragma: no cover
        n, ho, wo, c = d.shape
        for s in range(n):
            for p in range(ho):
                for i in range(kh):
                    for q in range(wo):
                        for j in range(kw):
                            o = i * kw + j
                            for k in range(c):
                                hit = argmax[s, p, q, k] == o
                                dx[s, p * kh + i, q * kw + j, k] = d[s, p, q, k] if hit else 0

    found = (bn_forward, bn_backward, pool_forward, pool_backward, columns, fold)
    return {f.__name__: f for f in (*found, pool_backward_tiled)}
