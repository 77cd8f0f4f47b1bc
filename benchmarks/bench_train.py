#!/usr/bin/env python
"""Time training epochs of the book's Fashion-MNIST network: portnn against its floors.

The network, as ``portnn.recipes.build("fashion-mnist", hidden=H)`` makes it: 784-H-H-10,
ReLU, softmax + categorical cross-entropy, Adam(learning_rate=0.001, decay=1e-3), float32, on
seeded synthetic data (inputs uniform in [-1, 1], labels 0..9).
Contestants, all in this process, on the same device, alternated round-robin (one epoch each
per round, the order rotated every round), each timed as the median of ``--epochs`` epochs
after one warm-up epoch:

  portnn   portnn's ``Model.train`` on ``--backend``
  portnn-torch  the same on torch tensors, on the torch contestant's device (CUDA beside
           CuPy): the same portable code on another Array API library
  portnn-jax  the same on the JAX backend (CPU, beside numpy), its training step compiled
           by jax.jit (the default there): against ``jax``, what the framework costs a compiler
  portnn-torch-compile  portnn on torch tensors with ``train(compile=True)``: the step
           through torch.compile (beside numpy only; its compile time is in the warm-up)
  bare     the same network as a bare loop of Array API calls, no framework: the floor of
           portnn's design (what the framework should cost)
  torch    PyTorch eager: nn.Sequential + F.cross_entropy + optim.Adam, on the same device
  gemm     only the 8 matrix products of each training step, over an epoch: the hardware floor

Rows: ``default`` (batch 128, hidden 128), ``large-batch`` (batch 4096), ``wide`` (hidden 1024).
Peak memory is measured per contestant in a fresh subprocess (``--memory-only``): peak RSS
on the host, the allocators' high-water marks on a GPU.

    python benchmarks/bench_train.py --backend numpy             # all rows, 5 epochs each
    python benchmarks/bench_train.py --quick                     # smoke test (seconds)
    python benchmarks/bench_train.py --rows default --epochs 3 --json out.json
    python benchmarks/bench_train.py --check                     # do the contestants learn?
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

ROWS = {
    "default": {"batch": 128, "hidden": 128},
    "large-batch": {"batch": 4096, "hidden": 128},
    "wide": {"batch": 128, "hidden": 1024},
}
CONTESTANTS = (
    "portnn",
    "portnn-torch",
    "portnn-jax",
    "portnn-torch-compile",
    "bare",
    "torch",
    "jax",
    "gemm",
)
LABELS = {
    "portnn": "portnn `Model.train`",
    "portnn-torch": "portnn `Model.train` on torch tensors",
    "portnn-jax": "portnn `Model.train` on JAX, step compiled (jax.jit)",
    "portnn-torch-compile": "portnn `Model.train` on torch, `compile=True` (torch.compile)",
    "bare": "bare Array API loop",
    "torch": "PyTorch eager",
    "jax": "JAX jit (CPU)",
    "gemm": "GEMMs only",
}
N_IN, N_OUT = 784, 10
LR, DECAY, EPS, BETA_1, BETA_2 = 0.001, 1e-3, 1e-7, 0.9, 0.999
BACKENDS = ("numpy", "torch", "cupy", "array_api_strict")


class Unavailable(Exception):
    """A contestant that cannot run here; its row says why."""


# --------------------------------------------------------------------------- data and devices


def make_data(samples: int, seed: int, learnable: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Float32 inputs uniform in [-1, 1] and int64 labels 0..9, made in place (no float64 copy,
    so the data costs its own size and no more in the memory measurement).

    ``learnable``: labels are the argmax of a fixed random linear map, so a network can learn them.
    """
    rng = np.random.default_rng(seed)
    X = rng.random((samples, N_IN), dtype=np.float32)
    X *= 2
    X -= 1
    if learnable:
        y = np.argmax(X @ rng.standard_normal((N_IN, N_OUT), dtype=np.float32), axis=1)
    else:
        y = rng.integers(0, N_OUT, samples)
    return X, y.astype(np.int64)


def init_params(hidden: int, seed: int) -> list[np.ndarray]:
    """The book's initialisation, on the host: weights ``0.01 * standard_normal``, zero biases."""
    rng = np.random.default_rng(seed)
    sizes = (N_IN, hidden, hidden, N_OUT)
    params = []
    for n_in, n_out in zip(sizes, sizes[1:], strict=False):
        params.append((0.01 * rng.standard_normal((n_in, n_out))).astype(np.float32))
        params.append(np.zeros((1, n_out), dtype=np.float32))
    return params


