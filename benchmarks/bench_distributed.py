#!/usr/bin/env python
"""Data-parallel training over MPI: what the all-reduce costs against a step's compute.

The network is the book's Fashion-MNIST one, ``portnn.recipes.build("fashion-mnist")``:
784-128-128-10, Adam, float32, 118,282 parameters (462 KiB of gradients per step). It trains
on seeded synthetic data (inputs uniform in [-1, 1], labels 0..9), with 128 samples per
rank per step. Three measurements:

1. Steps, at each rank count. Every rank times a plain ``Model.train`` on its own 128-sample
   batches (no communicator) and a distributed ``Model.train(comm=...)`` with global batch
   128 x ranks, alternately, after a barrier. A communicator subclass times each gradient
   all-reduce, after a barrier it also times. The table thus splits the distributed step
   into the wait for the slowest rank, the all-reduce's transfer, and the rest. "overhead" is
   (rest - plain step) / plain step, the median of its value in each round: what the
   wrapper costs beyond the all-reduce itself (packing, scaling, the per-epoch broadcast,
   the reduced figures). The plain steps run while the other ranks compute too, so both
   sides share the machine alike.
2. The all-reduce alone against message size: median time, algorithm bandwidth
   (bytes / time) and bus bandwidth (x 2(N-1)/N, NCCL's convention: what each link carried).
3. ``--project``: the paper projection for GPUs in benchmarks/README.md, from the formula
   and the assumptions printed with it.
4. ``--wrapper``: the wrapper's own work per step, in one process (a communicator of one
   rank, so no transfer), for this network and for the book's small chapter 10 one (2-64-3,
   where per-step Python work shows most): ``DistributedOptimizer.allreduce_gradients`` on
   the network's gradients (packing, the two extra slots, unpacking, the bookkeeping), and
   its ``step`` against the wrapped optimizer's ``step`` alone. Medians over ``--rounds``
   rounds of ``--steps`` calls: microseconds that the noise of (1) hides.

    python benchmarks/bench_distributed.py                    # 1 and 2 ranks, markdown tables
    python benchmarks/bench_distributed.py --ranks 1,2,4 --rounds 7 --steps 100
    python benchmarks/bench_distributed.py --project          # the projection only (no MPI)
    python benchmarks/bench_distributed.py --wrapper          # the wrapper's own work (one rank)
    mpiexec -n 2 python benchmarks/bench_distributed.py --worker    # one job; JSON on stdout

Each rank runs with one BLAS/OpenMP thread (``--threads``), so N ranks use N cores: on a
machine with fewer cores than ranks the numbers measure contention instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 128  # per rank per step
FIGURES = ("plain", "step", "wait", "transfer", "overhead")  # a rank's medians, in seconds
SIZES = [2**k for k in range(10, 27, 2)]  # all-reduce message sizes in bytes: 1 KiB .. 64 MiB


# --- one MPI job ----------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    import portnn as pn
    from portnn import distributed as dist
    from portnn import recipes

    class TimedCommunicator(dist.Communicator):
        """Times the gradient all-reduces (the figures' small one at logging points aside):
        a barrier first (the wait for the slowest rank), then the transfer."""

        wait = transfer = 0.0
        calls = 0

        def allreduce(self, buffer: np.ndarray) -> None:
            if buffer.size <= 1024:
                return super().allreduce(buffer)
            start = time.perf_counter()
            if self.size > 1:
                self.mpi.Barrier()
            ready = time.perf_counter()
            super().allreduce(buffer)
            self.wait += ready - start
            self.transfer += time.perf_counter() - ready
            self.calls += 1

    comm = TimedCommunicator()
    n = comm.size
    pn.set_backend(args.backend)
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (BATCH * n * args.steps, 784)).astype(np.float32)
    y = rng.integers(0, 10, BATCH * n * args.steps)
    pn.seed(0)
    plain, distributed = recipes.build("fashion-mnist"), recipes.build("fashion-mnist")
    mine = dist.shard(len(X), comm)  # the plain run: this rank's share, in steps of 128
    Xp, yp = X[mine], y[mine]

    def plain_epoch() -> float:
        comm.barrier()
        start = time.perf_counter()
        plain.train(Xp, yp, epochs=1, batch_size=BATCH, print_every=0)
        return (time.perf_counter() - start) / args.steps

    def distributed_epoch() -> tuple[float, float, float]:
        comm.barrier()
        wait, transfer, calls = comm.wait, comm.transfer, comm.calls
        start = time.perf_counter()
        distributed.train(X, y, epochs=1, batch_size=BATCH * n, print_every=0, comm=comm)
        step = (time.perf_counter() - start) / args.steps
        calls = max(comm.calls - calls, 1)
        return step, (comm.wait - wait) / calls, (comm.transfer - transfer) / calls

    plain_epoch(), distributed_epoch()  # warm-up
    rows = []
    for r in range(args.rounds):
        if r % 2:
            d, w, a = distributed_epoch()
            p = plain_epoch()
        else:
            p = plain_epoch()
            d, w, a = distributed_epoch()
        rows.append((p, d, w, a, (d - w - a - p) / p))
    # each rank's medians (the overhead: the median of each round's)
    everyone = comm.allgather([statistics.median(col) for col in zip(*rows, strict=True)])
    line = ""
    if comm.is_root:
        from portnn.distributed import describe

        line = describe(distributed, comm, BATCH * n)
    sweep = bandwidth(comm, args.min_seconds) if n > 1 and not args.no_sweep else []
    if comm.is_root:
        print(
            json.dumps(
                {
                    "ranks": n,
                    "library": comm.library,
                    "path": line,
                    # rank 0's medians; every rank's under per_rank
                    **dict(zip(FIGURES, everyone[0], strict=True)),
                    "per_rank": everyone,
                    "sweep": sweep,
                }
            )
        )


def bandwidth(comm: Any, min_seconds: float) -> list[dict]:
    """Median all-reduce time of float32 buffers of each size in SIZES."""
    results = []
    for size in SIZES:
        buffer = np.ones(size // 4, np.float32)
        comm.allreduce(buffer)  # warm-up
        times: list[float] = []
        total = 0.0
        while len(times) < 5 or total < min_seconds:
            comm.barrier()
            start = time.perf_counter()
            comm.allreduce(buffer)
            times.append(time.perf_counter() - start)
            # every rank must agree on whether to go on
            total = comm.mpi.allreduce(sum(times), op=comm.MPI.MAX)
            if len(times) >= 1000:
                break
        median = statistics.median(times)
        median = comm.mpi.allreduce(median, op=comm.MPI.MAX)
        n = comm.size
        results.append(
            {
                "bytes": size,
                "seconds": median,
                "algbw": size / median,
                "busbw": size / median * 2 * (n - 1) / n,
            }
        )
    return results


# --- the wrapper alone, in one process ------------------------------------------------------
WRAPPED = ("spiral", "fashion-mnist")  # the book's chapter 10 and 19 networks, batches of 128


def wrapper(args: argparse.Namespace) -> None:
    import portnn as pn
    from portnn import distributed as dist

    pn.set_backend(args.backend)
    comm = dist.Communicator()
    if comm.size != 1:
        sys.exit("bench_distributed --wrapper runs in one process, without mpiexec")
    print(header(args, comm.library) + "\n")
    rows = [wrapper_costs(name, comm, args) for name in WRAPPED]
    print("| per step, one rank, us | " + " | ".join(r[0] for r in rows) + " |")
    print("|---|" + "--:|" * len(rows))
    for i, what in enumerate(
        (
            "gradients (parameters)",
            "allreduce_gradients: pack, extra slots, unpack, bookkeeping",
            "DistributedOptimizer.step",
            "the wrapped optimizer's step alone",
            "step beyond the wrapped optimizer's (median per round)",
        ),
        1,
    ):
        print(f"| {what} | " + " | ".join(r[i] for r in rows) + " |")


def wrapper_costs(name: str, comm: Any, args: argparse.Namespace) -> tuple[str, ...]:
    """``name``'s network: its parameter count, then the medians in microseconds."""
    import portnn as pn
    from portnn import distributed as dist
    from portnn import recipes

    rng = np.random.default_rng(0)
    pn.seed(0)
    model = recipes.build(name)
    model.finalize()
    b = model.backend
    X = b.asarray(rng.uniform(-1, 1, (BATCH, recipes.get(name).n_inputs)).astype(np.float32))
    y = b.asarray(rng.integers(0, recipes.get(name).n_outputs, BATCH))
    model.backward(model.forward(X, training=True), y)
    layers = model.trainable_layers
    grads = [(la, "d" + n, getattr(la, "d" + n)) for la in layers for n in la.param_names]
    opt = dist.DistributedOptimizer(model.optimizer, comm, layers=layers)

    def restore() -> None:  # the same gradients every call (both sides pay for this)
        for layer, grad_name, grad in grads:
            setattr(layer, grad_name, grad)

    def reduce() -> None:
        restore()
        opt.allreduce_gradients(samples=BATCH, total=BATCH)

    def step() -> None:
        restore()
        opt.step(layers, samples=BATCH, total=BATCH)

    def alone() -> None:
        restore()
        model.optimizer.step(layers)

    def per_call(fn: Any) -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        return (time.perf_counter() - start) / args.steps

    for fn in (reduce, step, alone):  # warm-up
        per_call(fn)
    rounds = [[per_call(fn) for fn in (reduce, step, alone)] for _ in range(args.rounds)]
    medians = [statistics.median(col) * 1e6 for col in zip(*rounds, strict=True)]
    beyond = statistics.median((row[1] - row[2]) * 1e6 for row in rounds)
    size = sum(g.size for _, _, g in grads)
    return (name, f"{size:,}", *(f"{v:.1f}" for v in (*medians, beyond)))


# --- the launcher: one job per rank count, then the tables ----------------------------------
def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"  # pip's mpich, beside mpi4py
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        sys.exit("bench_distributed: no mpiexec found; pip install 'portnn[mpi]'")
    return found


def run_job(ranks: int, args: argparse.Namespace) -> dict:
    env = {**os.environ}
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(args.threads)
    command = [mpiexec(), "-n", str(ranks), sys.executable, __file__, "--worker"]
    command += ["--steps", str(args.steps), "--rounds", str(args.rounds)]
    command += ["--backend", args.backend, "--min-seconds", str(args.min_seconds)]
    command += ["--no-sweep"] * args.no_sweep
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"bench_distributed: the {ranks}-rank job failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def header(args: argparse.Namespace, library: str) -> str:
    import mpi4py

    import portnn as pn

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load}; {datetime.date.today()}; Python {platform.python_version()}, portnn "
        f"{pn.__version__}, numpy {np.__version__}, mpi4py {mpi4py.__version__}, {library}; "
        f"backend {args.backend}, {args.threads} BLAS thread(s) per rank, {args.steps} steps "
        f"per epoch, median of {args.rounds} rounds"
    )


