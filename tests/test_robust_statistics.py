"""The field's robust statistics: effective robustness (Taori et al. 2020; Miller et al. 2021), robust
sign-error (Dziugaite et al. 2020), rank partial correlation with a cluster bootstrap, and the report's
robustness section built from them. References are closed forms or independent computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import special, stats

from flatminima import statistics as st
from flatminima.errors import FlatminimaError
from flatminima.report.robustness import robustness_html, robustness_section

PHI, PHI_INV = stats.norm.cdf, stats.norm.ppf


# ----------------------------------------------------------------------------------------------------------
# effective robustness


def _line_data(n=30, a=1.3, b=-0.4, link="probit", seed=0):
    rng = np.random.default_rng(seed)
    fwd, inv = (PHI_INV, PHI) if link == "probit" else (special.logit, special.expit)
    clean = rng.uniform(0.55, 0.97, n)
    effect = np.zeros(n)
    effect[[4, 11, 20]] = [0.04, -0.03, 0.06]  # three models off the line, in accuracy units
    return clean, inv(a * fwd(clean) + b) + effect, effect


@pytest.mark.parametrize("link", ["probit", "logit"])
def test_effective_robustness_recovers_known_effects_with_a_reference_set(link):
    clean, shifted, effect = _line_data(link=link)
    a, b = 1.3, -0.4
    res = st.effective_robustness(clean, shifted, reference=effect == 0, link=link)
    # the reference models lie exactly on the line: the line, every effect and every zero are recovered
    assert res.slope == pytest.approx(a, abs=1e-10) and res.intercept == pytest.approx(b, abs=1e-10)
    np.testing.assert_allclose(res.values, effect, atol=1e-12)
    assert res.link == link and res.n_fit == 27 and res.clip == 1 / 20000
    # the same with configuration groups (a reference model is scored without its own configuration)
    groups = np.repeat(np.arange(10), 3)
    res_g = st.effective_robustness(clean, shifted, reference=np.flatnonzero(effect == 0), groups=groups, link=link)
    np.testing.assert_allclose(res_g.values, effect, atol=1e-12)
    assert "leave-one-configuration-out" in res_g.scheme


def test_leave_configuration_out_is_the_fit_without_the_group_and_does_not_absorb_a_model():
    clean, shifted, effect = _line_data()
    groups = np.repeat(np.arange(10), 3)
    logo = st.effective_robustness(clean, shifted, groups=groups)
    plain = st.effective_robustness(clean, shifted)
    # independent computation: np.polyfit on the probit values of the other groups
    for i in range(len(clean)):
        other = groups != groups[i]
        a, b = np.polyfit(PHI_INV(clean[other]), PHI_INV(shifted[other]), 1)
        assert logo.values[i] == pytest.approx(shifted[i] - PHI(a * PHI_INV(clean[i]) + b), abs=1e-12)
    a, b = np.polyfit(PHI_INV(clean), PHI_INV(shifted), 1)
    np.testing.assert_allclose(plain.values, shifted - PHI(a * PHI_INV(clean) + b), atol=1e-12)
    assert (plain.slope, plain.intercept) == pytest.approx((a, b), abs=1e-12)
    assert (logo.slope, logo.intercept) == pytest.approx((a, b), abs=1e-12)  # the drawn line: all models
    # in-sample, a model off the line pulls the line towards itself: its |ER| shrinks; left out, it does not
    for i in (4, 11, 20):
        assert abs(logo.values[i]) > abs(plain.values[i])
        assert np.sign(logo.values[i]) == np.sign(effect[i])
    # one model off the line: left out, its line is exact and its effect recovered; in-sample, it is shrunk
    single = np.where(np.arange(len(clean)) == 20, effect, 0.0)
    on_line = shifted - effect + single
    logo1 = st.effective_robustness(clean, on_line, groups=groups)
    plain1 = st.effective_robustness(clean, on_line)
    assert logo1.values[20] == pytest.approx(0.06, abs=1e-12)
    assert 0 < plain1.values[20] < 0.06 - 1e-3


def test_clipping_of_accuracies_of_zero_and_one():
    clean = np.array([1.0, 0.9, 0.8, 0.7, 0.6])
    shifted = np.array([0.95, 0.8, 0.0, 0.5, 0.35])
    res = st.effective_robustness(clean, shifted, eval_size=500)
    c = 1 / 1000
    assert res.clip == c
    tx, ty = PHI_INV(np.clip(clean, c, 1 - c)), PHI_INV(np.clip(shifted, c, 1 - c))
    a, b = np.polyfit(tx, ty, 1)
    np.testing.assert_allclose(res.values, shifted - PHI(a * tx + b), atol=1e-12)  # ER uses unclipped ood
    assert np.all(np.isfinite(res.values))
    assert st.effective_robustness(clean, shifted, clip=0.01).clip == 0.01
    assert st.effective_robustness(clean, shifted).clip == 1 / 20000


@pytest.mark.parametrize("kwargs, message", [
    ({"id_acc": [0.5, 0.6, 0.7], "ood_acc": [0.4, 0.5]}, "one entry per model"),
    ({"id_acc": [0.5, math.nan, 0.7], "ood_acc": [0.4, 0.5, 0.6]}, "no NaN"),
    ({"id_acc": [0.5, 0.6, 70.0], "ood_acc": [0.4, 0.5, 0.6]}, "not percentages"),
    ({"id_acc": [0.5, 0.6], "ood_acc": [0.4, 0.5]}, "at least 3 models"),
    ({"id_acc": [0.5, 0.6, 0.7], "ood_acc": [0.4, 0.5, 0.6], "groups": ["a", "a", "a"]}, "at least 2 groups"),
    ({"id_acc": [0.5, 0.6, 0.7], "ood_acc": [0.4, 0.5, 0.6], "groups": ["a", "b"]}, "one label per model"),
    ({"id_acc": [0.5, 0.6, 0.7], "ood_acc": [0.4, 0.5, 0.6], "groups": ["a", "a", "b"]}, "at least 2 models"),
    ({"id_acc": [0.6, 0.6, 0.6], "ood_acc": [0.4, 0.5, 0.6]}, "same clean accuracy"),
    ({"id_acc": [0.5, 0.6, 0.7], "ood_acc": [0.4, 0.5, 0.6], "link": "loglog"}, "link must be"),
    ({"id_acc": [0.5, 0.6, 0.7], "ood_acc": [0.4, 0.5, 0.6], "clip": 0.7}, "clip must be"),
])
def test_effective_robustness_refuses_bad_input(kwargs, message):
    with pytest.raises(FlatminimaError, match=message):
        st.effective_robustness(**kwargs)


def test_effective_robustness_over_shifts_fits_each_shift_and_averages():
    clean, s1, _ = _line_data(a=1.3, b=-0.4)
    _, s2, _ = _line_data(a=0.8, b=-0.9)
    groups = np.repeat(np.arange(10), 3)
    res = st.effective_robustness_over_shifts(clean, {"noise@1": s1, "blur@3": s2}, groups=groups)
    one = st.effective_robustness(clean, s1, groups=groups)
    two = st.effective_robustness(clean, s2, groups=groups)
    np.testing.assert_allclose(res.values, (one.values + two.values) / 2, atol=1e-15)
    assert res.per_shift["blur@3"].slope == pytest.approx(two.slope) and one.slope != pytest.approx(two.slope)
    with pytest.raises(FlatminimaError, match="non-empty mapping"):
        st.effective_robustness_over_shifts(clean, {})


# ----------------------------------------------------------------------------------------------------------
# robust sign-error


def _grid_rows(seeds=2):
    """3 × 2 × 2 grid. target = α(lr) + β(bs) + γ(wd) + tiny seed noise; measure agrees with the target on lr
    and wd but moves against it on bs."""
    alpha = {0.01: 0.0, 0.1: 0.1, 1.0: 0.25}
    beta = {32: 0.0, 256: 0.08}
    gamma = {0.0: 0.0, 5e-4: -0.05}
    rows = []
    for lr in alpha:
        for bs in beta:
            for wd in gamma:
                for s in range(seeds):
                    noise = 0.001 * (s - 0.5)
                    rows.append({"lr": lr, "bs": bs, "wd": wd, "seed": s, "label": f"lr={lr},bs={bs},wd={wd}",
                                 "gap": alpha[lr] + beta[bs] + gamma[wd] + noise,
                                 "m:sharp": 3 * alpha[lr] - 2 * beta[bs] + gamma[wd] - noise / 7})
    return rows


def test_sign_error_is_zero_where_the_measure_agrees_and_one_on_the_hyperparameter_where_it_does_not():
    rows = _grid_rows()
    se = st.sign_error(rows, ["lr", "bs", "wd"], "m:sharp", "gap")
    assert se.per_axis["lr"] == {"mean": 0.0, "p90": 0.0, "max": 0.0, "environments": 12, "empty": 0, "pairs": 48}
    assert se.per_axis["wd"] == {"mean": 0.0, "p90": 0.0, "max": 0.0, "environments": 6, "empty": 0, "pairs": 24}
    assert se.per_axis["bs"] == {"mean": 1.0, "p90": 1.0, "max": 1.0, "environments": 6, "empty": 0, "pairs": 24}
    assert se.robust == 1.0 and se.worst["axis"] == "bs" and se.worst["pairs"] == 4
    assert len(se.environments) == 24 and se.threshold == 0.0
    d = se.to_dict()
    assert d["robust"] == 1.0 and d["per_axis"]["bs"]["max"] == 1.0
    # the opposite expected direction turns every error into a success and back
    flipped = st.sign_error(rows, ["lr", "bs", "wd"], "m:sharp", "gap", sign=-1)
    assert (flipped.per_axis["lr"]["mean"], flipped.per_axis["bs"]["mean"]) == (1.0, 0.0)


def test_sign_error_noise_filter_drops_pairs_below_the_hoeffding_threshold():
    rows = _grid_rows()
    n, delta = 2000, 0.05
    thr = st.hoeffding_threshold(n, delta)
    assert thr == pytest.approx(2 * math.sqrt(math.log(2 / delta) / (2 * n)))  # = 0.0607
    assert 2 * math.exp(-2 * n * (thr / 2) ** 2) == pytest.approx(delta)
    se = st.sign_error(rows, ["lr", "bs", "wd"], "m:sharp", "gap", eval_size=n, delta=delta)
    # |Δgap| of the wd environments is 0.05 ± 0.001 < 0.0607: every wd pair is dropped; lr's steps (≥ 0.1)
    # and bs's 0.08 steps stay
    assert se.per_axis["wd"]["empty"] == 6 and se.per_axis["wd"]["pairs"] == 0
    assert math.isnan(se.per_axis["wd"]["mean"])
    assert se.per_axis["bs"]["pairs"] == 24 and se.per_axis["lr"]["pairs"] == 48
    # an explicit noise threshold overrides; pairs just above it stay, those just below go
    above = st.sign_error(rows, ["lr", "bs", "wd"], "m:sharp", "gap", noise=0.0495, eval_size=n)
    # per wd environment the four pairs have |Δ| = 0.049, 0.05, 0.05, 0.051: three stay
    assert above.per_axis["wd"]["pairs"] == 18 and above.threshold == 0.0495
    assert above.per_axis["wd"]["mean"] == 0.0
    assert st.sign_error(rows, ["lr", "bs", "wd"], "m:sharp", "gap", noise=0.2).per_axis["bs"]["empty"] == 6


def test_a_tied_measure_counts_half_and_bad_rows_are_refused():
    rows = [{"a": 1, "label": "x", "m": 1.0, "t": 0.1}, {"a": 2, "label": "y", "m": 1.0, "t": 0.3}]
    assert st.sign_error(rows, ["a"], "m", "t").robust == 0.5
    with pytest.raises(FlatminimaError, match="different axis values"):
        st.sign_error(rows + [{"a": 3, "label": "x", "m": 1.0, "t": 0.2}], ["a"], "m", "t")
    with pytest.raises(FlatminimaError, match="has no 'b'"):
        st.sign_error(rows, ["a", "b"], "m", "t")


# ----------------------------------------------------------------------------------------------------------
# partial association


def _partial_reference(x, y, controls):
    """Independent computation: scipy ranks, numpy lstsq, scipy Spearman of the residuals."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    z = np.column_stack([np.ones(len(x))] + [stats.rankdata(c) for c in controls])
    ex = rx - z @ np.linalg.lstsq(z, rx, rcond=None)[0]
    ey = ry - z @ np.linalg.lstsq(z, ry, rcond=None)[0]
    return stats.spearmanr(np.round(ex, 9), np.round(ey, 9)).statistic


