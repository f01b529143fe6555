"""Effective robustness for the lab's robustness claims (C10, C11, C12, C15; STATISTICS.md §10).

The absolute accuracy drop under shift (clean − shifted) mostly measures how accurate a model was before the
shift. A model's *effective robustness* (ER) is its shifted accuracy beyond what its clean accuracy predicts:
for each shift, acc_shift − Φ(a·Φ⁻¹(acc_clean) + b), with the probit line (a, b) fitted on *other* models
(:func:`flatminima.statistics.effective_robustness`), averaged over the shifts. Two designs use it:

* **correlations across configurations** (C10, C15): ER from the line fitted leaving the model's configuration
  out; Spearman ρ(measure, ER) with a configuration-cluster bootstrap in which every resample refits the lines
  (:func:`rho_refit`), so the interval carries the line's uncertainty;
* **paired comparisons** (C11, C12): both members of a pair are scored against one line fitted on a reference
  set that holds neither (:func:`paired_er`); the interval is Student's t with n − 1 degrees of freedom on the
  pairs' s²/n plus the variance of the mean difference over configuration-cluster bootstrap refits of the
  line (two independent sources of error: the pairs and the reference models).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _sps

from .. import statistics as st
from ..errors import FlatminimaError

LINK = "probit"  # Miller et al. 2021 ("Accuracy on the line")


def accuracies(models: Sequence) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(clean accuracies, {shift: accuracies}) of trained lab models (``test_acc``, ``shift_accs``)."""
    if not models:
        raise FlatminimaError("effective robustness needs models, got none.")
    keys = sorted(models[0].shift_accs)
    if not keys or any(sorted(m.shift_accs) != keys for m in models):
        raise FlatminimaError(f"every model needs the accuracy under the same shifts {keys}; "
                              "measure them with lab.Bench.measure.")
    return (np.array([m.test_acc for m in models], float),
            {k: np.array([m.shift_accs[k] for m in models], float) for k in keys})


def er_loco(clean: Sequence[float], shifts: Mapping[str, Sequence[float]], clusters: Sequence[Hashable], *,
            eval_size: int) -> np.ndarray:
    """Per-model ER (mean over shifts), each model scored on the line fitted without its configuration."""
    return st.effective_robustness_over_shifts(clean, dict(shifts), groups=list(clusters), link=LINK,
                                               eval_size=eval_size).values


def rho_refit(x: Sequence[float], clean: Sequence[float], shifts: Mapping[str, Sequence[float]],
              clusters: Sequence[Hashable], *, eval_size: int, samples: int = 4000, level: float = 0.95,
              seed: int = 0) -> tuple[st.Interval, np.ndarray]:
    """Spearman ρ(x, ER) with ER from the leave-one-configuration-out line, and its configuration-cluster
    bootstrap percentile interval: whole configurations are drawn with replacement, the lines are refitted on
    the resample (copies of a configuration are left out together) and ρ recomputed. Returns (interval, ER)."""
    x = np.asarray(x, float)
    clean = np.asarray(clean, float)
    sh = {k: np.asarray(v, float) for k, v in shifts.items()}
    units = st.cluster_ids(list(clusters))
    er = er_loco(clean, sh, units, eval_size=eval_size)
    est = st.spearman_rho(x, er)
    g = int(units.max()) + 1
    if g < 3 or math.isnan(est):
        return st.Interval(est, math.nan, math.nan, level, method="cluster bootstrap"), er
    members = [np.flatnonzero(units == k) for k in range(g)]
    counts = st.resample_counts(g, samples, np.random.default_rng(seed)).astype(int)
    draws = np.full(samples, math.nan)
    for b, row in enumerate(counts):
        if np.count_nonzero(row) < 2:  # one configuration: no line without it
            continue
        idx = np.concatenate([np.tile(members[k], c) for k, c in enumerate(row) if c])
        try:
            e = er_loco(clean[idx], {k: v[idx] for k, v in sh.items()}, units[idx], eval_size=eval_size)
        except FlatminimaError:  # a line without two distinct clean accuracies: undefined resample
            continue
        draws[b] = st.spearman_rho(x[idx], e)
    return st.percentile_interval(est, draws, level, "cluster bootstrap, lines refitted (percentile)"), er


@dataclass
class PairedER:
    """Paired ER differences a − b scored on one reference line: ``diffs`` per pair (at the line fitted on
    all reference models), ``line_draws`` the mean difference at each bootstrap refit of the line, and the
    standard error ``se`` = √(s²/n + var(line_draws))."""

    diffs: np.ndarray
    line_draws: np.ndarray = field(repr=False)
    slope: dict[str, float] = field(default_factory=dict)
    intercept: dict[str, float] = field(default_factory=dict)
    n_reference: int = 0

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def estimate(self) -> float:
        return float(self.diffs.mean()) if self.n else math.nan

    @property
    def se_pairs(self) -> float:
        return float(self.diffs.std(ddof=1) / math.sqrt(self.n)) if self.n >= 2 else math.nan

    @property
    def se_line(self) -> float:
        d = self.line_draws[~np.isnan(self.line_draws)]
        return float(d.std(ddof=1)) if len(d) >= 2 else 0.0

    @property
    def se(self) -> float:
        return math.hypot(self.se_pairs, self.se_line)

    def interval(self, level: float = 0.95) -> st.Interval:
        """mean ± t_{(1+level)/2, n−1}·se (NaN for fewer than 2 pairs)."""
        if self.n < 2:
            return st.Interval(self.estimate, math.nan, math.nan, level, method="t, pairs + reference line")
        half = float(_sps.t.ppf(0.5 + level / 2, self.n - 1)) * self.se
        return st.Interval(self.estimate, self.estimate - half, self.estimate + half, level, 0, 0.0, 0.0,
                           "t, pairs + reference line")

    @property
    def p(self) -> float:
        """Two-sided p-value of the same t statistic (mean / se, n − 1 df), for Holm."""
        if self.n < 2:
            return 1.0
        if self.se == 0:
            return 1.0 if self.estimate == 0 else 0.0
        return float(2 * _sps.t.sf(abs(self.estimate) / self.se, self.n - 1))

    @property
    def mde(self) -> float:
        """Smallest difference resolved with 80 % power at α = 0.05: (t₀.₉₇₅ + t₀.₈₀)·se (STATISTICS.md §8)."""
        if self.n < 2:
            return math.nan
        return float(_sps.t.ppf(0.975, self.n - 1) + _sps.t.ppf(0.80, self.n - 1)) * self.se


