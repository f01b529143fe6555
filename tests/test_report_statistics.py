"""Report statistics against SciPy and against hand-worked examples; verdict wording against the interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from flatminima.report import (
    TARGETS,
    Interval,
    bootstrap_ci,
    granulated_tau,
    kendall_tau,
    spearman_rho,
    verdict,
)


def _data(n=30, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, x + noise * rng.normal(size=n)


def test_kendall_and_spearman_match_scipy_with_ties():
    x, y = _data()
    x = np.round(x, 1)  # force ties: τ_b must handle them as SciPy does
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_hand_worked_kendall():
    # pairs: (1,2) C, (1,3) C, (2,3) D  ->  τ = (2 − 1) / 3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)


def test_constant_variable_gives_nan_not_a_number():
    assert math.isnan(kendall_tau([1, 2, 3], [5, 5, 5]))
    assert math.isnan(spearman_rho([1, 2, 3], [5, 5, 5]))
    ci = bootstrap_ci([1, 2, 3, 4], [5, 5, 5, 5], kendall_tau, samples=50)
    assert math.isnan(ci.estimate) and math.isnan(ci.low)


@pytest.mark.parametrize(
    "stat,ref",
    [
        (kendall_tau, lambda a, b: stats.kendalltau(a, b).statistic),
        (spearman_rho, lambda a, b: stats.spearmanr(a, b).statistic),
    ],
)
def test_bootstrap_interval_matches_scipy_percentile_bootstrap(stat, ref):
    x, y = _data(n=40, seed=1)
    ours = bootstrap_ci(x, y, stat, samples=2000, seed=0)
    theirs = stats.bootstrap(
        (x, y),
        ref,
        paired=True,
        vectorized=False,
        method="percentile",
        n_resamples=2000,
        confidence_level=0.95,
        random_state=0,
    ).confidence_interval
    # different random streams, same estimator: agreement to Monte Carlo error of a 2000-draw quantile
    assert ours.low == pytest.approx(theirs.low, abs=0.05)
    assert ours.high == pytest.approx(theirs.high, abs=0.05)
    assert ours.low < ours.estimate < ours.high
    assert ours.resamples == 2000


def test_bootstrap_of_a_perfect_ranking_is_degenerate_at_one():
    x = np.arange(10.0)
    ci = bootstrap_ci(x, x**3, kendall_tau, samples=200, seed=0)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((1.0, 1.0, 1.0)) and ci.excludes_zero()


def test_granulated_tau_hand_worked_table():
    # axes a ∈ {1,2,3}, b ∈ {1,2}; seed 0, plus one seed-1 run that must not join the seed-0 groups.
    rows = [
        dict(a=1, b=1, seed=0, x=1, y=1),
        dict(a=2, b=1, seed=0, x=2, y=3),
        dict(a=3, b=1, seed=0, x=3, y=2),
        dict(a=1, b=2, seed=0, x=5, y=6),
        dict(a=2, b=2, seed=0, x=4, y=5),
        dict(a=3, b=2, seed=0, x=6, y=7),
        dict(a=1, b=1, seed=1, x=0, y=9),
    ]
    g = granulated_tau(rows, ["a", "b"], "x", "y")
    # ψ_a: b=1 → pairs (1,2) C, (1,3) C, (2,3) D: τ = 1/3;  b=2 → (1,2) C, (1,3) C, (2,3) C: τ = 1;  mean 2/3
    assert g["psi"]["a"] == pytest.approx(2 / 3)
    # ψ_b: a=1 → (1,1)→(5,6) C; a=2 → (2,3)→(4,5) C; a=3 → (3,2)→(6,7) C: each τ = 1
    assert g["psi"]["b"] == pytest.approx(1.0)
    assert g["Psi"] == pytest.approx(5 / 6)
    assert g["groups"] == {"a": 2, "b": 3}
    assert g["skipped"] == {"a": 1, "b": 1}  # the lone seed-1 run forms a one-value group on each axis


def _iv(est, lo, hi):
    return Interval(est, lo, hi, 0.95, 1000)


def test_verdict_names_a_direction_only_when_the_interval_excludes_zero():
    gap, acc, ece = TARGETS["gap"], TARGETS["test_acc"], TARGETS["ece"]
    assert verdict("trace", gap, _iv(0.5, 0.2, 0.7), 30).headline == "flatter went with smaller gaps"
    assert verdict("trace", gap, _iv(-0.5, -0.7, -0.2), 30).headline == "sharper went with smaller gaps"
    assert verdict("trace", acc, _iv(0.4, 0.1, 0.6), 30).headline == "sharper went with higher test accuracy"
    assert (
        verdict("trace", acc, _iv(-0.4, -0.6, -0.1), 30).headline == "flatter went with higher test accuracy"
    )
    assert verdict("trace", ece, _iv(-0.3, -0.5, -0.1), 30).kind == "sharper-better"
    v = verdict("trace", gap, _iv(0.3, -0.05, 0.6), 30)
    assert v.headline == "inconclusive" and v.kind == "inconclusive" and "includes 0" in v.text
    assert "function-centric" in verdict("t", gap, _iv(-0.5, -0.7, -0.2), 30).text
    assert "classic" in verdict("t", gap, _iv(0.5, 0.2, 0.7), 30).text
    assert "Caveat" in verdict("t", gap, _iv(0.5, 0.2, 0.7), 30, granulated=-0.3).text
    assert verdict("t", gap, _iv(math.nan, math.nan, math.nan), 2).kind == "inconclusive"
    assert "undefined" in verdict("t", gap, _iv(math.nan, math.nan, math.nan), 2).headline


def test_verdict_accounts_for_monte_carlo_error_and_holm():
    gap = TARGETS["gap"]
    near = Interval(0.3, 0.01, 0.6, 0.99, 4000, mc_low=0.01, mc_high=0.01)
    assert verdict("t", gap, near, 20).kind == "flatter-better"  # no MC margin asked
    v = verdict("t", gap, near, 20, mc_k=3)
    assert v.kind == "inconclusive" and "Monte-Carlo" in v.text
    far = Interval(0.3, 0.1, 0.6, 0.99, 4000, mc_low=0.01, mc_high=0.01)
    assert verdict("t", gap, far, 20, mc_k=3).kind == "flatter-better"
    v = verdict("t", gap, far, 20, mc_k=3, holm_stopped=True)
    assert v.kind == "inconclusive" and "Holm" in v.text