def _confounded(seed=1, configs=20, seeds=3):
    rng = np.random.default_rng(seed)
    units = np.repeat(np.arange(configs), seeds)
    c = rng.normal(size=configs)[units] + 0.3 * rng.normal(size=len(units))
    x = c + 0.5 * rng.normal(size=len(units))
    return rng, units, c, x


def test_partial_association_is_near_zero_when_y_depends_on_x_only_through_the_control():
    rng, units, c, x = _confounded(seed=3)
    y = c + 0.5 * rng.normal(size=len(units))
    res = st.partial_association(x, y, {"clean accuracy": c}, units, samples=2000, seed=0)
    assert res.raw > 0.6  # x and y correlate strongly through c
    assert res.raw == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert res.estimate == pytest.approx(_partial_reference(x, y, [c]), abs=1e-12)
    assert abs(res.estimate) < 0.2 and res.interval.low < 0 < res.interval.high
    assert res.controls == ("clean accuracy",) and res.n == 60 and res.n_clusters == 20 and 0 <= res.p <= 1


def test_partial_association_keeps_an_own_dependence():
    rng, units, c, x = _confounded(seed=2)
    y = c + x + 0.4 * rng.normal(size=len(units))
    res = st.partial_association(x, y, [c], units, samples=2000, seed=0)
    assert res.estimate == pytest.approx(_partial_reference(x, y, [c]), abs=1e-12)
    assert res.interval.low > 0.1 and res.p < 0.01
    # two controls and a missing value: the run with None is dropped everywhere
    c2 = rng.normal(size=len(units))
    xm = x.astype(object)
    xm[5] = None
    res2 = st.partial_association(xm, y, {"c": c, "c2": c2}, units, samples=200)
    keep = np.arange(len(x)) != 5
    assert res2.n == 59 and res2.estimate == pytest.approx(
        _partial_reference(x[keep], y[keep], [c[keep], c2[keep]]), abs=1e-12)


