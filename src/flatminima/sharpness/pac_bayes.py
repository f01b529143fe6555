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

import torch

from ..errors import (
    FlatminimaError,
    require_choice,
    require_in_range,
    require_nonnegative,
    require_positive,
    require_positive_int,
)
from ..objective import Objective
from ._common import gaussian_rows, generator, mean_stderr, perturbed_rises, require_outputs
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


# ----------------------------------------------------------------------------- Jiang et al.'s σ′ search
def magnitude_aware_std(theta: torch.Tensor, sigma: float, eps: float) -> torch.Tensor:
    """Per-coordinate standard deviation sqrt(σ′²θ_i² + ε²) of Jiang et al.'s magnitude-aware noise."""
    return (sigma ** 2 * theta.pow(2) + eps ** 2).sqrt()


def magnitude_aware_perturbations(theta: torch.Tensor, sigma: float, eps: float, z: torch.Tensor) -> torch.Tensor:
    """u = sqrt(σ′²θ² + ε²) ∘ z for standard normal rows z: u_i ~ N(0, σ′²θ_i² + ε²), one row per draw."""
    return magnitude_aware_std(theta, sigma, eps) * z


@register("pac_bayes_mag",
          "Jiang et al.'s pacbayes.mag.flatness 1/σ′², σ′ the magnitude-aware noise that drops train accuracy by 0.1")
def pac_bayes_mag(obj: Objective, *, target: float = 0.1, eps: float = 1e-3, samples: int = 16,
                  sigma_min: float = 0.0, sigma_max: float = 2.0, iterations: int = 20, tol: float = 1e-2,
                  chunk_size: int = 32, seed: int = 0) -> Measure:
    """1/σ′² (Jiang et al. 2020, Appendix C, "pacbayes.mag.flatness"), σ′ found as in their Algorithm 1.

        u_i ~ N(0, σ′²|θ_i|² + ε²),   drop(σ′) = acc(θ) − (1/M) Σ_j acc(θ + u_j)   (training accuracy)

    σ′ is bisected (arithmetically) in [``sigma_min``, ``sigma_max``] until |drop − ``target``| <= ``tol``
    or ``iterations`` halvings; the M = ``samples`` standard-normal rows z_j are fixed (one seed) for every
    σ′ (common random numbers). A target that
    ``sigma_max`` does not reach, or that the ε-floor alone (σ′ = ``sigma_min``) exceeds, raises
    FlatminimaError. ``stderr`` is NaN: on finite data the drop is
    a step function of σ′, so no delta-method error bar exists; ``extra["drop_stderr"]`` holds the Monte
    Carlo standard error of the drop at σ′. Needs ``loss=`` (accuracy from the outputs).
    Cost: (iterations used + 2) × samples perturbed accuracies.
    """
    require_outputs(obj, "pac_bayes_mag")
    require_in_range("target", target, 0.0, 1.0, inclusive=False)
    require_nonnegative("eps", eps)
    require_nonnegative("sigma_min", sigma_min)
    require_positive("sigma_max", sigma_max)
    require_positive("tol", tol)
    require_positive_int("samples", samples)
    require_positive_int("iterations", iterations)
    require_positive_int("chunk_size", chunk_size)
    if sigma_min >= sigma_max:
        raise FlatminimaError(f"need sigma_min < sigma_max, got {sigma_min} and {sigma_max}.")
    theta = obj.params
    z = gaussian_rows(samples, obj, generator(seed))
    base = float(obj.metric_batched(theta[None], "accuracy")[0])

    def drops(sigma: float) -> torch.Tensor:
        u = magnitude_aware_perturbations(theta, sigma, eps, z)
        return base - obj.metric_batched(theta + u, "accuracy", chunk_size=chunk_size).to(torch.float64)

    at_min, at_max = float(drops(sigma_min).mean()), float(drops(sigma_max).mean())
    if at_max < target - tol:
        raise FlatminimaError(
            f"pac_bayes_mag: even σ′ = {sigma_max:g} (sigma_max) drops the training accuracy by only {at_max:.4g} "
            f"< target {target} (train accuracy {base:.4g}); raise sigma_max or lower the target.")
    if at_min > target + tol:
        raise FlatminimaError(
            f"pac_bayes_mag: the noise floor alone (σ′ = {sigma_min:g}, ε = {eps:g}) drops the training accuracy "
            f"by {at_min:.4g} > target {target}; lower eps or sigma_min, or raise the target.")
    lo, hi, used, converged = sigma_min, sigma_max, 0, False
    while used < iterations and not converged:
        used += 1
        sigma = 0.5 * (lo + hi)
        d = drops(sigma)
        drop = float(d.mean())
        converged = abs(drop - target) <= tol
        if not converged and drop > target:
            hi = sigma
        elif not converged:
            lo = sigma
    drop, drop_se = mean_stderr(d)
    return Measure("pac_bayes_mag", 1.0 / sigma ** 2, math.nan, config={
        "variant": "1/σ′², u_i ~ N(0, σ′²θ_i² + ε²), σ′ where the expected train-accuracy drop equals target",
        "search": f"arithmetic bisection in [{sigma_min:g}, {sigma_max:g}], at most {iterations} iterations, "
                  f"stop when |drop − target| <= {tol:g}, {samples} Monte Carlo samples (fixed seed)"},
        extra={"sigma": sigma, "drop": drop, "drop_stderr": drop_se, "converged": converged, "iterations": used,
               "bracket": [lo, hi], "train_accuracy": base, "mode": obj.mode})