def to_device(a: np.ndarray, backend: str) -> Any:
    """A NumPy array as ``backend``'s array on its device (NumPy and torch CPU share memory)."""
    if backend == "numpy":
        return a
    if backend == "torch":
        import torch

        return torch.from_numpy(a)
    if backend == "cupy":
        import cupy

        return cupy.asarray(a)
    import array_api_strict

    return array_api_strict.asarray(a)


def make_permuter(backend: str, seed: int):
    """``permute(n)``: a random permutation of ``range(n)`` drawn on the backend's device
    (the standard has no random numbers, so each library's own generator)."""
    if backend == "torch":
        import torch

        gen = torch.Generator()
        gen.manual_seed(seed)
        return lambda n: torch.randperm(n, generator=gen)
    if backend == "cupy":
        import cupy

        rng = cupy.random.default_rng(seed)
        return lambda n: cupy.argsort(rng.random(n))
    rng = np.random.default_rng(seed)
    if backend == "numpy":
        return rng.permutation
    import array_api_strict

    return lambda n: array_api_strict.asarray(rng.permutation(n))


def gpu_sync(backend: str) -> None:
    if backend == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()


def torch_device(backend: str) -> str:
    """Where the PyTorch contestant runs: CUDA beside CuPy, the CPU beside the CPU backends."""
    import torch

    if backend == "cupy":
        if not torch.cuda.is_available():
            raise Unavailable("torch here has no CUDA")
        return "cuda"
    return "cpu"


# --------------------------------------------------------------------------- the contestants


class Contestant:
    def epoch(self) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for the device, so the clock reads finished work."""


class PortnnModel(Contestant):
    """portnn's ``Model.train``: one epoch per call, silent, shuffled, data already on device."""

    compile = None  # train's default for the backend

    def __init__(self, X, y, batch, hidden, backend, seed, device=None):
        import portnn as pn

        if not callable(getattr(pn.Model, "train", None)):
            raise Unavailable("portnn.Model has no train() yet")
        try:
            from portnn import recipes
        except ImportError:
            raise Unavailable("portnn has no recipes module yet") from None
        recipe = recipes.get("fashion-mnist")
        # The other contestants are written out by hand with LR and DECAY: they must train
        # the network the recipe builds, or the ratios compare different work.
        settings = (recipe.sizes(hidden=hidden), recipe.learning_rate, recipe.decay)
        if settings != ((N_IN, hidden, hidden, N_OUT), LR, DECAY):
            raise RuntimeError(
                f"the fashion-mnist recipe (sizes, learning rate, decay) is now {settings}, but "
                f"this script's floors train {((N_IN, hidden, hidden, N_OUT), LR, DECAY)}"
            )
        self.backend = backend
        pn.set_backend(backend, device=device)
        pn.seed(seed)
        self.model = recipe.build(hidden=hidden)
        self.X, self.y = self.model.backend.asarray(X), self.model.backend.asarray(y)
        self.kwargs = {"epochs": 1, "batch_size": batch, "shuffle": True, "print_every": None}
        self.kwargs["compile"] = self.compile

    def epoch(self):
        self.model.train(self.X, self.y, **self.kwargs)

    def sync(self):
        self.model.backend.sync()

    def loss(self, X, y):
        return self.model.evaluate(self.model.backend.asarray(X), self.model.backend.asarray(y))


class PortnnTorch(PortnnModel):
    """portnn's ``Model.train`` on torch tensors, where the torch contestant runs."""

    def __init__(self, X, y, batch, hidden, backend, seed):
        if backend in ("torch", "array_api_strict"):
            raise Unavailable(f"only beside numpy or cupy (here the portnn row is {backend})")
        super().__init__(X, y, batch, hidden, "torch", seed, device=torch_device(backend))


class PortnnJax(PortnnModel):
    """portnn's ``Model.train`` on the JAX backend (CPU), the step compiled by jax.jit."""

    def __init__(self, X, y, batch, hidden, backend, seed):
        if backend != "numpy":
            raise Unavailable("the JAX contestants run on the CPU, beside the numpy backend")
        try:
            import jax  # noqa: F401
        except ImportError as exc:
            raise Unavailable("jax is not installed (pip install jax)") from exc
        super().__init__(X, y, batch, hidden, "jax", seed)