def test_weighted_partial_correlation_equals_the_expanded_resample():
    rng = np.random.default_rng(3)
    n = 12
    x, c = rng.normal(size=n), np.round(rng.normal(size=n), 1)
    y = np.round(x + c + rng.normal(size=n), 1)  # ties in y and c
    x[2] = np.inf  # an infinite measure (e.g. an output margin) is simply the largest rank
    w = rng.integers(0, 3, size=(15, n)).astype(float)
    w[:, 0] += 1  # at least one point
    got = st._partial_rho_weighted(x, y, c[:, None], w)
    for i, wi in enumerate(w.astype(int)):
        xe, ye, ce = np.repeat(x, wi), np.repeat(y, wi), np.repeat(c, wi)
        ref = _partial_reference(xe, ye, [ce]) if len(np.unique(xe)) > 1 else math.nan
        if math.isnan(ref):
            assert math.isnan(got[i])
        else:
            assert got[i] == pytest.approx(ref, abs=1e-9)


def test_partial_association_table_holm_and_adds_information():
    rng, units, c, x = _confounded(seed=4)
    own = c + x + 0.3 * rng.normal(size=len(units))
    through = c + 0.5 * rng.normal(size=len(units))
    xs = {"sharp": x, "noise": rng.normal(size=len(units)), "c": c}
    table = st.partial_association_table(xs, {"own": own, "through": through},
                                         {"own": {"c": c}, "through": {"c": c}}, units, samples=2000, seed=0)
    cells = table.cells
    assert table.m_tests == 4 and cells["c", "own"]["skipped"] and not cells["c", "own"]["adds"]
    tested = [k for k in cells if not cells[k]["skipped"]]
    np.testing.assert_allclose([cells[k]["p_holm"] for k in tested], st.holm([cells[k]["p"] for k in tested]))
    assert cells["sharp", "own"]["adds"] and cells["sharp", "own"]["direction"] == 1
    assert cells["sharp", "own"]["adj_level"] > 0.95 and cells["sharp", "own"]["adj_low"] > 0
    assert not cells["sharp", "through"]["adds"] and not cells["noise", "own"]["adds"]
    assert cells["sharp", "through"]["raw_rho"] > 0.6
    single = st.partial_association(x, own, {"c": c}, units, samples=2000, seed=0)
    assert cells["sharp", "own"]["rho"] == single.estimate and cells["sharp", "own"]["low"] == single.interval.low
    with pytest.raises(FlatminimaError, match="not in targets"):
        st.partial_association_table(xs, {"own": own}, {"gap": {"c": c}}, units)


