"""Batched evaluation of L(θ₀ + Σ_i c_i d_i) on many grid points: chunks sized by a memory budget.

Each chunk of points is one call to ``Objective.loss_batched`` (``torch.func.vmap`` over the points of the
chunk, one pass over the data per chunk), so the data is read ⌈points / chunk⌉ times instead of once per
point, and the parameter vectors of a chunk are built only when it is evaluated (memory stays bounded).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import FlatminimaError, require_positive, require_positive_int
from ..objective import Objective
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
    return 3 * obj.dim * itemsize + _activation_bytes(obj)


def _activation_bytes(obj: Objective) -> int:
    module = getattr(obj, "_module", None)
    if module is None:  # analytic objective: f(θ) itself, a few vectors of θ's size
        return 4 * obj.dim * torch.empty((), dtype=obj.dtype).element_size()
    total = [0]

    def hook(_m: Any, _inp: Any, out: Any) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                total[0] += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in module.model.modules()]
    try:
        with torch.no_grad():
            largest = 0
            # Private by design: the landscape module measures the Objective's own batches (same package).
            for batch in obj._iter_batches():
                total[0] = 0
                module(batch)
                largest = max(largest, total[0])
                break  # batches are equal-sized but for the last; the first is the largest
    finally:
        for h in handles:
            h.remove()
    return largest


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

    The chunk is the largest that fits ``memory_mb`` and at most ``chunk_size`` (default
    ``DEFAULT_MAX_CHUNK``: on CPUs, chunks whose activations outgrow the caches run slower per point, and
    smaller chunks let the progress bar show a rate and an ETA).

    Returns ``({"loss": (P,), "accuracy": (P,)}, {"chunk_size": ..., "per_point_mb": ..., "chunks": ...})``.
    """
    coefs = np.asarray(coefs, dtype=np.float64)
    points = coefs.shape[0]
    if points == 0:
        raise FlatminimaError("the grid has no points; give at least one coefficient per axis.")
    need = per_point_bytes(obj)
    chunk = min(chunk_size_for(obj, memory_mb, points, need), _cap(chunk_size))
    C = torch.as_tensor(coefs, dtype=obj.dtype, device=obj.device)
    V = vectors.to(dtype=obj.dtype, device=obj.device)
    out: dict[str, list[torch.Tensor]] = {"loss": []} | ({"accuracy": []} if accuracy else {})
    starts = range(0, points, chunk)
    with progress_bar(len(starts), description, enabled=progress) as advance:
        for s in starts:
            thetas = origin.to(dtype=obj.dtype, device=obj.device)[None] + C[s : s + chunk] @ V
            out["loss"].append(obj.loss_batched(thetas, chunk_size=chunk).cpu())
            if accuracy:
                out["accuracy"].append(obj.metric_batched(thetas, "accuracy", chunk_size=chunk).cpu())
            advance(points=min(s + chunk, points))
    info = {"chunk_size": chunk, "chunks": len(starts), "memory_mb": memory_mb, "per_point_mb": need / 2**20}
    return {k: torch.cat(v).to(torch.float64).numpy() for k, v in out.items()}, info


def _cap(chunk_size: int | None) -> int:
    if chunk_size is None:
        return DEFAULT_MAX_CHUNK
    require_positive_int("chunk_size", chunk_size)
    return chunk_size


def has_outputs(obj: Objective) -> bool:
    """Whether the objective can report accuracy (built with ``loss=``; analytic ones cannot)."""
    return bool(getattr(obj, "_has_outputs", False))