class PortnnTorchCompile(PortnnModel):
    """portnn's ``Model.train`` on torch tensors (CPU) with ``compile=True``."""

    compile = True
    skip = None  # why this run leaves it out (--quick: compiling takes about 40 s a row)

    def __init__(self, X, y, batch, hidden, backend, seed):
        if backend != "numpy":
            raise Unavailable("beside numpy only (the CPU)")
        if self.skip:
            raise Unavailable(self.skip)
        super().__init__(X, y, batch, hidden, "torch", seed)


class BareLoop(Contestant):
    """The network written as nothing but Array API calls on the arrays' own namespace.

    Per epoch: one device permutation, then per batch (a gather by a slice of it):
    forward, the fused softmax + cross-entropy backward ``(softmax - onehot) / N``, the Dense
    and ReLU backwards (no gradient of the data), and the book's Adam update.
    """

    def __init__(self, X, y, batch, hidden, backend, seed):
        from array_api_compat import array_namespace, device

        self.X, self.y = to_device(X, backend), to_device(y, backend)
        self.xp = xp = array_namespace(self.X)
        self.backend, self.batch = backend, batch
        self.params = [to_device(p, backend) for p in init_params(hidden, seed)]
        self.momentums = [xp.zeros_like(p) for p in self.params]
        self.caches = [xp.zeros_like(p) for p in self.params]
        self.classes = xp.arange(N_OUT, device=device(self.X))
        self.iterations = 0
        self.permute = make_permuter(backend, seed + 1)

    def forward(self, x):
        xp = self.xp
        W1, b1, W2, b2, W3, b3 = self.params
        z1 = x @ W1 + b1
        a1 = xp.maximum(z1, 0.0)
        z2 = a1 @ W2 + b2
        a2 = xp.maximum(z2, 0.0)
        z3 = a2 @ W3 + b3
        exp = xp.exp(z3 - xp.max(z3, axis=1, keepdims=True))
        return (z1, a1, z2, a2), exp / xp.sum(exp, axis=1, keepdims=True)

    def step(self, x, y):
        xp = self.xp
        _, _, W2, _, W3, _ = self.params
        (z1, a1, z2, a2), probs = self.forward(x)
        onehot = xp.astype(y[:, None] == self.classes, probs.dtype)
        dz3 = (probs - onehot) / x.shape[0]
        # ReLU's backward as a product with the 0/1 mask, as portnn does (faster than where).
        dz2 = (dz3 @ W3.T) * xp.astype(z2 > 0, dz3.dtype)
        dz1 = (dz2 @ W2.T) * xp.astype(z1 > 0, dz2.dtype)
        grads = [
            x.T @ dz1,
            xp.sum(dz1, axis=0, keepdims=True),
            a1.T @ dz2,
            xp.sum(dz2, axis=0, keepdims=True),
            a2.T @ dz3,
            xp.sum(dz3, axis=0, keepdims=True),
        ]
        self.adam(grads)

    def adam(self, grads):
        """The book's Adam: decayed rate, both moments bias-corrected with ``1 - beta**(t+1)``,
        the corrections folded into two scalars (two fewer passes over each parameter):
        ``(m / c1) / (sqrt(v / c2) + eps) == (sqrt(c2) / c1) m / (sqrt(v) + eps sqrt(c2))``."""
        xp = self.xp
        lr = LR / (1.0 + DECAY * self.iterations)
        root_c2 = math.sqrt(1 - BETA_2 ** (self.iterations + 1))
        scale = lr * root_c2 / (1 - BETA_1 ** (self.iterations + 1))
        eps = EPS * root_c2
        for i, g in enumerate(grads):
            m = BETA_1 * self.momentums[i] + (1 - BETA_1) * g
            v = BETA_2 * self.caches[i] + (1 - BETA_2) * (g * g)
            self.params[i] = self.params[i] - scale * m / (xp.sqrt(v) + eps)
            self.momentums[i], self.caches[i] = m, v
        self.iterations += 1

    def epoch(self):
        """Each batch is gathered by its slice of the permutation: no shuffled copy of the
        whole data set (a 180 MiB copy an epoch at full size)."""
        xp, n = self.xp, self.X.shape[0]
        perm = self.permute(n)
        for start in range(0, n, self.batch):
            rows = perm[start : min(start + self.batch, n)]  # array_api_strict: no slice past n
            self.step(xp.take(self.X, rows, axis=0), xp.take(self.y, rows, axis=0))

    def sync(self):
        gpu_sync(self.backend)

    def loss(self, X, y):
        """Mean cross-entropy (clipped as the book does) and accuracy over ``X``."""
        xp = self.xp
        X, y = to_device(X, self.backend), to_device(y, self.backend)
        _, probs = self.forward(X)
        onehot = xp.astype(y[:, None] == self.classes, probs.dtype)
        p = xp.clip(xp.sum(probs * onehot, axis=1), 1e-7, 1 - 1e-7)
        acc = xp.mean(xp.astype(xp.argmax(probs, axis=1) == y, probs.dtype))
        return float(xp.mean(-xp.log(p))), float(acc)