# ----------------------------------------------------------------------------------------------------------
# the report section


def _study_rows(shifts=True):
    """A 3 (lr) × 2 (batch size) grid with 3 seeds: 18 runs, two shifts on probit lines plus per-configuration
    robustness effects; measures: one that tracks the gap, one against it, and a baseline."""
    rng = np.random.default_rng(5)
    rows = []
    for i, lr in enumerate((0.01, 0.1, 1.0)):
        for j, bs in enumerate((32, 256)):
            effect = 0.02 * (i - 1) - 0.015 * j
            for s in range(3):
                test = 0.70 + 0.06 * i + 0.03 * j + 0.002 * s
                gap = 0.20 - 0.07 * i + 0.05 * j + 0.003 * rng.normal()
                row = {"label": f"lr={lr},bs={bs}", "lr": lr, "batch_size": bs, "seed": s, "test_acc": test,
                       "gap": gap, "ece": 0.05 + 0.02 * j + 0.01 * rng.normal(),
                       "m:lambda_max": 10 * gap + 0.01 * rng.normal(), "m:trace": -gap + 0.001 * rng.normal(),
                       "m:param_norm": 5 + gap + 0.2 * rng.normal()}
                if shifts:
                    row["shift_accs"] = {
                        "noise@1": float(PHI(1.1 * PHI_INV(test) - 0.5) + effect + 0.003 * rng.normal()),
                        "blur@2": float(PHI(0.9 * PHI_INV(test) - 0.2) + effect + 0.003 * rng.normal()),
                    }
                rows.append(row)
    return rows


