"""One vocabulary for random draws and grid points: ``samples`` and ``steps`` everywhere.

For each rename: the new name works, the old one still works for a release with a DeprecationWarning
naming the new name and gives the identical result, and passing both (with different values) is an error.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

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
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(60):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        nets.append(net)
    obj = Objective(nets[0], "cross_entropy", (x, y))
    return obj, obj.params, obj.replace(model=nets[1]).params


# ---- landscape: interpolate(steps=), connect(steps=, plane_steps=) ----------------------------------------
def test_interpolate_steps_and_its_old_name_grid(classifier):
    from flatminima.landscape import interpolate

    obj, a, b = classifier
    ctx = _no_deprecation()
    new = interpolate(obj, a, b, steps=7, span=(-0.5, 1.5), progress=False)
    ctx.__exit__(None, None, None)
    with pytest.warns(DeprecationWarning, match="'grid' is deprecated; use 'steps'"):
        old = interpolate(obj, a, b, grid=7, span=(-0.5, 1.5), progress=False)
    assert np.array_equal(new.axes[0], old.axes[0])
    assert np.array_equal(new.values["train_loss"], old.values["train_loss"])
    assert new.meta["barrier"] == old.meta["barrier"]
    with pytest.raises(TypeError, match="both"):
        interpolate(obj, a, b, steps=9, grid=7, progress=False)
    with pytest.raises(TypeError, match="unexpected"):
        interpolate(obj, a, b, stepz=7, progress=False)


def test_connect_steps_plane_steps_and_their_old_names(classifier):
    from flatminima.landscape import connect

    obj, a, b = classifier
    kw = dict(epochs=2, batch_size=30, progress=False, seed=3)
    ctx = _no_deprecation()
    new = connect(obj, a, b, "polychain", steps=5, plane_steps=3, **kw)
    ctx.__exit__(None, None, None)
    with pytest.warns(DeprecationWarning) as record:
        old = connect(obj, a, b, "polychain", grid=5, plane_grid=3, **kw)
    messages = [str(w.message) for w in record if w.category is DeprecationWarning]
    assert any("'grid' is deprecated; use 'steps'" in m for m in messages)
    assert any("'plane_grid' is deprecated; use 'plane_steps'" in m for m in messages)
    assert np.array_equal(new.t, old.t) and len(new.t) == 5
    assert np.array_equal(new.values["train_loss"], old.values["train_loss"])
    assert torch.equal(new.theta_c, old.theta_c)
    assert np.array_equal(new.plane["loss"], old.plane["loss"]) and new.plane["loss"].shape == (3, 3)
    assert new.meta["steps"] == 5 and "grid" not in new.meta
    with pytest.raises(TypeError, match="both"):
        connect(obj, a, b, steps=7, grid=5, **kw)
    with pytest.raises(TypeError, match="both"):
        connect(obj, a, b, plane_steps=0, plane_grid=3, **kw)


# ---- statistics and the study report: samples=, max_samples= -----------------------------------------------
def test_correlation_table_max_samples_and_its_old_name_max_boot():
    from flatminima import statistics

    x, y, cl = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [2.0, 1.0, 4.0, 3.0, 6.0, 5.0, 7.0], [0, 0, 1, 1, 2, 2, 3]
    ctx = _no_deprecation()
    new = statistics.correlation_table({"m": x}, {"t": y}, cl, samples=200, max_samples=800, seed=2)
    ctx.__exit__(None, None, None)
    with pytest.warns(DeprecationWarning, match="'max_boot' is deprecated; use 'max_samples'"):
        old = statistics.correlation_table({"m": x}, {"t": y}, cl, samples=200, max_boot=800, seed=2)
    assert new.resamples == old.resamples <= 800 and new.rounds == old.rounds
    assert np.array_equal(new.draws["m", "t"], old.draws["m", "t"], equal_nan=True)
    assert new.cells["m", "t"]["tau"].triple() == old.cells["m", "t"]["tau"].triple()
    assert new.cells["m", "t"]["decision"] == old.cells["m", "t"]["decision"]
    with pytest.raises(TypeError, match="both"):
        statistics.correlation_table({"m": x}, {"t": y}, cl, max_samples=1600, max_boot=800)


def test_report_correlate_samples_and_its_old_name_n_boot():
    from flatminima.report import correlate

    x, y = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 3.0, 2.0, 5.0, 4.0, 6.0]
    ctx = _no_deprecation()
    new = correlate(x, y, samples=300, seed=1)
    ctx.__exit__(None, None, None)
    with pytest.warns(DeprecationWarning, match="'n_boot' is deprecated; use 'samples'"):
        old = correlate(x, y, n_boot=300, seed=1)
    assert new["tau"].triple() == old["tau"].triple() and new["rho"].triple() == old["rho"].triple()
    with pytest.raises(TypeError, match="both"):
        correlate(x, y, samples=500, n_boot=300)


def _comparable(table):
    import json

    return json.dumps(table, sort_keys=True, default=str)


def test_build_report_samples_max_samples_and_their_old_names(tmp_path):
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
    with pytest.warns(DeprecationWarning) as record:
        old = study.report(folder, out=tmp_path / "old", n_boot=200, max_boot=400)
    messages = [str(w.message) for w in record if w.category is DeprecationWarning]
    assert any("'n_boot' is deprecated; use 'samples'" in m for m in messages)
    assert any("'max_boot' is deprecated; use 'max_samples'" in m for m in messages)
    assert _comparable(new.table) == _comparable(old.table)
    assert {k: v for k, v in new.method.items() if k != "seconds"} == \
        {k: v for k, v in old.method.items() if k != "seconds"}
    with pytest.raises(TypeError, match="both"):
        build_report(folder, out=tmp_path / "both", samples=300, n_boot=200)


def test_study_report_cli_max_samples_and_hidden_max_boot(tmp_path):
    from typer.testing import CliRunner

    from flatminima.cli import app
    from test_report_html import _make_store

    folder = _make_store(tmp_path / "s")
    runner = CliRunner()
    res = runner.invoke(app, ["study", "report", str(folder), "--samples", "100", "--max-samples", "200",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "--max-boot" not in runner.invoke(app, ["study", "report", "--help"]).output  # hidden
    res = runner.invoke(app, ["study", "report", str(folder), "--out", str(tmp_path / "old"), "--samples", "100",
                              "--max-boot", "200", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "--max-boot is deprecated; use --max-samples." in res.output


# ---- sharpness: pac_bayes_mag's draws is now samples --------------------------------------------------------
def test_pac_bayes_mag_samples_and_its_old_name_draws(classifier):
    from flatminima.errors import FlatminimaError
    from flatminima.sharpness import measure, measure_all

    obj, _, _ = classifier
    kw = dict(target=0.05, tol=0.05, iterations=4, sigma_max=20.0, seed=1)
    ctx = _no_deprecation()
    new = measure(obj, "pac_bayes_mag", samples=6, **kw)
    ctx.__exit__(None, None, None)
    assert new.config["samples"] == 6 and "draws" not in new.config
    with pytest.warns(DeprecationWarning, match="'draws' is deprecated; use 'samples'"):
        old = measure(obj, "pac_bayes_mag", draws=6, **kw)
    assert old.value == new.value and old.extra == new.extra and old.config == new.config
    with pytest.raises(FlatminimaError, match="both"):
        measure(obj, "pac_bayes_mag", samples=8, draws=6, **kw)
    with pytest.warns(DeprecationWarning, match="'draws'"):
        got = measure_all(obj, ["pac_bayes_mag"], settings={"pac_bayes_mag.draws": 6,
                                                           **{f"pac_bayes_mag.{k}": v for k, v in kw.items()}})
    assert got["pac_bayes_mag"].value == new.value
    # draws was pac_bayes_mag's own name: no other measure takes it, and a shared "draws" reaches it alone
    with pytest.raises(FlatminimaError, match="does not take"):
        measure(obj, "average_case", draws=4)
    from flatminima.sharpness import settings_per_measure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        per = settings_per_measure(["pac_bayes", "pac_bayes_mag"], {"draws": 6}, seed=2)
    assert per == {"pac_bayes": {"seed": 2}, "pac_bayes_mag": {"draws": 6, "seed": 2}}


def test_study_spec_accepts_pac_bayes_mag_draws_with_a_warning():
    from flatminima.study import validate

    base = {"name": "t", "data": {"name": "mnist1d", "options": {"num_samples": 300}}, "models": {"mlp": {"width": 8}},
            "recipe": {"lr": 0.05, "batch_size": 32, "epochs": 1}, "seeds": 1}
    ctx = _no_deprecation()
    validate(base | {"measures": {"pac_bayes_mag": {"samples": 4}}})
    ctx.__exit__(None, None, None)
    with pytest.warns(DeprecationWarning, match="measures.pac_bayes_mag: the keyword 'draws' is deprecated; use "
                                                "'samples'"):
        spec = validate(base | {"measures": {"pac_bayes_mag": {"draws": 4}}})
    assert spec.measures["pac_bayes_mag"] == {"draws": 4}
    from flatminima.errors import FlatminimaError

    with pytest.raises(FlatminimaError, match="unknown setting"):
        validate(base | {"measures": {"pac_bayes": {"draws": 4}}})


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


def test_resample_counts_samples_and_its_old_name_n_boot():
    from flatminima import statistics

    new = statistics.resample_counts(5, samples=40, rng=np.random.default_rng(0))
    with pytest.warns(DeprecationWarning, match="'n_boot' is deprecated; use 'samples'"):
        old = statistics.resample_counts(5, n_boot=40, rng=np.random.default_rng(0))
    assert np.array_equal(new, old) and new.shape == (40, 5)
    assert np.array_equal(statistics.resample_counts(5, 40, np.random.default_rng(0)), new)
