"""Spectral density of the Hessian by stochastic Lanczos quadrature (SLQ).

For a random unit probe v, m Lanczos steps give Ritz values θ_i and weights τ_i = (e₁ᵀ s_i)², a Gauss
quadrature of the spectral measure seen from v. Averaging over n_v probes and broadening each node with a
Gaussian of width σ gives the density
    φ(t) ≈ (1/n_v) Σ_l Σ_i τ_i^(l) · N(t; θ_i^(l), σ²)
(Lin, Saad & Yang 2016; Ghorbani, Krishnan & Xiao 2019; Yao et al. 2020 for PyHessian's variant).
The mass below zero, Σ τ_i [θ_i < −σ], is the fraction of negative curvature (beyond the broadening σ),
with its standard error
across probes.

Why hand-written: PyHessian's SLQ is tied to its single-batch class; the quadrature is a few lines on
top of our certified Lanczos.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import FlatminimaError, require_positive, require_positive_int
from ..validate import check_seed
from .lanczos import Krylov
from .operators import Curvature, as_operator, random_vector
from .results import DensityResult


def spectral_density(
    obj: Curvature,
    samples: int = 4,
    steps: int = 60,
    *,
    sigma: float | None = None,
    grid_points: int = 1000,
    operator: str | None = None,
    seed: int = 0,
    theta: torch.Tensor | None = None,
) -> DensityResult:
    """The Hessian's (or GGN's) eigenvalue density on a grid, its outliers and its negative mass, from
    ``samples`` random probes of ``steps`` Lanczos steps each.

    ``obj``: an Objective (``operator="hessian"`` or ``"ggn"``, at ``theta``), an operator view, a dense
    symmetric tensor or a SciPy ``LinearOperator`` (:func:`~flatminima.curvature.operators.as_operator`).

    Examples:
        On a 3 × 3 Hessian, 3 Lanczos steps find every eigenvalue (the quadrature nodes of each probe):

        >>> import torch
        >>> from flatminima import Objective
        >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        >>> obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.ones(3, dtype=torch.float64))
        >>> from flatminima.curvature import spectral_density
        >>> dens = spectral_density(obj, samples=2, steps=3, seed=0)
        >>> sorted(round(x, 6) for x in dens.nodes[0].tolist())
        [1.0, 2.0, 3.0]
        >>> dens.negative_mass, dens.samples  # no mass below zero: a minimum
        (0.0, 2)
    """
    probes = samples
    require_positive_int("samples", probes)
    require_positive_int("steps", steps)
    require_positive_int("grid_points", grid_points)
    if grid_points < 2:
        raise FlatminimaError(f"grid_points must be at least 2 (a density needs a grid), got {grid_points}; "
                              "e.g. 1000.")
    check_seed("seed", seed)
    if sigma is not None:
        require_positive("sigma", sigma)
    op = as_operator(obj, operator, theta)
    steps = min(steps, op.dim)
    matvec = op.matvec
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = np.zeros((probes, steps)), np.zeros((probes, steps))
    # One probe's Lanczos basis (steps + 1 vectors) and its stacked copy for reorthogonalisation.
    with op.reserve(2 * (steps + 1), f"the SLQ basis of steps={steps}"), op.meter() as cost:
        for p in range(probes):
            # Rademacher probes: ‖z‖² = n exactly, so each weight (u_jᵀz)²/‖z‖² varies less than with
            # Gaussian z (variance 2 − 2Σ_i u_ji⁴ instead of ≈ 2; Hutchinson 1989, Avron & Toledo 2011).
            probe = random_vector(op.dim, gen, op.like(), "rademacher")
            krylov = Krylov(matvec, probe, gen, capacity=steps + 1)
            while krylov.size < steps and krylov.step():
                pass
            values, S = krylov.ritz()
            nodes[p, : len(values)], weights[p, : len(values)] = values, S[0, :] ** 2
            del krylov, probe  # freed before the next probe's basis is allocated: one basis at a time
    lo, hi = nodes.min(), nodes.max()
    width = max(hi - lo, 1e-12)
    sigma = sigma if sigma is not None else 0.01 * width
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, grid_points)
    density = np.zeros_like(grid)
    for t, w in zip(nodes.ravel(), weights.ravel(), strict=True):
        if w > 0:
            density += w * np.exp(-((grid - t) ** 2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    density /= probes
    # Zero curvature is common (ReLU nets, over-parametrisation); nodes within the broadening width of 0
    # are not counted as negative, so round-off around a null space does not read as a saddle.
    negative = (weights * (nodes < -sigma)).sum(1)
    bulk_edge, outliers = _outliers(nodes, weights)
    return DensityResult(
        product=op.notes(),  # attention backend, the product method's check or error estimate
        grid=grid, density=density, nodes=nodes, weights=weights, sigma=float(sigma),
        negative_mass=float(negative.mean()),
        negative_mass_stderr=float(negative.std(ddof=1) / math.sqrt(probes)) if probes > 1 else float("nan"),
        bulk_edge=bulk_edge, outliers=outliers, samples=probes, steps=steps, operator=op.kind, seed=seed,
        mode=op.mode, cost=cost, precision=op.precision,
    )


def _outliers(nodes: np.ndarray, weights: np.ndarray, quantile: float = 0.99) -> tuple[float, list[float]]:
    """The bulk edge (quantile of the pooled spectral measure) and the distinct nodes beyond it."""
    order = np.argsort(nodes.ravel())
    t, w = nodes.ravel()[order], weights.ravel()[order]
    cdf = np.cumsum(w) / w.sum()
    edge = float(t[min(np.searchsorted(cdf, quantile), len(t) - 1)])
    above = np.sort(t[t > edge])[::-1]
    distinct: list[float] = []
    for x in above:  # the same outlier appears once per probe: merge nodes within 1e-3 relative
        if not distinct or abs(x - distinct[-1]) > 1e-3 * max(abs(x), 1e-12):
            distinct.append(float(x))
    return edge, distinct
