"""Intervals for the lab's numbers: t-intervals across seeds, bootstrap, Wilson intervals for rates."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean of independent runs (NaN interval for n < 2)."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def bootstrap(
    values: Sequence,
    stat: Callable[[np.ndarray], float],
    *,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(statistic, low, high): percentile bootstrap (Efron 1979) resampling the rows of ``values``."""
    v = np.asarray(values)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(reps):
        b = stat(v[rng.integers(0, len(v), len(v))])
        if np.isfinite(b):
            boots.append(b)
    lo, hi = np.percentile(boots, [50 * (1 - level), 50 * (1 + level)]) if boots else (np.nan, np.nan)
    return float(stat(v)), float(lo), float(hi)


def spearman_ci(x: Sequence[float], y: Sequence[float], *, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's ρ of (x, y) with a bootstrap 95 % interval over the pairs."""
    pairs = np.column_stack([x, y])

    def rho(p):
        if len(np.unique(p[:, 0])) < 2 or len(np.unique(p[:, 1])) < 2:
            return float("nan")
        return float(stats.spearmanr(p[:, 0], p[:, 1]).statistic)

    return bootstrap(pairs, rho, seed=seed)


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """(rate, low, high): Wilson score interval for a binomial proportion (Wilson 1927)."""
    if n == 0:
        return float("nan"), 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def fmt_ci(triple: tuple[float, float, float], digits: int = 3) -> str:
    """'m [lo, hi]' with ``digits`` significant digits."""
    m, lo, hi = triple
    if math.isnan(lo):
        return f"{m:.{digits}g}"
    return f"{m:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def sign_verdict(
    ci: tuple[float, float, float],
    *,
    positive: str = "supported",
    negative: str = "not supported",
    neither: str = "mixed",
) -> str:
    """Verdict from an interval for an effect whose claimed sign is positive."""
    _, lo, hi = ci
    if math.isnan(lo):
        return neither
    if lo > 0:
        return positive
    if hi < 0:
        return negative
    return neither
