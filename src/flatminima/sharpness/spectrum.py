"""The top of the Hessian spectrum: the k largest eigenvalues λ₁ ≥ … ≥ λ_k by Lanczos.

    top_eigenvalues: value = λ₁(M), extra["values"] = [λ₁, …, λ_k],  M = H or the GGN (``operator="ggn"``)

``lambda_max`` is this with k = 1; the k values show how isolated the top direction is (the outliers of
the spectrum: Sagun et al. 2017, Ghorbani et al. 2019). Exact up to ``extra["error_bounds"]``, so
``stderr`` is None; ``extra["converged"]`` is True only when every one of the k pairs converged.
"""

from __future__ import annotations

from ..curvature import eigenvalues
from ..errors import require_positive_int
from ..objective import Objective
from .registry import register
from .result import Measure


@register("top_eigenvalues", "the k largest Hessian (or GGN) eigenvalues by Lanczos; value λ₁, all k in extra")
def top_eigenvalues(obj: Objective, *, k: int = 3, operator: str = "hessian", tol: float = 1e-5,
                    max_iter: int | None = None, seed: int = 0) -> Measure:
    """λ₁ ≥ … ≥ λ_k of M by Lanczos (``max_iter`` products at most; default that of
    :func:`flatminima.curvature.eigenvalues`); each with its certified error bound."""
    require_positive_int("k", k)
    res = eigenvalues(obj, k, "largest", tol=tol, max_iter=max_iter, operator=operator, seed=seed)
    each = [bool(c) for c in res.converged]
    return Measure("top_eigenvalues", float(res.values[0]), None, extra={
        "values": [float(v) for v in res.values], "error_bounds": [float(b) for b in res.error_bounds],
        "residuals": [float(r) for r in res.residuals], "converged_each": each, "converged": all(each),
        "iterations": res.iterations, "mode": obj.mode})
