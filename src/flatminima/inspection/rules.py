"""The rules behind the page's warnings: each fires only where the numbers support it, and says so.

Saddle (negative curvature)
    λmin + r_min < 0   and   |λmin| ≥ SADDLE_FRACTION · λmax
    r_min is λmin's true residual ‖Hv − λv‖: by Bauer-Fike some eigenvalue of H lies within r_min of λmin
    (converged or not), so the first condition certifies a negative eigenvalue. The second keeps out the
    tiny negative eigenvalues that round-off and nearly flat directions of over-parametrised networks give
    (Sagun et al. 2017; Ghorbani, Krishnan & Xiao 2019 see them at every trained network): negative
    curvature under 1% of the top curvature is negligible.

Above the stability threshold (Cohen et al. 2021; 2022 for Adam)
    λmax − b_max > threshold   (b_max: λmax's error bound; the preconditioned λmax(P⁻¹H) for Adam)
    a step of the optimiser at this learning rate is unstable along the top eigenvector of a quadratic
    with this curvature: training there does not settle (it oscillates or leaves the point).

Barrier between two solutions (Frankle et al. 2020)
    B > max(noise, BARRIER_FRACTION · ½(L(θ_a) + L(θ_b)))
    B the largest rise of the loss on the straight line above the chord of its ends; noise the rounding
    of a full-data loss, ``NOISE_ULPS``·eps(dtype)·√n·max_t L(t) for n samples. A rise of under 5% of the
    endpoint loss is not a barrier: the two solutions are linearly connected.

Not converged
    an eigenvalue whose true residual fails ``tol``·|λ| while still above the rounding floor (more
    products would have helped); at the floor the estimate is as good as the dtype allows and is noted,
    not warned about.
"""

from __future__ import annotations

import math
from typing import Any

SADDLE_FRACTION = 0.01
BARRIER_FRACTION = 0.05
NOISE_ULPS = 10.0

RULES = {
    "saddle": f"λmin + r < 0 (r: λmin's true residual, a Bauer-Fike bound) and |λmin| ≥ {SADDLE_FRACTION:g}·λmax",
    "stability": "λmax − (its error bound) > the optimiser's stability threshold",
    "barrier": (f"barrier > max(rounding noise {NOISE_ULPS:g}·eps·√n·max L, {BARRIER_FRACTION:g} × the mean "
                "endpoint loss)"),
    "not_converged": "true residual > tol·|λ| while above the dtype's rounding floor",
}


def warning(kind: str, text: str, **numbers: Any) -> dict[str, Any]:
    return {"kind": kind, "text": text, "rule": RULES[kind], "numbers": numbers}


def saddle(lam_min: float, residual: float, lam_max: float) -> dict[str, Any] | None:
    """The saddle warning, or None (module doc)."""
    if not (lam_min + residual < 0):
        return None
    ratio = abs(lam_min) / lam_max if lam_max > 0 else math.inf
    if ratio < SADDLE_FRACTION:
        return None
    return warning("saddle",
                   f"Negative curvature: λmin = {lam_min:.4g} (± {residual:.1g}) is below zero beyond its error "
                   f"bound and is {100 * ratio:.3g}% of λmax = {lam_max:.4g}. This point is a saddle or not yet "
                   "a minimum: the loss still decreases along λmin's eigenvector.",
                   lambda_min=lam_min, residual=residual, lambda_max=lam_max, ratio=ratio)


def stability(sharpness: float, bound: float, threshold: float, formula: str, what: str) -> dict[str, Any] | None:
    """The warning for a sharpness above the stability threshold, or None."""
    if not (sharpness - bound > threshold):
        return None
    return warning("stability",
                   f"{what} = {sharpness:.4g} (± {bound:.1g}) is above the stability threshold {formula} = "
                   f"{threshold:.4g} (×{sharpness / threshold:.3g}): a step at this learning rate is unstable "
                   "along the top eigenvector; training would not settle here.",
                   sharpness=sharpness, bound=bound, threshold=threshold)


def barrier_noise(values: Any, samples: int, eps: float) -> float:
    """The rounding noise of a full-data loss along a path (module doc)."""
    top = max(abs(float(v)) for v in values)
    return NOISE_ULPS * eps * math.sqrt(max(samples, 1)) * top


def barrier(a: str, b: str, height: float, loss_a: float, loss_b: float, noise: float) -> dict[str, Any] | None:
    """The barrier warning between solutions ``a`` and ``b``, or None (module doc)."""
    level = max(noise, BARRIER_FRACTION * 0.5 * (loss_a + loss_b))
    if not height > level:
        return None
    return warning("barrier",
                   f"Barrier between {a} and {b}: the loss on the straight line rises {height:.4g} above the chord "
                   f"of its ends (end losses {loss_a:.4g}, {loss_b:.4g}; threshold {level:.3g}). The two "
                   "solutions are not linearly connected.",
                   height=height, loss_a=loss_a, loss_b=loss_b, threshold=level)


def not_converged(name: str, value: float, residual: float, tol: float, floor: float) -> dict[str, Any] | None:
    """The warning for an eigenvalue Lanczos did not certify within its budget, or None."""
    if residual <= tol * abs(value) or residual <= floor * 1.0001:
        return None
    return warning("not_converged",
                   f"{name} = {value:.4g} did not converge within the budget: its true residual {residual:.2g} "
                   f"is above tol·|λ| = {tol * abs(value):.2g} (and above the rounding floor {floor:.2g}); it is "
                   "within ± residual of a true eigenvalue, but not necessarily of the one named. A larger "
                   "--budget gives Lanczos more steps.",
                   value=value, residual=residual, tol=tol, floor=floor)
