"""A LeNet-sized Fashion-MNIST CNN epoch, side by side in one process: portnn on NumPy, portnn on
JAX (its step compiled by jax.jit), PyTorch eager (CPU), a hand-written jax.jit step, and the
matrix products of portnn's im2col convolution alone (the GEMM floor).

The network is ``portnn train fashion-mnist --model cnn``'s: Conv2D(1, 32, 3, same),
BatchNormalization, ReLU, MaxPool2D(2), Conv2D(32, 64, 3, same), BatchNormalization, ReLU,
MaxPool2D(2), Flatten, Dense(3136, 128), ReLU, Dense(128, 10), Softmax; Adam(0.001), batch 128,
float32, on synthetic images of the real shape (timing does not depend on the pixels). The
median of ``--epochs`` epochs after one warm-up, contestants alternated round-robin; each ratio
is also given as the median of the per-round ratios (both epochs of a pair timed in the same
round, so a load that comes and goes moves both alike).

Two more measurements (NumPy, one batch of 128), skipped with ``--no-memory``/``--no-profile``:

- memory: tracemalloc's peak (it sees NumPy's buffers) over one Conv2D forward and backward
  on the recipe's second convolution's input (128x32x14x14), for kernels 1x1 to 7x7: im2col
  holds ``kh*kw`` copies of the input, so the peak grows with the kernel's area; and the peak
  of one whole training step of the model.
- profile: each layer's forward and backward time, and the second convolution's im2col,
  matrix products and col2im alone, beside ``torch.nn.functional.conv2d``'s forward and
  backward on the same input: where an epoch's time goes.

``--json PATH`` writes the machine, the arguments and every figure, as bench_train.py does
(benchmarks/results/ keeps runs).

    python benchmarks/bench_cnn.py [--samples 6000] [--epochs 3] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import load_average, machine_info  # noqa: E402  (the same machine record)

BATCH = 128


def data(samples: int):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (samples, 1, 28, 28)).astype(np.float32)
    return X, rng.integers(0, 10, samples).astype(np.int64)


class Portnn:
    def __init__(self, X, y, backend):
        import portnn as pn

        pn.set_backend(backend)
        pn.seed(0)
        self.model = pn.recipes.get("fashion-mnist").build_cnn()
        self.X, self.y = self.model.backend.asarray(X), self.model.backend.asarray(y)

    def epoch(self):
        self.model.train(self.X, self.y, epochs=1, batch_size=BATCH, print_every=None)
        float(self.model.layers[-2].weights[0, 0])  # wait for the device


class Torch:
    def __init__(self, X, y):
        import torch
        from torch import nn

        torch.manual_seed(0)
        self.torch = torch
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(3136, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)

    def epoch(self):
        torch = self.torch
        order = torch.randperm(len(self.X))
        for start in range(0, len(self.X), BATCH):
            rows = order[start : start + BATCH]
            loss = torch.nn.functional.cross_entropy(self.net(self.X[rows]), self.y[rows])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()


class JaxJit:
    """The same network as JAX users write it: lax.conv, jax.grad, Adam by hand, one jit."""

    def __init__(self, X, y):
        import jax
        import jax.numpy as jnp

        self.jax = jax
        rng = np.random.default_rng(0)

        def he(*shape):
            fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
            return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32))

        def z(n):  # float32 named: portnn's JAX backend turns on 64-bit defaults
            return jnp.zeros(n, jnp.float32)

        def o(n):
            return jnp.ones(n, jnp.float32)

        self.params = [he(32, 1, 3, 3), z(32), o(32), z(32), he(64, 32, 3, 3), z(64), o(64)]
        self.params += [z(64), he(3136, 128), z(128), he(128, 10), z(10)]
        self.m = [jnp.zeros_like(p) for p in self.params]
        self.v = [jnp.zeros_like(p) for p in self.params]
        self.t = 0
        self.X, self.y = jnp.asarray(X), jnp.asarray(y.astype(np.int32))
        self.key = jax.random.PRNGKey(0)

        def block(x, w, b, gamma, beta):
            x = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME") + b[None, :, None, None]
            mean = x.mean(axis=(0, 2, 3), keepdims=True)
            var = x.var(axis=(0, 2, 3), keepdims=True)
            x = (x - mean) / jnp.sqrt(var + 1e-5) * gamma[None, :, None, None]
            x = jax.nn.relu(x + beta[None, :, None, None])
            return jax.lax.reduce_window(
                x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"
            )

        def loss(params, x, labels):
            x = block(x, *params[0:4])
            x = block(x, *params[4:8])
            x = jax.nn.relu(x.reshape(x.shape[0], -1) @ params[8] + params[9])
            logp = jax.nn.log_softmax(x @ params[10] + params[11])
            return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

        def step(params, m, v, t, x, labels):
            grads = jax.grad(loss)(params, x, labels)
            c1, c2 = 1 - 0.9 ** (t + 1), 1 - 0.999 ** (t + 1)
            m = [0.9 * a + 0.1 * g for a, g in zip(m, grads, strict=True)]
            v = [0.999 * a + 0.001 * g * g for a, g in zip(v, grads, strict=True)]
            params = [
                p - 1e-3 * (a / c1) / (jnp.sqrt(b / c2) + 1e-7)
                for p, a, b in zip(params, m, v, strict=True)
            ]
            return params, m, v

        self.step = jax.jit(step)

    def epoch(self):
        jax = self.jax
        self.key, sub = jax.random.split(self.key)
        order = jax.random.permutation(sub, len(self.X))
        X, y = self.X[order], self.y[order]
        for start in range(0, len(X), BATCH):
            xb, yb = X[start : start + BATCH], y[start : start + BATCH]
            self.params, self.m, self.v = self.step(self.params, self.m, self.v, self.t, xb, yb)
            self.t += 1
        jax.block_until_ready(self.params)


class Gemms:
    """The matrix products portnn's im2col convolutions and Dense layers take per batch,
    forward and backward (no data gradient for the first layer), alone."""

    def __init__(self, X, y):
        rng = np.random.default_rng(0)
        f32 = np.float32
        n = BATCH
        self.n_batches = -(-len(X) // BATCH)
        self.ops = [  # (a, b) pairs of a @ b
            (rng.normal(size=(32, 9)).astype(f32), rng.normal(size=(9, n * 784)).astype(f32)),
            (rng.normal(size=(64, 288)).astype(f32), rng.normal(size=(288, n * 196)).astype(f32)),
            (rng.normal(size=(n, 3136)).astype(f32), rng.normal(size=(3136, 128)).astype(f32)),
            (rng.normal(size=(n, 128)).astype(f32), rng.normal(size=(128, 10)).astype(f32)),
        ]
        # Backward, for out = a @ b: d(a) = d(out) @ b.T and d(b) = a.T @ d(out); the first
        # convolution's columns (its b, from the data) need no gradient.
        back = []
        for i, (a, b) in enumerate(list(self.ops)):
            out = a @ b
            back.append((out, b.T.copy()))
            if i > 0:
                back.append((a.T.copy(), out))
        self.ops += back

    def epoch(self):
        for _ in range(self.n_batches):
            for a, b in self.ops:
                a @ b


def _conv_input(shape=(BATCH, 32, 14, 14)):
    return np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)


def conv_memory(kernels=(1, 3, 5, 7)) -> list[dict]:
    """Peak bytes over one forward and backward of Conv2D(32, 64, k, "same") on a batch of the
    recipe's second convolution's input, beyond the input, output gradient and weights."""
    import portnn as pn

    x = _conv_input()
    rows = []
    for k in kernels:
        with pn.use_backend("numpy"):
            pn.seed(0)
            layer = pn.Conv2D(32, 64, k, padding="same")
        params = layer.params()
        dy = np.ones((BATCH, 64, 14, 14), np.float32)
        tracemalloc.start()
        y, context = layer.apply(params, x, True)
        dx, grads = layer.vjp(params, context, dy)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        cols = context[0].nbytes
        del y, context, dx, grads
        rows.append(
            {"kernel": f"{k}x{k}", "input_bytes": x.nbytes, "cols_bytes": cols, "peak_bytes": peak}
        )
    return rows


def step_memory() -> int:
    """Peak bytes of one training step (batch 128) of the recipe's CNN on NumPy."""
    import portnn as pn

    pn.set_backend("numpy")
    pn.seed(0)
    model = pn.recipes.get("fashion-mnist").build_cnn()
    X, y = data(BATCH)
    model.train(X, y, epochs=1, batch_size=BATCH, print_every=None)  # builds the step
    tracemalloc.start()
    model.train(X, y, epochs=1, batch_size=BATCH, print_every=None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _ms(f, repeat: int) -> float:
    f()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def profile(repeat: int) -> dict:
    """Milliseconds per batch of 128: each layer's forward (training) and backward on NumPy,
    then the second convolution's parts alone, and torch's conv2d beside them."""
    import portnn as pn
    from portnn import _im2col, _xp

    pn.set_backend("numpy")
    pn.seed(0)
    model = pn.recipes.get("fashion-mnist").build_cnn()
    x, y = data(BATCH)
    layers = []
    for layer in model.layers:
        params = layer.params()
        out, context = layer.apply(params, x, True)
        forward = _ms(lambda la=layer, p=params, x=x: la.apply(p, x, True), repeat)
        layers.append([layer, params, context, x, forward])
        x = out
    d = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    for row in reversed(layers):
        layer, params, context = row[:3]
        row.append(_ms(lambda la=layer, p=params, c=context, d=d: la.vjp(p, c, d), repeat))
        d = layer.vjp(params, context, d)[0]
    per_layer = [
        {"layer": repr(layer), "forward_ms": f, "backward_ms": b} for layer, _, _, _, f, b in layers
    ]
    conv = next(row for row in layers if repr(row[0]).startswith("Conv2D(32"))
    layer, x = conv[0], conv[3]
    xh = _im2col.pad(np.transpose(x, (0, 2, 3, 1)), layer._padding(), (1, 2))
    views = list(_im2col.shifts(xh, (3, 3), (1, 1), (14, 14), (1, 2)))
    cols = _im2col.windows(xh, (3, 3), (1, 1), (14, 14), (1, 2)).reshape(BATCH * 196, -1)
    w = layer._columns(layer.weights)
    d = np.random.default_rng(2).normal(size=(BATCH * 196, 64)).astype(np.float32)
    dcols = (d @ w).reshape(BATCH, 14, 14, 9, 32)  # columns ordered (kh, kw, c)
    terms = [dcols[..., k, :] for k in range(9)]
    # The columns ordered (c, kh, kw), as before 2026-12-04: each view written 9 floats apart
    old = (d @ w).reshape(BATCH, 14, 14, 32, 9)
    terms_old = [old[..., k] for k in range(9)]
    parts = {
        "im2col (windows: 9 views before the channels)": lambda: np.stack(views, axis=-2),
        "im2col, offsets last (the old column order)": lambda: np.stack(views, axis=-1),
        "cols @ W.T (forward GEMM)": lambda: cols @ w.T,
        "d.T @ cols (weights' GEMM)": lambda: d.T @ cols,
        "d @ W (columns' gradient GEMM)": lambda: d @ w,
        "col2im (fold of 9 contiguous terms)": lambda: _im2col.fold(
            terms, (16, 16), (3, 3), (1, 1), (1, 2)
        ),
        "col2im, strided terms (the old column order)": lambda: _im2col.fold(
            terms_old, (16, 16), (3, 3), (1, 1), (1, 2)
        ),
    }
    fused_cols, fused_fold = (_xp.kernel(x, name) for name in ("im2col", "col2im"))
    if fused_cols is not None:  # NumPy's numba loops, which the layer takes when it can
        sizes = ((3, 3), (1, 1), layer._padding(), (14, 14))
        dflat = d @ w
        parts["im2col kernel (numba)"] = lambda: fused_cols(x, *sizes)
        parts["col2im kernel (numba)"] = lambda: fused_fold(dflat, x.shape, *sizes)
    conv_parts = {name: _ms(f, repeat) for name, f in parts.items()}
    try:
        import torch

        xt = torch.from_numpy(x).requires_grad_()
        wt = torch.from_numpy(np.array(layer.weights)).requires_grad_()
        bt = torch.zeros(64, requires_grad=True)

        def torch_conv():
            out = torch.nn.functional.conv2d(xt, wt, bt, padding=1)
            out.backward(torch.ones_like(out))

        conv_parts["torch conv2d forward + backward"] = _ms(torch_conv, repeat)
    except ImportError:
        pass
    return {"layers": per_layer, "conv2_parts": conv_parts}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1,024 samples, 1 epoch")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc peaks")
    p.add_argument("--no-profile", action="store_true", help="skip the per-layer times")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.epochs = 1024, 1
    args.backend = "numpy"  # what machine_info records
    info = machine_info(args)
    X, y = data(args.samples)
    makers = {
        "portnn numpy": lambda: Portnn(X, y, "numpy"),
        "portnn jax (jit)": lambda: Portnn(X, y, "jax"),
        "PyTorch eager": lambda: Torch(X, y),
        "JAX jit by hand": lambda: JaxJit(X, y),
        "GEMMs only": lambda: Gemms(X, y),
    }
    live, times = {}, {}
    for name, make in makers.items():
        try:
            live[name] = make()
            live[name].epoch()  # warm-up (and compilation)
            times[name] = []
        except ImportError as exc:
            print(f"{name}: n/a ({exc})")
    for _ in range(args.epochs):
        for name, c in live.items():
            start = time.perf_counter()
            c.epoch()
            times[name].append(time.perf_counter() - start)
    live.clear()  # the contestants' arrays, before the memory is measured
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"LeNet-sized CNN, {args.samples} samples, batch {BATCH}, float32, median of "
        f"{args.epochs} epochs after a warm-up"
    )
    print("| contestant | epoch s |")
    print("|---|--:|")
    for name, t in med.items():
        print(f"| {name} | {t:.3f} |")
    ratios = [
        ("portnn numpy / PyTorch eager", "portnn numpy", "PyTorch eager"),
        ("portnn numpy / GEMMs only", "portnn numpy", "GEMMs only"),
        ("portnn jax / JAX jit by hand", "portnn jax (jit)", "JAX jit by hand"),
    ]
    out = {"ratios": {}}
    for label, a, b in ratios:
        if a in med and b in med:
            rounds = statistics.median(x / z for x, z in zip(times[a], times[b], strict=True))
            out["ratios"][label] = {"of_medians": med[a] / med[b], "median_per_round": rounds}
            print(f"{label}: {med[a] / med[b]:.2f} (per round: {rounds:.2f})")
    if not args.no_memory:
        out["conv_memory"] = conv_memory()
        out["step_peak_bytes"] = step_memory()
        print("\nim2col memory, Conv2D(32, 64, k, 'same') forward + backward, input 128x32x14x14:")
        print("| kernel | input MiB | columns MiB | peak MiB | peak / input |")
        print("|---|--:|--:|--:|--:|")
        for r in out["conv_memory"]:
            inp, cols, peak = r["input_bytes"], r["cols_bytes"], r["peak_bytes"]
            print(
                f"| {r['kernel']} | {inp / 2**20:.1f} | {cols / 2**20:.1f} | {peak / 2**20:.1f} "
                f"| {peak / inp:.1f} |"
            )
        print(f"one training step of the whole CNN: peak {out['step_peak_bytes'] / 2**20:.0f} MiB")
    if not args.no_profile:
        out["profile"] = profile(3 if args.quick else 10)
        print("\nportnn on NumPy, one batch of 128, ms (median):")
        print("| layer | forward | backward |")
        print("|---|--:|--:|")
        for r in out["profile"]["layers"]:
            print(f"| {r['layer']} | {r['forward_ms']:.1f} | {r['backward_ms']:.1f} |")
        fwd, bwd = (
            sum(r[k] for r in out["profile"]["layers"]) for k in ("forward_ms", "backward_ms")
        )
        print(f"| all layers | {fwd:.1f} | {bwd:.1f} |")
        print("\nthe second convolution's parts alone, ms:")
        for name, ms in out["profile"]["conv2_parts"].items():
            print(f"| {name} | {ms:.1f} |")
    if args.json:
        info["load_average_end"] = load_average()
        results = [
            {"contestant": n, "times": times[n], "median": med[n], "samples": args.samples}
            for n in med
        ]
        with open(args.json, "w") as f:
            record = {"machine": info, "args": vars(args), "results": results, **out}
            json.dump(record, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