class TorchEager(Contestant):
    """PyTorch as its users write it: nn.Sequential, F.cross_entropy, optim.Adam, autograd.
    Same initial weights as the bare loop; torch's Adam has no learning-rate decay."""

    def __init__(self, X, y, batch, hidden, backend, seed):
        try:
            import torch
        except ImportError as exc:
            raise Unavailable("torch is not installed") from exc
        self.torch, self.batch = torch, batch
        self.device = torch_device(backend)
        nn = torch.nn
        self.net = nn.Sequential(
            nn.Linear(N_IN, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, N_OUT),
        ).to(self.device)
        params = init_params(hidden, seed)
        with torch.no_grad():
            for i, layer in enumerate(self.net[::2]):
                layer.weight.copy_(torch.from_numpy(params[2 * i].T.copy()))
                layer.bias.copy_(torch.from_numpy(params[2 * i + 1][0]))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=LR, eps=EPS)
        self.X = torch.from_numpy(X).to(self.device)
        self.y = torch.from_numpy(y).to(self.device)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(seed + 1)

    def epoch(self):
        torch, n = self.torch, self.X.shape[0]
        perm = torch.randperm(n, generator=self.gen, device=self.device)
        X, y = self.X[perm], self.y[perm]
        for start in range(0, n, self.batch):
            self.opt.zero_grad(set_to_none=True)
            out = self.net(X[start : start + self.batch])
            loss = torch.nn.functional.cross_entropy(out, y[start : start + self.batch])
            loss.backward()
            self.opt.step()

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def loss(self, X, y):
        torch = self.torch
        with torch.no_grad():
            out = self.net(torch.from_numpy(X).to(self.device))
            y = torch.from_numpy(y).to(self.device)
            loss = torch.nn.functional.cross_entropy(out, y)
            return float(loss), float((out.argmax(1) == y).float().mean())


