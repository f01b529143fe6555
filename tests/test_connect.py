"""Mode connectivity on a case with a known answer: a net and its hidden-unit permutation (same function).

The straight line between the two copies has a loss barrier; the trained curve between them (almost) none.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cases import tiny_mlp
from flatminima import Objective
from flatminima.errors import FlatminimaError
from flatminima.landscape import connect, curve_point, curve_weights, interpolate


def _blobs(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    k = torch.randint(0, 4, (n,), generator=g)
    return (centers[k] + 0.35 * torch.randn(n, 2, generator=g)).double(), (k >= 2).long()


@pytest.fixture(scope="module")
def permuted_pair():
    """A trained 2-32-2 tanh net A and B = A with its hidden units permuted (the same function)."""
    x, y = _blobs()
    net = tiny_mlp(2, 32, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(400):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    other = copy.deepcopy(net)
    with torch.no_grad():
        other[0].weight.copy_(net[0].weight[perm])
        other[0].bias.copy_(net[0].bias[perm])
        other[2].weight.copy_(net[2].weight[:, perm])
    obj = Objective(net, "cross_entropy", (x, y))
    return obj, obj.params, obj.replace(model=other).params


def test_curve_formulas():
    a, b, c = torch.zeros(3), torch.ones(3), torch.tensor([0.5, 2.0, -1.0])
    for curve in ("bezier", "polychain"):
        for t in (0.0, 0.2, 0.5, 0.7, 1.0):
            assert sum(float(w) for w in curve_weights(t, curve)) == pytest.approx(1.0)
        torch.testing.assert_close(curve_point(a, c, b, 0.0, curve), a)
        torch.testing.assert_close(curve_point(a, c, b, 1.0, curve), b)
        # the control point at the midpoint IS the straight line
        torch.testing.assert_close(curve_point(a, (a + b) / 2, b, 0.3, curve), 0.7 * a + 0.3 * b)
    torch.testing.assert_close(curve_point(a, c, b, 0.5, "polychain"), c)
    torch.testing.assert_close(curve_point(a, c, b, 0.5, "bezier"), 0.25 * a + 0.5 * c + 0.25 * b)


def test_permuted_copies_line_has_barrier_curve_has_none(permuted_pair, tmp_path):
    obj, a, b = permuted_pair
    assert obj.loss(a) == pytest.approx(obj.loss(b), rel=1e-12)  # the same function
    res = connect(obj, a, b, "bezier", epochs=40, batch_size=50, lr=0.05, steps=21, plane_steps=9, progress=False,
                  seed=0)
    line, curve = res.line_barrier["train_loss"]["height"], res.barrier["train_loss"]["height"]
    assert line > 0.3  # averaging unmatched hidden units destroys the function (loss at A: ~0.007)
    assert curve < 0.02 and curve < 0.04 * line
    assert res.barrier["train_error"]["height"] <= 0.02
    # the straight line reported is interpolate's own
    ref = interpolate(obj, a, b, steps=21, progress=False)
    np.testing.assert_allclose(res.line.values["train_loss"], ref.values["train_loss"])
    # barrier_max: above the higher end
    assert res.barrier["train_loss"]["max_height"] == pytest.approx(
        res.values["train_loss"].max() - max(res.values["train_loss"][0], res.values["train_loss"][-1]))
    assert res.values["train_loss"][0] == pytest.approx(obj.loss(a), rel=1e-10)
    assert res.cost.grads > 0 and res.cost.data_passes > 40
    files = res.plot(tmp_path / "conn")
    assert {p.rsplit("/", 1)[1] for p in files} >= {"conn_paths.png", "conn_paths.svg", "conn_paths.csv",
                                                     "conn_plane.png", "conn_plane.svg", "conn_plane.csv",
                                                     "conn.json"}
    saved = json.loads((tmp_path / "conn.json").read_text())
    assert saved["barrier"]["train_loss"]["height"] == pytest.approx(curve)
    assert np.asarray(saved["plane"]["loss"]).shape == (9, 9)


def test_polychain_and_seed_reproducibility(permuted_pair):
    obj, a, b = permuted_pair
    r1 = connect(obj, a, b, "polychain", epochs=40, batch_size=50, lr=0.05, steps=11, plane_steps=0, progress=False)
    assert r1.barrier["train_loss"]["height"] < 0.1 * r1.line_barrier["train_loss"]["height"]
    r2 = connect(obj, a, b, "polychain", epochs=40, batch_size=50, lr=0.05, steps=11, plane_steps=0, progress=False)
    torch.testing.assert_close(r1.theta_c, r2.theta_c)
    r3 = connect(obj, a, b, "polychain", epochs=2, steps=11, plane_steps=0, progress=False, seed=5)
    assert not torch.equal(r1.theta_c, r3.theta_c)


def test_batchnorm_is_recomputed_along_the_curve():
    x, y = _blobs(120)
    torch.manual_seed(0)
    nets = []
    for s in (0, 1):
        net = tiny_mlp(2, 8, 2, act=nn.ReLU, norm=nn.BatchNorm1d, seed=s)
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(50):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        nets.append(net.eval())
    obj = Objective(nets[0], "cross_entropy", (x, y), batch_size=40)
    b = obj.replace(model=nets[1]).params
    res = connect(obj, obj.params, b, epochs=3, batch_size=40, steps=5, plane_steps=3, progress=False)
    assert res.meta["recompute_bn"] is True
    ref = interpolate(obj, obj.params, b, steps=5, recompute_bn=True, progress=False)
    np.testing.assert_allclose(res.line.values["train_loss"], ref.values["train_loss"])
    # at t = 0 the curve is θ_a with recomputed statistics, the same point as the line's start
    assert res.values["train_loss"][0] == pytest.approx(ref.values["train_loss"][0], rel=1e-10)
    assert np.isfinite(res.plane["loss"]).all()


def test_errors(permuted_pair):
    obj, a, b = permuted_pair
    with pytest.raises(FlatminimaError, match="same point"):
        connect(obj, a, a, progress=False)
    with pytest.raises(FlatminimaError, match="curve"):
        connect(obj, a, b, "spline", progress=False)
    with pytest.raises(FlatminimaError, match="theta_b"):
        connect(obj, a, b[:3], progress=False)
    with pytest.raises(FlatminimaError, match="BatchNorm"):
        connect(obj, a, b, recompute_bn=True, progress=False)
    fobj = Objective(nn.Linear(2, 2).double(), loss_fn=lambda m, batch: m(batch[0]).pow(2).mean(),
                     data=[(torch.ones(3, 2, dtype=torch.float64), torch.zeros(3))])
    with pytest.raises(FlatminimaError, match="loss="):
        connect(fobj, fobj.params, fobj.params + 1, progress=False)


def test_cli_connect_mode(tmp_path):
    from flatminima.cli import app

    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    out = tmp_path / "figs"
    args = ["landscape", "--mode", "connect", "--data", str(data), "--model-arg", "width=6", "--epochs", "2",
            "--curve-epochs", "2", "--steps", "7", "--plane-steps", "4", "--out", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert "curve train_loss" in summary["barrier"] and "line train_loss" in summary["barrier"]
    assert summary["sources"]["b"] == "trained, seed 1"
    assert (out / "connect_bezier_plane.png").exists() and (out / "connect_bezier_paths.svg").exists()
