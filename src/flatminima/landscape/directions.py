"""Directions in parameter space along which a landscape is sliced.

Kinds (``directions(obj, kind, ...)``):

- ``"random"``: d ~ N(0, I), no normalisation (scale-dependent; Goodfellow et al. 2015).
- ``"filter"``: Li et al. 2018 ("Visualizing the Loss Landscape of Neural Nets", §4): d ~ N(0, I), then for
  every filter / neuron (row i of a weight tensor, i.e. its first axis) d_i ← d_i / ‖d_i‖ · ‖θ_i‖, which
  removes the scale invariance of ReLU nets from the picture.
- ``"layer"``: the same with one norm per parameter tensor: d_l ← d_l / ‖d_l‖ · ‖θ_l‖.
- ``"hessian"``: the top eigenvectors of ∇²L(θ) (Lanczos, :func:`flatminima.curvature.eigenvalues`).
- ``"pca"``: PCA of a training trajectory (Li et al. 2018, §7): the top right-singular vectors of
  M = [θ_1 − θ_n; …; θ_n − θ_n] (rows are snapshots minus the final point), with the explained variance
  ratio s_i² / Σ_j s_j², and the trajectory's coordinates M·dᵢ to draw the path.
- ``"line"``: d = θ_b − θ_a (linear interpolation, Goodfellow et al. 2015; mode connectivity).

One-dimensional parameters (biases, BatchNorm weight/bias) in ``filter``/``layer``: set to zero by default,
as the ``ignore='biasbn'`` option of Li et al.'s code (``net_plotter.normalize_directions_for_weights``)
that the paper's figures use; with ``include_1d=True`` they are copied from θ, which is what the same code
does when the option is off. The choice is stored in ``Directions.meta``.

Zero filters: normalising to ‖θ_i‖ = 0 would zero the direction on that filter, so a slice could not move
it at all (a LoRA adapter's B = 0 at initialisation gives an exactly flat slice). Such filters (and, for
``layer``, such tensors) are given unit norm instead, with a warning naming the parameters; the names and
counts are stored in ``Directions.meta["zero_filters"]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import FlatminimaError, require_choice, require_positive_int
from ..objective import Objective

__all__ = ["KINDS", "Directions", "as_directions", "directions"]

KINDS = ("random", "filter", "layer", "hessian", "pca", "line")


@dataclass
class Directions:
    """Direction vectors (rows of ``vectors``, shape k × dim) around ``origin``, with how they were made."""

    vectors: torch.Tensor
    origin: torch.Tensor
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    explained_variance_ratio: np.ndarray | None = None
    trajectory: np.ndarray | None = None  # (snapshots × k) coordinates of a training path, for "pca"

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def describe(self) -> dict[str, Any]:
        d = {"kind": self.kind, "count": len(self), "norms": [float(v) for v in self.vectors.norm(dim=1)]}
        if self.explained_variance_ratio is not None:
            d["explained_variance_ratio"] = [float(v) for v in self.explained_variance_ratio]
        return d | self.meta


def directions(
    obj: Objective,
    kind: str = "filter",
    n: int = 2,
    *,
    seed: int = 0,
    include_1d: bool = False,
    origin: torch.Tensor | None = None,
    snapshots: Sequence[torch.Tensor] | torch.Tensor | None = None,
    theta_a: torch.Tensor | None = None,
    theta_b: torch.Tensor | None = None,
    operator: str = "hessian",
    tol: float = 1e-4,
) -> Directions:
    """``n`` directions of the given ``kind`` around ``origin`` (default: the objective's θ₀); see module doc.

    Args:
        kind: one of ``KINDS``.
        n: how many directions (1 for a line, 2 for a plane).
        seed: seeds the Gaussian draws and the Lanczos start vector; the same seed gives the same directions.
        include_1d: for ``filter``/``layer``: keep biases and BatchNorm parameters (copied from θ) instead of
            zeroing them.
        snapshots: for ``pca``: the trajectory (``TrainResult.snapshots``, flat vectors over the same
            parameters as the objective). The origin defaults to the last snapshot.
        theta_a, theta_b: for ``line``: the two end points.
        operator, tol: for ``hessian``: ``"hessian"`` or ``"ggn"``, and the Lanczos tolerance.
    """
    require_choice("kind", kind, KINDS)
    require_positive_int("n", n)
    if kind == "line":
        return _line(obj, theta_a, theta_b)
    if kind == "pca":
        return _pca(obj, snapshots, n, origin)
    origin = obj.params if origin is None else _flat(obj, origin, "origin")
    if kind == "hessian":
        return _hessian(obj, n, origin, seed, operator, tol)
    gen = torch.Generator().manual_seed(seed)
    vecs = torch.randn(n, obj.dim, generator=gen, dtype=torch.float64).to(dtype=obj.dtype, device=obj.device)
    meta: dict[str, Any] = {"seed": seed, "distribution": "N(0, I)"}
    if kind in ("filter", "layer"):
        zero: dict[str, int] = {}
        vecs = torch.stack([_normalise(obj, v, origin, kind, include_1d, zero) for v in vecs])
        one_d = "copied from θ" if include_1d else "zero (Li et al. 2018)"
        meta |= {"normalisation": kind, "biases_and_bn": one_d}
        if zero:
            meta["zero_filters"] = {"parameters": zero, "fallback": "unit norm"}
            unit = "filters" if kind == "filter" else "tensors"
            listed = ", ".join(f"{name} ({count})" for name, count in list(zero.items())[:10])
            warnings.warn(
                f"{kind}-normalised directions: {sum(zero.values())} {unit} of θ are all zero ({listed}"
                f"{', ...' if len(zero) > 10 else ''}); normalising them to their own norm would zero the "
                "direction there and leave them out of the landscape (a LoRA B = 0 gives an exactly flat "
                "slice), so they get unit norm instead. Pass your own directions to choose otherwise.",
                UserWarning, stacklevel=2)
    return Directions(vecs, origin, kind, meta)


def _flat(obj: Objective, theta: Any, name: str) -> torch.Tensor:
    theta = torch.as_tensor(theta)
    if theta.shape != (obj.dim,):
        raise FlatminimaError(
            f"{name} must be a flat vector of {obj.dim} entries (the objective's parameters), got shape "
            f"{tuple(theta.shape)}. Build the Objective over the same parameters (requires_grad, `params=`)."
        )
    return theta.to(dtype=obj.dtype, device=obj.device)


def _normalise(
    obj: Objective, d: torch.Tensor, theta: torch.Tensor, kind: str, include_1d: bool,
    zero: dict[str, int] | None = None,
) -> torch.Tensor:
    """Li et al. 2018 normalisation of one direction, parameter tensor by parameter tensor; filters (or, for
    ``layer``, tensors) whose θ is all zero get unit norm, counted by name in ``zero``."""
    out = d.clone()
    parts_d, parts_t = obj.unflatten(out), obj.unflatten(theta)
    for name, dp in parts_d.items():
        tp = parts_t[name]
        if dp.dim() <= 1:
            # Biases and BatchNorm scales/shifts: the paper's code zeroes them ('biasbn') or copies θ.
            dp.copy_(tp if include_1d else torch.zeros_like(tp))
        elif kind == "filter":
            rows_d, rows_t = dp.reshape(dp.shape[0], -1), tp.reshape(tp.shape[0], -1)
            target = rows_t.norm(dim=1, keepdim=True)
            empty = target == 0
            if zero is not None and bool(empty.any()):
                zero[name] = int(empty.sum())
            target = torch.where(empty, torch.ones_like(target), target)
            scale = target / (rows_d.norm(dim=1, keepdim=True) + 1e-10)
            dp.copy_((rows_d * scale).view_as(dp))
        else:
            target = tp.norm()
            if target == 0:
                if zero is not None:
                    zero[name] = 1
                target = torch.ones_like(target)
            dp.mul_(target / (dp.norm() + 1e-10))
    return out


def _hessian(
    obj: Objective, n: int, origin: torch.Tensor, seed: int, operator: str, tol: float
) -> Directions:
    from ..curvature import eigenvalues

    res = eigenvalues(
        obj, k=n, which="largest", tol=tol, operator=operator, return_vectors=True, seed=seed, theta=origin
    )
    vecs = _fix_signs(res.vectors.T.contiguous())
    meta = {
        "seed": seed,
        "operator": operator,
        "eigenvalues": [float(v) for v in res.values],
        "converged": [bool(c) for c in res.converged],
        "hvps": res.cost.hvps,
    }
    return Directions(vecs, origin, "hessian", meta)


def _fix_signs(vecs: torch.Tensor) -> torch.Tensor:
    """Eigen/singular vectors are defined up to sign: make the largest-magnitude entry positive."""
    idx = vecs.abs().argmax(dim=1)
    signs = torch.sign(vecs.gather(1, idx[:, None]))
    signs[signs == 0] = 1
    return vecs * signs


def _pca(obj: Objective, snapshots: Any, n: int, origin: torch.Tensor | None) -> Directions:
    if snapshots is None or len(snapshots) == 0:
        raise FlatminimaError("kind='pca' needs snapshots=TrainResult.snapshots (flat parameter vectors).")
    snaps = snapshots if torch.is_tensor(snapshots) else torch.stack([torch.as_tensor(s) for s in snapshots])
    if snaps.dim() != 2 or snaps.shape[1] != obj.dim:
        raise FlatminimaError(
            f"snapshots must be flat vectors of {obj.dim} entries (the objective's parameters); got shape "
            f"{tuple(snaps.shape)}. Snapshots hold every requires_grad parameter: build the Objective "
            "without `params=` or slice the snapshots the same way."
        )
    origin = snaps[-1] if origin is None else origin
    origin = _flat(obj, origin, "origin")
    M = (snaps.detach().cpu().to(torch.float64) - origin.detach().cpu().to(torch.float64)).numpy()
    if not np.any(M):
        raise FlatminimaError("the snapshots all equal the origin; PCA needs a trajectory that moves.")
    if n > min(M.shape):
        raise FlatminimaError(
            f"n={n} PCA directions need at least {n} differing snapshots; got {M.shape[0]}."
        )
    # SVD in float64 (Li et al. use sklearn PCA without centring, i.e. the SVD of M itself).
    _, s, vt = np.linalg.svd(M, full_matrices=False)
    vecs = _fix_signs(torch.as_tensor(vt[:n].copy()))
    ratio = s[:n] ** 2 / np.sum(s**2)
    coords = M @ vecs.numpy().T  # orthonormal directions: projection is a dot product
    meta = {"snapshots": int(M.shape[0]), "centre": "final point (rows are θ_i − θ_final)"}
    return Directions(vecs.to(dtype=obj.dtype, device=obj.device), origin, "pca", meta, ratio, coords)


def _line(obj: Objective, theta_a: Any, theta_b: Any) -> Directions:
    if theta_a is None or theta_b is None:
        raise FlatminimaError("kind='line' needs theta_a and theta_b (the two solutions).")
    a, b = _flat(obj, theta_a, "theta_a"), _flat(obj, theta_b, "theta_b")
    return Directions((b - a)[None], a, "line", {"distance": float((b - a).norm())})


def as_directions(obj: Objective, d: Any, count: int, origin: torch.Tensor | None = None) -> Directions:
    """Accept a :class:`Directions`, a vector (dim,) or a matrix (k, dim); check it fits the objective."""
    if isinstance(d, Directions):
        vecs, org, out = d.vectors, d.origin if origin is None else origin, d
    else:
        vecs = torch.as_tensor(d)
        vecs = vecs[None] if vecs.dim() == 1 else vecs
        org, out = obj.params if origin is None else origin, None
    if vecs.dim() != 2 or vecs.shape[1] != obj.dim:
        raise FlatminimaError(
            f"directions must have shape ({count}, {obj.dim}) for this objective ({obj.dim} parameters), got "
            f"{tuple(vecs.shape)}. Were they made for another model or another parameter selection?"
        )
    if vecs.shape[0] < count:
        raise FlatminimaError(f"need {count} direction(s), got {vecs.shape[0]}.")
    vecs = vecs[:count].to(dtype=obj.dtype, device=obj.device)
    org = _flat(obj, org, "origin")
    if out is None:
        return Directions(vecs, org, "user", {"source": "user-supplied vectors"})
    return Directions(vecs, org, out.kind, out.meta, out.explained_variance_ratio, out.trajectory)