def report(jobs: list[dict], args: argparse.Namespace) -> None:
    print(header(args, jobs[0]["library"]) + "\n")
    for job in jobs:
        print(f"- {job['ranks']} rank(s): {job['path']}")
    print(
        "\n| ranks | plain step ms | distributed step ms | wait for the slowest rank ms "
        "| all-reduce transfer ms | rest ms | overhead beyond the all-reduce (each rank) |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for job in jobs:
        p, d, w, a = (job[k] * 1e3 for k in ("plain", "step", "wait", "transfer"))
        overheads = ", ".join(f"{rank[4]:+.1%}" for rank in job["per_rank"])
        print(
            f"| {job['ranks']} | {p:.3f} | {d:.3f} | {w:.3f} | {a:.3f} | {d - w - a:.3f} "
            f"| {overheads} |"
        )
    for job in jobs:
        if not job["sweep"]:
            continue
        n = job["ranks"]
        print(f"\nAll-reduce of float32 buffers, {n} ranks ({job['library']}, shared memory):\n")
        print("| message | median time | algorithm bandwidth | bus bandwidth |")
        print("|--:|--:|--:|--:|")
        for row in job["sweep"]:
            print(
                f"| {_bytes(row['bytes'])} | {row['seconds'] * 1e6:,.1f} us "
                f"| {row['algbw'] / 1e9:.2f} GB/s | {row['busbw'] / 1e9:.2f} GB/s |"
            )


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:g} {unit}"
        n /= 1024
    return f"{n:g} TiB"