class JaxJit(Contestant):
    """JAX as its users write it: the whole training step (forward, jax.grad of the mean
    cross-entropy, the book's Adam with decay) compiled by ``jax.jit``, which lets XLA fuse
    the update. CPU only; included where ``jax`` is installed (``pip install jax``)."""

    def __init__(self, X, y, batch, hidden, backend, seed):
        if backend != "numpy":
            raise Unavailable("the JAX contestant runs on the CPU, beside the numpy backend")
        try:
            import jax
            import jax.numpy as jnp
        except ImportError as exc:
            raise Unavailable("jax is not installed (pip install jax)") from exc
        self.jax, self.batch = jax, batch
        self.params = [jnp.asarray(p) for p in init_params(hidden, seed)]
        self.state = [jnp.zeros_like(p) for p in self.params] * 2
        self.t = 0
        self.X, self.y = jnp.asarray(X), jnp.asarray(y.astype(np.int32))
        self.key = jax.random.PRNGKey(seed + 1)

        def loss_of(params, x, labels):
            w1, b1, w2, b2, w3, b3 = params
            a1 = jax.nn.relu(x @ w1 + b1)
            a2 = jax.nn.relu(a1 @ w2 + b2)
            logits = a2 @ w3 + b3
            logp = jax.nn.log_softmax(logits)
            return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

        def step(params, state, t, x, labels):
            grads = jax.grad(loss_of)(params, x, labels)
            lr = LR / (1.0 + DECAY * t)
            c1, c2 = 1 - BETA_1 ** (t + 1), 1 - BETA_2 ** (t + 1)
            n = len(params)
            ms, vs, new = [], [], []
            for p, g, m, v in zip(params, grads, state[:n], state[n:], strict=True):
                m = BETA_1 * m + (1 - BETA_1) * g
                v = BETA_2 * v + (1 - BETA_2) * g * g
                new.append(p - lr * (m / c1) / (jnp.sqrt(v / c2) + EPS))
                ms.append(m)
                vs.append(v)
            return new, ms + vs

        self.step = jax.jit(step)
        self.loss_of = jax.jit(loss_of)

    def epoch(self):
        jax, n = self.jax, self.X.shape[0]
        self.key, sub = jax.random.split(self.key)
        perm = jax.random.permutation(sub, n)
        X, y = self.X[perm], self.y[perm]
        for start in range(0, n, self.batch):
            self.params, self.state = self.step(
                self.params,
                self.state,
                self.t,
                X[start : start + self.batch],
                y[start : start + self.batch],
            )
            self.t += 1

    def sync(self):
        self.jax.block_until_ready(self.params)

    def loss(self, X, y):
        jnp = self.jax.numpy
        w1, b1, w2, b2, w3, b3 = self.params
        x = jnp.asarray(X)
        logits = self.jax.nn.relu(self.jax.nn.relu(x @ w1 + b1) @ w2 + b2) @ w3 + b3
        acc = jnp.mean(jnp.argmax(logits, axis=1) == jnp.asarray(y))
        return float(self.loss_of(self.params, x, jnp.asarray(y.astype(np.int32)))), float(acc)


class GemmFloor(Contestant):
    """The 8 matrix products of one training step, per batch of the data, nothing else:
    3 forward (``x W1, a1 W2, a2 W3``), 3 weight gradients (``x.T dz1, a1.T dz2, a2.T dz3``),
    2 input gradients (``dz3 W3.T, dz2 W2.T``)."""

    def __init__(self, X, y, batch, hidden, backend, seed):
        self.X = to_device(X, backend)
        self.backend, self.batch = backend, batch
        rng = np.random.default_rng(seed)

        def arr(*shape):  # small nonzero values: no zero or denormal fast paths
            return to_device((0.01 * rng.standard_normal(shape)).astype(np.float32), backend)

        self.W1, self.W2, self.W3 = arr(N_IN, hidden), arr(hidden, hidden), arr(hidden, N_OUT)
        self.a1, self.a2, self.dz1, self.dz2 = (arr(batch, hidden) for _ in range(4))
        self.dz3 = arr(batch, N_OUT)

    def epoch(self):
        n, b = self.X.shape[0], self.batch
        W1, W2, W3 = self.W1, self.W2, self.W3
        for start in range(0, n, b):
            x = self.X[start : min(start + b, n), ...]
            k = x.shape[0]
            a1, a2, dz1, dz2, dz3 = self.a1, self.a2, self.dz1, self.dz2, self.dz3
            if k != b:
                a1, a2, dz1, dz2, dz3 = (a[:k, ...] for a in (a1, a2, dz1, dz2, dz3))
            x @ W1, a1 @ W2, a2 @ W3
            x.T @ dz1, a1.T @ dz2, a2.T @ dz3
            dz3 @ W3.T, dz2 @ W2.T

    def sync(self):
        gpu_sync(self.backend)


KINDS = {
    "portnn": PortnnModel,
    "portnn-torch": PortnnTorch,
    "portnn-jax": PortnnJax,
    "portnn-torch-compile": PortnnTorchCompile,
    "bare": BareLoop,
    "torch": TorchEager,
    "jax": JaxJit,
    "gemm": GemmFloor,
}


def build(name, X, y, row, backend, seed):
    return KINDS[name](X, y, ROWS[row]["batch"], ROWS[row]["hidden"], backend, seed)


def timed_epoch(c: Contestant) -> tuple[float, float]:
    """Wall-clock seconds of one epoch (the measure), and this process's CPU seconds in it
    (all threads: a hint of how much of the wall time the process worked, on a busy machine)."""
    c.sync()
    cpu, start = time.process_time(), time.perf_counter()
    c.epoch()
    c.sync()
    return time.perf_counter() - start, time.process_time() - cpu


