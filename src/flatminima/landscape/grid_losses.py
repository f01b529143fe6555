"""Batched evaluation of L(θ₀ + Σ_i c_i d_i) (and accuracy) on many grid points.

The grid is a :class:`flatminima.objective.Span`: each chunk of points is one pass over the data, loss
and accuracy come from the same forward, and on the CPU the layers that read the data are evaluated
once per batch instead of once per point (the exact identity in ``flatminima.objective.values_at``). Under
``vmap`` (GPUs) the chunk is sized by a memory budget; the parameter vectors of a chunk are built only
when it is evaluated, so memory stays bounded.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import FlatminimaError, require_positive, require_positive_int
from ..objective import LOOP_CHUNK, Objective, Span, activation_bytes, default_engine
from ..progress import progress_bar

__all__ = ["DEFAULT_MAX_CHUNK", "chunk_size_for", "evaluate_points", "per_point_bytes"]

DEFAULT_MAX_CHUNK = 16


def per_point_bytes(obj: Objective) -> int:
    """Estimated memory one extra grid point costs in a vmapped chunk.

    bytes ≈ 3 · dim · itemsize (the point's θ, its unflattened state and temporaries)
          + Σ output sizes of every module on the largest data batch (measured with forward hooks once).
    The activation term is an over-estimate (it counts every module output as alive at once), which is
    the safe side for a budget.
    """
    itemsize = torch.empty((), dtype=obj.dtype).element_size()
    return 3 * obj.dim * itemsize + activation_bytes(obj)


def chunk_size_for(obj: Objective, memory_mb: float, points: int, need: int | None = None) -> int:
    """Largest chunk of points whose estimated memory fits ``memory_mb`` (at most ``points``)."""
    require_positive("memory_mb", memory_mb)
    need = per_point_bytes(obj) if need is None else need
    chunk = int(memory_mb * 2**20 // need)
    if chunk < 1:
        raise FlatminimaError(
            f"memory_mb={memory_mb} is too small for even one grid point: one point needs about "
            f"{need / 2**20:.2f} MB (parameters + activations of one data batch). Raise memory_mb to at "
            f"least {math.ceil(need / 2**20)} or lower the Objective's batch_size."
        )
    return max(1, min(chunk, points))


def evaluate_points(
    obj: Objective,
    origin: torch.Tensor,
    vectors: torch.Tensor,
    coefs: np.ndarray,
    *,
    accuracy: bool,
    memory_mb: float = 512.0,
    chunk_size: int | None = None,
    progress: bool = True,
    description: str = "landscape",
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Loss (and accuracy) at θ = origin + coefs @ vectors for every row of ``coefs`` (P × k).

    On the CPU the points are evaluated one after another inside each batch, ``chunk_size`` points
    (default ``LOOP_CHUNK``) per pass over the data. Under ``vmap`` (GPUs) the chunk is the largest that
    fits ``memory_mb`` and at most ``chunk_size`` (default ``DEFAULT_MAX_CHUNK``).

    Returns ``({"loss": (P,), "accuracy": (P,)}, {"chunk_size": ..., "per_point_mb": ..., "chunks": ...})``.
    """
    coefs = np.asarray(coefs, dtype=np.float64)
    points = coefs.shape[0]
    if points == 0:
        raise FlatminimaError("the grid has no points; give at least one coefficient per axis.")
    loop = default_engine(obj) == "loop"
    need = per_point_bytes(obj)
    if loop:  # the CPU loop holds one point at a time; the chunk only sets how often the data is read
        chunk_size_for(obj, memory_mb, 1, need)  # still refuse a budget too small for one point
        chunk = min(points, _cap(chunk_size, LOOP_CHUNK))
    else:
        chunk = min(chunk_size_for(obj, memory_mb, points, need), _cap(chunk_size, DEFAULT_MAX_CHUNK))
    span = Span(origin, vectors, torch.as_tensor(coefs))
    metrics = ["loss"] + (["accuracy"] if accuracy else [])
    shown = [0.0]

    def advance_to(done: float) -> None:
        advance(done - shown[0])
        shown[0] = done

    with progress_bar(points, description, enabled=progress) as advance:
        values = obj.values_at(span, metrics, chunk_size=chunk, memory_mb=memory_mb, on_progress=advance_to)
    info = {"chunk_size": chunk, "chunks": math.ceil(points / chunk), "memory_mb": memory_mb,
            "per_point_mb": need / 2**20, "engine": "loop" if loop else "vmap"}
    return {m: v.cpu().to(torch.float64).numpy() for m, v in zip(metrics, values, strict=True)}, info


def _cap(chunk_size: int | None, default: int) -> int:
    if chunk_size is None:
        return default
    require_positive_int("chunk_size", chunk_size)
    return chunk_size


def has_outputs(obj: Objective) -> bool:
    """Whether the objective can report accuracy (built with ``loss=``; analytic ones cannot)."""
    return bool(getattr(obj, "has_outputs", False))
