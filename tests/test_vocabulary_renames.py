"""One vocabulary for random draws and grid points: ``samples`` and ``steps`` everywhere.

For each rename made before the first release: the new name works without a warning, and the old name is
refused with the ordinary error (an unexpected keyword, an unknown setting, no such CLI option).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cases import tiny_mlp
from flatminima import Objective

DT = torch.float64


def _no_deprecation():
    """A context in which a DeprecationWarning fails the test (the new names must not warn)."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error", DeprecationWarning)
    return ctx


@pytest.fixture(scope="module")
def classifier():
    """A small trained 2-8-2 tanh net and a second solution (another seed)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g, dtype=DT)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).long()
    nets = []
    for seed in (0, 1):
        net = tiny_mlp(2, 8, 2, seed=seed)
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(60):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        nets.append(net)
    obj = Objective(nets[0], "cross_entropy", (x, y))
    return obj, obj.params, obj.replace(model=nets[1]).params


# ---- landscape: interpolate(steps=), connect(steps=, plane_steps=) ----------------------------------------
def test_interpolate_steps_and_not_its_old_name_grid(classifier):
    from flatminima.landscape import interpolate

    obj, a, b = classifier
    ctx = _no_deprecation()
    new = interpolate(obj, a, b, steps=7, span=(-0.5, 1.5), progress=False)
    ctx.__exit__(None, None, None)
    assert np.array_equal(new.axes[0], np.union1d(np.linspace(-0.5, 1.5, 7), [0.0, 1.0]))
    assert set(new.meta["barrier"]) and np.isfinite(new.values["train_loss"]).all()
    with pytest.raises(TypeError, match="grid"):
        interpolate(obj, a, b, grid=7, progress=False)
    with pytest.raises(TypeError, match="stepz"):
        interpolate(obj, a, b, stepz=7, progress=False)


def test_connect_steps_plane_steps_and_not_their_old_names(classifier):
    from flatminima.landscape import connect

    obj, a, b = classifier
    kw = dict(epochs=2, batch_size=30, progress=False, seed=3)
    ctx = _no_deprecation()
    new = connect(obj, a, b, "polychain", steps=5, plane_steps=3, **kw)
    ctx.__exit__(None, None, None)
    assert len(new.t) == 5 and new.plane["loss"].shape == (3, 3)
    assert new.meta["steps"] == 5 and "grid" not in new.meta
    with pytest.raises(TypeError, match="'grid'"):
        connect(obj, a, b, grid=5, **kw)
    with pytest.raises(TypeError, match="'plane_grid'"):
        connect(obj, a, b, plane_grid=3, **kw)


# ---- statistics and the study report: samples=, max_samples= -----------------------------------------------
def test_correlation_table_max_samples_and_not_its_old_names():
    from flatminima import statistics

    x, y, cl = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [2.0, 1.0, 4.0, 3.0, 6.0, 5.0, 7.0], [0, 0, 1, 1, 2, 2, 3]
    ctx = _no_deprecation()
    new = statistics.correlation_table({"m": x}, {"t": y}, cl, samples=200, max_samples=800, seed=2)
    ctx.__exit__(None, None, None)
    assert 200 <= new.resamples <= 800
    for old in ({"max_boot": 800}, {"n_boot": 200}):
        with pytest.raises(TypeError, match=next(iter(old))):
            statistics.correlation_table({"m": x}, {"t": y}, cl, **old)


def test_report_correlate_samples_and_not_its_old_name_n_boot():
    from flatminima.report import correlate

    x, y = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 3.0, 2.0, 5.0, 4.0, 6.0]
    ctx = _no_deprecation()
    new = correlate(x, y, samples=300, seed=1)
    ctx.__exit__(None, None, None)
    assert new["tau"].triple() == correlate(x, y, samples=300, seed=1)["tau"].triple()
    with pytest.raises(TypeError, match="n_boot"):
        correlate(x, y, n_boot=300)


def test_build_report_samples_max_samples_and_not_their_old_names(tmp_path):
    from flatminima import study
    from flatminima.report import build_report
    from test_report_html import _make_store

    folder = _make_store(tmp_path / "s")
    ctx = _no_deprecation()
    new = build_report(folder, out=tmp_path / "new", samples=200, max_samples=400)
    ctx.__exit__(None, None, None)
    assert new.method["samples_min"] == 200 and new.method["max_samples"] == 400
    assert "n_boot_min" not in new.method and "max_boot" not in new.method
    page = new.html.read_text()
    assert "adaptive: from 200," in page and "cap 400;" in page
    for old in ({"n_boot": 200}, {"max_boot": 400}):
        with pytest.raises(TypeError, match=next(iter(old))):
            study.report(folder, out=tmp_path / "old", **old)


def test_study_report_cli_max_samples_and_not_the_old_options(tmp_path):
    from typer.testing import CliRunner

    from flatminima.cli import app
    from test_report_html import _make_store

    folder = _make_store(tmp_path / "s")
    runner = CliRunner()
    res = runner.invoke(app, ["study", "report", str(folder), "--samples", "100", "--max-samples", "200",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    for old in ("--max-boot", "--n-boot"):
        res = runner.invoke(app, ["study", "report", str(folder), "--out", str(tmp_path / "old"), old, "200",
                                  "--no-progress"])
        assert res.exit_code == 2 and "No such option" in res.output, res.output


# ---- sharpness: pac_bayes_mag's draws is now samples --------------------------------------------------------
def test_pac_bayes_mag_samples_and_not_its_old_name_draws(classifier):
    from flatminima.errors import FlatminimaError
    from flatminima.sharpness import measure, measure_all, settings_per_measure

    obj, _, _ = classifier
    kw = dict(target=0.05, tol=0.05, iterations=4, sigma_max=20.0, seed=1)
    ctx = _no_deprecation()
    new = measure(obj, "pac_bayes_mag", samples=6, **kw)
    ctx.__exit__(None, None, None)
    assert new.config["samples"] == 6 and "draws" not in new.config
    with pytest.raises(FlatminimaError, match=r"pac_bayes_mag does not take \['draws'\]"):
        measure(obj, "pac_bayes_mag", draws=6, **kw)
    with pytest.raises(FlatminimaError, match="does not take"):
        measure_all(obj, ["pac_bayes_mag"], settings={"pac_bayes_mag.draws": 6})
    with pytest.raises(FlatminimaError, match="no chosen measure takes the setting 'draws'"):
        settings_per_measure(["pac_bayes", "pac_bayes_mag"], {"draws": 6}, seed=2)
    for old in ("probes", "second_order_probes"):  # the shared old names of samples / second_order_samples
        with pytest.raises(FlatminimaError, match="does not take"):
            measure(obj, "average_case", **{old: 4})


def test_study_spec_refuses_pac_bayes_mag_draws():
    from flatminima.errors import FlatminimaError
    from flatminima.study import validate

    base = {"name": "t", "data": {"name": "mnist1d", "options": {"num_samples": 300}}, "models": {"mlp": {"width": 8}},
            "recipe": {"lr": 0.05, "batch_size": 32, "epochs": 1}, "seeds": 1}
    ctx = _no_deprecation()
    spec = validate(base | {"measures": {"pac_bayes_mag": {"samples": 4}}})
    ctx.__exit__(None, None, None)
    assert spec.measures["pac_bayes_mag"] == {"samples": 4}
    for name in ("pac_bayes_mag", "pac_bayes"):
        with pytest.raises(FlatminimaError, match="draws = 4: unknown setting"):
            validate(base | {"measures": {name: {"draws": 4}}})


def test_sharpness_cli_uses_the_registry_settings():
    """``flatminima sharpness --set`` and measure_all share one assignment of settings to measures."""
    from flatminima.cli import sharpness as cli_sharpness
    from flatminima.errors import FlatminimaError
    from flatminima.sharpness import registry

    assert not hasattr(cli_sharpness, "_settings")
    per = registry.settings_per_measure(["trace", "lambda_max"], {"samples": 5, "lambda_max.tol": 1e-3}, seed=0)
    assert per == {"trace": {"samples": 5, "seed": 0}, "lambda_max": {"tol": 1e-3, "seed": 0}}
    with pytest.raises(FlatminimaError, match="names measure 'keskar', which is not among"):
        registry.settings_per_measure(["trace"], {"keskar.steps": 2})
    with pytest.raises(FlatminimaError, match="no chosen measure takes the setting 'rho'"):
        registry.settings_per_measure(["trace"], {"rho": 0.1})
    with pytest.raises(FlatminimaError, match="unknown sharpness measure"):
        registry.settings_per_measure(["nope"], {})


def test_estimate_at_the_package_top_level():
    import flatminima
    from flatminima.results import Estimate

    assert flatminima.Estimate is Estimate and "Estimate" in flatminima.__all__


def test_resample_counts_samples_and_not_its_old_name_n_boot():
    from flatminima import statistics

    new = statistics.resample_counts(5, samples=40, rng=np.random.default_rng(0))
    assert new.shape == (40, 5) and (new.sum(1) == 5).all()
    assert np.array_equal(statistics.resample_counts(5, 40, np.random.default_rng(0)), new)
    with pytest.raises(TypeError, match="n_boot"):
        statistics.resample_counts(5, n_boot=40, rng=np.random.default_rng(0))
