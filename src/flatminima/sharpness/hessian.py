"""Hessian-based sharpness: the largest eigenvalue, the trace and the Frobenius norm of H or the GGN.

    lambda_max = λ_max(M),   trace = tr(M),   frobenius = ‖M‖_F = sqrt(Σ_ij M_ij²) = sqrt(E_z ‖M z‖²)

with M = H = ∇²L(θ) or the generalised Gauss-Newton G (``operator="ggn"``; Schraudolph 2002). The
Frobenius identity holds for any z with E[zzᵀ] = I (Rademacher here): E‖Mz‖² = tr(MᵀM).
Refs: Keskar et al. 2017 and Jiang et al. 2020 (spectral norm as a sharpness measure); Hutchinson 1989,
Meyer et al. 2021 (trace). None is invariant to layer rescaling (Dinh et al. 2017).
"""

from __future__ import annotations

import math

import torch

from ..curvature import eigenvalues, make_operator
from ..curvature import trace as _trace
from ..errors import require_choice, require_positive_int
from ..objective import Objective
from ._common import generator, mean_stderr, rademacher
from .registry import register
from .result import Measure


@register("lambda_max", "largest eigenvalue of the Hessian (or GGN) by Lanczos, with a certified bound")
def lambda_max(obj: Objective, *, operator: str = "hessian", tol: float = 1e-4, max_iter: int | None = None,
               seed: int = 0) -> Measure:
    """λ_max(M) by Lanczos; exact up to ``extra['error_bound']`` (Bauer-Fike), so ``stderr`` is None.

    ``max_iter`` caps the products (default that of :func:`flatminima.curvature.eigenvalues`); a run that
    stops there says so in ``extra['converged']``. Ref: Keskar et al. 2017; Ghorbani et al. 2019 (Lanczos
    on network Hessians). Cost: tens of HVPs.
    """
    res = eigenvalues(obj, 1, "largest", tol=tol, max_iter=max_iter, operator=operator, seed=seed)
    return Measure("lambda_max", float(res.values[0]), None, extra={
        "error_bound": float(res.error_bounds[0]), "residual": float(res.residuals[0]),
        "converged": bool(res.converged[0]), "iterations": res.iterations, "mode": obj.mode})


@register("trace", "trace of the Hessian (or GGN) by Hutch++, with its standard error")
def trace(obj: Objective, *, operator: str = "hessian", samples: int = 60, method: str = "hutch++",
          seed: int = 0) -> Measure:
    """tr(M) by Hutch++ (Meyer et al. 2021) or Hutchinson (1989) from ``samples`` random probes; ``stderr``
    of the stochastic part."""
    res = _trace(obj, method, samples, operator=operator, seed=seed)
    return Measure("trace", res.value, res.stderr, extra={"mode": obj.mode})


@register("frobenius", "Frobenius norm of the Hessian (or GGN): sqrt(E‖Mz‖²), Rademacher z")
def frobenius(obj: Objective, *, operator: str = "hessian", samples: int = 30, method: str = "hutchinson",
              seed: int = 0) -> Measure:
    """‖M‖_F = sqrt(E_z‖Mz‖²) for Rademacher z (E[zzᵀ] = I), from ``samples`` products.

    ``method="exact"`` sums ‖M e_i‖² over the basis (``dim`` products). The standard error of ‖M‖_F
    comes from that of ‖M‖_F² by the delta method: se(√s) = se(s)/(2√s); both are reported.
    """
    require_choice("method", method, ["hutchinson", "exact"])
    require_positive_int("samples", samples)
    matvec = make_operator(obj, operator)
    if method == "exact":
        eye = torch.eye(obj.dim, dtype=obj.dtype, device=obj.device)
        sq, sq_err = float(sum(float(matvec(eye[i]).pow(2).sum()) for i in range(obj.dim))), 0.0
    else:
        gen = generator(seed)
        sq, sq_err = mean_stderr(torch.tensor([float(matvec(rademacher(obj, gen)).pow(2).sum())
                                               for _ in range(samples)], dtype=torch.float64))
    value = math.sqrt(max(sq, 0.0))
    err = sq_err / (2 * value) if value > 0 and not math.isnan(sq_err) else sq_err
    return Measure("frobenius", value, err, extra={"squared": sq, "squared_stderr": sq_err, "mode": obj.mode})
