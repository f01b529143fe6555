"""Average-case sharpness: the expected loss rise under random Gaussian weight noise.

    S_σ(θ) = E_δ[L(θ+δ)] − L(θ),   δ ~ N(0, σ²I)            (standard)
                                    δ_i ~ N(0, σ²θ_i²)       (adaptive: invariant to layer rescaling)

By Taylor, S_σ ≈ ½σ²·tr(H) (standard) and ½σ²·Σ_i θ_i² H_ii (adaptive), the second-order prediction
reported beside the Monte Carlo value (exact for a quadratic, whatever θ: the odd terms have zero mean).
Refs: Keskar et al. 2017 (random perturbations), Jiang et al. 2020 (sharpness.sigma), Andriushchenko et
al. 2023 (adaptive average-case sharpness).
"""

from __future__ import annotations

import math

import torch
from scipy import stats

from ..curvature import trace as curvature_trace
from ..errors import require_nonnegative, require_positive, require_positive_int
from ..objective import Cost, Objective
from ..results import Estimate
from ._common import (
    hutchinson,
    logit_normalized_objective,
    mean_stderr,
    perturbed_rises,
    scaled_cost,
)
from .registry import register
from .result import Measure


@register("average_case", "E[L(θ+δ)] − L(θ), δ ~ N(0, σ²) (adaptive: σ|θ|), Monte Carlo with a 95% CI")
def average_case(obj: Objective, *, sigma: float = 0.01, adaptive: bool = False, samples: int = 64,
                 antithetic: bool = True, second_order_samples: int = 30, logit_normalize: bool = False,
                 chunk_size: int = 32, seed: int = 0) -> Measure:
    """E_δ[L(θ+δ)] − L(θ) by Monte Carlo over ``samples`` draws (antithetic pairs ±δ by default).

    ``stderr`` is the standard error over the draws and ``estimate`` carries a Student-t 95% interval.
    ``extra["second_order"]`` = ½σ²·tr(H) (Hutch++) or, adaptive, ½σ²·Σθ_i²H_ii = ½σ²·E[(z∘θ)ᵀH(z∘θ)]
    (Hutchinson on diag(θ)·H·diag(θ)), from ``second_order_samples`` HVPs (0 skips it).
    Cost: samples (×2 antithetic) perturbed losses, batched ``chunk_size`` to a data pass.
    """
    require_positive("sigma", sigma)
    require_positive_int("samples", samples)
    require_nonnegative("second_order_samples", second_order_samples)
    target, extra_cost = obj, Cost()
    if logit_normalize:
        target = logit_normalized_objective(obj)
    std = sigma * obj.params.abs() if adaptive else sigma
    rises = perturbed_rises(target, std, samples, seed, antithetic=antithetic, chunk_size=chunk_size)
    value, err = _finite_mean(rises)
    half = float(stats.t.ppf(0.975, samples - 1)) * err if samples > 1 and math.isfinite(err) else math.nan
    ci = Estimate(value, err, value - half, value + half, 0.95, "t") if math.isfinite(half) else None
    extra = {"samples": samples, "mode": obj.mode}
    if second_order_samples:
        extra.update(_second_order(target, sigma, adaptive, int(second_order_samples), seed))
    if target is not obj:
        extra_cost = scaled_cost(target.cost, 1.0)
    return Measure("average_case", value, err, cost=extra_cost, extra=extra, uncertainty=ci)


def _finite_mean(rises: torch.Tensor) -> tuple[float, float]:
    if not torch.isfinite(rises).all():
        return math.inf, math.nan  # some perturbed loss overflowed: the expectation is not finite
    return mean_stderr(rises)


def _second_order(obj: Objective, sigma: float, adaptive: bool, probes: int, seed: int) -> dict:
    """½σ²·tr(H) (or ½σ²·tr(DHD), D = diag(θ)) with its standard error."""
    if adaptive:
        d = obj.params
        tr, err = hutchinson(lambda v: d * obj.hvp(d * v), obj, max(probes, 2), seed)
    elif probes >= 6:
        res = curvature_trace(obj, "hutch++", probes, seed=seed)
        tr, err = res.value, res.stderr
    else:
        tr, err = hutchinson(obj.hvp, obj, max(probes, 2), seed)
    c = 0.5 * sigma ** 2
    return {"second_order": c * tr, "second_order_stderr": c * err}
