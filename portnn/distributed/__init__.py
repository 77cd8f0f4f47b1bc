"""Data-parallel training over MPI (mpi4py; ``pip install 'portnn[mpi]'``): every rank holds
the whole model and trains on its own part of each global batch, and before each update the
ranks sum their gradients with **one all-reduce per step over one flat buffer**. This follows
Horovod's and ChainerMN's design: a thin wrapper around the optimizer, not a second training
loop.

    mpiexec -n 4 python train.py

    from portnn import distributed as dist
    comm = dist.Communicator()                     # MPI.COMM_WORLD: comm.rank, comm.size
    model.train(X, y, batch_size=128, comm=comm)   # global batch 128, 32 samples per rank
    dist.save(model, "model.npz", comm)            # rank 0 writes; all ranks learn if it failed

``Model.train(..., comm=comm)`` broadcasts rank 0's parameters and optimizer state. Every
rank passes the same data, rank 0's permutation is broadcast every epoch, and each rank
takes its slice of each global batch (``sharded=True``: each rank passes only its own rows,
from ``shard``). The run reduces its figures across ranks, and only rank 0 prints. A hand
loop wraps its optimizer instead: ``DistributedOptimizer(opt, comm, layers=...)``, whose
``step(layers)`` or ``pre_update_params`` (the first of the book's three calls) makes the
step's one all-reduce of every registered layer's gradients.

Gradient scale: a loss's backward divides by the *local* batch size n_r. What the ranks
must sum is therefore ``n_r / B * g_r``, B being the global batch: that sum is the gradient
of the global batch's mean loss, even for uneven splits (3 ranks, a short last batch, an
empty part). ``Model.train`` knows B for every step, so each rank scales as it packs. A hand
loop may not know B. Then each rank packs ``n_r * g_r``, with n_r in an extra slot of the
same buffer, and after the sum divides by the summed count. The L1/L2 terms, which every
rank adds in full, come out once. A second extra slot carries a failure flag, so a rank
whose forward or backward raised still joins the step's all-reduce. Every rank then raises
together instead of waiting for it forever.

Paths, named in the first line a distributed run prints:
- ``host``: arrays in CPU memory (numpy, array_api_strict, torch on the CPU). The gradients
  are copied, scaled on the way, through NumPy views obtained over DLPack into one NumPy
  buffer. mpi4py sums that buffer in place, and the layers get views of it back, which
  stay valid until the next all-reduce. There is no copy out.
- ``staged`` and ``nccl``: GPU arrays. ``staged`` packs on the device and sums through a host
  copy over MPI (CuPy, torch on CUDA). ``nccl`` sums on the device with ``cupy.cuda.nccl``,
  bootstrapped over MPI as ChainerMN does; use one rank per GPU,
  ``pn.set_backend("cupy", device=comm.local_rank)``. **Neither path has run on a GPU yet,**
  so both stay off unless ``PORTNN_DISTRIBUTED_GPU`` is ``nccl``, ``staged``, or ``auto``
  (NCCL for CuPy where it is available, else staged). Without it, training on GPU arrays
  refuses to start and says why.

Dropout draws its masks on each rank from that rank's device generator, so a run with
dropout matches no single process. For independent masks, seed each rank differently once
its data and model exist: ``pn.seed(seed + comm.rank)``. The parameters and the epochs'
orders still come from rank 0.

Faults: a rank that raises in its forward or backward makes every rank raise at that step
(``DistributedError`` on the others, with that rank's message). No update is applied, so
the parameters stay identical everywhere. An error only one rank can see anywhere else (or
an uncaught exception once a Communicator exists) ends the whole job with ``MPI_Abort``,
within seconds rather than as a hang.

The package, by concern: ``comm`` (the Communicator, faults, abort), ``buffers`` (the flat
gradient buffer and its paths), ``optimizer`` (DistributedOptimizer) and ``parallel``
(DataParallel, what ``Model.train(comm=...)`` adds).
"""

from .buffers import GPU_VARIABLE as GPU_VARIABLE
from .buffers import _gradient_buffer as _gradient_buffer
from .buffers import info
from .comm import (
    Communicator,
    DistributedError,
    from_environment,
    launched_size,
    save,
    shard,
    should_report,
)
from .optimizer import DistributedOptimizer
from .parallel import DataParallel as DataParallel
from .parallel import announce, describe

__all__ = [
    "Communicator",
    "DistributedError",
    "DistributedOptimizer",
    "announce",
    "describe",
    "from_environment",
    "info",
    "launched_size",
    "save",
    "shard",
    "should_report",
]
