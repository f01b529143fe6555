"""PAC-Bayes flatness (Jiang et al. 2020): how much Gaussian weight noise the loss tolerates.

    σ* = max { σ : E_u[L(θ+u)] − L(θ) ≤ target },   u ~ N(0, σ²I)                      value = 1/σ*²
    magnitude-aware: u_i ~ N(0, σ²θ_i² + ε²)  (Jiang et al.'s pacbayes.mag.flatness)   value = 1/σ*²

found by bisection on σ. The expectation is a Monte Carlo mean over fixed draws z_j (the same seed at
every σ: common random numbers), so the estimated rise is a continuous function of σ and the bisection
converges to its crossing. σ*'s standard error follows from the rise's by the delta method,
se(σ*) = se(rise)/|d rise/dσ|, with the slope from a finite difference on the same draws, and
se(1/σ*²) = 2·se(σ*)/σ*³. On a quadratic, rise = ½σ²·tr(A), so σ* = sqrt(2·target/tr(A)).
"""

from __future__ import annotations

import math

from ..errors import (
    FlatminimaError,
    require_choice,
    require_nonnegative,
    require_positive,
    require_positive_int,
)
from ..objective import Objective
from ._common import mean_stderr, perturbed_rises
from .registry import register
from .result import Measure


@register("pac_bayes",
          "Jiang et al.'s PAC-Bayes flatness 1/σ², σ the largest noise that raises the loss by target")
def pac_bayes(obj: Objective, *, target: float = 0.1, magnitude_aware: bool = False, samples: int = 32,
              metric: str = "loss", eps: float = 1e-3, sigma_init: float = 1e-2, sigma_min: float = 1e-8,
              sigma_max: float = 1e2, rtol: float = 1e-2, antithetic: bool = True, chunk_size: int = 32,
              seed: int = 0) -> Measure:
    """1/σ*² with σ* the largest σ whose Monte Carlo expected rise of ``metric`` is <= ``target``.

    ``metric="error"`` uses the 0-1 training error instead of the loss. The search doubles (or halves)
    σ from ``sigma_init`` within [``sigma_min``, ``sigma_max``], then bisects until the bracket is
    within ``rtol``; a target that no σ in that range reaches raises FlatminimaError instead of
    searching forever. ``eps`` is the magnitude-aware noise floor (Jiang et al. use 1e-3).
    Cost: about (log2 of the range + log2(1/rtol)) × samples (×2 antithetic) perturbed losses.
    """
    require_positive("target", target)
    require_choice("metric", metric, ["loss", "error"])
    require_positive_int("samples", samples)
    require_nonnegative("eps", eps)
    for name, v in (("sigma_init", sigma_init), ("sigma_min", sigma_min), ("sigma_max", sigma_max),
                    ("rtol", rtol)):
        require_positive(name, v)
    if not sigma_min <= sigma_init <= sigma_max:
        raise FlatminimaError(f"need sigma_min <= sigma_init <= sigma_max, got {sigma_min}, {sigma_init}, "
                              f"{sigma_max}.")
    theta2 = obj.params.pow(2)
    base = _base(obj, metric)

    def rise(sigma: float) -> tuple[float, float]:
        std = (sigma ** 2 * theta2 + eps ** 2).sqrt() if magnitude_aware else sigma
        r = perturbed_rises(obj, std, samples, seed, antithetic=antithetic, chunk_size=chunk_size,
                            metric=metric, base=base)
        return (math.inf, math.nan) if not r.isfinite().all() else mean_stderr(r)

    lo, hi, evals = _bracket(rise, target, sigma_init, sigma_min, sigma_max, magnitude_aware)
    while hi / lo - 1 > rtol:
        mid = math.sqrt(lo * hi)  # geometric: σ spans decades
        evals += 1
        if rise(mid)[0] <= target:
            lo = mid
        else:
            hi = mid
    sigma = math.sqrt(lo * hi)
    stderr_sigma, slope = _sigma_stderr(rise, sigma, lo, hi)
    value = 1.0 / sigma ** 2
    stderr = 2 * stderr_sigma / sigma ** 3 if math.isfinite(stderr_sigma) else math.nan
    return Measure("pac_bayes", value, stderr, extra={
        "sigma": sigma, "sigma_stderr": stderr_sigma, "bracket": [lo, hi], "slope": slope,
        "base": base, "metric": metric, "evaluations": evals + 3, "mode": obj.mode})


def _base(obj: Objective, metric: str) -> float:
    if metric == "loss":
        return obj.loss()
    return 1.0 - float(obj.metric_batched(obj.params[None], "accuracy")[0])


def _bracket(rise, target: float, s: float, s_min: float, s_max: float,
             mag: bool) -> tuple[float, float, int]:
    """lo < hi with rise(lo) <= target < rise(hi), by doubling/halving from s."""
    evals, r = 1, rise(s)[0]
    if r <= target:
        while r <= target:
            if s >= s_max:
                what = "σ (relative to |θ|)" if mag else "σ"
                raise FlatminimaError(
                    f"pac_bayes: the target rise {target} is never reached: even {what} = {s_max:g} "
                    f"(sigma_max) raises it by only {r:.4g}. Lower the target or raise sigma_max.")
            lo, s = s, min(2 * s, s_max)
            r, evals = rise(s)[0], evals + 1
        return lo, s, evals
    while r > target:
        if s <= s_min:
            raise FlatminimaError(
                f"pac_bayes: even σ = {s_min:g} (sigma_min) raises the measured quantity by {r:.4g} > target "
                f"{target}; raise the target (or lower sigma_min, or, magnitude-aware, lower eps).")
        hi, s = s, max(s / 2, s_min)
        r, evals = rise(s)[0], evals + 1
    return s, hi, evals


def _sigma_stderr(rise, sigma: float, lo: float, hi: float) -> tuple[float, float]:
    """Delta method: se(σ*) = se(rise(σ*)) / slope, slope by a ±5% finite difference on the same draws."""
    r, se = rise(sigma)
    up, down = rise(sigma * 1.05)[0], rise(sigma / 1.05)[0]
    slope = (up - down) / (sigma * 1.05 - sigma / 1.05)
    if not (math.isfinite(slope) and slope > 0 and math.isfinite(se)):
        return math.nan, slope
    return se / slope, slope
