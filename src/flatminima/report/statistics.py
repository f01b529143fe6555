"""Rank correlations between a sharpness measure and a target, with bootstrap intervals.

* Kendall's τ_b and Spearman's ρ come from SciPy (``scipy.stats.kendalltau``, ``spearmanr``).
* Intervals: the percentile bootstrap over runs (Efron & Tibshirani 1993): resample the n (measure,
  target) pairs with replacement B times, recompute the statistic, take the (α/2, 1 − α/2) quantiles.
  Resamples where the statistic is undefined (all ties) are dropped and counted.
* Granulated τ (Jiang et al. 2020, "Fantastic generalization measures", eq. 4): for each swept
  hyperparameter axis i, ψ_i is the mean, over every setting of the *other* axes (the seed counts as an
  other axis here), of Kendall's τ computed over the runs that differ only in axis i; Ψ = mean_i ψ_i.
  It asks whether the measure tracks the target when one knob moves at a time, which a pooled τ can
  miss (one dominant knob can drive the whole pooled correlation).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ..errors import FlatminimaError


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ_b (ties accounted); NaN when either variable is constant."""
    if len(x) < 2:
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ (Pearson correlation of average ranks); NaN when either variable is constant."""
    if len(x) < 2 or np.ptp(np.asarray(x, float)) == 0 or np.ptp(np.asarray(y, float)) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


@dataclass
class Interval:
    estimate: float
    low: float
    high: float
    level: float
    resamples: int  # resamples where the statistic was defined

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def bootstrap_ci(
    x: Sequence[float],
    y: Sequence[float],
    statistic: Callable[[Any, Any], float],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic(x, y)`` over resampled (x_i, y_i) pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y):
        raise FlatminimaError(f"x and y must have the same length, got {len(x)} and {len(y)}.")
    if not 0 < level < 1:
        raise FlatminimaError(f"level must be in (0, 1), got {level!r}.")
    est = statistic(x, y)
    if len(x) < 3 or math.isnan(est):
        return Interval(est, math.nan, math.nan, level, 0)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    draws = np.array([statistic(x[i], y[i]) for i in idx])
    draws = draws[~np.isnan(draws)]
    if len(draws) < max(10, n_boot // 10):
        return Interval(est, math.nan, math.nan, level, len(draws))
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(est, float(lo), float(hi), level, len(draws))


def granulated_tau(
    rows: Sequence[dict[str, Any]], axes: Sequence[str], x: str, y: str, fixed: Sequence[str] = ("seed",)
) -> dict[str, Any]:
    """Jiang et al.'s granulated Kendall τ of ``x`` vs ``y`` over hyperparameter ``axes``.

    ``rows`` are dicts holding every axis, the ``fixed`` keys (held equal within a group, like the
    seed), and ``x``, ``y``. Groups with fewer than two distinct values of the axis, or where τ is
    undefined (constant x or y), are skipped and counted. Returns ``{"psi": {axis: ψ_i}, "groups":
    {axis: groups used}, "skipped": {axis: groups skipped}, "Psi": mean of the defined ψ_i}``.
    """
    psi, used, skipped = {}, {}, {}
    for axis in axes:
        others = [a for a in axes if a != axis] + list(fixed)
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in rows:
            groups[tuple(repr(r[o]) for o in others)].append(r)
        taus, skip = [], 0
        for members in groups.values():
            if len({repr(m[axis]) for m in members}) < 2:
                skip += 1
                continue
            t = kendall_tau([m[x] for m in members], [m[y] for m in members])
            if math.isnan(t):
                skip += 1
            else:
                taus.append(t)
        psi[axis] = float(np.mean(taus)) if taus else math.nan
        used[axis], skipped[axis] = len(taus), skip
    defined = [v for v in psi.values() if not math.isnan(v)]
    return {
        "psi": psi,
        "groups": used,
        "skipped": skipped,
        "Psi": float(np.mean(defined)) if defined else math.nan,
    }


def correlate(
    x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, Interval]:
    """Kendall τ and Spearman ρ of x vs y, each with its bootstrap interval (same resamples)."""
    return {
        "tau": bootstrap_ci(x, y, kendall_tau, n_boot=n_boot, level=level, seed=seed),
        "rho": bootstrap_ci(x, y, spearman_rho, n_boot=n_boot, level=level, seed=seed),
    }
