"""flatminima.statistics: vectorised τ_b/ρ against SciPy, the cluster bootstrap, Holm, granulated τ, CMI,
verdict stability across bootstrap seeds, all three outcomes, the one ECE and the lab's adapters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from flatminima import statistics as st
from flatminima.report import TARGETS, verdict


def test_vectorised_tau_b_and_rho_equal_scipy_on_expanded_resamples():
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=15), 1)  # ties in x
    y = np.round(x + rng.normal(size=15), 0)  # many ties in y
    w = rng.integers(0, 4, size=(20, 15))
    tau, rho = st.tau_b_weighted(x, y, w), st.rho_weighted(x, y, w)
    for i, wi in enumerate(w):
        xe, ye = np.repeat(x, wi), np.repeat(y, wi)
        assert tau[i] == pytest.approx(stats.kendalltau(xe, ye).statistic, abs=1e-12)
        assert rho[i] == pytest.approx(stats.spearmanr(xe, ye).statistic, abs=1e-12)
    units = np.repeat(np.arange(5), 3)  # clusters of three points
    m = rng.integers(0, 3, size=(10, 5))
    got = st.tau_b_weighted(x, y, m, units)
    for i in range(10):
        ref = stats.kendalltau(np.repeat(x, m[i][units]), np.repeat(y, m[i][units])).statistic
        assert (math.isnan(ref) and math.isnan(got[i])) or got[i] == pytest.approx(ref, abs=1e-12)


def test_infinite_values_rank_like_scipy():
    x = np.array([1.0, np.inf, 3.0, 2.0, np.inf, 0.5])
    y = np.array([1.0, 5.0, 2.0, 2.5, 4.0, 0.0])
    ones = np.ones((1, 6))
    assert st.tau_b_weighted(x, y, ones)[0] == pytest.approx(stats.kendalltau(x, y).statistic)
    res = st.correlation_table({"m": list(x)}, {"t": list(y)}, list(range(6)), samples=500, max_samples=500)
    assert res.cells["m", "t"]["tau"].estimate == pytest.approx(stats.kendalltau(x, y).statistic)
    assert not np.isnan(res.draws["m", "t"]).all()


def _clustered(n_cfg=18, seeds=3, seed=0, slope=0.5):
    """Configurations with a config-level relation; seeds of a configuration nearly identical."""
    rng = np.random.default_rng(seed)
    xc = rng.normal(size=n_cfg)
    yc = slope * xc + rng.normal(size=n_cfg)
    x = np.repeat(xc, seeds) + 0.01 * rng.normal(size=n_cfg * seeds)
    y = np.repeat(yc, seeds) + 0.01 * rng.normal(size=n_cfg * seeds)
    return x, y, list(np.repeat(np.arange(n_cfg), seeds))


def test_cluster_bootstrap_is_wider_than_run_bootstrap_when_seeds_are_correlated():
    x, y, cl = _clustered()
    clus = st.cluster_bootstrap(x, y, cl, samples=8000, seed=0)
    runs = st.cluster_bootstrap(x, y, list(range(len(x))), samples=8000, seed=0)
    assert clus.estimate == runs.estimate == pytest.approx(stats.kendalltau(x, y).statistic)
    assert (clus.high - clus.low) > 1.4 * (runs.high - runs.low)
    assert clus.mc_low < 0.02 and clus.mc_high < 0.02 and clus.resamples == 8000


def test_holm_on_known_p_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.04·1, 0.06) = 0.06
    assert st.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert st.holm([0.2, 0.9]) == pytest.approx([0.4, 0.9]) and st.holm([0.6, 0.9])[0] == 1.0
    adj = st.holm([0.2, math.nan, 0.01])
    assert math.isnan(adj[1]) and adj[2] == pytest.approx(0.02)
    step, level = st.holm_levels(p, alpha=0.05)
    assert list(step) == [2, 4, 3, 1] and level == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])


def _grid(measure, seeds=(0, 1), noise=0.0, seed=0, lr_weight=1.0):
    rng = np.random.default_rng(seed)
    rows = []
    for lr in (1, 2, 3):
        for wd in (0, 1, 2):
            for s in seeds:
                e = noise * rng.normal()
                gap = lr_weight * lr + wd + e
                rows.append(dict(lr=lr, wd=wd, seed=s, label=f"{lr}-{wd}", gap=gap, m=measure(lr, wd, gap)))
    return rows


def test_granulated_tau_hand_built_grid_and_its_cluster_interval():
    rows = _grid(lambda lr, wd, gap: lr - wd)  # tracks the gap along lr, against it along wd
    g = st.granulated_tau(rows, ["lr", "wd"], "m", "gap")
    assert g["psi"] == {"lr": pytest.approx(1.0), "wd": pytest.approx(-1.0)} and g["Psi"] == pytest.approx(0.0)
    assert g["groups"] == {"lr": 6, "wd": 6}
    units = st.cluster_ids([r["label"] for r in rows])
    ones = np.ones((1, 9))
    assert st.granulated_tau_draws(rows, ["lr", "wd"], "m", "gap", ones, units)[0] == pytest.approx(0.0)
    draws = st.granulated_tau_draws(rows, ["lr", "wd"], "m", "gap",
                                    st.resample_counts(9, 500, np.random.default_rng(0)), units)
    # every defined group keeps τ = ±1, so every resample with both axes defined has Ψ = 0
    assert np.nanmax(np.abs(draws)) <= 1.0 and np.nanmedian(draws) == pytest.approx(0.0)


def test_cmi_is_zero_for_a_mirror_of_one_hyperparameter_and_positive_for_a_tracker():
    mirror = _grid(lambda lr, wd, gap: lr, seeds=(0, 1, 2), noise=0.3, lr_weight=5.0)  # lr drives the gap
    c = st.conditional_mi(mirror, ["lr", "wd"], "m", "gap")
    assert c["score"] == pytest.approx(0.0, abs=1e-12) and "lr" in c["set"]
    assert c["per_set"][()] > 0.5  # unconditioned it looks informative
    tracker = _grid(lambda lr, wd, gap: gap, seeds=(0, 1, 2), noise=0.3)
    t = st.conditional_mi(tracker, ["lr", "wd"], "m", "gap")
    assert t["score"] > 0.5 and t["per_set"][("lr", "wd")] > 0.5  # it tracks the gap within configurations


def _study(seed=0, n_cfg=20, seeds=3):
    rng = np.random.default_rng(seed)
    gap_c = rng.normal(size=n_cfg)
    gap = np.repeat(gap_c, seeds) + 0.2 * rng.normal(size=n_cfg * seeds)
    measures = {
        "flat_good": list(np.repeat(gap_c, seeds) + 0.3 * rng.normal(size=n_cfg * seeds)),  # τ > 0 with gap
        "sharp_good": list(-np.repeat(gap_c, seeds) + 0.3 * rng.normal(size=n_cfg * seeds)),  # τ < 0
        "null": list(rng.normal(size=n_cfg * seeds)),
    }
    return measures, {"gap": list(gap)}, list(np.repeat(np.arange(n_cfg), seeds))


def test_verdicts_identical_for_bootstrap_seeds_0_to_9_and_all_three_outcomes_reachable():
    measures, targets, clusters = _study()
    kinds = []
    for s in range(10):
        res = st.correlation_table(measures, targets, clusters, seed=s)
        kinds.append({
            m: verdict(m, TARGETS["gap"], res.cells[m, "gap"]["tau_adj"], 20, mc_k=st.MC_K,
                       holm_stopped=res.cells[m, "gap"]["holm_stopped"]).kind
            for m in measures
        })
        assert res.resamples >= 4000 and not res.capped
        c = res.cells["flat_good", "gap"]
        assert c["tau_adj"].level == pytest.approx(1 - 0.05 / 3) and c["tau"].mc_low < 0.01
    assert all(k == kinds[0] for k in kinds)
    assert kinds[0] == {"flat_good": "flatter-better", "sharp_good": "sharper-better", "null": "inconclusive"}


def test_adaptive_resamples_grow_for_a_borderline_test():
    _, targets, clusters = _study()
    gap = np.asarray(targets["gap"])
    noise = np.random.default_rng(5).normal(size=len(gap))
    # c = 0.21: the lower bound sits a few MC errors above 0 → more resamples, then a decision
    res = st.correlation_table({"w": list(0.21 * gap + noise)}, targets, clusters, samples=1000, max_samples=16000)
    assert 1000 < res.resamples < 16000 and res.rounds > 1 and not res.capped
    assert res.cells["w", "gap"]["decision"] == 1
    # c = 0.20: the bound stays within 3 MC errors of 0 up to the cap → inconclusive, and said so
    res = st.correlation_table({"w": list(0.20 * gap + noise)}, targets, clusters, samples=1000, max_samples=16000)
    assert res.resamples == 16000 and res.capped and res.cells["w", "gap"]["decision"] == 0


def _ece_study_old(probs, y, bins=15):  # the formula the study's evaluation used before the one ECE
    conf, pred = probs.max(dim=1)
    correct = (pred == y).double()
    idx = torch.clamp(torch.ceil(conf * bins).long() - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.double().mean().item() * abs(correct[mask].mean().item() - conf[mask].mean().item())
    return total


def _ece_train_old(probs, y, bins=15):  # the formula train's evaluate used before
    conf, pred = probs.max(dim=1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    which = torch.bucketize(conf, edges[1:-1])
    return float(sum((which == b).float().mean() * (correct[which == b].mean() - conf[which == b].mean()).abs()
                     for b in range(bins) if (which == b).any()))


def test_one_ece_equals_both_former_formulas():
    from flatminima.train import evaluate

    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (500,), generator=g)
    probs = torch.softmax(logits, 1)
    assert st.ece(probs, y) == pytest.approx(_ece_study_old(probs, y), abs=1e-12)
    assert st.ece(probs, y, 7) == pytest.approx(_ece_study_old(probs, y, 7), abs=1e-12)
    p32 = probs.float()
    assert st.ece(p32, y) == pytest.approx(_ece_train_old(p32, y), abs=1e-6)
    model = torch.nn.Linear(10, 10).double()
    x = torch.randn(200, 10, generator=g, dtype=torch.float64)
    out = evaluate(model, (x, y[:200]))
    with torch.no_grad():
        p = torch.softmax(model(x).float(), 1)
    assert out["ece"] == pytest.approx(_ece_train_old(p, y[:200]), abs=1e-6)
    assert st.ece(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([0, 1])) == pytest.approx(0.25)


def test_lab_uses_the_one_module():
    # the lab reads flatminima.statistics directly; its old triple adapter (lab/stats.py) is gone
    import importlib.util

    assert importlib.util.find_spec("flatminima.lab.stats") is None
    x = np.random.default_rng(1).normal(size=25)
    iv = st.bootstrap(x, np.mean, reps=3000, seed=0)
    ref = stats.bootstrap((x,), np.mean, n_resamples=3000, method="BCa", rng=0).confidence_interval
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high), abs=0.02) and iv.method == "BCa"
    assert iv.mc_low > 0 and st.fmt_interval(iv, 2).count("[") == 1
    assert st.wilson(3, 10).triple()[0] == pytest.approx(0.3)
