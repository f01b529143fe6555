"""The robustness claims' rules (C10, C11, C12, C15) on effective robustness: the numbers equal the library's,
the line's uncertainty enters paired intervals, and every rule can return all three outcomes on constructed
inputs (including a drop explained away by clean accuracy)."""

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import norm

from flatminima import statistics as st
from flatminima.errors import FlatminimaError
from flatminima.lab import robustness as R
from flatminima.lab.networks import PairedT, decide_interventions, finetune_sub
from flatminima.lab.rules import sign_sub

EVAL = 800
SHIFTS = ("iid_noise@3", "translation@3")


def _zoo(er_of_lambda: float, *, clean_of_lambda: float = 0.0, constant_shift: bool = False, seed: int = 0,
         configs: int = 10, seeds: int = 6):
    """A zoo of configurations whose clean accuracy rises with log λ by ``clean_of_lambda`` and whose ER (the
    shifted accuracy beyond a fixed probit line) moves with the λ rank by ``er_of_lambda`` per configuration."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(configs), seeds)
    loglam = rng.permutation(configs).astype(float)[g] * 0.3 + 0.05 * rng.standard_normal(len(g))
    clean = np.clip(0.55 + rng.normal(0, 0.03, configs)[g] + clean_of_lambda * loglam
                    + 0.005 * rng.standard_normal(len(g)), 0.05, 0.95)
    rank = np.argsort(np.argsort(loglam.reshape(configs, seeds).mean(1)))[g] - (configs - 1) / 2
    shifts = {}
    for k, (a, b) in zip(SHIFTS, ((0.8, -0.5), (0.6, -0.4)), strict=True):
        base = 0.35 if constant_shift else norm.cdf(a * norm.ppf(clean) + b)
        shifts[k] = np.clip(base + er_of_lambda * rank + 0.004 * rng.standard_normal(len(g)), 0.01, 0.99)
    return np.exp(loglam), clean, shifts, g


@pytest.mark.parametrize("effect, expected", [(-0.01, "supported"), (0.01, "contradicted"), (0.0, "inconclusive")])
def test_c10_rule_three_outcomes(effect, expected):
    lam, clean, shifts, g = _zoo(effect)
    iv, er = R.rho_refit(lam, clean, shifts, g, eval_size=EVAL, samples=400, seed=1)
    assert np.allclose(er, R.er_loco(clean, shifts, g, eval_size=EVAL))
    sub = sign_sub("ρ(λ_max, ER)", "sharper → less effectively robust", iv, len(lam), claimed=-1)  # C10
    assert sub.verdict == expected, iv


@pytest.mark.parametrize("effect, expected", [(0.01, "supported"), (-0.01, "contradicted"), (0.0, "inconclusive")])
def test_c15_robustness_rule_three_outcomes(effect, expected):
    lam, clean, shifts, g = _zoo(effect, configs=7, seed=3)
    iv, _ = R.rho_refit(lam, clean, shifts, g, eval_size=EVAL, samples=400, seed=2)
    assert sign_sub("ρ(λ_max, ER)", "sharper → better ER", iv, len(lam), claimed=+1).verdict == expected, iv


def test_a_drop_explained_by_clean_accuracy_is_not_robustness():
    # shifted accuracy 0.35 everywhere, clean accuracy rising with λ: the drop tracks λ, ER does not
    lam, clean, shifts, g = _zoo(0.0, clean_of_lambda=0.05, constant_shift=True, seed=5)
    drop = clean - np.mean(list(shifts.values()), axis=0)
    assert st.cluster_bootstrap(lam, drop, g, statistic="rho", samples=1000, seed=0).low > 0.5
    iv, _ = R.rho_refit(lam, clean, shifts, g, eval_size=EVAL, samples=400, seed=1)
    assert sign_sub("ρ", "", iv, len(lam), claimed=-1).verdict == "inconclusive", iv


def _ref(seed=0):
    _, clean, shifts, g = _zoo(0.0, seed=seed)
    return clean, shifts, g


def test_paired_er_matches_the_library_and_its_line_refits():
    cr, sr, gr = _ref()
    ca, cb = np.array([0.6, 0.62, 0.58, 0.61]), np.array([0.5, 0.52, 0.49, 0.5])
    sa = {k: np.array([0.40, 0.41, 0.39, 0.40]) for k in SHIFTS}
    sb = {k: np.array([0.36, 0.35, 0.37, 0.36]) for k in SHIFTS}
    pe = R.paired_er(ca, sa, cb, sb, cr, sr, gr, eval_size=EVAL, samples=300, seed=0)
    for k in SHIFTS:  # each member scored on the reference line, the library's numbers
        line = st.effective_robustness(cr, sr[k], eval_size=EVAL)
        assert pe.slope[k] == pytest.approx(line.slope) and pe.intercept[k] == pytest.approx(line.intercept)
    c = st.clip_constant(eval_size=EVAL)
    er = [np.mean([s[k] - norm.cdf(pe.slope[k] * norm.ppf(np.clip(x, c, 1 - c)) + pe.intercept[k])
                   for k in SHIFTS], axis=0) for x, s in ((ca, sa), (cb, sb))]
    assert np.allclose(pe.diffs, er[0] - er[1])
    # a weighted refit equals the fit on the explicitly expanded resample
    w = np.zeros(len(cr))
    w[gr == 2], w[gr == 5] = 2, 1
    w[gr == 7] = 3
    tx, ty = norm.ppf(np.clip(cr, c, 1 - c)), norm.ppf(np.clip(sr[SHIFTS[0]], c, 1 - c))
    a, b = R._weighted_lines(tx, ty, w[None, :])
    idx = np.repeat(np.arange(len(cr)), w.astype(int))
    expanded = st.effective_robustness(cr[idx], sr[SHIFTS[0]][idx], eval_size=EVAL)
    assert a[0] == pytest.approx(expanded.slope) and b[0] == pytest.approx(expanded.intercept)
    assert pe.se == pytest.approx(np.hypot(pe.se_pairs, pe.se_line)) and pe.se_line > 0


def test_the_line_matters_only_where_the_pair_differs_in_clean_accuracy():
    cr, sr, gr = _ref(1)
    same = np.array([0.55, 0.57, 0.56, 0.54, 0.55])
    s = {k: np.full(5, 0.37) for k in SHIFTS}
    s2 = {k: np.array([0.36, 0.355, 0.35, 0.352, 0.36]) for k in SHIFTS}
    pe = R.paired_er(same, s, same, s2, cr, sr, gr, eval_size=EVAL, samples=300, seed=0)
    assert pe.se_line == pytest.approx(0, abs=1e-12)
    far = R.paired_er(same + 0.2, s, same, s2, cr, sr, gr, eval_size=EVAL, samples=300, seed=0)
    assert far.se_line > 1e-3


def test_paired_er_refuses_mismatched_input():
    cr, sr, gr = _ref()
    with pytest.raises(FlatminimaError, match="same shifts"):
        R.paired_er([0.5], {"x": [0.3]}, [0.5], {"x": [0.3]}, cr, sr, gr, eval_size=EVAL)
    with pytest.raises(FlatminimaError, match="same shifts"):
        R.accuracies([SimpleNamespace(test_acc=0.5, shift_accs={"a": 0.3}),
                      SimpleNamespace(test_acc=0.5, shift_accs={"b": 0.3})])


def _paired_er(diffs, line_sd=0.0):
    return R.PairedER(np.asarray(diffs, float), np.random.default_rng(0).normal(0, line_sd, 500) if line_sd
                      else np.empty(0))


def test_c11_rule_three_outcomes_in_one_holm_family():
    rng = np.random.default_rng(0)
    moves = PairedT(0.8 + 0.1 * rng.standard_normal(10))
    tests = {
        "both move": (moves, _paired_er(0.05 + 0.005 * rng.standard_normal(10), 0.002)),
        "ER inside the band": (PairedT(0.5 + 0.1 * rng.standard_normal(10)),
                               _paired_er(0.001 * rng.standard_normal(10))),
        "noisy": (PairedT(0.3 * rng.standard_normal(10)), _paired_er(0.02 * rng.standard_normal(10), 0.01)),
    }
    out = decide_interventions(tests)
    assert [out[k][0] for k in tests] == ["supported", "contradicted", "inconclusive"]
    # Holm's levels: 6 tests, the k-th smallest p judged at 1 − 0.05/(6 − k + 1)
    levels = sorted(iv.level for v in out.values() for iv in v[1:])
    assert levels == pytest.approx(sorted(1 - 0.05 / k for k in range(1, 7)))


def test_c11_line_uncertainty_can_make_a_clear_pair_difference_inconclusive():
    rng = np.random.default_rng(1)
    diffs = 0.03 + 0.003 * rng.standard_normal(10)
    lam = PairedT(0.8 + 0.1 * rng.standard_normal(10))
    assert decide_interventions({"a": (lam, _paired_er(diffs))})["a"][0] == "supported"
    assert decide_interventions({"a": (lam, _paired_er(diffs, 0.05))})["a"][0] == "inconclusive"


@pytest.mark.parametrize("effect, expected", [(0.03, "supported"), (-0.03, "contradicted"), (0.0, "inconclusive")])
def test_c12_rule_three_outcomes(effect, expected):
    rng = np.random.default_rng(2)
    er = _paired_er(effect + 0.01 * rng.standard_normal(12), 0.003)
    flatter = sign_sub("Δlog λ", "", st.t_interval(-0.8 + 0.1 * rng.standard_normal(12)), 12, claimed=-1)
    assert finetune_sub(flatter, er).verdict == expected
    not_flatter = sign_sub("Δlog λ", "", st.t_interval(0.1 * rng.standard_normal(12)), 12, claimed=-1)
    assert finetune_sub(not_flatter, er).verdict == "inconclusive"  # the manipulation failed


def test_c12_on_the_line_is_inconclusive_though_the_flat_start_drops_more():
    # both starts on the reference line, the flat one more accurate: larger drop, no effective robustness
    cr, sr, gr = _ref(2)
    line = {k: st.effective_robustness(cr, sr[k], eval_size=EVAL) for k in SHIFTS}
    rng = np.random.default_rng(3)
    ca, cb = 0.58 + 0.01 * rng.standard_normal(12), 0.51 + 0.01 * rng.standard_normal(12)

    def on_line(c):
        return {k: norm.cdf(line[k].slope * norm.ppf(c) + line[k].intercept) + 0.004 * rng.standard_normal(12)
                for k in SHIFTS}

    sa, sb = on_line(ca), on_line(cb)
    drop = (ca - np.mean(list(sa.values()), 0)) - (cb - np.mean(list(sb.values()), 0))
    assert st.t_interval(drop).low > 0  # the former rule: the flat start "loses more"
    pe = R.paired_er(ca, sa, cb, sb, cr, sr, gr, eval_size=EVAL, samples=300, seed=0)
    flatter = sign_sub("Δlog λ", "", st.t_interval(-0.8 + 0.1 * rng.standard_normal(12)), 12, claimed=-1)
    assert finetune_sub(flatter, pe).verdict == "inconclusive", pe.interval()
