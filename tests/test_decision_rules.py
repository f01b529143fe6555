"""Each claim's decision rule returns all three outcomes on synthetic inputs (an effect, none, the opposite)."""

import math

import numpy as np
import pytest

from flatminima import statistics as st
from flatminima.errors import FlatminimaError
from flatminima.lab import rules


def iv(lo, hi):
    return st.Interval((lo + hi) / 2, lo, hi, 0.95)


@pytest.mark.parametrize("claimed", [1, -1])
def test_sign_test_three_outcomes(claimed):
    assert rules.sign_test(iv(0.2, 0.5) if claimed > 0 else iv(-0.5, -0.2), claimed) == rules.SUPPORTED
    assert rules.sign_test(iv(-0.5, -0.2) if claimed > 0 else iv(0.2, 0.5), claimed) == rules.CONTRADICTED
    assert rules.sign_test(iv(-0.1, 0.3), claimed) == rules.INCONCLUSIVE
    assert rules.sign_test(iv(math.nan, math.nan), claimed) == rules.INCONCLUSIVE


def test_sign_test_margin():
    assert rules.sign_test(iv(0.05, 0.2), 1, margin=0.1) == rules.INCONCLUSIVE
    assert rules.sign_test(iv(0.15, 0.2), 1, margin=0.1) == rules.SUPPORTED


def test_band_test_three_outcomes():
    assert rules.band_test(iv(0.9, 1.1), 0.8, 1.25) == rules.SUPPORTED
    assert rules.band_test(iv(1.5, 1.8), 0.8, 1.25) == rules.CONTRADICTED  # ReLU-like ratio
    assert rules.band_test(iv(0.3, 0.6), 0.8, 1.25) == rules.CONTRADICTED
    assert rules.band_test(iv(1.0, 1.6), 0.8, 1.25) == rules.INCONCLUSIVE


def test_combine_rule():
    S, C, I = rules.SUPPORTED, rules.CONTRADICTED, rules.INCONCLUSIVE
    assert rules.combine([S, S]) == S
    assert rules.combine([C, C, C]) == C
    assert rules.combine([S, C]) == rules.MIXED
    assert rules.combine([S, C, I]) == rules.MIXED
    assert rules.combine([C, I, I]) == I  # one contradicted sub-claim with two open ones is not a verdict
    assert rules.combine([S, I]) == I
    with pytest.raises(FlatminimaError):
        rules.combine(["not supported"])


def test_stable_across_seed_sets():
    assert rules.stable(["supported"] * 3) == "supported"
    assert rules.stable(["supported", "supported", "contradicted"]) == "inconclusive"
    assert rules.stable(["mixed", "mixed", "mixed"]) == "mixed"


def paired(effect, n=10, s=0.1, seed=0):
    rng = np.random.default_rng(seed)
    return effect + s * rng.standard_normal(n)


@pytest.mark.parametrize("effect,expected", [(-0.5, "supported"), (0.0, "inconclusive"), (0.5, "contradicted")])
def test_paired_flatness_rule(effect, expected):
    # C3 / C4 / C5: Δlog λ_max < 0 is the claimed direction
    d = paired(effect)
    sub = rules.sign_sub("Δlog λ", "flatter", st.t_interval(d), len(d), claimed=-1, mde_value=rules.mde(d))
    assert sub.verdict == expected
    assert 0.05 < sub.mde < 0.2  # ≈ 2.8·s/√n = 0.09 (t-quantiles at n = 10)


@pytest.mark.parametrize("ratio,expected", [(1.0, "supported"), (1.65, "contradicted"), (1.2, "inconclusive")])
def test_noise_rise_ratio_rule(ratio, expected):
    # C2: R ≈ 1 within [0.8, 1.25]
    d = paired(ratio, n=8, s=0.05 if expected != "inconclusive" else 0.15)
    assert rules.band_sub("R", "", st.t_interval(d), 8, 0.8, 1.25).verdict == expected


def test_holm_family_three_outcomes():
    # C11-style family: strong effect, no effect, opposite effect
    samples = [paired(0.5, seed=1), paired(0.0, seed=2), paired(-0.5, seed=3)]
    subs = rules.holm_subs(["up", "none", "down"], ["", "", ""], samples, claimed=[1, 1, 1])
    got = {s.name: s.verdict for s in subs}
    assert got == {"up": "supported", "none": "inconclusive", "down": "contradicted"}


def test_holm_stops_at_first_undecided_step():
    # the weak effect would pass alone at 95 % but not at Holm's level among 8 tests
    z = np.random.default_rng(4).standard_normal(10)
    weak = 0.1 + 0.1 * (z - z.mean()) / z.std(ddof=1)  # t = 3.2, p ≈ 0.012: > 0.05 / 8
    samples = [weak] + [paired(0.0, seed=10 + i) for i in range(7)]
    alone = rules.sign_test(st.t_interval(samples[0]), 1)
    fam = rules.holm_subs([str(i) for i in range(8)], [""] * 8, samples, claimed=[1] * 8)
    assert alone == "supported" and fam[0].verdict == "inconclusive"


def test_difference_intervals():
    a, b = np.array([3, 4, 5, 4, 3.0]), np.array([1, 1, 1, 1, 1.0])
    assert rules.diff_interval(a, b).low > 0
    z = rules.diff_interval(np.ones(5), np.ones(5))
    assert (z.low, z.high) == (0.0, 0.0) and rules.sign_test(z, 1) == "inconclusive"
    d = rules.newcombe_interval(80, 100, 20, 100)
    assert d.low > 0.4 and d.high < 0.8
    e = rules.newcombe_interval(50, 1000, 52, 1000)
    assert rules.band_test(e, -0.1, 0.1) == "supported"


def test_outcome_verdict_and_demonstration():
    sub = rules.sign_sub("x", "", iv(0.1, 0.2), 5)
    assert rules.Outcome("s", [sub]).verdict == "supported"
    assert rules.Outcome("s").verdict == rules.DEMONSTRATION


def test_c13_counts_walkers_only_where_they_settle():
    # GD at lr 0.06 > 2/44 bounces in the sharp well (x₀ ≈ 1) for ever: unsettled, not "sharp basin"
    import torch

    from flatminima.lab.optimiser_basins import settled_basins, two_basin
    from flatminima.toy import optimize

    x0 = torch.tensor([[1.05, 0.0], [-0.9, 0.0]], dtype=torch.float64)
    tr = optimize(two_basin, x0, "gd", steps=600, lr=0.06)
    flat, settled, g = settled_basins(tr.xs, noisy=False)
    assert settled.tolist() == [False, True] and flat.tolist() == [False, True] and g[0] > 1e-3
    tr = optimize(two_basin, x0, "gd", steps=600, lr=0.02)
    flat, settled, _ = settled_basins(tr.xs, noisy=False)
    assert settled.tolist() == [True, True] and flat.tolist() == [False, True]
    # a noisy optimiser never comes to rest: residence in one basin for the window is its criterion
    tr = optimize(two_basin, x0, "sgd", steps=600, lr=0.02, noise=3.0)
    flat, settled, _ = settled_basins(tr.xs, noisy=True)
    assert settled.tolist() == [True, True] and flat.tolist() == [False, True]
