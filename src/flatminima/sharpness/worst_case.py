"""Worst-case sharpness: the largest loss rise in a neighbourhood, by projected gradient ascent.

    S_ρ(θ) = max_{‖T⁻¹δ‖_p ≤ ρ} L(θ+δ) − L(θ),   p ∈ {2, ∞}

- plain (SAM's ρ-sharpness, Foret et al. 2021): T = I;
- adaptive (ASAM, Kwon et al. 2021): T = diag(|θ| + η), so the ball scales with each weight and the
  measure is invariant to rescaling a layer by α and the next by 1/α (η = 0 by default for exact
  invariance; ASAM's η > 0 breaks it slightly);
- Keskar et al. 2017's ε-sharpness: the box |δ_i| ≤ ε(|θ_i| + 1), reported as a percentage
  100·(max L(θ+δ) − L(θ))/(1 + L(θ)) as in the paper (the raw rise is in ``extra``);
- m-sharpness (Andriushchenko et al. 2023): the average over disjoint data batches of size m of each
  batch's worst-case rise, each with its own δ: (1/B) Σ_b max_δ L_b(θ+δ) − L_b(θ).

The max is found by ascent in u = T⁻¹δ: normalised gradient steps projected on the ℓ2 ball, or sign steps
clipped to the box (ℓ∞, the PGD of Madry et al. 2018), from ``restarts`` random starts. The value is the
largest rise seen on any iterate of any restart: a lower bound of the true max (exact on quadratics at
their minimum, where the ascent is a power iteration); ``extra["restarts"]`` gives each restart's best
so their spread shows how far from the max the search may be.
"""

from __future__ import annotations

import math

import torch

from ..errors import (
    FlatminimaError,
    require_choice,
    require_nonnegative,
    require_positive,
    require_positive_int,
)
from ..objective import Cost, Objective
from ._common import (
    derived,
    gaussian_rows,
    generator,
    logit_normalized_objective,
    losses_at,
    mean_stderr,
    scaled_cost,
    tensor_data,
)
from .registry import register
from .result import Measure


def ascend(obj: Objective, scale: torch.Tensor, rho: float, norm: str, *, steps: int, restarts: int,
           step_size: float | None, seed: int, chunk_size: int = 32) -> tuple[float, list[float], float]:
    """max over restarts and iterates of L(θ + scale∘u) − L(θ), ‖u‖_p ≤ ρ.

    Returns (max, each restart's max, L(θ)).
    """
    theta, gen = obj.params, generator(seed)
    base = obj.loss()
    step = rho * (step_size if step_size is not None else (1.0 if norm == "l2" else 2.5 / steps))
    best = []
    for _ in range(restarts):
        z = gaussian_rows(1, obj, gen)[0]
        u = rho * z / z.norm() if norm == "l2" else rho * (2 * torch.rand(
            obj.dim, generator=gen, dtype=torch.float64).to(z) - 1)
        path = [u]
        for _ in range(steps):
            g = scale * obj.grad(theta + scale * u)
            if not torch.isfinite(g).all() or float(g.abs().max()) == 0.0:
                break  # a stationary point (or overflow): no ascent direction left
            if norm == "l2":
                u = u + step * g / g.norm()
                u = u * min(1.0, rho / float(u.norm()))
            else:
                u = (u + step * g.sign()).clamp(-rho, rho)
            path.append(u)
        losses = losses_at(obj, theta + scale * torch.stack(path), chunk_size)
        losses = torch.where(torch.isnan(losses), torch.full_like(losses, math.inf), losses)
        best.append(float(losses.max()) - base)
    return max(best), best, base


def _scale(obj: Objective, adaptive: bool, eta: float) -> torch.Tensor:
    theta = obj.params
    return theta.abs() + eta if adaptive else torch.ones_like(theta)