def _weighted_lines(tx: np.ndarray, ty: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares lines ty ≈ a·tx + b for each row of weights ``w`` (B × N; a row of multiplicities is the
    fit on the expanded resample); NaN where the resample has a single clean accuracy."""
    tot = w.sum(1)
    mx, my = (w * tx).sum(1) / tot, (w * ty).sum(1) / tot
    xc = tx[None, :] - mx[:, None]
    sxx = (w * xc * xc).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(sxx > 1e-12, (w * xc * (ty[None, :] - my[:, None])).sum(1) / sxx, np.nan)
    return a, my - a * mx


def paired_er(clean_a: Sequence[float], shifts_a: Mapping[str, Sequence[float]], clean_b: Sequence[float],
              shifts_b: Mapping[str, Sequence[float]], ref_clean: Sequence[float],
              ref_shifts: Mapping[str, Sequence[float]], ref_clusters: Sequence[Hashable], *, eval_size: int,
              samples: int = 2000, seed: int = 0) -> PairedER:
    """ER(a_i) − ER(b_i) per pair i, both scored on the probit line (one per shift) fitted on the reference
    models (none of which is a or b), averaged over the shifts; the line's uncertainty from ``samples``
    configuration-cluster bootstrap refits on the reference models."""
    ca, cb, cr = (np.asarray(v, float) for v in (clean_a, clean_b, ref_clean))
    keys = sorted(ref_shifts)
    if sorted(shifts_a) != keys or sorted(shifts_b) != keys:
        raise FlatminimaError(f"the pairs and the reference need the same shifts, got {sorted(shifts_a)}, "
                              f"{sorted(shifts_b)} and {keys}.")
    if len(ca) != len(cb):
        raise FlatminimaError(f"paired ER needs as many a as b models, got {len(ca)} and {len(cb)}.")
    n, nr = len(ca), len(cr)
    if n == 0:
        return PairedER(np.empty(0), np.empty(0), n_reference=nr)
    # the point estimate: the library's ER with the reference set named (a and b get the reference line)
    allc = np.concatenate([cr, ca, cb])
    alls = {k: np.concatenate([np.asarray(ref_shifts[k], float), np.asarray(shifts_a[k], float),
                               np.asarray(shifts_b[k], float)]) for k in keys}
    ref = np.zeros(nr + 2 * n, bool)
    ref[:nr] = True
    res = st.effective_robustness_over_shifts(allc, alls, reference=ref, link=LINK, eval_size=eval_size)
    diffs = res.values[nr:nr + n] - res.values[nr + n:]
    # the line's uncertainty: refits on resampled reference configurations, the pairs held fixed
    units = st.cluster_ids(list(ref_clusters))
    if len(units) != nr:
        raise FlatminimaError(f"ref_clusters needs one label per reference model ({nr}), got {len(units)}.")
    g = int(units.max()) + 1
    c = st.clip_constant(eval_size=eval_size)
    fwd, inv = _sps.norm.ppf, _sps.norm.cdf
    txr, txa, txb = (fwd(np.clip(v, c, 1 - c)) for v in (cr, ca, cb))
    if g >= 2:
        w = st.resample_counts(g, samples, np.random.default_rng(seed))[:, units]
        per_shift = []
        for k in keys:
            a, b = _weighted_lines(txr, fwd(np.clip(np.asarray(ref_shifts[k], float), c, 1 - c)), w)
            ya, yb = np.asarray(shifts_a[k], float), np.asarray(shifts_b[k], float)
            ea = ya[None, :] - inv(a[:, None] * txa[None, :] + b[:, None])
            eb = yb[None, :] - inv(a[:, None] * txb[None, :] + b[:, None])
            per_shift.append((ea - eb).mean(1))
        draws = np.mean(per_shift, axis=0)
    else:  # one reference configuration: its line cannot be resampled (no spread from the line)
        draws = np.empty(0)
    return PairedER(diffs, draws, {k: r.slope for k, r in res.per_shift.items()},
                    {k: r.intercept for k, r in res.per_shift.items()}, nr)


def paired_er_models(a: Sequence, b: Sequence, reference: Sequence, *, eval_size: int, samples: int = 2000,
                     seed: int = 0) -> PairedER:
    """:func:`paired_er` of lab models: the pairs (a_i, b_i) where both reached the target, scored on the line
    of the reference models that reached it (clustered by configuration)."""
    pairs = [(p, q) for p, q in zip(a, b, strict=True) if p.reached_target and q.reached_target]
    ref = [m for m in reference if m.reached_target]
    cr, sr = accuracies(ref)
    if not pairs:
        return PairedER(np.empty(0), np.empty(0), n_reference=len(ref))
    ca, sa = accuracies([p for p, _ in pairs])
    cb, sb = accuracies([q for _, q in pairs])
    return paired_er(ca, sa, cb, sb, cr, sr, [m.config for m in ref], eval_size=eval_size, samples=samples,
                     seed=seed)