def test_robustness_section_on_a_synthetic_study(tmp_path):
    rows = _study_rows()
    figs = tmp_path / "report" / "figures"
    sec = robustness_section(rows, ["lr", "batch_size"], ["lambda_max", "trace", "param_norm"], test_size=10000,
                             samples=1000, out=figs)
    assert sec["available"] and sec["shifts"] == ["blur@2", "noise@1"] and sec["dropped_shifts"] == []
    assert set(sec) >= {"notes", "fits", "runs", "configurations", "targets", "sign_error", "wrong_in_worst",
                        "partial", "partial_tests", "figures", "method", "clip", "link"}
    json.dumps(sec, allow_nan=False)  # JSON-friendly: NaN written as None
    labels = [r["label"] for r in rows]
    test = np.array([r["test_acc"] for r in rows])
    accs = {s: [r["shift_accs"][s] for r in rows] for s in ("blur@2", "noise@1")}
    ref = st.effective_robustness_over_shifts(test, accs, groups=labels, eval_size=10000)
    np.testing.assert_allclose([r["effective_robustness"] for r in sec["runs"]], ref.values, atol=1e-15)
    mean_shift = (np.array(accs["blur@2"]) + np.array(accs["noise@1"])) / 2
    np.testing.assert_allclose([r["relative_drop"] for r in sec["runs"]], (test - mean_shift) / test)
    assert sec["clip"] == 1 / 20000 and len(sec["configurations"]) == 6
    assert [f["slope"] for f in sec["fits"]] == [ref.per_shift["blur@2"].slope, ref.per_shift["noise@1"].slope]
    # ER recovers the designed per-configuration effects (up to the seed noise and the leave-out fit)
    conf = {c["label"]: c["effective_robustness"] for c in sec["configurations"]}
    assert conf["lr=1.0,bs=32"] > conf["lr=0.01,bs=32"] and conf["lr=0.1,bs=256"] < conf["lr=0.1,bs=32"]
    # sign-error: 3 measures × the 4 targets present; trace moves against the gap in every environment
    assert len(sec["sign_error"]) == 12
    by = {(s["measure"], s["target"]): s for s in sec["sign_error"]}
    assert by["lambda_max", "gap"]["robust"] == 0.0 and by["trace", "gap"]["robust"] == 1.0
    assert by["trace", "gap"]["per_axis"]["lr"]["environments"] == 6
    assert {"measure": "trace", "target": "gap"}.items() <= next(
        w for w in sec["wrong_in_worst"] if w["measure"] == "trace" and w["target"] == "gap").items()
    assert sec["method"]["noise_threshold"] == pytest.approx(st.hoeffding_threshold(10000, 0.05))
    # partial associations: the robustness/calibration targets given test_acc, the gap given the baseline
    cells = {(c["measure"], c["target"]): c for c in sec["partial"]}
    assert set(t for _, t in cells) == {"effective_robustness", "relative_drop", "shifted_acc", "ece", "gap"}
    assert cells["param_norm", "gap"]["skipped"] and cells["lambda_max", "gap"]["controls"] == ["param_norm"]
    assert cells["lambda_max", "ece"]["controls"] == ["test_acc"] and sec["partial_tests"] == 14
    # figure: PNG, SVG and the data as CSV
    assert [Path(p).name for p in sec["figures"]] == ["accuracy_on_the_line.png", "accuracy_on_the_line.svg",
                                                       "accuracy_on_the_line.csv"]
    assert all(Path(p).stat().st_size > 0 for p in sec["figures"])
    assert len(Path(sec["figures"][2]).read_text().splitlines()) == 1 + 2 * 18
    page = robustness_html(sec)
    for needle in ('class="robustness-fits"', 'class="robustness-configs"', 'class="sign-error"', 'class="partial"',
                   'src="figures/accuracy_on_the_line.png"', "more accurate models have more to lose",
                   "Wrong in its worst environment", "Miller et al. 2021", "Taori et al. 2020"):
        assert needle in page, needle
    assert page.count("<tr>") >= 1 + 2 + 1 + 6 + 1 + 12 + 1 + 15
    assert 'src="data:image/png;base64,' in robustness_html(sec, embed=True)
    assert 'src="figures/accuracy_on_the_line.png"' in robustness_html(sec, report_folder=tmp_path / "report")


def test_robustness_section_without_shifts_says_so():
    rows = _study_rows(shifts=False)
    sec = robustness_section(rows, ["lr", "batch_size"], ["m:lambda_max", "m:param_norm"], samples=200)
    assert not sec["available"] and sec["figures"] == [] and sec["fits"] == []
    assert any("No distribution shifts" in n for n in sec["notes"])
    assert {s["target"] for s in sec["sign_error"]} == {"gap", "test_acc", "ece"}
    assert sec["method"]["noise_threshold"] == 0.0
    assert {c["target"] for c in sec["partial"]} == {"ece", "gap"}
    page = robustness_html(sec)
    assert "No distribution shifts" in page and 'class="sign-error"' in page and "<img" not in page
