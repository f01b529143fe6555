"""The report's statistics: re-exported from :mod:`flatminima.statistics` (the one implementation).

``correlate`` is kept for callers of the older API: τ and ρ with cluster-bootstrap intervals (points
are their own clusters unless ``clusters`` is given).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from ..statistics import (
    Interval,
    bootstrap_ci,
    cluster_bootstrap,
    conditional_mi,
    correlation_table,
    granulated_tau,
    granulated_tau_draws,
    holm,
    kendall_tau,
    rho_intervals,
    spearman_rho,
)


def correlate(
    x: Sequence[float],
    y: Sequence[float],
    *,
    samples: int = 10000,
    level: float = 0.95,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, Interval]:
    """Kendall τ and Spearman ρ of x vs y, each with its (cluster-)bootstrap interval (same resamples);
    ``samples`` bootstrap resamples."""
    cl = list(range(len(x))) if clusters is None else list(clusters)
    return {
        "tau": cluster_bootstrap(x, y, cl, statistic="tau", samples=samples, level=level, seed=seed),
        "rho": cluster_bootstrap(x, y, cl, statistic="rho", samples=samples, level=level, seed=seed),
    }


__all__ = [
    "Interval",
    "bootstrap_ci",
    "cluster_bootstrap",
    "conditional_mi",
    "correlate",
    "correlation_table",
    "granulated_tau",
    "granulated_tau_draws",
    "holm",
    "kendall_tau",
    "rho_intervals",
    "spearman_rho",
]