# --- the projection on paper ------------------------------------------------------------------
PARAMETERS = 118_282  # 784*128 + 128 + 128*128 + 128 + 128*10 + 10
GRAD_BYTES = 4 * PARAMETERS  # float32
STEP_FLOOR = 200e-6  # s: a GPU step of this network at small batches (dozens of kernel launches)
FLOPS = 40e12  # float32 FLOP/s a GPU sustains on these GEMMs (assumed, H100-class)
FABRICS = {  # name: (per-GPU bandwidth in bytes/s, latency per hop in s), GPU counts
    "NVLink, one node": (300e9, 2e-6, (8,)),
    "InfiniBand 400 Gb/s": (50e9, 5e-6, (8, 64, 512)),
    "Ethernet 100 Gb/s": (12e9, 10e-6, (8, 64, 512)),
}
BATCHES = (128, 1024, 8192)


def compute_time(batch: int) -> float:
    """One rank's step: a launch-bound floor, then 6 FLOP per parameter per sample."""
    return max(STEP_FLOOR, 6 * PARAMETERS * batch / FLOPS)


def ring_time(n: int, bandwidth: float, alpha: float, size: float = GRAD_BYTES) -> float:
    """Ring all-reduce: 2(N-1)/N x bytes / bandwidth, plus 2(N-1) hops of latency."""
    return 2 * (n - 1) / n * size / bandwidth + 2 * (n - 1) * alpha


