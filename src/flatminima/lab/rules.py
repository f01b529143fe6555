"""Pre-registered decision rules: intervals → three-valued verdicts, sub-verdicts → one claim verdict.

Outcomes of a test (STATISTICS.md §8):

* ``supported``     — the interval excludes the null in the claimed direction;
* ``contradicted``  — the interval excludes the null in the other direction (or, for an equivalence
  claim, lies wholly outside the band the claim allows);
* ``inconclusive``  — neither.

A claim made of several sub-claims gets one verdict by :func:`combine`, the one rule for all claims:

* every sub-verdict ``supported`` → ``supported``; every one ``contradicted`` → ``contradicted``;
* at least one ``supported`` and at least one ``contradicted`` → ``mixed`` (the sub-claims disagree);
* otherwise (some ``inconclusive``, and the decided ones all point one way) → ``inconclusive``.

A verdict stands only if it is the same on every disjoint seed set (:func:`stable`); otherwise it is
``inconclusive``. Experiments that cannot fail (definitions, constructed mechanisms) are
``demonstration`` and carry no verdict; quick runs with too few seeds say ``inconclusive (quick)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _sps

from .. import statistics as _st
from ..errors import FlatminimaError
from ..results import Estimate

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
MIXED, DEMONSTRATION, QUICK, FAILED = "mixed", "demonstration", "inconclusive (quick)", "failed"
TEST_OUTCOMES = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
CLAIM_OUTCOMES = (SUPPORTED, CONTRADICTED, MIXED, INCONCLUSIVE, QUICK, DEMONSTRATION, FAILED)

COMBINE_RULE = (
    "all sub-verdicts supported → supported; all contradicted → contradicted; at least one supported and at "
    "least one contradicted → mixed; otherwise → inconclusive"
)
STABILITY_RULE = "full mode: the verdict stands only if it is identical on 3 disjoint seed sets, else inconclusive"


def seed_set(k: int, n: int) -> list[int]:
    """The k-th disjoint seed set of size n: seeds k·n … k·n + n − 1 (``--seed k``)."""
    if n < 1 or k < 0:
        raise FlatminimaError(f"seed sets need n ≥ 1 and k ≥ 0, got n={n!r}, k={k!r}.")
    return list(range(k * n, k * n + n))


# --- single tests ------------------------------------------------------------------------------------------


def sign_test(iv: _st.Interval, claimed: int = 1, *, margin: float = 0.0) -> str:
    """Directional rule: supported if the interval lies beyond ``margin`` on the claimed side of 0
    (``claimed`` = +1 or −1), contradicted if it lies beyond ``margin`` on the other side, else inconclusive."""
    if claimed not in (1, -1):
        raise FlatminimaError(f"claimed must be +1 or -1, got {claimed!r}.")
    lo, hi = iv.low * claimed, iv.high * claimed
    if claimed < 0:
        lo, hi = hi, lo
    if math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if lo > margin:
        return SUPPORTED
    if hi < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def band_test(iv: _st.Interval, low: float, high: float) -> str:
    """Equivalence rule: supported if the interval lies inside [low, high], contradicted if it lies wholly
    outside it (entirely below ``low`` or above ``high``), else inconclusive."""
    if math.isnan(iv.low) or math.isnan(iv.high):
        return INCONCLUSIVE
    if low <= iv.low and iv.high <= high:
        return SUPPORTED
    if iv.high < low or iv.low > high:
        return CONTRADICTED
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """The one rule that turns sub-verdicts into a claim verdict (see :data:`COMBINE_RULE`)."""
    v = list(verdicts)
    bad = [x for x in v if x not in TEST_OUTCOMES]
    if bad or not v:
        raise FlatminimaError(f"combine needs sub-verdicts from {TEST_OUTCOMES}, got {v!r}.")
    if all(x == SUPPORTED for x in v):
        return SUPPORTED
    if all(x == CONTRADICTED for x in v):
        return CONTRADICTED
    if SUPPORTED in v and CONTRADICTED in v:
        return MIXED
    return INCONCLUSIVE


def stable(verdicts: Sequence[str]) -> str:
    """One verdict from repetitions on disjoint seed sets: the common verdict, or inconclusive."""
    v = list(verdicts)
    if not v:
        raise FlatminimaError("stable() needs at least one verdict.")
    return v[0] if all(x == v[0] for x in v) else INCONCLUSIVE


# --- intervals the rules read ------------------------------------------------------------------------------


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> _st.Interval:
    """Student-t interval of the mean paired difference a − b (pairs share a seed)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise FlatminimaError(f"paired samples need equal lengths, got {a.shape} and {b.shape}.")
    return _st.t_interval(a - b, level)


def diff_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> _st.Interval:
    """Welch interval of mean(a) − mean(b) for independent samples (0-width when both are constant)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return _st.Interval(d, d, d, level, method="Welch (no spread)")
    dof = (va + vb) ** 2 / ((va**2 / (len(a) - 1) if va else 0) + (vb**2 / (len(b) - 1) if vb else 0))
    q = float(_sps.t.ppf(0.5 + level / 2, dof))
    return _st.Interval(d, d - q * se, d + q * se, level, method="Welch t")


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> _st.Interval:
    """Newcombe's hybrid-score interval for p1 − p2 from two Wilson intervals (Newcombe 1998, method 10)."""
    a, b = _st.wilson(k1, n1, level), _st.wilson(k2, n2, level)
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    lo = d - math.sqrt((p1 - a.low) ** 2 + (b.high - p2) ** 2)
    hi = d + math.sqrt((a.high - p1) ** 2 + (p2 - b.low) ** 2)
    return _st.Interval(d, lo, hi, level, method="Newcombe")


