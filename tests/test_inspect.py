"""`flatminima.inspect`: every number on the page is the library call's, the warnings follow their rules (a
saddle is flagged, a minimum is not), and bad input is refused before any work."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import flatminima
from cases import tiny_mlp
from flatminima.cli import app
from flatminima.curvature import eigenvalues, trace
from flatminima.errors import FlatminimaError
from flatminima.inspection import objective, plan_budget
from flatminima.inspection.core import TOL
from flatminima.landscape import interpolate
from flatminima.sharpness import measure


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :1]) + 0.5 * x[:, 1:2] + 0.3 * torch.randn(48, 1, generator=g, dtype=torch.float64)
    return x, y


def _trained(seed: int) -> nn.Module:
    """A tanh net fitted by L-BFGS in float64 until the gradient vanishes: a local minimum."""
    net = tiny_mlp(3, 4, 1, seed=seed)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.3)  # a small start keeps the tanh units out of saturation
    x, y = _data()
    opt = torch.optim.LBFGS(net.parameters(), lr=1, max_iter=400, tolerance_grad=1e-10, tolerance_change=1e-15,
                            history_size=30, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    return net.eval()


@pytest.fixture(scope="module")
def minimum(tmp_path_factory):
    net, other = _trained(0), _trained(1)
    out = tmp_path_factory.mktemp("inspect")
    ins = flatminima.inspect(net, _data(), "mse", others=[other], names=["seed 1"], lr=1e-3, optimizer="sgd",
                             budget="fast", seed=3, out=out, progress=False)
    return ins, net, other


def test_every_number_equals_its_library_call(minimum):
    ins, net, other = minimum
    s = ins.plan.settings
    obj = objective(net, _data(), "mse")
    top = eigenvalues(obj, s["k"], "largest", tol=TOL, max_iter=s["top_iter"], seed=3)
    assert torch.equal(top.values, ins.top.values) and torch.equal(top.error_bounds, ins.top.error_bounds)
    tr = trace(obj, "hutch++", s["trace"], seed=3)
    assert (tr.value, tr.stderr) == (ins.trace.value, ins.trace.stderr)
    fro = measure(obj, "frobenius", seed=3)
    assert (fro.value, fro.stderr) == (ins.sharpness["frobenius"].value, ins.sharpness["frobenius"].stderr)
    surf = interpolate(obj, obj.params, objective(other, _data(), "mse").params, steps=s["interpolation"],
                       progress=False)
    height = surf.meta["barrier"]["train_loss"]["height"]
    assert ins.compare["barrier"][0][1] == height == ins.compare["barrier"][1][0]
    # the page, the JSON and the CSVs show those same numbers
    page = ins.html.read_text(encoding="utf-8")
    for v in (*top.values.tolist(), tr.value, fro.value):
        assert f"{v:.6g}" in page, v
    saved = json.loads((ins.folder / "inspection.json").read_text())
    assert saved["top"]["values"] == top.values.tolist() and saved["trace"]["value"] == tr.value
    assert saved["sharpness"]["frobenius"]["value"] == fro.value
    with (ins.folder / "barrier_matrix.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[0]["seed 1"]) == pytest.approx(height, rel=1e-12)
    with (ins.folder / "curvature.csv").open() as fh:
        assert float(next(csv.DictReader(fh))["value"]) == pytest.approx(float(top.values[0]), rel=1e-12)


def test_page_has_every_part_with_costs_and_no_saddle_at_a_minimum(minimum):
    ins, *_ = minimum
    assert not ins.saddle and not any(w["kind"] == "saddle" for w in ins.warnings)
    assert float(ins.bottom.values[0]) > -0.01 * ins.lambda_max  # the rule's own margin, not a flag
    assert ins.stability["threshold"] == pytest.approx(2000.0) and ins.stability["kind"] == "gd"
    assert ins.lambda_max < 2000.0 and not any(w["kind"] == "stability" for w in ins.warnings)
    page = ins.html.read_text(encoding="utf-8")
    for part in ("Budget", "Curvature", "Per-layer curvature", "Sharpness measures", "Landscape slices",
                 "Stability threshold", "Compared solutions", "Barrier matrix", "eigenspace overlap", "Side by side"):
        assert part in page, part
    assert "distance_from_init" in page and "needs the initial weights" in page  # left out, and said so
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count("data:image/png;base64,") >= 5
    assert ins.plan.cap >= ins.cost.hvps - 2  # the two timing products come on top of the plan
    assert ins.compare["overlap"][0][0] == pytest.approx(1.0) and 0 <= ins.compare["overlap"][0][1] <= 1 + 1e-9


def test_a_saddle_is_flagged_with_its_number_and_rule(tmp_path):
    # A 2-layer linear net at zero weights: H = [[0, C], [Cᵀ, 0]] (C = E[(p − y)xᵀ] couples the two layers),
    # so its eigenvalues are ±σ(C): a strict saddle with λmin = −λmax.
    torch.manual_seed(0)
    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    for p in net.parameters():
        nn.init.zeros_(p)
    ins = flatminima.inspect(net, (x, y), "cross_entropy", lr=0.01, optimizer="adam", budget="fast",
                             out=tmp_path, progress=False)
    assert ins.saddle
    w = next(w for w in ins.warnings if w["kind"] == "saddle")
    assert w["numbers"]["lambda_min"] == pytest.approx(-ins.lambda_max, rel=1e-4)
    assert "λmin + r < 0" in w["rule"] and f"{w['numbers']['lambda_min']:.4g}" in w["text"]
    page = ins.html.read_text(encoding="utf-8")
    assert "Negative curvature" in page and "data-kind='saddle'" in page
    # zero weights: every filter is zero, and filter normalisation gives zero filters unit norm (with a warning)
    # instead of a zero direction, so the plane is drawn
    assert "slice_2d" not in ins.skipped
    assert "stability" in ins.skipped and "Adam state" in ins.skipped["stability"]


# ---- bad input: refused before any work ----------------------------------------------------------------------
def _net() -> nn.Module:
    return tiny_mlp(3, 4, 1)


def test_bad_inputs_are_refused(tmp_path):
    data = _data()
    with pytest.raises(FlatminimaError, match=r"parameter '0.weight' has shape \(5, 3\)"):
        wide = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
        flatminima.inspect(_net(), data, "mse", others=[wide], out=tmp_path / "a", progress=False)
    with pytest.raises(FlatminimaError, match="parameter '0.bias' is missing"):
        flatminima.inspect(_net(), data, "mse", others=[{"0.weight": torch.zeros(4, 3)}], progress=False)
    broken = _net()
    with torch.no_grad():
        broken[0].weight[0, 0] = float("nan")
    with pytest.raises(FlatminimaError, match="not finite"):
        flatminima.inspect(broken, data, "mse", out=tmp_path / "b", progress=False)
    with pytest.raises(FlatminimaError, match="too small"):
        flatminima.inspect(_net(), data, "mse", budget=5, out=tmp_path / "c", progress=False)
    with pytest.raises(FlatminimaError, match="budget must be one of"):
        flatminima.inspect(_net(), data, "mse", budget="huge", progress=False)
    with pytest.raises(FlatminimaError, match="no labels"):
        flatminima.inspect(_net(), data[0], "mse", progress=False)
    with pytest.raises(FlatminimaError, match="without an optimiser"):
        flatminima.inspect(_net(), data, "mse", lr=0.1, progress=False)
    with pytest.raises(FlatminimaError, match="without a learning rate"):
        flatminima.inspect(_net(), data, "mse", optimizer="momentum", progress=False)
    assert not any((tmp_path / d).exists() for d in "abc")


def test_a_small_budget_skips_parts_and_says_which():
    obj = objective(_net(), _data(), "mse")
    plan = plan_budget(obj, 150, blocks=2, others=1, measures=["lambda_max", "trace", "param_norm"])
    assert plan.cap <= 150 and "eigenvalues" in plan.caps
    assert "compare" in plan.skipped and "spent by the parts before it" in plan.skipped["compare"]
    fast = plan_budget(obj, "fast", blocks=2, measures=["lambda_max", "param_norm"])
    assert fast.cap < plan_budget(obj, "standard", blocks=2, measures=["lambda_max", "param_norm"]).cap


def test_cli_refuses_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "nolabels.npz", x_train=np.zeros((10, 3), dtype=np.float32))
    for args, text in ((["--lr", "0.1"], "without an optimiser"), (["--optimizer", "sgd"], "without a learning rate"),
                       (["--budget", "tiny"], "budget must be one of"),
                       (["--data", "nolabels.npz"], "y_train"),
                       (["--compare", "missing.pt"], "missing.pt")):
        res = CliRunner().invoke(app, ["inspect", *args, "--no-progress"])
        assert isinstance(res.exception, FlatminimaError) and text in str(res.exception), (args, res.exception)
    assert not (tmp_path / "flatminima-out").exists()


def test_cli_compare_of_another_architecture_names_the_parameter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=(x[:, 0] > 0).astype(np.int64))
    (tmp_path / "nets.py").write_text("import torch\n\ndef make(width=4):\n    return torch.nn.Sequential("
                                      "torch.nn.Linear(3, width), torch.nn.Tanh(), torch.nn.Linear(width, 2))\n")
    torch.save(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).state_dict(), tmp_path / "a.pt")
    torch.save(nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).state_dict(), tmp_path / "b.pt")
    res = CliRunner().invoke(app, ["inspect", "--model", "nets:make", "--data", "d.npz", "--checkpoint", "a.pt",
                                   "--compare", "b.pt", "--no-progress"])
    assert isinstance(res.exception, FlatminimaError) and "0.weight" in str(res.exception)
    assert not (tmp_path / "flatminima-out").exists()
    res = CliRunner().invoke(app, ["inspect", "--model", "nets:make", "--data", "d.npz", "--checkpoint", "a.pt",
                                   "--compare", "a.pt", "--budget", "fast", "--out", "o", "--json"])
    assert res.exit_code == 0, (res.output, res.exception)
    out = json.loads(res.output)
    assert out["compare"]["barrier"][0][1] == pytest.approx(0.0, abs=1e-6)  # a model and itself
    assert (tmp_path / "o" / "page.html").is_file() and (tmp_path / "o" / "inspection.json").is_file()
