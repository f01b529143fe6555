"""One vocabulary for results: every result exposes an Estimate, and serialises with to_dict to plain JSON."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from cases import with_eigenvalues
from flatminima import Objective, statistics
from flatminima.curvature import eigenvalues, spectral_density, trace
from flatminima.lab import rules
from flatminima.objective import Cost
from flatminima.results import Estimate
from flatminima.sharpness import measure

DT = torch.float64


def quadratic(eigs=(4.0, 2.0, 1.0, 0.5, 0.25, 0.1), seed=0):
    A = with_eigenvalues(eigs, seed)
    return Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.zeros(len(eigs), dtype=DT), dtype=DT), A


def roundtrip(d):
    return json.loads(json.dumps(d))


# ---- the type --------------------------------------------------------------------------------------------
def test_estimate_is_frozen_and_round_trips():
    e = Estimate.from_stderr(1.0, 0.1)
    assert e.low == pytest.approx(1.0 - 1.959964 * 0.1, rel=1e-5) and e.level == 0.95 and e.stderr == 0.1
    with pytest.raises(AttributeError):
        e.value = 2.0  # type: ignore[misc]
    assert Estimate.from_dict(roundtrip(e.to_dict())) == e
    exact = Estimate.from_stderr(3.0, None)
    assert exact.interval is None and exact.stderr is None and roundtrip(exact.to_dict())["low"] is None
    with pytest.raises(ValueError, match="both low and high"):
        Estimate(1.0, low=0.0)


# ---- every result exposes one ----------------------------------------------------------------------------
def test_measure_estimate():
    obj, A = quadratic()
    m = measure(obj, "average_case", sigma=0.1, samples=32, seed=1)
    e = m.estimate
    assert isinstance(e, Estimate) and e.value == m.value and e.stderr == m.stderr
    assert e.method == "t" and e.level == 0.95 and e.low < m.value < e.high
    assert "ci95" not in m.extra
    d = roundtrip(m.to_dict())
    assert Estimate.from_dict(d["estimate"]) == e
    exact = measure(obj, "grad_norm")
    assert exact.estimate.value == exact.value and exact.estimate.interval is None
    tr = measure(obj, "trace", samples=12, seed=0)
    assert tr.estimate.interval == pytest.approx(tr.interval(), rel=1e-4)


def test_trace_eigen_density_estimates():
    obj, A = quadratic()
    t = trace(obj, "hutchinson", samples=20, seed=0)
    assert isinstance(t.estimate, Estimate) and t.estimate.interval == pytest.approx(t.interval(), rel=1e-4)
    assert t.samples == 20
    d = roundtrip(t.to_dict())
    assert d["samples"] == 20 and Estimate.from_dict(d["estimate"]) == t.estimate
    r = eigenvalues(obj, k=2, seed=0)
    es = r.eigenvalue_estimates
    assert len(es) == 2 and all(isinstance(e, Estimate) for e in es) and r.estimate == es[0]
    for e, v, b in zip(es, r.values.tolist(), r.error_bounds.tolist(), strict=True):
        assert e.value == v and e.low == v - b and e.high == v + b and e.level is None
    assert es[0].low <= 4.0 + 1e-9 and es[0].high >= 4.0 - 1e-9
    d = roundtrip(r.to_dict())
    assert [Estimate.from_dict(x) for x in d["eigenvalue_estimates"]] == es
    assert "recurrence_residuals" in d
    s = spectral_density(obj, samples=3, steps=6, seed=0)
    assert isinstance(s.estimate, Estimate) and s.estimate.value == s.negative_mass
    roundtrip(s.to_dict())


def test_eigen_result_has_no_old_estimates_name():
    obj, _ = quadratic()
    r = eigenvalues(obj, k=1, seed=0)
    assert r.recurrence_residuals is not None and not hasattr(r, "estimates")  # renamed before the release


def test_interval_and_subtest_expose_estimate():
    iv = statistics.t_interval([1.0, 2.0, 3.0, 4.0])
    e = iv.to_estimate()
    assert isinstance(e, Estimate) and (e.value, e.low, e.high, e.level) == (iv.estimate, iv.low, iv.high, iv.level)
    assert roundtrip(iv.to_dict())["low"] == iv.low
    sub = rules.sign_sub("x", "x > 0", iv, 4)
    assert sub.estimate == e


# ---- one serialisation method ----------------------------------------------------------------------------
def test_cost_to_dict():
    c = Cost(hvps=3, seconds=0.5)
    assert c.to_dict()["hvps"] == 3 and roundtrip(c.to_dict())["seconds"] == 0.5
    assert not hasattr(c, "as_dict")  # the pre-release alias is gone (CHANGELOG)


def test_run_config_to_dict():
    from flatminima.study.spec import RunConfig

    rc = RunConfig("mlp", {}, {}, 0, {}, {}, {})
    assert roundtrip(rc.to_dict())["model"] == "mlp"
    assert not hasattr(rc, "as_dict")  # the pre-release alias is gone (CHANGELOG)


def test_no_deprecation_warning_on_the_new_paths():
    obj, _ = quadratic()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for name, cfg in [("trace", {"samples": 8}), ("average_case", {"samples": 8}), ("lambda_max", {})]:
            m = measure(obj, name, **cfg)
            roundtrip(m.to_dict())
        roundtrip(eigenvalues(obj, k=1).to_dict())


# ---- old keyword names (renamed before the release): the ordinary errors -----------------------------------
def test_curvature_old_probes_keyword_is_refused():
    from flatminima.curvature import curvature_report

    obj, _ = quadratic()
    new = trace(obj, "hutchinson", samples=10, seed=2)
    assert new.samples == 10 and not hasattr(new, "probes")
    with pytest.raises(TypeError, match="'probes'"):
        trace(obj, "hutchinson", probes=10, seed=2)
    d_new = spectral_density(obj, samples=2, steps=5, seed=1)
    assert d_new.samples == 2 and not hasattr(d_new, "probes")
    with pytest.raises(TypeError, match="'probes'"):
        spectral_density(obj, probes=2, steps=5, seed=1)
    rep = curvature_report(obj, k=1, samples=6, density_samples=2, density_steps=4)
    assert rep["density"].samples == 2 and rep["trace"].samples == 6
    for old in ("probes", "density_probes"):
        with pytest.raises(TypeError, match=f"'{old}'"):
            curvature_report(obj, k=1, density_steps=4, **{old: 6})


def test_per_layer_old_probes_keyword_is_refused():
    from flatminima.curvature import per_layer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x, y = torch.randn(16, 3, dtype=DT), torch.randint(0, 2, (16,))
    obj = Objective(model.double(), torch.nn.functional.cross_entropy, [(x, y)], dtype=DT)
    new = per_layer(obj, samples=4, max_iter=10, progress=False)
    assert new.samples == 4 and isinstance(new.estimate, Estimate) and not hasattr(new, "probes")
    with pytest.raises(TypeError, match="'probes'"):
        per_layer(obj, probes=4, max_iter=10, progress=False)
    roundtrip(new.to_dict())


@pytest.mark.parametrize("name,old,new,value", [
    ("trace", "probes", "samples", 8),
    ("frobenius", "probes", "samples", 5),
    ("average_case", "second_order_probes", "second_order_samples", 6),
])
def test_measure_old_setting_names_are_unknown_settings(name, old, new, value):
    from flatminima.errors import FlatminimaError
    from flatminima.sharpness import measure_all

    obj, _ = quadratic()
    base = {"sigma": 0.1, "samples": 4} if name == "average_case" else {}
    a = measure(obj, name, **base, **{new: value}, seed=3)
    assert a.config[new] == value and old not in a.config
    with pytest.raises(FlatminimaError, match=f"{name} does not take \\['{old}'\\]"):
        measure(obj, name, **base, **{old: value}, seed=3)
    with pytest.raises(FlatminimaError, match="does not take"):
        measure_all(obj, [name], settings={f"{name}.{old}": value}, seed=3)


def test_slices_old_grid_keyword_is_refused():
    from flatminima.landscape import slice_1d, slice_2d

    obj, _ = quadratic()
    d = torch.ones(obj.dim, dtype=DT)
    new = slice_1d(obj, d, steps=5, progress=False)
    assert new.values["train_loss"].shape == (5,)
    dirs = torch.stack([d, -d])
    new2 = slice_2d(obj, dirs, steps=(3, np.array([-0.5, 0.0, 0.5])), progress=False)
    assert new2.values["train_loss"].shape == (3, 3)
    with pytest.raises(TypeError, match="'grid'"):
        slice_1d(obj, d, grid=5, progress=False)
    with pytest.raises(TypeError, match="'grid'"):
        slice_2d(obj, dirs, grid=3, progress=False)


def test_bootstrap_old_n_boot_keyword_is_refused():
    x, y, cl = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 3.0, 2.0, 5.0, 4.0, 6.0], [0, 0, 1, 1, 2, 2]
    new = statistics.cluster_bootstrap(x, y, cl, samples=300, seed=1)
    assert isinstance(new.to_estimate(), Estimate)
    with pytest.raises(TypeError, match="'n_boot'"):
        statistics.cluster_bootstrap(x, y, cl, n_boot=300, seed=1)
    with pytest.raises(TypeError, match="'n_boot'"):
        statistics.bootstrap_ci(x, y, statistics.kendall_tau, n_boot=300, seed=1)
    with pytest.raises(TypeError, match="'n_boot'"):
        statistics.correlation_table({"m": x}, {"t": y}, cl, n_boot=200, max_samples=200)
