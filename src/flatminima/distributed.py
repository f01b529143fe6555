"""Data-parallel curvature with ``torch.distributed``: shard the data by rank, sum on every rank, reduce once.

Every rank builds the same model and an :class:`~flatminima.Objective` with ``distributed=True`` over its
own shard. Each loss, gradient, Hessian-vector product (or ``loss_batched`` chunk) sums its shard to a
packed vector ``[Σ_b w_b x_b, Σ_b w_b]`` and one ``all_reduce`` turns it into the exact global mean

    L(θ) = Σ_r Σ_{b∈r} w_b ℓ_b(θ) / Σ_r Σ_{b∈r} w_b,

so shards of unequal size (or an empty shard) are weighted exactly. Curvature algorithms draw their
probes on the CPU from a seeded ``torch.Generator``, so every rank draws the same vectors, gets the same
reduced products and takes the same decisions: they run unchanged.

Launch with ``torchrun`` (``torchrun --nproc_per_node=2 my_script.py``: ``init()`` reads the environment
it sets), or, for tests and CPU experiments, :func:`launch` spawns processes with gloo.
The demo (``torchrun ... -m flatminima.workflows.distributed_demo``) lives in the workflows layer above.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from .errors import FlatminimaError, require_positive_int

__all__ = ["init", "is_initialized", "launch", "rank", "shard", "shard_batches", "world_size"]


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_initialized() else 1


def init(backend: str = "auto") -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment; returns (rank, world_size).

    ``backend="auto"`` picks NCCL when CUDA is available, gloo otherwise. Calling it twice is harmless.
    """
    if is_initialized():
        return rank(), world_size()
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise FlatminimaError(
            f"distributed init needs the environment variables {missing}; start the script with "
            "`torchrun --nproc_per_node=N script.py` or use flatminima.distributed.launch.")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return rank(), world_size()


def _bounds(n: int, r: int, size: int) -> tuple[int, int]:
    # Contiguous, as equal as possible: the first n % size ranks hold one more sample.
    base, extra = divmod(n, size)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def shard(data: Sequence[torch.Tensor] | torch.Tensor | dict[str, torch.Tensor], *,
          rank: int | None = None, world_size: int | None = None,
          sizes: Sequence[int] | None = None) -> Any:
    """This rank's contiguous slice of tensor data (a tuple ``(X, y)``, one tensor or a dict of tensors).

    ``sizes`` gives each rank's number of samples explicitly (they must add up to the data's length);
    by default the shards are as equal as possible. Every tensor is sliced along its first dimension.
    """
    r = _default(rank, globals()["rank"])
    size = _default(world_size, globals()["world_size"])
    if isinstance(data, dict):
        leaves = list(data.values())
    else:
        leaves = [data] if isinstance(data, torch.Tensor) else list(data)
    if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
        raise FlatminimaError("shard takes tensor data: a tuple (X, y), one tensor or a dict of tensors.")
    n = leaves[0].shape[0]
    if any(t.shape[0] != n for t in leaves):
        raise FlatminimaError(f"data tensors have different lengths {[t.shape[0] for t in leaves]}.")
    if not 0 <= r < size:
        raise FlatminimaError(f"rank must be in [0, {size}), got {r}.")
    if sizes is not None:
        if len(sizes) != size or sum(sizes) != n or min(sizes) < 0:
            raise FlatminimaError(f"sizes={list(sizes)} must hold {size} non-negative counts summing to {n}.")
        start = sum(sizes[:r])
        lo, hi = start, start + sizes[r]
    else:
        lo, hi = _bounds(n, r, size)
    if isinstance(data, dict):
        return {k: v[lo:hi] for k, v in data.items()}
    if isinstance(data, torch.Tensor):
        return data[lo:hi]
    return tuple(t[lo:hi] for t in data)


def shard_batches(batches: Sequence[Any], *, rank: int | None = None, world_size: int | None = None) -> list:
    """This rank's share of a list of batches (round robin: batch i goes to rank i mod world_size)."""
    r = _default(rank, globals()["rank"])
    size = _default(world_size, globals()["world_size"])
    return [b for i, b in enumerate(batches) if i % size == r]


def _default(value: int | None, getter: Callable[[], int]) -> int:
    return getter() if value is None else int(value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(r: int, size: int, port: int, backend: str, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE=str(size))
    torch.set_num_threads(1)  # ranks share the machine's cores; oversubscription only slows every rank
    dist.init_process_group(backend, rank=r, world_size=size)
    try:
        fn(r, size, *args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], world_size: int = 2, *args: Any, backend: str = "gloo") -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes joined in one process group.

    For tests and single-machine CPU runs (gloo); on a cluster use ``torchrun`` and :func:`init`.
    ``fn`` must be importable (a module-level function) because processes are spawned. Results come back
    through files or a ``torch.multiprocessing`` queue passed in ``args``.
    """
    require_positive_int("world_size", world_size)
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(world_size, _free_port(), backend, fn, args), nprocs=world_size, join=True)
