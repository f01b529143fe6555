"""The lab's interval helpers: a thin adapter over :mod:`flatminima.statistics` (the one implementation).

The lab formats ``(estimate, low, high)`` triples; these functions return them from the shared
:class:`~flatminima.statistics.Interval` results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .. import statistics as _st


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean of independent runs (NaN interval for n < 2)."""
    return _st.t_interval(values, level).triple()


def bootstrap(
    values: Sequence,
    stat: Callable[[np.ndarray], float],
    *,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(statistic, low, high): BCa bootstrap over the rows of ``values`` (percentile where BCa is undefined)."""
    return _st.bootstrap(values, stat, reps=reps, level=level, seed=seed).triple()


def spearman_ci(x: Sequence[float], y: Sequence[float], *, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's ρ of (x, y) with a 95 % bootstrap interval over the (independent) pairs."""
    pairs = np.column_stack([x, y])

    def rho(p: np.ndarray) -> float:
        return _st.spearman_rho(p[:, 0], p[:, 1])

    return bootstrap(pairs, rho, seed=seed)


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """(rate, low, high): Wilson score interval for a binomial proportion (Wilson 1927)."""
    return _st.wilson(successes, n, level).triple()


def fmt_ci(triple: tuple[float, float, float], digits: int = 3) -> str:
    """'m [lo, hi]' with ``digits`` significant digits."""
    return _st.fmt_interval(_st.Interval(*triple, level=math.nan), digits)


def sign_verdict(
    ci: tuple[float, float, float],
    *,
    positive: str = "supported",
    negative: str = "contradicted",
    neither: str = "inconclusive",
) -> str:
    """Verdict from an interval for an effect whose claimed sign is positive."""
    d = _st.Interval(*ci, level=math.nan).direction()
    return positive if d > 0 else negative if d < 0 else neither
