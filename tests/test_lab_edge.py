"""The edge-sets-the-final-sharpness experiment: its three-valued rule and a short run end to end.

The module is imported inside the tests (not at collection) and its registration is undone afterwards, so
the claims registry the other tests read is the one ``flatminima.lab`` builds."""

from __future__ import annotations

import importlib
import json
import math

import pytest

from flatminima import statistics as st
from flatminima.lab import registry


@pytest.fixture
def edge():
    before = dict(registry._REGISTRY)
    mod = importlib.import_module("flatminima.lab.edge")
    registry.experiment(mod.SPEC)(mod.edge_sharpness)  # again: an earlier test may have undone it
    yield mod
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def _iv(lo, hi):
    return st.Interval((lo + hi) / 2, lo, hi, 0.95)


def test_rule_has_three_outcomes(edge):
    assert edge.verdict(_iv(0.95, 1.1)) == "supported"
    assert edge.verdict(_iv(-0.2, 0.4)) == "contradicted"  # wholly below 0.5, 0 included
    assert edge.verdict(_iv(-0.9, -0.6)) == "contradicted"
    assert edge.verdict(_iv(0.6, 1.1)) == "inconclusive"  # not inside the band, not below it
    assert edge.verdict(_iv(0.9, 1.4)) == "inconclusive"
    assert edge.verdict(_iv(1.4, 1.6)) == "inconclusive"  # too steep: not the low side
    assert edge.verdict(_iv(math.nan, math.nan)) == "inconclusive"


def test_short_run_tracks_the_edge(edge, tmp_path, monkeypatch):
    monkeypatch.setattr(edge, "LRS", (0.3, 0.45, 0.6))
    monkeypatch.setattr(edge, "STEPS", {True: 300, False: 300})
    ctx = registry.Context(tmp_path, True, [0, 1])
    out = edge.edge_sharpness(ctx)
    (sub,) = out.subtests
    assert sub.verdict == "supported", out.summary
    assert 0.8 < sub.interval.estimate < 1.2
    assert 0.9 < out.numbers["final_ratio_min"] <= out.numbers["final_ratio_max"] < 1.15
    assert any(f.endswith(".png") for f in out.files) and (tmp_path / "runs.csv").exists()
    spec = registry.get("edge_sharpness").spec
    assert spec.claim == "C18" and spec.kind == "test" and spec.n_full >= spec.n_quick
    json.dumps(out.numbers)


def test_a_diverging_run_is_reported_not_fatal(edge):
    r = edge._train(0, 5.0, 40)  # far above every threshold: the loss blows up within a few steps
    assert r["diverged"] and math.isnan(r["final"])
    calm = edge._train(0, 0.2, 20)
    assert not calm["diverged"] and math.isfinite(calm["final"])