@register("worst_case", "max loss rise in an ℓ2/ℓ∞ ball of radius ρ (SAM; adaptive = ASAM; m-sharpness)")
def worst_case(obj: Objective, *, rho: float = 0.05, norm: str = "l2", adaptive: bool = False,
               m: int | None = None, eta: float = 0.0, steps: int = 20, restarts: int = 3,
               step_size: float | None = None, logit_normalize: bool = False, max_batches: int | None = None,
               shuffle: bool = True, chunk_size: int = 32, seed: int = 0) -> Measure:
    """max_{‖T⁻¹δ‖_p ≤ ρ} L(θ+δ) − L(θ) (Foret et al. 2021; adaptive T = |θ|+η, Kwon et al. 2021).

    ``m``: m-sharpness (Andriushchenko et al. 2023), the mean over disjoint batches of m samples (in a
    seeded random order, or in data order with ``shuffle=False``; at most ``max_batches`` of them) of each
    batch's worst-case rise, with the standard error over batches. ``logit_normalize`` measures the loss
    of z/‖z‖₂ (their logit-normalised variant). Cost: restarts × steps gradients (per batch for m).
    ``step_size`` is in units of ρ (default 1 for ℓ2, 2.5/steps for ℓ∞). The iterates' losses are
    evaluated ``chunk_size`` at a time with ``vmap`` (1: one by one, faster for conv nets on CPU).
    """
    require_positive("rho", rho)
    require_choice("norm", norm, ["l2", "linf"])
    require_nonnegative("eta", eta)
    require_positive_int("steps", steps)
    require_positive_int("restarts", restarts)
    if step_size is not None:
        require_positive("step_size", step_size)
    target, extra_cost = obj, Cost()
    if logit_normalize:
        target = logit_normalized_objective(obj)
    require_positive_int("chunk_size", chunk_size)
    kw = dict(steps=steps, restarts=restarts, step_size=step_size, seed=seed, chunk_size=chunk_size)
    if m is None:
        value, per_restart, base = ascend(target, _scale(obj, adaptive, eta), rho, norm, **kw)
        if target is not obj:
            extra_cost = scaled_cost(target.cost, 1.0)
        return Measure("worst_case", value, None, cost=extra_cost, extra={
            "restarts": per_restart, "spread": max(per_restart) - min(per_restart), "base_loss": base,
            "mode": obj.mode})
    require_positive_int("m", m)
    rises, costs = _m_sharpness(target, m, max_batches, shuffle, lambda o: ascend(
        o, _scale(obj, adaptive, eta), rho, norm, **kw)[0], seed)
    value, err = mean_stderr(torch.tensor(rises, dtype=torch.float64))
    return Measure("worst_case", value, err, cost=costs, extra={"batch_rises": rises, "batches": len(rises),
                                                                 "mode": obj.mode})


def _m_sharpness(obj: Objective, m: int, max_batches: int | None, shuffle: bool, rise_of, seed: int):
    """Each batch's rise on a sub-objective over m samples; costs in passes over the full data."""
    tensors = tensor_data(obj, "m-sharpness (worst_case with m=...)")
    n = tensors[0].shape[0]
    if m > n:
        raise FlatminimaError(f"m={m} is larger than the data ({n} samples); choose m <= {n}.")
    order = torch.randperm(n, generator=generator(seed)) if shuffle else torch.arange(n)
    chunks = [order[i:i + m] for i in range(0, n - m + 1, m)]
    if max_batches is not None:
        require_positive_int("max_batches", max_batches)
        chunks = chunks[:max_batches]
    rises, cost = [], Cost()
    for idx in chunks:
        sub = derived(obj, data=tuple(t[idx] for t in tensors))
        rises.append(rise_of(sub))
        cost = cost + scaled_cost(sub.cost, m / n)
    return rises, cost


@register("keskar", "Keskar et al.'s ε-sharpness: % loss rise in the box |δ_i| <= ε(|θ_i|+1)")
def keskar(obj: Objective, *, epsilon: float = 1e-3, steps: int = 20, restarts: int = 3,
           step_size: float | None = None, chunk_size: int = 32, seed: int = 0) -> Measure:
    """100·(max_{|δ_i| ≤ ε(|θ_i|+1)} L(θ+δ) − L(θ)) / (1 + L(θ))   (Keskar et al. 2017, Metric 2.1).

    Keskar et al. maximise with L-BFGS-B in the full space (their A = I_n); we use ℓ∞ projected sign
    ascent with restarts. Not invariant to layer rescaling (the +1 fixes the box's scale).
    """
    require_positive("epsilon", epsilon)
    require_positive_int("steps", steps)
    require_positive_int("restarts", restarts)
    scale = obj.params.abs() + 1.0
    rise, per_restart, base = ascend(obj, scale, epsilon, "linf", steps=steps, restarts=restarts,
                                     step_size=step_size, seed=seed, chunk_size=chunk_size)
    return Measure("keskar", 100.0 * rise / (1.0 + base), None, extra={
        "rise": rise, "base_loss": base, "restarts": [100.0 * r / (1.0 + base) for r in per_restart],
        "spread": 100.0 * (max(per_restart) - min(per_restart)) / (1.0 + base), "unit": "percent",
        "mode": obj.mode})
