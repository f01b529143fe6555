"""Deprecated: use :mod:`flatminima.statistics` (the one implementation) directly.

This module used to adapt :class:`~flatminima.statistics.Interval` results to ``(estimate, low, high)``
triples for the lab. The lab now works with the intervals themselves (``Interval.triple()`` gives the
triple, :func:`flatminima.statistics.fmt_interval` the text). Every function here still works, returns
what it always did, and emits a :class:`DeprecationWarning` naming its replacement.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from .. import statistics as _st


def _deprecated(name: str, replacement: str) -> None:
    # stacklevel 3: the warning points at the caller of the deprecated function, not at this helper
    warnings.warn(f"flatminima.lab.stats.{name} is deprecated; use {replacement}.", DeprecationWarning,
                  stacklevel=3)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Deprecated: ``flatminima.statistics.t_interval(values, level).triple()``.

    (mean, low, high): Student-t interval for the mean of independent runs (NaN interval for n < 2)."""
    _deprecated("t_interval", "flatminima.statistics.t_interval(...).triple()")
    return _st.t_interval(values, level).triple()


def bootstrap(
    values: Sequence,
    stat: Callable[[np.ndarray], float],
    *,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Deprecated: ``flatminima.statistics.bootstrap(values, stat, ...).triple()``.

    (statistic, low, high): BCa bootstrap over the rows of ``values`` (percentile where BCa is undefined)."""
    _deprecated("bootstrap", "flatminima.statistics.bootstrap(...).triple()")
    return _st.bootstrap(values, stat, reps=reps, level=level, seed=seed).triple()


def spearman_ci(x: Sequence[float], y: Sequence[float], *, seed: int = 0) -> tuple[float, float, float]:
    """Deprecated: ``flatminima.statistics.bootstrap`` of ``flatminima.statistics.spearman_rho`` over the pairs.

    Spearman's ρ of (x, y) with a 95 % bootstrap interval over the (independent) pairs."""
    _deprecated("spearman_ci", "flatminima.statistics.bootstrap(pairs, spearman_rho of the columns).triple()")
    pairs = np.column_stack([x, y])

    def rho(p: np.ndarray) -> float:
        return _st.spearman_rho(p[:, 0], p[:, 1])

    return _st.bootstrap(pairs, rho, seed=seed).triple()


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """Deprecated: ``flatminima.statistics.wilson(successes, n, level).triple()``.

    (rate, low, high): Wilson score interval for a binomial proportion (Wilson 1927)."""
    _deprecated("wilson", "flatminima.statistics.wilson(...).triple()")
    return _st.wilson(successes, n, level).triple()


def fmt_ci(triple: tuple[float, float, float], digits: int = 3) -> str:
    """Deprecated: ``flatminima.statistics.fmt_interval(interval, digits)``.

    'm [lo, hi]' with ``digits`` significant digits."""
    _deprecated("fmt_ci", "flatminima.statistics.fmt_interval(interval, digits)")
    return _st.fmt_interval(_st.Interval(*triple, level=math.nan), digits)


def sign_verdict(
    ci: tuple[float, float, float],
    *,
    positive: str = "supported",
    negative: str = "contradicted",
    neither: str = "inconclusive",
) -> str:
    """Deprecated: ``flatminima.statistics.Interval.direction()`` (or ``flatminima.lab.rules.sign_test``).

    Verdict from an interval for an effect whose claimed sign is positive."""
    _deprecated("sign_verdict", "flatminima.statistics.Interval.direction() or flatminima.lab.rules.sign_test")
    d = _st.Interval(*ci, level=math.nan).direction()
    return positive if d > 0 else negative if d < 0 else neither