def tree_time(n: int, bandwidth: float, alpha: float, size: float = GRAD_BYTES) -> float:
    """(Double binary) tree all-reduce, NCCL's choice for small messages on many GPUs:
    2 log2(N) hops of latency, about 2 x bytes / bandwidth."""
    return 2 * size / bandwidth + 2 * math.log2(n) * alpha


def efficiency(batch: int, allreduce: float) -> float:
    """Scaling efficiency of a step that all-reduces after its compute (no overlap)."""
    return compute_time(batch) / (compute_time(batch) + allreduce)


def smallest_batch(allreduce: float) -> int | None:
    """The smallest power-of-two batch per rank with 90% efficiency (up to 2**23)."""
    return next((b for b in (2**k for k in range(4, 24)) if efficiency(b, allreduce) >= 0.9), None)


def projection() -> None:
    print(
        f"Assumptions: {PARAMETERS:,} float32 parameters ({GRAD_BYTES / 1024:.0f} KiB of "
        f"gradients); a GPU step takes max({STEP_FLOOR * 1e6:.0f} us, 6 x parameters x batch / "
        f"{FLOPS / 1e12:.0f} TFLOP/s); ring all-reduce 2(N-1)/N x bytes / bandwidth + 2(N-1) "
        "x latency, tree 2 x bytes / bandwidth + 2 log2(N) x latency; no overlap.\n"
    )
    steps = ", ".join(f"b={b}: {compute_time(b) * 1e6:,.0f} us" for b in (*BATCHES, 65536))
    print(f"Compute per step: {steps}\n")
    cells = " | ".join(f"b={b}" for b in BATCHES)
    print(
        f"| GPUs | fabric | ring | tree | ring: {cells} | tree: {cells} | 90% from b= ring, tree |"
    )
    print("|--:|---|--:|--:|" + "--:|" * (2 * len(BATCHES)) + "--:|")
    for n in (8, 64, 512):
        for name, (bandwidth, alpha, counts) in FABRICS.items():
            if n not in counts:
                continue
            ring, tree = ring_time(n, bandwidth, alpha), tree_time(n, bandwidth, alpha)
            row = [f"{efficiency(b, t):.0%}" for t in (ring, tree) for b in BATCHES]
            least = [smallest_batch(t) for t in (ring, tree)]
            print(
                f"| {n} | {name} | {ring * 1e6:,.0f} us | {tree * 1e6:,.0f} us | "
                + " | ".join(row)
                + " | "
                + ", ".join("-" if b is None else f"{b:,}" for b in least)
                + " |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2", help="rank counts, comma-separated (1,2)")
    parser.add_argument("--steps", type=int, default=60, help="steps per timed epoch (60)")
    parser.add_argument("--rounds", type=int, default=7, help="timed epochs per side (7)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per rank (1)")
    parser.add_argument("--backend", default="numpy", help="numpy, array_api_strict or torch")
    parser.add_argument("--min-seconds", type=float, default=0.3, help="per message size")
    parser.add_argument("--no-sweep", action="store_true", help="skip the bandwidth sweep")
    parser.add_argument("--project", action="store_true", help="print the projection only")
    parser.add_argument(
        "--wrapper", action="store_true", help="time the wrapper's own work, in one process"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
    elif args.wrapper:
        wrapper(args)
    elif args.project:
        projection()
    else:
        jobs = [run_job(int(n), args) for n in args.ranks.split(",")]
        report(jobs, args)
        print()
        projection()


if __name__ == "__main__":
    main()
