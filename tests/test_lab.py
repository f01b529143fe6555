"""The lab registry, its statistics helpers and one fast experiment end to end."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from flatminima import lab
from flatminima.errors import FlatminimaError
from flatminima.lab import rules
from flatminima.statistics import Interval, bootstrap, spearman_rho, t_interval, wilson


def test_every_registered_claim_has_a_full_spec():
    specs = lab.specs()
    assert [s.number for s in specs] == sorted(s.number for s in specs)
    assert len({s.claim for s in specs}) == len(specs) == len(lab.available())
    for s in specs:
        assert s.hypothesis and s.quantity and s.rule and s.power and s.n_full >= s.n_quick >= 1
        assert s.kind in ("test", "demonstration")
    demos = {s.claim for s in specs if s.kind == "demonstration"}
    assert {"C1", "C8", "C9"} <= demos


def test_unknown_experiment_lists_known_ones():
    with pytest.raises(FlatminimaError, match="known experiments: .*saddle_test"):
        lab.run("no_such_experiment")


def test_t_interval_matches_scipy():
    x = [1.0, 2.0, 4.0, 3.5]
    iv = t_interval(x)
    ref = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert (iv.low, iv.high) == pytest.approx(ref) and iv.estimate == pytest.approx(np.mean(x))
    assert math.isnan(t_interval([1.0]).low)


def test_wilson_interval_closed_form():
    iv = wilson(0, 20)
    assert (
        iv.estimate == 0
        and iv.low == pytest.approx(0, abs=1e-12)
        and iv.high == pytest.approx(3.8415 / (20 + 3.8415), rel=1e-3)
    )
    assert wilson(10, 20).low < 0.5 < wilson(10, 20).high


def test_spearman_bootstrap_and_sign_test():
    x = np.arange(30.0)
    iv = bootstrap(np.column_stack([x, x**3]), lambda p: spearman_rho(p[:, 0], p[:, 1]), seed=0)
    assert iv.estimate == pytest.approx(1.0) and iv.low == pytest.approx(1.0)
    assert rules.sign_test(iv) == "supported"
    assert rules.sign_test(Interval(-0.5, -0.8, -0.2, 0.95)) == "contradicted"
    assert rules.sign_test(Interval(0.1, -0.2, 0.4, 0.95)) == "inconclusive"


def test_seed_sets_are_disjoint():
    sets = [set(rules.seed_set(k, 8)) for k in range(4)]
    assert all(len(s) == 8 for s in sets)
    assert all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:])
    assert rules.seed_set(2, 5) == [10, 11, 12, 13, 14]


def test_data_sculpting_runs_and_saves(tmp_path: Path):
    res = lab.run("data_sculpting", out=tmp_path, quick=True, seed=0)
    assert res.claim == "C7" and res.verdict in rules.CLAIM_OUTCOMES
    exts = {Path(f).suffix for f in res.files}
    assert {".png", ".svg", ".csv", ".json"} <= exts
    assert all(Path(f).exists() for f in res.files)
    # one sub-test per width and sub-claim; the widest kernel always has exactly one minimum
    assert len(res.subtests) == 6
    assert res.numbers["minima"]["1.0:1000"] == 1.0
    # at h = 0.1 the count of minima rises with n: this width contradicts the claim
    assert res.subtests[0]["verdict"] == "contradicted"
    # each serialised sub-test carries its interval both as the (estimate, low, high) list and as an Estimate
    for sub in res.subtests:
        est = sub["estimate"]
        assert [est["value"], est["low"], est["high"]] == sub["interval"] and est["level"] == 0.95


def test_c14_separation_moves_class_means_and_keeps_the_spread():
    from flatminima.lab.networks import C14_CLASSES, separated_pair

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = torch.arange(60) % 3  # digit 2 is not one of the pair
    x0, y0 = separated_pair(x, y, 1.0)
    x3, y3 = separated_pair(x, y, 3.0)
    assert set(C14_CLASSES) == {0, 1} and torch.equal(y0, y3) and len(y0) == 40
    assert torch.allclose(x0, x[y < 2])  # scale 1 leaves the data as it is
    gap = lambda z, t: z[t == 1].mean(0) - z[t == 0].mean(0)  # noqa: E731
    assert torch.allclose(gap(x3, y3), 3 * gap(x0, y0))
    for c in (0, 1):  # deviations from the class mean are untouched
        d0 = x0[y0 == c] - x0[y0 == c].mean(0)
        d3 = x3[y3 == c] - x3[y3 == c].mean(0)
        assert torch.allclose(d0, d3)


def test_c5_matches_the_iterate_nearest_the_average_loss_on_the_log_scale():
    from flatminima.lab.networks import matched_loss

    assert matched_loss([0.05, 0.021, 0.03], 0.025) == (1, True)  # |log(0.021/0.025)| < |log(0.03/0.025)|
    assert matched_loss([0.1, 0.004], 0.025) == (0, False)  # 4× off beats 6.25×, but is not matched: dropped
    assert matched_loss([0.031], 0.025, factor=1.25) == (0, True)
    assert matched_loss([0.032], 0.025, factor=1.25) == (0, False)