def error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, Unavailable):
        return text
    return f"{type(exc).__name__}: {text}"[:100]


# --------------------------------------------------------------------------- one row, timed


def bench_row(row, X, y, args, log) -> list[dict]:
    """Build every contestant, one warm-up epoch each, then ``args.epochs`` rounds of one timed
    epoch each, the order rotated every round. Returns one result per contestant."""
    results, live = {}, []
    for name in CONTESTANTS:
        res = {"row": row, **ROWS[row], "contestant": name, "times": [], "cpu_times": []}
        res["error"] = None
        results[name] = res
        try:
            c = build(name, X, y, row, args.backend, args.seed)
            res["warmup"], _ = timed_epoch(c)
            live.append((name, c))
            log(f"  {row:11} {name:6} warm-up {res['warmup']:.3f} s")
        except Exception as exc:  # a contestant that fails is reported, the others go on
            res["error"] = error_text(exc)
            log(f"  {row:11} {name:6} n/a: {res['error']}")
    for r in range(args.epochs):
        shift = r % max(len(live), 1)
        for name, c in live[shift:] + live[:shift]:
            if results[name]["error"]:
                continue
            try:
                wall, cpu = timed_epoch(c)
                results[name]["times"].append(wall)
                results[name]["cpu_times"].append(cpu)
            except Exception as exc:
                results[name]["error"] = error_text(exc)
        log(
            f"  {row:11} round {r + 1}/{args.epochs}: "
            + ", ".join(
                f"{n} {results[n]['times'][-1]:.3f}" for n, _ in live if results[n]["times"]
            )
        )
    for res in results.values():
        if res["times"] and not res["error"]:
            res["median"] = statistics.median(res["times"])
            res["min"], res["max"] = min(res["times"]), max(res["times"])
            res["samples_per_s"] = X.shape[0] / res["median"]
            res["cpu_median"] = statistics.median(res["cpu_times"])
    base = results["portnn"].get("median")
    ours = results["portnn"]["times"]
    for res in results.values():
        if base and res.get("median"):
            res["portnn_over_this"] = base / res["median"]
            # Each round times every contestant back to back, so the ratio within a round
            # cancels the slow swings of a shared machine; the median of those is the steadier
            # figure when the epoch times spread.
            res["portnn_over_this_per_round"] = statistics.median(
                a / b for a, b in zip(ours, res["times"], strict=False)
            )
    return list(results.values())


# --------------------------------------------------------------------------- memory


def _proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss() -> int:
    rss = _proc_status("VmRSS")
    return peak_rss() if rss is None else rss


