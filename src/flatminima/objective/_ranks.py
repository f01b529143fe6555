"""Whether an Objective built without ``distributed=True`` sits inside a multi-process group.

Inside an initialised ``torch.distributed`` process group (or with a ``DistributedDataParallel`` model),
data loaders usually hand each rank its own shard. An Objective without ``distributed=True`` then
measures L on that shard alone, a different number on every rank, and nothing says so. It is not an error
(every rank may hold the whole data on purpose), so it is a warning, given once per process, that names
the flag.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

__all__ = ["warn_if_undistributed"]

_warned = False


def _world_size() -> int:
    """The process group's size, or 1 when torch.distributed is unavailable or not initialised."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized():
        return 1
    return int(dist.get_world_size())


def warn_if_undistributed(distributed: bool, model: Any) -> None:
    """Warn (once per process) when ``distributed`` is off inside a process group of more than one rank."""
    global _warned
    if distributed or _warned:
        return
    world = _world_size()
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    if world <= 1 and not ddp:
        return
    _warned = True
    why = "the model is wrapped in DistributedDataParallel" if ddp else "torch.distributed is initialised"
    warnings.warn(
        f"{why} (world size {world}), but this Objective was built without distributed=True: each rank measures "
        "the loss, gradient and curvature of its own data only, a different number on every rank. Pass "
        "distributed=True to sum over every rank's shard (one all-reduce per call); leave it off only if every "
        "rank holds the whole data.", UserWarning, stacklevel=3)
