"""The one statistics module of flatminima: intervals, rank correlations, multiplicity, ECE.

The study report, the lab and the claims all use it.

Vocabulary
    :class:`Interval` — estimate, low, high, level, the number of resamples behind it, the Monte-Carlo
    error of each bound (``mc_low``, ``mc_high``: the standard error of the bound from splitting the
    resamples into batches) and the method's name.

Rank correlations across a study (seeds of one configuration are one cluster)
    Kendall's τ_b and Spearman's ρ with intervals from a *cluster bootstrap*: whole hyperparameter
    configurations are drawn with replacement, each with all its seeds (Davison & Hinkley 1997, §3.8).
    SciPy's ``scipy.stats.bootstrap`` resamples observations, not clusters, so this resampling is written
    here by hand, vectorised: a resample is a vector of multiplicities, and τ_b of the resampled multiset
    is a ratio of quadratic forms in it (:func:`tau_b_weighted`, equal to ``scipy.stats.kendalltau`` on
    the expanded data; tested). Intervals are percentile intervals. Resamples grow adaptively
    (:func:`correlation_table`): from ``samples`` they double until every deciding bound is farther from
    0 than ``mc_k`` (= 3) Monte-Carlo errors, or a cap is reached.

Multiplicity: Holm–Bonferroni over the whole table
    All measure × target τ tests of a report are one family. Holm's step-down (Holm 1979) controls the
    family-wise error at α under *any* dependence; the tests here share runs and the measures are
    correlated with one another, so the positive-dependence condition of Benjamini–Hochberg cannot be
    taken for granted — hence Holm. SciPy has BH (``false_discovery_control``) but not Holm; Holm is
    written here (:func:`holm`). The k-th test (by ascending bootstrap p-value) is judged on its
    percentile interval at level 1 − α/(m − k + 1); that is the *adjusted interval* the report prints.

Pre-registered verdict rule (three outcomes)
    For measure × target with the adjusted interval [lo, hi] of τ (Holm level of its step):
      * *flatter-better* or *sharper-better* (by the target's "better" end) when the interval excludes 0
        by more than ``mc_k`` Monte-Carlo errors of the nearer bound, and every earlier Holm step did too;
      * *inconclusive* otherwise (contains 0, lies within Monte-Carlo error of 0, Holm's step-down
        stopped earlier, or τ is undefined).
    The report has no preferred direction (both views of the literature are on the table), so neither
    direction is "contradicted": the two supported directions and *inconclusive* are the outcomes.

Granulated τ (Jiang et al. 2020, eq. 4) and its cluster-bootstrap interval: :func:`granulated_tau`,
:func:`granulated_tau_draws`. Conditional mutual information (Jiang et al. 2020; the PGDL 2020 score):
:func:`conditional_mi`. ECE (Guo et al. 2017): :func:`ece`. The lab's t, Wilson and plain (BCa)
bootstrap intervals: :func:`t_interval`, :func:`wilson`, :func:`bootstrap` (``scipy.stats.bootstrap``).

Robustness beyond the averages (STATISTICS.md §10–12): effective robustness, the shifted accuracy above the
probit (Miller et al. 2021) or logit (Taori et al. 2020) line of the other configurations
(:func:`effective_robustness`, :func:`effective_robustness_over_shifts`); Dziugaite et al.'s (2020) robust
sign-error over environments that vary one hyperparameter, with a Hoeffding noise filter
(:func:`sign_error`, :func:`hoeffding_threshold`); and the rank partial correlation given controls with a
cluster-bootstrap interval under Holm (:func:`partial_association`, :func:`partial_association_table`).
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special, stats

from .errors import FlatminimaError
from .results import Estimate

MC_K = 3.0  # a bound decides a verdict only when it is farther from 0 than MC_K Monte-Carlo errors
BATCHES = 16  # resamples are split into this many batches for the Monte-Carlo error of a bound


# ----------------------------------------------------------------------------------------------------------
# the interval vocabulary


@dataclass
class Interval:
    """``estimate`` with the interval [``low``, ``high``] at ``level``; ``mc_low``/``mc_high`` are the
    Monte-Carlo standard errors of the bounds (0 for closed-form intervals, NaN when unknown)."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int = 0  # resamples where the statistic was defined (0 for closed-form intervals)
    mc_low: float = math.nan
    mc_high: float = math.nan
    method: str = ""

    def excludes_zero(self, mc_k: float = 0.0) -> bool:
        """True when the interval excludes 0, by more than ``mc_k`` Monte-Carlo errors of the bound."""
        return self.direction(mc_k) != 0

    def direction(self, mc_k: float = 0.0) -> int:
        """+1 (interval above 0), −1 (below 0) or 0 (contains 0, undefined, or within MC error of 0)."""
        if math.isnan(self.low) or math.isnan(self.high):
            return 0
        el = 0.0 if math.isnan(self.mc_low) else self.mc_low
        eh = 0.0 if math.isnan(self.mc_high) else self.mc_high
        if self.low > mc_k * el and self.low > 0:
            return 1
        if self.high < -mc_k * eh and self.high < 0:
            return -1
        return 0

    def triple(self) -> tuple[float, float, float]:
        return self.estimate, self.low, self.high

    def to_estimate(self) -> Estimate:
        """The interval as the library's one uncertainty type (no standard error: the interval is the error)."""
        return Estimate(self.estimate, None, self.low, self.high, self.level, self.method)

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": float(self.estimate), "low": float(self.low), "high": float(self.high),
                "level": float(self.level), "resamples": int(self.resamples), "mc_low": float(self.mc_low),
                "mc_high": float(self.mc_high), "method": self.method}