def peak_rss() -> int:
    """This process's peak resident set. Linux: VmHWM, the high-water mark of this process's
    own memory map; ``ru_maxrss`` would do elsewhere, but on Linux it survives exec, so a
    child started from a big parent reports at least the parent's size."""
    hwm = _proc_status("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def gpu_memory() -> dict:
    """The GPU allocators' high-water marks: CuPy's pool never hands blocks back on its own,
    so what it holds is its peak; torch keeps its own peak counters."""
    out = {}
    if "cupy" in sys.modules:
        import cupy

        out["cupy_pool_bytes"] = cupy.get_default_memory_pool().total_bytes()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["torch_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
            out["torch_max_reserved_bytes"] = torch.cuda.max_memory_reserved()
    if out:
        out["gpu_peak_bytes"] = out.get("cupy_pool_bytes", 0) + out.get(
            "torch_max_reserved_bytes", 0
        )
    return out


def memory_only(args) -> None:
    """In a fresh process: data, then one contestant's warm-up and one more epoch; print JSON."""
    X, y = make_data(args.samples, args.seed)
    if args.backend == "cupy":
        import cupy  # noqa: F401  (so the pool exists before anything is measured)
    out = {"contestant": args.memory_only, "row": args.memory_row}
    out["data_bytes"] = X.nbytes + y.nbytes
    out["rss_before_bytes"] = current_rss()
    try:
        c = build(args.memory_only, X, y, args.memory_row, args.backend, args.seed)
        c.epoch()
        c.epoch()
        c.sync()
        out["peak_rss_bytes"] = peak_rss()
        out.update(gpu_memory())
    except Exception as exc:
        out["error"] = error_text(exc)
    print(json.dumps(out))


def measure_memory(row, name, args) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--backend",
        args.backend,
        "--samples",
        str(args.samples),
        "--seed",
        str(args.seed),
        "--memory-only",
        name,
        "--memory-row",
        row,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"[:120]}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- the report


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str | None:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return None


def machine_info(args) -> dict:
    import array_api_compat

    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "array_api_compat": array_api_compat.__version__,
        "backend": args.backend,
        "load_average_start": load_average(),
    }
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        pass
    try:
        import portnn

        info["portnn"] = portnn.__version__
    except Exception as exc:
        info["portnn"] = f"not importable ({error_text(exc)})"
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if args.backend == "cupy" and torch.cuda.is_available():
            info["torch_gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    if args.backend == "cupy":
        import cupy

        info["cupy"] = cupy.__version__
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    if args.backend == "array_api_strict":
        import array_api_strict

        info["array_api_strict"] = array_api_strict.__version__
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            f"{p.get('internal_api')} {p.get('version')} x{p.get('num_threads')}"
            for p in threadpool_info()
        ]
    except ImportError:
        pass
    prefixes = ("OMP_", "OPENBLAS_", "MKL_", "NVPL_", "BLIS_", "GOTO", "VECLIB_", "CUPY_")
    info["env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith(prefixes)}
    return info


def mib(n: float | None) -> str:
    return "" if n is None else f"{n / 2**20:,.0f}"


def report(info: dict, results: list[dict], args) -> str:
    gpu = args.backend == "cupy"
    lines = [f"### portnn training benchmark: `{args.backend}` backend", ""]
    machine = f"{info['cpu']} ({info['logical_cpus']} logical CPUs), {info['platform']}"
    if info.get("gpu"):
        machine += f"; GPU: {info['gpu']}"
    lines.append(f"- machine: {machine}; date: {info['date']}")
    versions = [f"python {info['python']}", f"numpy {info['numpy']}"]
    if info.get("numpy_blas"):
        versions[-1] += f" ({info['numpy_blas']})"
    for key in ("torch", "cupy", "array_api_strict", "array_api_compat", "portnn"):
        if key in info:
            versions.append(f"{key} {info[key]}")
    lines.append("- " + ", ".join(versions))
    threads = f"torch threads {info.get('torch_threads', 'n/a')}"
    if info.get("threadpools"):
        threads += "; BLAS/OpenMP pools: " + ", ".join(info["threadpools"])
    env = ", ".join(f"{k}={v}" for k, v in info["env"].items()) or "none of OMP_/OPENBLAS_/MKL_ set"
    lines.append(f"- threads: {threads}; env: {env}")
    if info.get("load_average_start"):
        loads = [info["load_average_start"], info.get("load_average_end") or ""]
        busy = max(float(v) for text in loads for v in text.split()[:1]) > info["logical_cpus"]
        lines.append(
            f"- load average (1, 5, 15 min) at start: {loads[0]}; at end: {loads[1]}"
            + ("; above the CPU count: other work shared the CPUs" if busy else "")
        )
    lines.append(
        f"- network 784-H-H-10, ReLU, softmax + cross-entropy, Adam(lr=0.001, decay=1e-3; torch "
        f"without decay), float32; {args.samples:,} synthetic samples; median of {args.epochs} "
        "epochs after 1 warm-up, contestants alternated round-robin in one process"
    )
    lines.append("")
    mem_head = "GPU peak MiB" if gpu else "peak RSS MiB"
    lines.append(
        "| row | contestant | epoch median s | min–max s | CPU s | samples/s | portnn ÷ this "
        f"| same, per round | {mem_head} |"
    )
    lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for res in results:
        row = f"{res['row']} (batch {res['batch']}, H {res['hidden']})"
        mem = res.get("memory") or {}
        mem_value = mem.get("gpu_peak_bytes") if gpu else mem.get("peak_rss_bytes")
        mem_text = mib(mem_value) if mem_value is not None else ("n/a" if mem.get("error") else "")
        if res.get("median") is None:
            cells = ["n/a", "", "", "", "", "", mem_text]
            label = f"{LABELS[res['contestant']]} ({res['error'] or 'no timings'})"
        else:
            ratio = res.get("portnn_over_this")
            cells = [
                f"{res['median']:.3f}",
                f"{res['min']:.3f}–{res['max']:.3f}",
                f"{res['cpu_median']:.2f}",
                f"{res['samples_per_s']:,.0f}",
                f"{ratio:.2f}" if ratio else "n/a",
                f"{res['portnn_over_this_per_round']:.2f}" if ratio else "n/a",
                mem_text,
            ]
            label = LABELS[res["contestant"]]
        lines.append(f"| {row} | {label} | " + " | ".join(cells) + " |")
    if any(res.get("memory") for res in results):
        base = next((r["memory"] for r in results if r.get("memory", {}).get("data_bytes")), {})
        note = "- memory: one warm-up and one epoch in a fresh subprocess per contestant; " + (
            "CuPy pool total_bytes (its high-water) + torch max_memory_reserved"
            if gpu
            else "peak RSS (VmHWM), which includes the interpreter, the imports and the data"
        )
        if base:
            note += (
                f" (data {mib(base['data_bytes'])} MiB; RSS before building a contestant "
                f"{mib(base['rss_before_bytes'])} MiB)"
            )
        lines += ["", note]
    return "\n".join(lines)


# --------------------------------------------------------------------------- sanity check


def check(args, log) -> None:
    """Train each contestant a few epochs on a learnable problem and print its loss: the bare
    loop (and the others) must learn, or their timings mean nothing."""
    X, y = make_data(args.samples, args.seed, learnable=True)
    for name in ("bare", "torch", "jax", "portnn"):
        try:
            c = build(name, X, y, "default", args.backend, args.seed)
            losses = [c.loss(X, y)]
            for _ in range(args.epochs):
                c.epoch()
                losses.append(c.loss(X, y))
            text = " -> ".join(f"{loss:.4f} (acc {acc:.3f})" for loss, acc in losses)
            print(f"{name:6} loss (accuracy) per epoch: {text}")
        except Exception as exc:
            print(f"{name:6} n/a: {error_text(exc)}")


# --------------------------------------------------------------------------- main


def check_backend(backend: str) -> None:
    """Stop with a plain message when the backend's library (or, for CuPy, a GPU) is missing."""
    module = {"array_api_strict": "array_api_strict"}.get(backend, backend)
    try:
        lib = __import__(module)
        if backend == "cupy" and lib.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:
        sys.exit(f"bench_train: the {backend!r} backend cannot run here: {error_text(exc)}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=BACKENDS, default="numpy")
    p.add_argument("--epochs", type=int, default=None, help="measured epochs per contestant (5)")
    p.add_argument("--samples", type=int, default=None, help="synthetic samples (60000)")
    p.add_argument("--quick", action="store_true", help="4096 samples, 2 epochs, no memory runs")
    p.add_argument(
        "--rows",
        default=",".join(ROWS),
        help=f"comma-separated rows to run, of {', '.join(ROWS)} (default: all)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--check", action="store_true", help="train on a learnable problem and print the losses"
    )
    p.add_argument("--memory-only", choices=CONTESTANTS, help=argparse.SUPPRESS)
    p.add_argument("--memory-row", choices=tuple(ROWS), default="default", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.samples is None:
        args.samples = 4096 if args.quick else 60000
    if args.epochs is None:
        args.epochs = 2 if args.quick or args.check else 5
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in args.rows:
        if r not in ROWS:
            p.error(f"unknown row {r!r}; choose from {', '.join(ROWS)}")
    if args.epochs < 1 or args.samples < 1:
        p.error("--epochs and --samples must be positive")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    check_backend(args.backend)
    if args.memory_only:
        memory_only(args)
        return
    if args.check:
        check(args, log)
        return
    if args.quick:
        PortnnTorchCompile.skip = "left out of --quick runs: torch.compile takes ~40 s a row"
    info = machine_info(args)
    X, y = make_data(args.samples, args.seed)
    results = []
    for row in args.rows:
        log(f"{row}: batch {ROWS[row]['batch']}, hidden {ROWS[row]['hidden']}")
        row_results = bench_row(row, X, y, args, log)
        if not (args.quick or args.no_memory):
            for res in row_results:
                if res.get("median") is not None:
                    res["memory"] = measure_memory(row, res["contestant"], args)
                    log(f"  {row:11} {res['contestant']:6} memory {res['memory']}")
        results += row_results
    info["load_average_end"] = load_average()
    text = report(info, results, args)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "results": results}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
