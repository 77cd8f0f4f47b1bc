"""A LeNet-sized Fashion-MNIST CNN epoch, side by side in one process: portnn on NumPy, portnn on
JAX (its step compiled by jax.jit), PyTorch eager (CPU), a hand-written jax.jit step, and the
matrix products of portnn's im2col convolution alone (the GEMM floor).

The network is ``portnn train fashion-mnist --model cnn``'s: Conv2D(1, 32, 3, same),
BatchNormalization, ReLU, MaxPool2D(2), Conv2D(32, 64, 3, same), BatchNormalization, ReLU,
MaxPool2D(2), Flatten, Dense(3136, 128), ReLU, Dense(128, 10), Softmax; Adam(0.001), batch 128,
float32, on synthetic images of the real shape (timing does not depend on the pixels). The
median of ``--epochs`` epochs after one warm-up, contestants alternated round-robin.

    python benchmarks/bench_cnn.py [--samples 6000] [--epochs 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1,024 samples, 1 epoch")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.epochs = 1024, 1
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
    for label, a, b in ratios:
        if a in med and b in med:
            print(f"{label}: {med[a] / med[b]:.2f}")


if __name__ == "__main__":
    main()