def mde(values: Sequence[float], n: int | None = None) -> float:
    """Smallest paired effect resolved with 80 % power at α = 0.05 (STATISTICS.md §8): ≈ 2.8·s/√n, with
    the t-quantiles (t_{.975} + t_{.80}) in place of 2.8 at small n."""
    v = np.asarray(values, float)
    n = n or len(v)
    if len(v) < 2:
        return math.nan
    k = float(_sps.t.ppf(0.975, n - 1) + _sps.t.ppf(0.80, n - 1))
    return k * float(v.std(ddof=1)) / math.sqrt(n)


# --- results ----------------------------------------------------------------------------------------------


@dataclass
class SubTest:
    """One sub-claim: what it tests, the interval it reads, its rule and the resulting verdict."""

    name: str
    hypothesis: str
    interval: _st.Interval
    rule: str
    verdict: str
    n: int
    mde: float = math.nan
    note: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in TEST_OUTCOMES:
            raise FlatminimaError(f"sub-test {self.name!r}: verdict {self.verdict!r} not in {TEST_OUTCOMES}.")

    @property
    def estimate(self) -> Estimate:
        """The interval this sub-test reads, as an :class:`~flatminima.results.Estimate`."""
        return self.interval.to_estimate()

    def line(self, digits: int = 3) -> str:
        s = f"{self.name}: {_st.fmt_interval(self.interval, digits)} (n={self.n}) → {self.verdict}"
        if not math.isnan(self.mde):
            s += f"; resolves ≥ {self.mde:.3g}"
        return s + (f" [{self.note}]" if self.note else "")


def sign_sub(name: str, hypothesis: str, iv: _st.Interval, n: int, *, claimed: int = 1, margin: float = 0.0,
             mde_value: float = math.nan, note: str = "") -> SubTest:
    """A :class:`SubTest` decided by :func:`sign_test`."""
    side = "> " if claimed > 0 else "< "
    far = "< " if claimed > 0 else "> "
    m = f"{margin:g}" if margin else "0"
    rule = f"supported if the 95% interval is {side}{m}; contradicted if {far}{'-' if margin else ''}{m}"
    return SubTest(name, hypothesis, iv, rule, sign_test(iv, claimed, margin=margin), n, mde_value, note)


def band_sub(name: str, hypothesis: str, iv: _st.Interval, n: int, low: float, high: float, *,
             mde_value: float = math.nan, note: str = "") -> SubTest:
    """A :class:`SubTest` decided by :func:`band_test`."""
    rule = f"supported if the 95% interval ⊂ [{low:g}, {high:g}]; contradicted if wholly outside it"
    return SubTest(name, hypothesis, iv, rule, band_test(iv, low, high), n, mde_value, note)


def holm_subs(names: Sequence[str], hypotheses: Sequence[str], samples: Sequence[Sequence[float]], *,
              claimed: Sequence[int], margins: Sequence[float] | None = None, alpha: float = 0.05) -> list[SubTest]:
    """Paired-difference sub-tests controlled as one family by Holm's step-down (STATISTICS.md §4).

    Each sample is a vector of paired differences; its two-sided t-test p-value enters Holm's step-down,
    and the k-th test (by ascending p) is judged on its t-interval at level 1 − α/(m − k + 1). A test is
    decided (supported / contradicted by the side of its adjusted interval) only while every earlier
    step was decided; from the first undecided step on, all are inconclusive."""
    m = len(samples)
    margins = list(margins or [0.0] * m)
    p = []
    for v in samples:
        v = np.asarray(v, float)
        if len(v) < 2 or v.std(ddof=1) == 0:
            p.append(1.0 if len(v) < 2 or v.mean() == 0 else 0.0)
        else:
            p.append(float(_sps.ttest_1samp(v, 0.0).pvalue))
    step, lev = _st.holm_levels(p, alpha)
    order = np.argsort(step)
    out: list[SubTest | None] = [None] * m
    open_ = True
    for i in order:
        level = 1 - float(lev[i])
        iv = _st.t_interval(samples[i], level)
        v = sign_test(iv, claimed[i], margin=margins[i]) if open_ else INCONCLUSIVE
        if v == INCONCLUSIVE:
            open_ = False
        rule = f"Holm step {int(step[i])}/{m}: {level:.4f} interval excludes 0 → supported/contradicted by side"
        out[i] = SubTest(names[i], hypotheses[i], iv, rule, v, len(samples[i]), mde(samples[i]),
                         note=f"p={p[i]:.2g}")
    return [s for s in out if s is not None]


@dataclass
class Outcome:
    """What an experiment returns: its sub-tests (empty for a demonstration), a one-line summary of the
    numbers, the numbers themselves, the files it wrote and how many seeds/configurations it used."""

    summary: str
    subtests: list[SubTest] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    n: int = 0

    @property
    def verdict(self) -> str:
        return combine([s.verdict for s in self.subtests]) if self.subtests else DEMONSTRATION
