"""The gradient norm ‖∇L(θ)‖₂: first order, not a flatness measure.

    grad_norm = ‖∇L(θ)‖₂ = sqrt(Σ_i (∂L/∂θ_i)²)

It says how far θ is from a stationary point, so a curvature value can be read in context (at a
minimum it is ~0; mid-training it is what the optimiser follows). Exact; deterministic.
"""

from __future__ import annotations

from ..objective import Objective
from .registry import register
from .result import Measure


@register("grad_norm", "gradient norm ‖∇L(θ)‖₂ (first order: distance from stationarity); not a flatness measure")
def grad_norm(obj: Objective) -> Measure:
    """‖∇L(θ)‖₂ over the objective's data, exact (one gradient, one pass); ``stderr`` is None."""
    return Measure("grad_norm", float(obj.grad().norm()), None, extra={"mode": obj.mode})