def quantile_mc(draws: np.ndarray, q: float, batches: int = BATCHES) -> tuple[float, float]:
    """(quantile ``q`` of ``draws``, its Monte-Carlo standard error from ``batches`` equal batches)."""
    d = np.asarray(draws, float)
    value = float(np.quantile(d, q))
    k = min(batches, len(d) // 2)
    if k < 2:
        return value, math.nan
    per = np.array([np.quantile(b, q) for b in np.array_split(d, k)])
    return value, float(per.std(ddof=1) / math.sqrt(k))


def percentile_interval(estimate: float, draws: np.ndarray, level: float, method: str = "percentile") -> Interval:
    """Percentile interval of bootstrap ``draws`` (NaNs dropped) with the MC error of each bound."""
    d = np.asarray(draws, float)
    d = d[~np.isnan(d)]
    if math.isnan(estimate) or len(d) < 20:
        return Interval(estimate, math.nan, math.nan, level, len(d), method=method)
    lo, elo = quantile_mc(d, (1 - level) / 2)
    hi, ehi = quantile_mc(d, (1 + level) / 2)
    return Interval(estimate, lo, hi, level, len(d), elo, ehi, method)


# ----------------------------------------------------------------------------------------------------------
# closed-form intervals and the plain bootstrap (the lab)


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Student-t interval for the mean of independent runs (NaN interval for n < 2)."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return Interval(m, math.nan, math.nan, level, 0, 0.0, 0.0, "t")
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return Interval(m, m - half, m + half, level, 0, 0.0, 0.0, "t")


def wilson(successes: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion (Wilson 1927)."""
    if n == 0:
        return Interval(math.nan, 0.0, 1.0, level, 0, 0.0, 0.0, "wilson")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, centre - half, centre + half, level, 0, 0.0, 0.0, "wilson")


def bootstrap(
    values: Sequence,
    stat: Callable[[np.ndarray], float],
    *,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    method: str = "BCa",
) -> Interval:
    """Bootstrap interval of ``stat`` over the rows of ``values`` (independent rows), by
    ``scipy.stats.bootstrap`` (BCa by default, Efron 1987). Where BCa is undefined (a degenerate
    bootstrap distribution, e.g. a perfect ranking) the percentile interval is returned instead.
    The MC error of each bound is the batch error of the bootstrap quantile at that bound's level."""
    v = np.asarray(values)
    est = float(stat(v))
    if len(v) < 3 or not np.isfinite(est):
        return Interval(est, math.nan, math.nan, level, 0, method=method)

    def on_rows(i: np.ndarray) -> float:
        b = float(stat(v[i.astype(int)]))
        return b if np.isfinite(b) else math.nan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            (np.arange(len(v)),), on_rows, vectorized=False, n_resamples=reps,
            confidence_level=level, method=method, rng=seed,
        )
    dist = np.asarray(res.bootstrap_distribution, float)
    dist = dist[np.isfinite(dist)]
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    used = method
    if not (np.isfinite(lo) and np.isfinite(hi)):
        if len(dist) < 20:
            return Interval(est, math.nan, math.nan, level, len(dist), method=method)
        return percentile_interval(est, dist, level)
    # MC error of a bound: batch error of the empirical quantile at the level the bound sits at
    elo = quantile_mc(dist, float(np.mean(dist <= lo)))[1]
    ehi = quantile_mc(dist, float(np.mean(dist < hi)) if np.any(dist < hi) else 1.0)[1]
    return Interval(est, lo, hi, level, len(dist), elo, ehi, used)


def fmt_interval(iv: Interval, digits: int = 3) -> str:
    """'m [lo, hi]' with ``digits`` significant digits (just 'm' when the interval is undefined)."""
    if math.isnan(iv.low):
        return f"{iv.estimate:.{digits}g}"
    return f"{iv.estimate:.{digits}g} [{iv.low:.{digits}g}, {iv.high:.{digits}g}]"


# ----------------------------------------------------------------------------------------------------------
# rank correlations, point estimates


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ_b (ties accounted; ``scipy.stats.kendalltau``); NaN when either variable is constant."""
    if len(x) < 2:
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ (``scipy.stats.spearmanr``); NaN when either variable is constant."""
    if len(x) < 2 or np.ptp(np.asarray(x, float)) == 0 or np.ptp(np.asarray(y, float)) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


# ----------------------------------------------------------------------------------------------------------
# vectorised τ_b and ρ of resampled data (a resample = multiplicities of the original points)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks of the non-NaN entries (NaN kept): τ and ρ depend only on ranks, and ranks make ±inf
    values (e.g. an infinite output margin) comparable."""
    v = np.asarray(v, float)
    out = np.full(len(v), np.nan)
    ok = ~np.isnan(v)
    out[ok] = stats.rankdata(v[ok])
    return out


def _sgn(v: np.ndarray) -> np.ndarray:
    return np.sign(v[:, None] - v[None, :])


def _tau_forms(m: np.ndarray, a: np.ndarray, tx: np.ndarray, ty: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """τ_b for multiplicities ``m`` (B × G) of G units with pair-sum matrices ``a`` (concordance),
    ``tx``/``ty`` (x-ties, y-ties, diagonal included) and unit sizes (points per unit)."""
    n_tot = m @ sizes
    s = 0.5 * np.einsum("bi,bi->b", m @ a, m)
    n0 = n_tot * (n_tot - 1) / 2
    n1 = 0.5 * (np.einsum("bi,bi->b", m @ tx, m) - n_tot)
    n2 = 0.5 * (np.einsum("bi,bi->b", m @ ty, m) - n_tot)
    den = (n0 - n1) * (n0 - n2)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(den > 0, s / np.sqrt(np.where(den > 0, den, 1.0)), np.nan)
    return np.clip(tau, -1.0, 1.0)


def tau_b_weighted(x: Sequence[float], y: Sequence[float], weights: np.ndarray, units: np.ndarray | None = None
                   ) -> np.ndarray:
    """Kendall's τ_b of resampled data, for many resamples at once (pure numpy).

    ``weights`` is B × G: how often each unit was drawn. Units are the points themselves (``units`` None,
    G = n) or clusters (``units[k]`` = cluster index of point k): a drawn cluster brings all its points.
    τ_b = S / √((n0 − n1)(n0 − n2)) on the expanded multiset, where S (concordant − discordant pairs)
    and the tie counts n1, n2 are quadratic forms in the multiplicities; a point drawn twice is a pair
    tied in both variables, as in ``scipy.stats.kendalltau`` on the expanded data. NaN where undefined.
    """
    x, y = _ranks(x), _ranks(y)
    w = np.atleast_2d(np.asarray(weights, float))
    p = np.eye(len(x)) if units is None else np.eye(int(np.max(units)) + 1)[np.asarray(units)]
    a = p.T @ (_sgn(x) * _sgn(y)) @ p
    tx = p.T @ (x[:, None] == x[None, :]).astype(float) @ p
    ty = p.T @ (y[:, None] == y[None, :]).astype(float) @ p
    return _tau_forms(w, a, tx, ty, p.sum(0))


def _rank_matrix(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """C (G × n) with (m @ C)[k] = average rank of point k in the resample with unit multiplicities m,
    minus 1/2: Σ_l w_l [x_l < x_k] + (Σ_l w_l [x_l = x_k]) / 2, so the rank is that + 1/2."""
    less = (x[None, :] < x[:, None]).astype(float)  # [k, l] = x_l < x_k
    eq = (x[None, :] == x[:, None]).astype(float)
    return p.T @ (less + eq / 2).T


def rho_weighted(x: Sequence[float], y: Sequence[float], weights: np.ndarray, units: np.ndarray | None = None
                 ) -> np.ndarray:
    """Spearman's ρ of resampled data (multiplicities as in :func:`tau_b_weighted`), vectorised: the
    weighted Pearson correlation of the average ranks of the expanded multiset. NaN where undefined."""
    x, y = _ranks(x), _ranks(y)
    m = np.atleast_2d(np.asarray(weights, float))
    p = np.eye(len(x)) if units is None else np.eye(int(np.max(units)) + 1)[np.asarray(units)]
    w = m @ p.T  # B × n multiplicities of the points
    rx, ry = m @ _rank_matrix(x, p), m @ _rank_matrix(y, p)
    tot = w.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (w * rx).sum(1, keepdims=True) / tot, (w * ry).sum(1, keepdims=True) / tot
        cov = (w * (rx - mx) * (ry - my)).sum(1)
        vx, vy = (w * (rx - mx) ** 2).sum(1), (w * (ry - my) ** 2).sum(1)
        rho = np.where((vx > 1e-12) & (vy > 1e-12), cov / np.sqrt(vx * vy), np.nan)
    return np.clip(rho, -1.0, 1.0)


def cluster_ids(labels: Sequence[Hashable]) -> np.ndarray:
    """Integer cluster index per point, in order of first appearance."""
    index: dict[Hashable, int] = {}
    return np.array([index.setdefault(lab, len(index)) for lab in labels], dtype=int)


def resample_counts(n_units: int, samples: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """B × G multiplicities of G units drawn G times with replacement (one row per resample, B = ``samples``)."""
    if samples is None or rng is None:
        raise TypeError("resample_counts() needs samples and rng.")
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=samples).astype(float)


def cluster_bootstrap(
    x: Sequence[float],
    y: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    statistic: str = "tau",
    samples: int = 10000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile interval of τ_b (``statistic="tau"``) or ρ (``"rho"``) from the cluster bootstrap:
    clusters (configurations) are drawn with replacement, each with all its points (seeds). Written by
    hand because ``scipy.stats.bootstrap`` cannot resample clusters. ``clusters=range(n)`` gives the
    ordinary bootstrap over points. ``samples`` bootstrap resamples."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) != len(clusters):
        raise FlatminimaError(f"x, y and clusters must have one entry per run, got {len(x)}, {len(y)}, "
                              f"{len(clusters)}.")
    if not 0 < level < 1:
        raise FlatminimaError(f"level must be in (0, 1), got {level!r}.")
    units = cluster_ids(clusters)
    f, g = (kendall_tau, tau_b_weighted) if statistic == "tau" else (spearman_rho, rho_weighted)
    est = f(x, y)
    if units.max() + 1 < 3 or math.isnan(est):
        return Interval(est, math.nan, math.nan, level, 0, method="cluster bootstrap")
    m = resample_counts(int(units.max()) + 1, samples, np.random.default_rng(seed))
    return percentile_interval(est, g(x, y, m, units), level, "cluster bootstrap (percentile)")


def bootstrap_ci(
    x: Sequence[float],
    y: Sequence[float],
    statistic: Callable[[Any, Any], float],
    *,
    samples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> Interval:
    """Percentile bootstrap of ``statistic(x, y)`` (:func:`kendall_tau` or :func:`spearman_rho`, vectorised)
    resampling points, or whole clusters when ``clusters`` is given; ``samples`` resamples."""
    name = {kendall_tau: "tau", spearman_rho: "rho"}.get(statistic)
    if name is None:
        raise FlatminimaError("bootstrap_ci supports kendall_tau and spearman_rho; use bootstrap() otherwise.")
    cl = range(len(x)) if clusters is None else clusters
    return cluster_bootstrap(x, y, list(cl), statistic=name, samples=samples, level=level, seed=seed)


# ----------------------------------------------------------------------------------------------------------
# multiplicity


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (Holm 1979): sort ascending, p_(k) ↦ max_{j ≤ k} (m − j + 1) p_(j),
    capped at 1. SciPy offers Benjamini–Hochberg but not Holm, so it is written here. NaN stays NaN
    and does not count in m."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def holm_levels(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(step, α_step) per test: its rank k (1-based) by ascending p and Holm's level α / (m − k + 1)."""
    p = np.asarray(pvalues, float)
    m = int(np.sum(~np.isnan(p)))
    order = np.argsort(np.where(np.isnan(p), np.inf, p), kind="stable")
    step = np.empty(len(p), int)
    step[order] = np.arange(1, len(p) + 1)
    return step, alpha / np.maximum(1, m - step + 1)


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value for 'statistic = 0': 2·min(P*(d ≤ 0), P*(d ≥ 0)), capped at 1
    (the smallest α at which the percentile interval at 1 − α excludes 0)."""
    d = np.asarray(draws, float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return math.nan
    return float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))


# ----------------------------------------------------------------------------------------------------------
# the correlation table of a study: cluster bootstrap, adaptive resamples, Holm


@dataclass
class TableResult:
    """Per (measure, target): τ (95% interval), τ adjusted (Holm level), ρ, p, Holm-adjusted p, decision
    (+1 τ > 0, −1 τ < 0, 0 inconclusive) and whether the deciding bound is resolved against MC error."""

    cells: dict[tuple[str, str], dict[str, Any]]
    resamples: int
    rounds: int
    seconds: float
    alpha: float
    level: float
    n_clusters: int
    capped: bool  # the cap was reached with some bound still within mc_k MC errors of 0
    draws: dict[tuple[str, str], np.ndarray] = field(repr=False, default_factory=dict)
    weights: np.ndarray | None = field(repr=False, default=None)
    units: np.ndarray | None = field(repr=False, default=None)


def correlation_table(
    measures: Mapping[str, Sequence[float | None]],
    targets: Mapping[str, Sequence[float | None]],
    clusters: Sequence[Hashable],
    *,
    level: float = 0.95,
    alpha: float = 0.05,
    samples: int = 4000,
    max_samples: int = 64000,
    seed: int = 0,
    mc_k: float = MC_K,
) -> TableResult:
    """Kendall τ_b of every measure against every target over the same runs, with cluster-bootstrap
    intervals, Holm-adjusted intervals and verdict decisions (rule: module docstring).

    ``measures``/``targets`` hold one value per run (None/NaN = missing: the run gets weight 0 in that
    test); ``clusters`` the configuration of each run. All tests share the same resamples (so paired
    comparisons between tests are possible from ``draws``). Resamples start at ``samples`` and double until
    every test's deciding bound — the bound nearer 0 of its interval at its Holm level — is farther from 0
    than ``mc_k`` Monte-Carlo errors, or ``max_samples`` is reached.
    """
    t0 = time.perf_counter()
    units = cluster_ids(clusters)
    n_units = int(units.max()) + 1 if len(units) else 0
    p = np.eye(max(n_units, 1))[units] if len(units) else np.zeros((0, 1))
    rng = np.random.default_rng(seed)
    prep, est = {}, {}
    for mname, xv in measures.items():
        x = _ranks(np.array([np.nan if v is None else v for v in xv], float))
        for tname, yv in targets.items():
            y = _ranks(np.array([np.nan if v is None else v for v in yv], float))
            u = ~(np.isnan(x) | np.isnan(y))
            xf, yf = np.where(u, x, 0.0), np.where(u, y, 0.0)
            mask = np.outer(u, u).astype(float)
            prep[mname, tname] = (
                p.T @ (_sgn(xf) * _sgn(yf) * mask) @ p,
                p.T @ ((xf[:, None] == xf[None, :]) * mask) @ p,
                p.T @ ((yf[:, None] == yf[None, :]) * mask) @ p,
                p.T @ u.astype(float),
            )
            est[mname, tname] = kendall_tau(x[u], y[u]) if u.sum() >= 2 else math.nan
    keys = list(prep)
    draws = {k: np.empty(0) for k in keys}
    chunks, total, rounds = [], 0, 0
    target_b = max(samples, 200)
    while True:
        rounds += 1
        m = resample_counts(n_units, target_b - total, rng) if n_units >= 3 else np.zeros((0, n_units))
        chunks.append(m)
        for k in keys:
            draws[k] = np.concatenate([draws[k], _tau_forms(m, *prep[k])])
        total = target_b
        cells = _decide(keys, est, draws, level, alpha, mc_k)
        unresolved = [k for k in keys if not cells[k]["resolved"]]
        if not unresolved or n_units < 3 or total >= max_samples:
            break
        target_b = min(max_samples, 2 * total)
    weights = np.concatenate(chunks) if chunks else None
    return TableResult(cells, total, rounds, time.perf_counter() - t0, alpha, level, n_units,
                       bool(unresolved), draws, weights, units)


def _decide(keys, est, draws, level, alpha, mc_k) -> dict:
    pv = np.array([bootstrap_p(draws[k]) if not math.isnan(est[k]) else math.nan for k in keys])
    adj = holm(pv)
    step, a_step = holm_levels(pv, alpha)
    cells = {}
    for i, k in enumerate(keys):
        ci = percentile_interval(est[k], draws[k], level, "cluster bootstrap (percentile)")
        adj_iv = percentile_interval(est[k], draws[k], 1 - a_step[i], "cluster bootstrap, Holm level")
        near = (adj_iv.low, adj_iv.mc_low) if abs(adj_iv.low) < abs(adj_iv.high) else (adj_iv.high, adj_iv.mc_high)
        resolved = math.isnan(adj_iv.low) or not near[1] > 0 or abs(near[0]) > mc_k * near[1]
        cells[k] = {"tau": ci, "tau_adj": adj_iv, "p": pv[i], "p_holm": adj[i], "step": int(step[i]),
                    "alpha_step": float(a_step[i]), "resolved": bool(resolved), "own": adj_iv.direction(mc_k)}
    # Holm's step-down: a test decides only if every test before it (smaller p) decided
    stopped = False
    for k in sorted(keys, key=lambda k: cells[k]["step"]):
        c = cells[k]
        if stopped or c["own"] == 0:
            stopped = True
            c["decision"], c["holm_stopped"] = 0, c["own"] != 0
        else:
            c["decision"], c["holm_stopped"] = c["own"], False
    return cells


def rho_intervals(
    measures: Mapping[str, Sequence[float | None]],
    targets: Mapping[str, Sequence[float | None]],
    result: TableResult,
    *,
    level: float = 0.95,
    chunk: int = 8000,
) -> dict[tuple[str, str], Interval]:
    """Spearman ρ with its (unadjusted) cluster-bootstrap interval, on the resamples of ``result``."""
    out = {}
    units, w = result.units, result.weights
    for mname, xv in measures.items():
        x = np.array([np.nan if v is None else v for v in xv], float)
        for tname, yv in targets.items():
            y = np.array([np.nan if v is None else v for v in yv], float)
            u = ~(np.isnan(x) | np.isnan(y))
            est = spearman_rho(x[u], y[u]) if u.sum() >= 2 else math.nan
            if w is None or len(w) == 0 or math.isnan(est):
                out[mname, tname] = Interval(est, math.nan, math.nan, level, method="cluster bootstrap")
                continue
            sub = units[u]
            rel = np.unique(sub)
            d = np.concatenate([rho_weighted(x[u], y[u], w[i:i + chunk][:, rel], np.searchsorted(rel, sub))
                                for i in range(0, len(w), chunk)])
            out[mname, tname] = percentile_interval(est, d, level, "cluster bootstrap (percentile)")
    return out


# ----------------------------------------------------------------------------------------------------------
# granulated τ (Jiang et al. 2020)


def _groups(rows: Sequence[Mapping[str, Any]], axes: Sequence[str], axis: str, fixed: Sequence[str]):
    others = [a for a in axes if a != axis] + list(fixed)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[tuple(repr(r[o]) for o in others)].append(i)
    return list(groups.values())


def granulated_tau(
    rows: Sequence[dict[str, Any]], axes: Sequence[str], x: str, y: str, fixed: Sequence[str] = ("seed",)
) -> dict[str, Any]:
    """Jiang et al.'s granulated Kendall τ of ``x`` vs ``y`` over hyperparameter ``axes`` (eq. 4).

    For each axis i, ψ_i is the mean, over the groups of rows where every other axis and the ``fixed``
    keys (the seed) are equal, of Kendall's τ within the group; Ψ = mean_i ψ_i. Groups with fewer than
    two distinct values of the axis, or where τ is undefined, are skipped and counted. Returns
    ``{"psi": {axis: ψ_i}, "groups": {axis: used}, "skipped": {axis: skipped}, "Psi": Ψ}``.
    """
    psi, used, skipped = {}, {}, {}
    for axis in axes:
        taus, skip = [], 0
        for members in _groups(rows, axes, axis, fixed):
            if len({repr(rows[i][axis]) for i in members}) < 2:
                skip += 1
                continue
            t = kendall_tau([rows[i][x] for i in members], [rows[i][y] for i in members])
            if math.isnan(t):
                skip += 1
            else:
                taus.append(t)
        psi[axis] = float(np.mean(taus)) if taus else math.nan
        used[axis], skipped[axis] = len(taus), skip
    defined = [v for v in psi.values() if not math.isnan(v)]
    return {"psi": psi, "groups": used, "skipped": skipped, "Psi": float(np.mean(defined)) if defined else math.nan}


def granulated_tau_draws(
    rows: Sequence[Mapping[str, Any]],
    axes: Sequence[str],
    x: str,
    y: str,
    weights: np.ndarray,
    units: np.ndarray,
    fixed: Sequence[str] = ("seed",),
) -> np.ndarray:
    """Ψ on each cluster-bootstrap resample (``weights``: B × G configuration multiplicities, ``units``:
    configuration of each row). In a resample, a group's runs carry their configuration's multiplicity;
    a group with fewer than two distinct drawn values is undefined and skipped, as in the estimate."""
    w = np.asarray(weights, float)
    per_axis = []
    for axis in axes:
        by_size: dict[int, list[list[int]]] = defaultdict(list)
        for members in _groups(rows, axes, axis, fixed):
            if len({repr(rows[i][axis]) for i in members}) >= 2:
                by_size[len(members)].append(members)
        # Groups of one size share one batched computation (all groups x all resamples at once).
        taus = [_group_taus(rows, groups, x, y, w, units) for groups in by_size.values()]
        if taus:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                per_axis.append(np.nanmean(np.column_stack(taus), axis=1))
    if not per_axis:
        return np.full(len(w), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.column_stack(per_axis), axis=1)


def _group_taus(rows: Sequence[Mapping[str, Any]], groups: list[list[int]], x: str, y: str, w: np.ndarray,
                units: np.ndarray) -> np.ndarray:
    """τ_b within each of several equal-sized groups, on every resample: B × (number of groups).

    The same quadratic forms as :func:`tau_b_weighted`, each point its own unit weighted by its
    configuration's multiplicity, batched over the groups with ``einsum``."""
    idx = np.asarray(groups)  # n_groups × k row indices
    xs = np.array([[rows[i][x] for i in g] for g in groups], float)
    ys = np.array([[rows[i][y] for i in g] for g in groups], float)
    xr = np.array([_ranks(v) for v in xs])
    yr = np.array([_ranks(v) for v in ys])
    a = np.sign(xr[:, :, None] - xr[:, None, :]) * np.sign(yr[:, :, None] - yr[:, None, :])
    tx = (xr[:, :, None] == xr[:, None, :]).astype(float)
    ty = (yr[:, :, None] == yr[:, None, :]).astype(float)
    m = w[:, units[idx]]  # B × n_groups × k multiplicities
    n_tot = m.sum(2)
    s = 0.5 * np.einsum("bgi,gij,bgj->bg", m, a, m)
    n0 = n_tot * (n_tot - 1) / 2
    n1 = 0.5 * (np.einsum("bgi,gij,bgj->bg", m, tx, m) - n_tot)
    n2 = 0.5 * (np.einsum("bgi,gij,bgj->bg", m, ty, m) - n_tot)
    den = (n0 - n1) * (n0 - n2)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(den > 0, s / np.sqrt(np.where(den > 0, den, 1.0)), np.nan)
    return np.clip(tau, -1.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# conditional mutual information (Jiang et al. 2020, PGDL 2020)


def _mi_over_h(v: np.ndarray, m: np.ndarray) -> float:
    """I(V; M) / H(V) of two discrete samples (NaN when H(V) = 0)."""
    _, vi = np.unique(v, return_inverse=True)
    _, mi = np.unique(m, return_inverse=True)
    joint = np.zeros((vi.max() + 1, mi.max() + 1))
    np.add.at(joint, (vi, mi), 1.0)
    joint /= joint.sum()
    pv, pm = joint.sum(1), joint.sum(0)
    h = -float(np.sum(pv[pv > 0] * np.log(pv[pv > 0])))
    if h <= 1e-12:
        return math.nan
    nz = joint > 0
    mi_val = float(np.sum(joint[nz] * np.log(joint[nz] / np.outer(pv, pm)[nz])))
    return max(0.0, mi_val) / h


def conditional_mi(
    rows: Sequence[Mapping[str, Any]], axes: Sequence[str], x: str, y: str, max_set: int = 2
) -> dict[str, Any]:
    """The conditional-independence score of Jiang et al. (2020) / PGDL (STATISTICS.md §6).

    For every ordered pair of runs (a, b) with y_a ≠ y_b (both orders, so the row order is irrelevant):
    V = sign(y_a − y_b), M = sign(x_a − x_b) (M = 0 for tied measures). For each set S of hyperparameters
    with |S| ≤ ``max_set`` (the empty set, every single axis and every pair), the pairs are split into
    cells that agree on the values of S; in each cell with H(V) > 0, I(V; M)/H(V) is computed; the cells
    are averaged weighted by their share of pairs. The score is the minimum over S, so a measure that only
    mirrors one hyperparameter scores near 0 once that hyperparameter is conditioned on.
    Returns ``{"score", "set", "per_set"}``.
    """
    xs = _ranks(np.array([np.nan if r[x] is None else r[x] for r in rows], float))
    ys = _ranks(np.array([np.nan if r[y] is None else r[y] for r in rows], float))
    ok = ~(np.isnan(xs) | np.isnan(ys))
    idx = np.flatnonzero(ok)
    a, b = np.triu_indices(len(idx), 1)
    a, b = idx[a], idx[b]
    v, mm = np.sign(ys[a] - ys[b]), np.sign(xs[a] - xs[b])
    keep = v != 0
    a, b, v, mm = a[keep], b[keep], v[keep], mm[keep]
    # every ordered pair (a, b) and (b, a): the score must not depend on the order of the rows
    a, b, v, mm = np.r_[a, b], np.r_[b, a], np.r_[v, -v], np.r_[mm, -mm]
    per_set: dict[tuple[str, ...], float] = {}
    for size in range(0, max_set + 1):
        for s in itertools.combinations(axes, size):
            vals = [np.array([repr(rows[i][ax]) for i in range(len(rows))]) for ax in s]
            agree = np.ones(len(a), bool)
            for col in vals:
                agree &= col[a] == col[b]
            if not agree.any():
                continue
            key = np.array(["|".join(col[i] for col in vals) for i in a[agree]]) if s else np.zeros(agree.sum())
            vs, ms = v[agree], mm[agree]
            num = den = 0.0
            for cell in np.unique(key):
                sel = key == cell
                r = _mi_over_h(vs[sel], ms[sel])
                if not math.isnan(r):
                    num += sel.sum() * r
                    den += sel.sum()
            if den > 0:
                per_set[s] = num / den
    if not per_set:
        return {"score": math.nan, "set": None, "per_set": {}}
    best = min(per_set, key=per_set.get)
    return {"score": per_set[best], "set": best, "per_set": per_set}


# ----------------------------------------------------------------------------------------------------------
# calibration


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().double().numpy() if a.is_floating_point() else a.detach().cpu().numpy()
    return np.asarray(a)


def ece(probs: Any, labels: Any, bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) with ``bins`` equal-width bins of the top-class
    confidence p̂: bin b holds p̂ in (b/B, (b+1)/B] (right-closed; p̂ = 0 joins the first bin).
    ECE = Σ_b (|S_b|/n)·|acc(S_b) − conf(S_b)|. ``probs`` is n × K (NumPy or torch), ``labels`` n."""
    p = _np(probs).astype(np.float64)
    y = _np(labels).astype(np.int64)
    if p.ndim != 2 or len(p) != len(y) or len(p) == 0:
        raise FlatminimaError(f"ece needs n × K probabilities and n labels (n ≥ 1), got {p.shape} and {y.shape}.")
    conf, pred = p.max(1), p.argmax(1)
    correct = (pred == y).astype(np.float64)
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(idx, weights=correct, minlength=bins) - np.bincount(idx, weights=conf, minlength=bins)
    return float(np.sum(np.abs(gap)) / len(p))


# ----------------------------------------------------------------------------------------------------------
# effective robustness (Taori et al. 2020; Miller et al. 2021)

LINKS = ("probit", "logit")
DEFAULT_EVAL_SIZE = 10000  # the clip constant's n when no evaluation-set size is given (CIFAR-10's test set)


def _link(link: str) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """(transform, inverse) of a link: probit Φ⁻¹/Φ (Miller et al. 2021) or logit/expit (Taori et al. 2020)."""
    if link == "probit":
        return stats.norm.ppf, stats.norm.cdf
    if link == "logit":
        return special.logit, special.expit
    raise FlatminimaError(f"link must be one of {list(LINKS)}, got {link!r}.")


def _accuracies(name: str, values: Sequence[float]) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise FlatminimaError(f"{name} must hold one accuracy (a number in [0, 1]) per model, got {values!r}.") \
            from None
    if a.ndim != 1:
        raise FlatminimaError(f"{name} must be one-dimensional (one accuracy per model), got shape {a.shape}.")
    bad = np.flatnonzero(~np.isfinite(a) | (a < 0) | (a > 1))
    if len(bad):
        raise FlatminimaError(
            f"{name} must hold accuracies in [0, 1] (fractions, not percentages; no NaN), got {a[bad[0]]!r} "
            f"at model {int(bad[0])}; drop or repair that model.")
    return a


def clip_constant(clip: float | None = None, eval_size: int | None = None) -> float:
    """The constant c that keeps accuracies away from 0 and 1 before Φ⁻¹ or the logit: ``clip`` when given,
    else 1/(2n) with n = ``eval_size`` (half an example: the usual continuity correction of an empirical
    probit/logit; an accuracy of k/n is never closer to 0 or 1 than 1/n), else 1/(2·10000) (n of CIFAR-10's
    test set, where the papers' lines were fitted)."""
    if clip is not None:
        if not isinstance(clip, (int, float)) or isinstance(clip, bool) or not 0 < clip < 0.5:
            raise FlatminimaError(f"clip must be a number in (0, 0.5), got {clip!r}.")
        return float(clip)
    if eval_size is not None:
        if not isinstance(eval_size, (int, np.integer)) or isinstance(eval_size, bool) or eval_size < 1:
            raise FlatminimaError(f"eval_size must be a positive integer (the evaluation-set size), got {eval_size!r}.")
        return 1.0 / (2 * int(eval_size))
    return 1.0 / (2 * DEFAULT_EVAL_SIZE)


def _line(tx: np.ndarray, ty: np.ndarray, what: str) -> tuple[float, float]:
    """Least-squares line ty ≈ a·tx + b (closed form), refused where it is not determined."""
    if len(tx) < 2 or np.ptp(tx) <= 0:
        raise FlatminimaError(
            f"the line of {what} needs at least 2 models with different clean accuracies, got {len(tx)} model(s)"
            f"{' all with the same clean accuracy' if len(tx) >= 2 else ''}; add models (configurations).")
    xc = tx - tx.mean()
    a = float(np.dot(xc, ty - ty.mean()) / np.dot(xc, xc))
    return a, float(ty.mean() - a * tx.mean())


def _reference_mask(reference: Any, n: int) -> np.ndarray:
    r = np.asarray(reference)
    if r.dtype == bool:
        if r.shape != (n,):
            raise FlatminimaError(f"reference as a boolean mask needs one entry per model ({n}), got shape {r.shape}.")
        return r.copy()
    if r.ndim != 1 or (len(r) and not np.issubdtype(r.dtype, np.integer)):
        raise FlatminimaError(f"reference must be a boolean mask or integer indices of models, got {reference!r}.")
    if len(r) and (r.min() < -n or r.max() >= n):
        raise FlatminimaError(f"reference indices must lie in [0, {n}), got {reference!r}.")
    mask = np.zeros(n, bool)
    mask[r] = True
    return mask


@dataclass(frozen=True)
class EffectiveRobustness:
    """Per-model effective robustness and the line behind it.

    ``values[i]`` = ood_acc[i] − ``predicted[i]`` (accuracy units), where ``predicted[i]`` is the line
    *used for model i* (fitted without its configuration, see ``scheme``). ``slope``/``intercept`` are the
    line fitted on all models (the reference models when a reference set is named), on the ``link`` scale:
    link(ood) ≈ slope·link(id) + intercept — the line to draw. ``clip`` is the constant c of the clip to
    [c, 1 − c]; ``n_fit`` the number of models behind the drawn line."""

    values: np.ndarray
    predicted: np.ndarray
    slope: float
    intercept: float
    link: str
    clip: float
    scheme: str
    n_fit: int

    def to_dict(self) -> dict[str, Any]:
        return {"values": [float(v) for v in self.values], "predicted": [float(v) for v in self.predicted],
                "slope": self.slope, "intercept": self.intercept, "link": self.link, "clip": self.clip,
                "scheme": self.scheme, "n_fit": self.n_fit}


def effective_robustness(
    id_acc: Sequence[float],
    ood_acc: Sequence[float],
    *,
    groups: Sequence[Hashable] | None = None,
    reference: Sequence[bool] | Sequence[int] | np.ndarray | None = None,
    link: str = "probit",
    clip: float | None = None,
    eval_size: int | None = None,
) -> EffectiveRobustness:
    """Effective robustness of each model: its shifted accuracy above the line of the other models.

    Shifted (ood) accuracy is close to a linear function of clean (id) accuracy once both are put on a
    probit scale (Miller et al. 2021, "Accuracy on the line", ICML) or a logit scale (Taori et al. 2020,
    "Measuring robustness to natural distribution shifts in image classification", NeurIPS). With
    F = Φ⁻¹ (``link="probit"``, ``scipy.stats.norm.ppf``) or F = logit (``"logit"``, ``scipy.special.logit``),
    the line F(ood) = a·F(id) + b is fitted by ordinary least squares across models, and

        ER_i = ood_i − F⁻¹(a·F(id_i) + b)        (accuracy units; > 0: more robust than the line predicts).

    Which models fit the line used for model i (a model never explains itself):
      * ``groups`` given (configuration labels; seeds of one configuration share a label): the models of
        every *other* group — leave-one-configuration-out. Needs ≥ 2 groups.
      * ``reference`` given (boolean mask or indices of a named reference set): the reference models only;
        a reference model is itself scored on the reference models outside its group (outside itself when
        ``groups`` is None).
      * neither: all models (the in-sample fit of the papers' figures; a model then pulls the line towards
        itself, so its ER shrinks towards 0).

    Clip: accuracies are clipped to [c, 1 − c] before F (F(0) and F(1) are infinite) with
    c = ``clip`` when given, else 1/(2·``eval_size``) (half an example), else 1/(2·10000)
    (:func:`clip_constant`). The clip enters only the transform; ER uses the unclipped ood accuracy.

    Returns an :class:`EffectiveRobustness`; its ``slope``/``intercept`` are the fit on all (reference)
    models, for drawing. Refused (FlatminimaError): lengths that differ, NaN or values outside [0, 1],
    fewer than 3 models, fewer than 2 groups, or a fit with fewer than 2 distinct clean accuracies.

    Examples:
        Four reference models lie on the probit line Φ⁻¹(ood) = Φ⁻¹(id) − 0.5; a fifth is 0.05 above it:

        >>> from scipy.stats import norm
        >>> from flatminima.statistics import effective_robustness
        >>> id_acc = [0.6, 0.7, 0.8, 0.9, 0.95]
        >>> ood_acc = [float(norm.cdf(norm.ppf(a) - 0.5)) for a in id_acc]
        >>> ood_acc[4] += 0.05
        >>> er = effective_robustness(id_acc, ood_acc, reference=[True, True, True, True, False])
        >>> round(er.slope, 6), round(er.intercept, 6)  # the line of the reference models
        (1.0, -0.5)
        >>> round(float(er.values[4]), 6), bool(abs(er.values[:4]).max() < 1e-9)  # ER above the line (accuracy)
        (0.05, True)
    """
    x, y = _accuracies("id_acc", id_acc), _accuracies("ood_acc", ood_acc)
    n = len(x)
    if len(y) != n:
        raise FlatminimaError(f"id_acc and ood_acc must have one entry per model, got {n} and {len(y)}.")
    if n < 3:
        raise FlatminimaError(f"effective robustness needs at least 3 models to fit a line, got {n}.")
    fwd, inv = _link(link)
    c = clip_constant(clip, eval_size)
    with np.errstate(divide="ignore"):
        tx, ty = fwd(np.clip(x, c, 1 - c)), fwd(np.clip(y, c, 1 - c))
    ref = np.ones(n, bool) if reference is None else _reference_mask(reference, n)
    if groups is not None:
        if len(groups) != n:
            raise FlatminimaError(f"groups must have one label per model ({n}), got {len(groups)}.")
        g = cluster_ids(groups)
        if g.max() < 1:
            raise FlatminimaError(f"leave-one-configuration-out needs at least 2 groups, got only {groups[0]!r}; "
                                  "pass groups=None for the in-sample fit.")
        names, scheme = {int(k): lab for k, lab in zip(g, groups, strict=True)}, "leave-one-configuration-out"
    elif reference is not None:  # each model its own group: a reference model leaves itself out
        g, names, scheme = np.arange(n), {i: f"model {i}" for i in range(n)}, "leave-one-model-out"
    else:
        g, names, scheme = None, {}, "in-sample"
    what = "the reference models" if reference is not None else "all models"
    slope, intercept = _line(tx[ref], ty[ref], what)
    if g is None:
        pred_t = slope * tx + intercept
    else:
        pred_t = np.empty(n)
        for k in np.unique(g):
            own = g == k
            a, b = _line(tx[ref & ~own], ty[ref & ~own], f"{what} outside {names[int(k)]!r}")
            pred_t[own] = a * tx[own] + b
    if reference is not None:
        scheme = f"reference set, {scheme}"
    predicted = inv(pred_t)
    return EffectiveRobustness(y - predicted, predicted, slope, intercept, link, c, scheme, int(ref.sum()))


@dataclass(frozen=True)
class EffectiveRobustnessOverShifts:
    """``values``: per-model mean effective robustness over the shifts; ``per_shift``: each shift's result."""

    values: np.ndarray
    per_shift: dict[str, EffectiveRobustness]

    def to_dict(self) -> dict[str, Any]:
        return {"values": [float(v) for v in self.values],
                "per_shift": {k: v.to_dict() for k, v in self.per_shift.items()}}


def effective_robustness_over_shifts(
    id_acc: Sequence[float], shift_accs: Mapping[str, Sequence[float]], **kw: Any
) -> EffectiveRobustnessOverShifts:
    """Mean effective robustness over shifts: every shift (a "name@severity" key) gets its own line
    (:func:`effective_robustness` with ``**kw``: groups, reference, link, clip, eval_size), and a model's value
    is the mean of its ER over the shifts, (1/S)·Σ_s ER_s — accuracy units, as Taori et al. 2020 average
    over their shifts."""
    if not isinstance(shift_accs, Mapping) or not shift_accs:
        raise FlatminimaError(f"shift_accs must be a non-empty mapping shift -> accuracies, got {shift_accs!r}.")
    per = {s: effective_robustness(id_acc, v, **kw) for s, v in shift_accs.items()}
    return EffectiveRobustnessOverShifts(np.mean([r.values for r in per.values()], axis=0), per)


# ----------------------------------------------------------------------------------------------------------
# robust sign-error (Dziugaite et al. 2020)


def hoeffding_threshold(eval_size: int, delta: float = 0.05) -> float:
    """The smallest difference of two accuracies on ``eval_size`` examples that counts as evidence:
    Δ* = 2·√(ln(2/δ)/(2n)) = √(2·ln(2/δ)/n), i.e. Hoeffding's 2·exp(−2n(Δ/2)²) ≤ δ (Dziugaite et al. 2020)."""
    if not isinstance(eval_size, (int, np.integer)) or isinstance(eval_size, bool) or eval_size < 1:
        raise FlatminimaError(f"eval_size must be a positive integer (the evaluation-set size), got {eval_size!r}.")
    if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not 0 < delta < 1:
        raise FlatminimaError(f"delta must be in (0, 1), got {delta!r}.")
    return math.sqrt(2 * math.log(2 / delta) / int(eval_size))


def _axis_key(v: Any) -> tuple:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return (0, float(v))
    return (1, repr(v))


def _number(v: Any) -> float:
    try:
        f = float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan
    return f


@dataclass(frozen=True)
class SignError:
    """Robust sign-error of one measure for one target (:func:`sign_error`).

    ``per_axis[axis]``: ``mean``, ``p90`` (numpy percentile 90), ``max`` of the sign-errors of the
    environments that vary ``axis`` and kept at least one pair; ``environments`` (all), ``empty`` (no kept
    pair), ``pairs`` (kept pairs). ``worst``: the environment with the largest sign-error (None when no
    environment kept a pair); its ``sign_error`` is the robust sign-error. ``environments``: every
    environment (axis, the two configurations, their values of the axis, sign-error, kept and total pairs)."""

    measure: str
    target: str
    sign: int
    threshold: float
    per_axis: dict[str, dict[str, Any]]
    worst: dict[str, Any] | None
    environments: tuple[dict[str, Any], ...] = field(repr=False, default=())

    @property
    def robust(self) -> float:
        """The worst environment's sign-error (the paper's robust sign-error); NaN when none kept a pair."""
        return math.nan if self.worst is None else float(self.worst["sign_error"])

    def to_dict(self) -> dict[str, Any]:
        return {"measure": self.measure, "target": self.target, "sign": self.sign, "threshold": self.threshold,
                "per_axis": {a: dict(v) for a, v in self.per_axis.items()},
                "worst": None if self.worst is None else dict(self.worst), "robust": self.robust,
                "environments": [dict(e) for e in self.environments]}


def sign_error(
    rows: Sequence[Mapping[str, Any]],
    axes: Sequence[str],
    measure: str,
    target: str,
    *,
    noise: float | None = None,
    eval_size: int | None = None,
    delta: float = 0.05,
    sign: int = 1,
    label: str = "label",
) -> SignError:
    """Robust sign-error of ``measure`` as a predictor of ``target`` (Dziugaite et al. 2020, "In search of
    robust measures of generalization", NeurIPS).

    ``rows``: one dict per run with the ``axes`` values (hyperparameters), the configuration ``label`` and
    the ``measure`` and ``target`` columns (None/NaN = missing: the run takes part in no pair).
    An *environment* is an unordered pair of configurations whose axis values differ in exactly one axis
    (all others equal). In an environment, every pair of runs (a from one configuration, b from the other)
    with Δt = t_a − t_b and Δm = m_a − m_b contributes the error

        e(a, b) = ½·(1 − sgn(Δm)·s·sgn(Δt))  ∈ {0, ½, 1}   (s = ``sign``; a tied measure counts ½, as in the paper)

    if it is *kept*: |Δt| > Δ*, where Δ* is ``noise`` when given, else the Hoeffding threshold of
    :func:`hoeffding_threshold` for accuracy-type targets evaluated on ``eval_size`` examples,
    Δ* = √(2·ln(2/δ)/n) (the difference is kept when 2·exp(−2n(Δt/2)²) < δ), else 0 (only exact ties are
    dropped). The environment's sign-error is the mean of e over its kept pairs (NaN with none).
    ``sign`` = +1 asks for the measure to rise with the target (complexity vs the gap), −1 to fall with it
    (complexity vs accuracy).

    The paper's code weights a pair by w = (1 − 2·exp(−2n(Δt/2)²))₊² and keeps it when w > ½ (weight w − ½),
    i.e. a cut-off 2·exp(−2n(Δt/2)²) < 1 − 1/√2 ≈ 0.29; here a kept pair has weight 1 and the cut-off is
    δ (0.05 by default; δ = 1 − 1/√2 reproduces the paper's cut-off), so a sign-error is a plain fraction.

    Per axis: mean, 90th percentile (``numpy.percentile``) and max of the environments' sign-errors, the
    number of environments and of those with no kept pair; overall: the worst environment.

    Examples:
        Three learning rates; the measure rises with the gap from 0.01 to 0.1 but not from 0.1 to 1:

        >>> from flatminima.statistics import sign_error
        >>> rows = [{"label": "lr=0.01", "lr": 0.01, "m": 1.0, "gap": 0.10},
        ...         {"label": "lr=0.1", "lr": 0.1, "m": 2.0, "gap": 0.20},
        ...         {"label": "lr=1", "lr": 1.0, "m": 3.0, "gap": 0.15}]
        >>> se = sign_error(rows, ["lr"], "m", "gap")
        >>> se.robust, se.worst["configurations"]
        (1.0, ('lr=0.1', 'lr=1'))
        >>> round(se.per_axis["lr"]["mean"], 6)  # one of the three environments gets the sign wrong
        0.333333
    """
    if not rows:
        raise FlatminimaError("rows must hold at least one run (a dict per run), got none.")
    axes = list(axes)
    if not axes:
        raise FlatminimaError("axes must name at least one hyperparameter; environments vary one of them.")
    if sign not in (1, -1):
        raise FlatminimaError(f"sign must be +1 or -1, got {sign!r}.")
    if noise is not None:
        if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not noise >= 0:
            raise FlatminimaError(f"noise must be a non-negative threshold on |target difference|, got {noise!r}.")
        threshold = float(noise)
    elif eval_size is not None:
        threshold = hoeffding_threshold(eval_size, delta)
    else:
        threshold = 0.0
    configs: dict[Hashable, list[int]] = {}
    values: dict[Hashable, tuple] = {}
    for i, r in enumerate(rows):
        missing = [k for k in (label, *axes) if k not in r]
        if missing:
            raise FlatminimaError(f"row {i} has no {missing[0]!r}; every row needs {label!r} and the axes {axes}.")
        key = tuple(_axis_key(r[a]) for a in axes)
        lab = r[label]
        if lab in values and values[lab] != key:
            raise FlatminimaError(f"configuration {lab!r} has runs with different axis values (row {i}); "
                                  f"rows of one {label!r} must share every axis value.")
        values[lab] = key
        configs.setdefault(lab, []).append(i)
    m = np.array([_number(r.get(measure)) for r in rows])
    t = np.array([_number(r.get(target)) for r in rows])
    labels = list(configs)
    envs = []
    for ia, la in enumerate(labels):
        for lb in labels[ia + 1:]:
            diff = [k for k in range(len(axes)) if values[la][k] != values[lb][k]]
            if len(diff) != 1:
                continue
            a_idx, b_idx = np.array(configs[la]), np.array(configs[lb])
            dt = t[a_idx][:, None] - t[b_idx][None, :]
            dm = m[a_idx][:, None] - m[b_idx][None, :]
            ok = ~(np.isnan(dt) | np.isnan(dm))
            kept = ok & (np.abs(np.where(ok, dt, 0.0)) > threshold)
            err = 0.5 * (1 - np.sign(dm[kept]) * sign * np.sign(dt[kept]))
            ax = axes[diff[0]]
            envs.append({"axis": ax, "configurations": (la, lb),
                         "values": (rows[configs[la][0]][ax], rows[configs[lb][0]][ax]),
                         "sign_error": float(err.mean()) if len(err) else math.nan,
                         "pairs": int(kept.sum()), "pairs_total": int(ok.sum())})
    per_axis = {}
    for ax in axes:
        mine = [e for e in envs if e["axis"] == ax]
        errs = np.array([e["sign_error"] for e in mine if e["pairs"] > 0])
        per_axis[ax] = {
            "mean": float(errs.mean()) if len(errs) else math.nan,
            "p90": float(np.percentile(errs, 90)) if len(errs) else math.nan,
            "max": float(errs.max()) if len(errs) else math.nan,
            "environments": len(mine), "empty": sum(e["pairs"] == 0 for e in mine),
            "pairs": int(sum(e["pairs"] for e in mine)),
        }
    used = [e for e in envs if e["pairs"] > 0]
    worst = max(used, key=lambda e: (e["sign_error"], e["pairs"])) if used else None
    return SignError(measure, target, int(sign), threshold, per_axis, worst, tuple(envs))


# ----------------------------------------------------------------------------------------------------------
# partial association: what a measure adds beyond controls (STATISTICS.md §12)


def _wranks(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks (minus ½) of the fixed values ``v`` (n) in each resample of point multiplicities
    ``w`` (B × n): r_b(k) = Σ_l w_bl·([v_l < v_k] + [v_l = v_k]/2) — the average rank of point k in the
    expanded multiset, less ½ (a constant shift, irrelevant after a regression with intercept). Ties are
    exact equalities."""
    return _wranks_rows(np.broadcast_to(np.asarray(v, float), w.shape), w, rel_tol=0.0)


def _wranks_rows(e: np.ndarray, w: np.ndarray, rel_tol: float = 1e-9) -> np.ndarray:
    """Average ranks (minus ½) of each row of ``e`` (B × n, a different vector per resample) under the point
    multiplicities ``w`` (B × n): r_b(k) = Σ_l w_bl·([e_bl < e_bk] + [e_bl = e_bk]/2), computed by sorting
    (O(B·n log n), no n × n comparison; a matrix product here would hand the work to a BLAS whose threads
    crawl on a loaded machine). Values within ``rel_tol``·(1 + max|e|) of their neighbour in the sorted row
    are ties (residuals of tied data are equal only up to rounding)."""
    order = np.argsort(e, axis=1, kind="stable")
    es, ws = np.take_along_axis(e, order, 1), np.take_along_axis(w, order, 1)
    tol = rel_tol * (1.0 + np.abs(e).max(axis=1, keepdims=True)) if rel_tol else 0.0  # ±inf values: exact ties
    first = np.ones(e.shape, bool)
    first[:, 1:] = np.diff(es, axis=1) > tol  # a new tie group starts here
    last = np.ones(e.shape, bool)
    last[:, :-1] = first[:, 1:]
    upto = np.cumsum(ws, axis=1)  # weight at or before each sorted position
    below = np.maximum.accumulate(np.where(first, upto - ws, -np.inf), axis=1)  # weight before the group
    through = np.minimum.accumulate(np.where(last, upto, np.inf)[:, ::-1], axis=1)[:, ::-1]  # through the group
    out = np.empty(e.shape)
    np.put_along_axis(out, order, (below + through) / 2, 1)
    return out


def _partial_rho_weighted(x: np.ndarray, y: np.ndarray, c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Rank partial correlation on each resample (B × n point multiplicities ``w``), equal to the computation
    on the expanded data: rank x, y and each control column of ``c`` (n × k) in the resample, regress the ranks
    of x and of y on [1, ranks of the controls] by weighted least squares (weights = multiplicities: a point
    drawn twice is two equal rows), then Spearman's ρ of the two residual vectors (their ranks in the
    resample, then the weighted Pearson correlation). NaN where undefined (a residual constant)."""
    b, n = w.shape
    rx, ry = _wranks(x, w), _wranks(y, w)
    z = np.concatenate([np.ones((b, n, 1))] + [_wranks(c[:, j], w)[:, :, None] for j in range(c.shape[1])], axis=2)
    a = np.einsum("bni,bn,bnj->bij", z, w, z)
    # pinv: a control constant in a resample makes the normal equations singular; the projection (and so the
    # residual) is still unique, and the minimum-norm solution gives it.
    ainv = np.linalg.pinv(a)
    res = []
    for r in (rx, ry):
        beta = np.einsum("bij,bj->bi", ainv, np.einsum("bni,bn,bn->bi", z, w, r))
        e = r - np.einsum("bni,bi->bn", z, beta)
        res.append(_wranks_rows(e, w))
    qx, qy = res
    tot = w.sum(1, keepdims=True)
    mx, my = (w * qx).sum(1, keepdims=True) / tot, (w * qy).sum(1, keepdims=True) / tot
    cov = (w * (qx - mx) * (qy - my)).sum(1)
    vx, vy = (w * (qx - mx) ** 2).sum(1), (w * (qy - my) ** 2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where((vx > 1e-9) & (vy > 1e-9), cov / np.sqrt(vx * vy), np.nan)
    return np.clip(rho, -1.0, 1.0)


def _controls(controls: Any, n: int) -> dict[str, np.ndarray]:
    if controls is None:
        return {}
    if isinstance(controls, Mapping):
        items = list(controls.items())
    else:
        arr = np.asarray(controls, dtype=object)
        if arr.ndim == 1 and len(arr) == n and not (len(arr) and isinstance(arr[0], (Sequence, np.ndarray))):
            items = [("control", controls)]
        elif arr.ndim == 2 and arr.shape[0] == n and arr.shape[1] != n:
            items = [(f"control {j}", arr[:, j]) for j in range(arr.shape[1])]
        else:
            items = [(f"control {j}", v) for j, v in enumerate(controls)]
    out = {}
    for name, v in items:
        a = np.array([_number(u) for u in v])
        if len(a) != n:
            raise FlatminimaError(f"control {name!r} must have one value per run ({n}), got {len(a)}.")
        out[str(name)] = a
    return out


@dataclass(frozen=True)
class PartialAssociation:
    """Rank partial correlation of x and y given ``controls`` (:func:`partial_association`): ``estimate``,
    its cluster-bootstrap ``interval``, the bootstrap ``p`` (two-sided, for Holm), the plain Spearman ρ
    ``raw`` on the same runs, the numbers of runs and clusters used, and the bootstrap ``draws``."""

    estimate: float
    interval: Interval
    p: float
    raw: float
    n: int
    n_clusters: int
    controls: tuple[str, ...]
    draws: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.empty(0))

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "interval": self.interval.to_dict(), "p": self.p, "raw": self.raw,
                "n": self.n, "n_clusters": self.n_clusters, "controls": list(self.controls)}


def _partial_prepare(x: Any, y: Any, controls: Any, clusters: Sequence[Hashable]):
    xv = np.array([_number(u) for u in x])
    yv = np.array([_number(u) for u in y])
    n = len(xv)
    if len(yv) != n or len(clusters) != n:
        raise FlatminimaError(f"x, y and clusters must have one entry per run, got {n}, {len(yv)} and "
                              f"{len(clusters)}.")
    cs = _controls(controls, n)
    ok = ~(np.isnan(xv) | np.isnan(yv))
    for v in cs.values():
        ok &= ~np.isnan(v)
    c = np.column_stack([v[ok] for v in cs.values()]) if cs else np.zeros((int(ok.sum()), 0))
    return xv[ok], yv[ok], c, ok, tuple(cs)


def _partial_from(xv, yv, c, units_all, ok, names, weights, level) -> PartialAssociation:
    units = units_all[ok]
    n = len(xv)
    n_cl = len(np.unique(units))
    est = float(_partial_rho_weighted(xv, yv, c, np.ones((1, n)))[0]) if n >= 3 else math.nan
    raw = spearman_rho(xv, yv) if n >= 2 else math.nan
    draws = np.empty(0)
    if weights is not None and len(weights) and n_cl >= 3 and not math.isnan(est):
        w = weights[:, units]
        chunk = max(1, int(2e6 // max(1, n)))  # B × n arrays of a few tens of MB at most
        draws = np.concatenate([_partial_rho_weighted(xv, yv, c, w[i:i + chunk]) for i in range(0, len(w), chunk)])
    iv = percentile_interval(est, draws, level, "cluster bootstrap (percentile)")
    p = bootstrap_p(draws) if len(draws) and not math.isnan(est) else math.nan
    return PartialAssociation(est, iv, p, raw, n, n_cl, names, draws)


def partial_association(
    x: Sequence[float | None],
    y: Sequence[float | None],
    controls: Mapping[str, Sequence[float | None]] | Sequence[Sequence[float | None]] | np.ndarray | None,
    clusters: Sequence[Hashable],
    *,
    samples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PartialAssociation:
    """Rank-based partial correlation of ``x`` and ``y`` given ``controls`` (STATISTICS.md §12), with a
    configuration-cluster bootstrap interval.

    With R(·) the average ranks over the runs: regress R(x) and R(y) on [1, R(c_1), …, R(c_k)] by least
    squares, e_x = R(x) − Ẑβ_x, e_y = R(y) − Ẑβ_y, and report ρ_partial = Spearman ρ(e_x, e_y). (Pingouin's
    ``partial_corr(method="spearman")`` takes the Pearson correlation of e_x and e_y instead; the two are
    close and equal in sign for all but knife-edge data.) A measure that tracks y only through the controls
    has ρ_partial ≈ 0 however large its raw ρ.

    ``controls``: a mapping name -> values, one sequence, or a sequence of sequences / an n × k array;
    ``clusters``: configuration of each run. Runs with a missing (None/NaN) x, y or control are dropped.
    The interval is the percentile interval of ``samples`` cluster-bootstrap resamples (whole
    configurations drawn with replacement with all their seeds; every quantity — ranks, regression,
    residual ranks — is recomputed on each resample, vectorised over resamples as weighted computations
    equal to the expanded data); ``p`` is the two-sided bootstrap p-value :func:`bootstrap_p`, usable
    in :func:`holm`. Fewer than 3 clusters: no interval (NaN).
    """
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise FlatminimaError(f"samples must be a positive integer, got {samples!r}.")
    if not 0 < level < 1:
        raise FlatminimaError(f"level must be in (0, 1), got {level!r}.")
    xv, yv, c, ok, names = _partial_prepare(x, y, controls, clusters)
    units = cluster_ids(list(clusters))
    g = int(units.max()) + 1 if len(units) else 0
    weights = resample_counts(g, samples, np.random.default_rng(seed)) if g >= 3 else None
    return _partial_from(xv, yv, c, units, ok, names, weights, level)


@dataclass(frozen=True)
class PartialTable:
    """Every measure × target partial association under one Holm family (:func:`partial_association_table`).

    ``cells[(measure, target)]`` is a dict: ``rho`` (partial ρ), ``low``/``high`` (interval at ``level``),
    ``adj_level``/``adj_low``/``adj_high`` (Holm-level interval) with ``adj_low_mc``/``adj_high_mc`` (their
    Monte-Carlo errors), ``p``, ``p_holm``, ``step``, ``raw_rho`` (plain Spearman ρ on the same runs),
    ``controls``, ``n``, ``n_configs``, ``direction`` (+1/−1/0 after Holm's step-down), ``adds`` (True when
    the measure adds information beyond the controls), ``holm_stopped`` and ``skipped`` (the reason a cell
    was not tested, e.g. the measure is one of its target's controls; "" otherwise)."""

    cells: dict[tuple[str, str], dict[str, Any]]
    alpha: float
    level: float
    samples: int
    m_tests: int

    def rows(self) -> list[dict[str, Any]]:
        return [dict(c) for c in self.cells.values()]


def partial_association_table(
    xs: Mapping[str, Sequence[float | None]],
    targets: Mapping[str, Sequence[float | None]],
    controls_for: Mapping[str, Mapping[str, Sequence[float | None]]],
    clusters: Sequence[Hashable],
    *,
    alpha: float = 0.05,
    level: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
    mc_k: float = MC_K,
) -> PartialTable:
    """:func:`partial_association` of every measure in ``xs`` with every target in ``targets`` given that
    target's controls ``controls_for[target]`` (name -> values; a target without an entry has no
    controls: the plain Spearman ρ), all on the same cluster resamples, under one Holm–Bonferroni family
    (:func:`holm`, :func:`holm_levels`; valid under any dependence between the cells).

    The k-th smallest bootstrap p-value's cell is judged on its percentile interval at level
    1 − α/(m − k + 1); following Holm's step-down, a cell "adds information beyond" its controls only when
    that adjusted interval excludes 0 by more than ``mc_k`` Monte-Carlo errors of the nearer bound and every
    earlier cell did too. A cell whose measure is itself one of the target's controls (same name) is
    skipped and not counted in the family.
    """
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise FlatminimaError(f"samples must be a positive integer, got {samples!r}.")
    if not 0 < alpha < 1 or not 0 < level < 1:
        raise FlatminimaError(f"alpha and level must be in (0, 1), got {alpha!r} and {level!r}.")
    unknown = [t for t in controls_for if t not in targets]
    if unknown:
        raise FlatminimaError(f"controls_for names target(s) {unknown} that are not in targets {list(targets)}.")
    units = cluster_ids(list(clusters))
    g = int(units.max()) + 1 if len(units) else 0
    weights = resample_counts(g, samples, np.random.default_rng(seed)) if g >= 3 else None
    res: dict[tuple[str, str], PartialAssociation | None] = {}
    skipped: dict[tuple[str, str], str] = {}
    for tname, yv in targets.items():
        ctrl = dict(controls_for.get(tname, {}))
        for mname, xv in xs.items():
            if mname in ctrl:
                res[mname, tname], skipped[mname, tname] = None, "the measure is one of the controls"
                continue
            xv2, yv2, c, ok, names = _partial_prepare(xv, yv, ctrl, clusters)
            res[mname, tname] = _partial_from(xv2, yv2, c, units, ok, names, weights, level)
            skipped[mname, tname] = ""
    keys = list(res)
    pv = np.array([math.nan if res[k] is None else res[k].p for k in keys])
    adj = holm(pv)
    step, a_step = holm_levels(pv, alpha)
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for i, k in enumerate(keys):
        r = res[k]
        ctrl_names = list(controls_for.get(k[1], {}))
        if r is None:
            cells[k] = {"measure": k[0], "target": k[1], "controls": ctrl_names, "rho": math.nan, "low": math.nan,
                        "high": math.nan, "adj_level": math.nan, "adj_low": math.nan, "adj_high": math.nan,
                        "adj_low_mc": math.nan, "adj_high_mc": math.nan, "p": math.nan, "p_holm": math.nan,
                        "step": 0, "raw_rho": math.nan, "n": 0, "n_configs": 0, "own": 0, "skipped": skipped[k]}
            continue
        adj_iv = percentile_interval(r.estimate, r.draws, 1 - a_step[i], "cluster bootstrap, Holm level") \
            if not math.isnan(pv[i]) else Interval(r.estimate, math.nan, math.nan, math.nan)
        cells[k] = {"measure": k[0], "target": k[1], "controls": ctrl_names, "rho": r.estimate,
                    "low": r.interval.low, "high": r.interval.high, "adj_level": adj_iv.level,
                    "adj_low": adj_iv.low, "adj_high": adj_iv.high, "adj_low_mc": adj_iv.mc_low,
                    "adj_high_mc": adj_iv.mc_high, "p": float(pv[i]), "p_holm": float(adj[i]),
                    "step": int(step[i]) if not math.isnan(pv[i]) else 0, "raw_rho": r.raw, "n": r.n,
                    "n_configs": r.n_clusters, "own": adj_iv.direction(mc_k), "skipped": ""}
    stopped = False  # Holm's step-down: a cell decides only if every cell before it (smaller p) decided
    for k in sorted((k for k in keys if cells[k]["step"] > 0), key=lambda k: cells[k]["step"]):
        c = cells[k]
        if stopped or c["own"] == 0:
            stopped = True
            c["direction"], c["holm_stopped"] = 0, c["own"] != 0
        else:
            c["direction"], c["holm_stopped"] = c["own"], False
    for c in cells.values():
        c.setdefault("direction", 0)
        c.setdefault("holm_stopped", False)
        c["adds"] = c.pop("own") != 0 and c["direction"] != 0
    m_tests = int(np.sum(~np.isnan(pv)))
    return PartialTable(cells, float(alpha), float(level), samples, m_tests)
