"""Hessian-vector products by central differences of the exact gradient, with a stated error.

    H v ≈ D(h) = (∇L(θ + h v) − ∇L(θ − h v)) / (2h),        h = ∛ε_mach · max(1, ‖θ‖) / ‖v‖

For models with an operation PyTorch cannot differentiate twice (a fused kernel with no double backward, a
custom autograd Function with a first derivative only) this needs first derivatives only. The step balances
the O(h²) truncation error of the central difference, |D(h) − Hv| ≈ |c| h² with c = ∇³L[v, v, v]/6, against
the rounding error ≈ ε_mach‖∇L‖/h of the gradient difference: the minimum of their sum lies at h ∝ ∛ε_mach
(Nocedal & Wright, Numerical Optimization, 2nd ed., §8.1), scaled so the step h‖v‖ = ∛ε_mach·max(1, ‖θ‖) is a
fixed fraction of θ (the same relative step in float32 and float64, whatever the scale of v).

The error is estimated, not assumed: with D(2h) = Hv + 4ch² + O(h⁴) + noise, the difference
‖D(2h) − D(h)‖ ≈ 3‖c‖h² plus the rounding noise of both, so it bounds the truncation error of D(h) three times
over and its rounding noise about once (Richardson's estimate; Richardson 1911, Nocedal & Wright §8.1). It is
computed on the first product of an Objective (one extra pair of gradients) and kept as the relative error
``‖D(2h) − D(h)‖ / ‖D(h)‖`` that the Objective's ``describe()`` and every curvature result carry; later
products cost two gradients each, no more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..errors import FlatminimaError

__all__ = ["FINITE_DIFFERENCE", "central_difference", "fd_step"]

FINITE_DIFFERENCE = "finite_difference"

Batches = Callable[[], Iterable[Any]]
Terms = Callable[[torch.Tensor, Any], tuple[torch.Tensor, float]]


def fd_step(theta: torch.Tensor, v: torch.Tensor) -> float:
    """h = ∛ε_mach · max(1, ‖θ‖) / ‖v‖, ε_mach of θ's dtype (see the module)."""
    norm_v = float(v.norm())
    if not norm_v > 0:
        raise FlatminimaError("a finite-difference Hessian product needs a non-zero vector v (‖v‖ = 0 gives "
                              "H·0 = 0; pass a non-zero vector).")
    eps = torch.finfo(theta.dtype).eps
    return eps ** (1 / 3) * max(1.0, float(theta.norm())) / norm_v


def _gradient_sum(batches: Batches, terms: Terms, theta: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(Σ_b ∇s_b(θ) in float64, Σ_b w_b): the gradient of the summed terms, first derivatives only."""
    leaf = theta.detach().requires_grad_(True)
    total, weight = torch.zeros(theta.shape, dtype=torch.float64, device=theta.device), 0.0
    for batch in batches():
        s, w = terms(leaf, batch)
        (g,) = torch.autograd.grad(s, leaf, allow_unused=True)
        if g is not None:
            total += g.to(torch.float64)
        weight += w
    return total, weight


def central_difference(batches: Batches, terms: Terms, theta: torch.Tensor, v: torch.Tensor,
                       step: float | None = None) -> tuple[torch.Tensor, float]:
    """(Σ_b D_b(h) in float64, Σ_b w_b) with D_b(h) = (∇s_b(θ + hv) − ∇s_b(θ − hv)) / 2h (``step`` h or
    :func:`fd_step`). Two passes over the data, one gradient each."""
    h = fd_step(theta, v) if step is None else step
    plus, weight = _gradient_sum(batches, terms, theta + h * v)
    minus, _ = _gradient_sum(batches, terms, theta - h * v)
    return (plus - minus) / (2 * h), weight


def with_error(batches: Batches, terms: Terms, theta: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """D(h) as :func:`central_difference`, and its error estimate from D(2h) (see the module):
    (Σ_b D_b(h), Σ_b w_b, {"step", "relative_error", "how"})."""
    h = fd_step(theta, v)
    fine, weight = central_difference(batches, terms, theta, v, h)
    coarse, _ = central_difference(batches, terms, theta, v, 2 * h)
    scale = float(fine.norm())
    rel = float((coarse - fine).norm()) / scale if scale > 0 else 0.0
    note = {"step": h * float(v.norm()), "relative_error": rel,
            "how": "central differences of the exact gradient, h = cbrt(eps)·max(1, ‖θ‖)/‖v‖; error "
                   "‖D(2h) − D(h)‖/‖D(h)‖ (Richardson) on the first product"}
    return fine, weight, note
