"""Which symmetric matrix the curvature algorithms act on: the Hessian or the generalised Gauss-Newton.

    hessian:  H = ∇²L(θ)                          (indefinite away from a minimum)
    ggn:      G = Σ_b w_b J_bᵀ ∇²_z ℓ_b J_b / Σ w_b  (positive semi-definite for convex losses;
                                                    Schraudolph 2002, Martens 2010)

An operator is just ``v ↦ M v`` at a fixed θ: every algorithm takes the Objective and this name, so the
split between "what matrix" and "what algorithm" stays as in curvlinops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import require_choice
from ..objective import Objective

OPERATORS = ("hessian", "ggn")

MatVec = Callable[[torch.Tensor], torch.Tensor]


def make_operator(obj: Objective, kind: str = "hessian", theta: torch.Tensor | None = None) -> MatVec:
    """The matrix-vector product ``v ↦ M(θ) v`` for ``kind`` in ``("hessian", "ggn")``."""
    require_choice("operator", kind, OPERATORS)
    if kind == "hessian":
        return lambda v: obj.hvp(v, theta)
    return lambda v: obj.ggn_vp(v, theta)


def random_vector(dim: int, generator: torch.Generator, like: torch.Tensor,
                  kind: str = "gaussian") -> torch.Tensor:
    """A reproducible probe drawn on the CPU (the same numbers on every device and rank)."""
    if kind == "rademacher":
        z = torch.randint(0, 2, (dim,), generator=generator, dtype=torch.int64).to(torch.float64) * 2 - 1
    else:
        z = torch.randn(dim, generator=generator, dtype=torch.float64)
    return z.to(device=like.device, dtype=like.dtype)
