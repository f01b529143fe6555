"""Landscape slices, directions and interpolation against closed forms and point-by-point references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from flatminima import FlatminimaError, Objective
from flatminima.landscape import (
    barrier,
    chunk_size_for,
    directions,
    interpolate,
    per_point_bytes,
    plot_curves,
    slice_1d,
    slice_2d,
    theta_at,
)

torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------------------- fixtures
def _quadratic(n=4, seed=0):
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(n, n))
    A = Q @ Q.T + n * np.eye(n)
    b = rng.normal(size=n)
    At, bt = torch.tensor(A), torch.tensor(b)

    def f(x):
        return 0.5 * x @ (At @ x) + bt @ x

    x0 = rng.normal(size=n)
    return Objective.from_function(f, torch.tensor(x0), dtype=torch.float64), A, b, x0


def _closed(A, b, x):
    return 0.5 * x @ A @ x + b @ x


def _data(n=90, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return X, y


def _mlp(d=6, classes=3, bn=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(d, 8)] + ([nn.BatchNorm1d(8)] if bn else []) + [nn.Tanh(), nn.Linear(8, classes)]
    return nn.Sequential(*layers).double()


# ---------------------------------------------------------------------------- exactness
def test_slice_2d_equals_closed_form_on_quadratic():
    obj, A, b, x0 = _quadratic()
    dirs = directions(obj, "random", 2, seed=3)
    alpha, beta = np.linspace(-2, 1, 7), np.linspace(-0.5, 1.5, 5)
    surf = slice_2d(obj, dirs, steps=(alpha, beta), progress=False, chunk_size=4)
    d1, d2 = dirs.vectors.numpy()
    assert surf.loss.shape == (7, 5)
    for i, a in enumerate(alpha):
        for j, c in enumerate(beta):
            assert surf.loss[i, j] == pytest.approx(_closed(A, b, x0 + a * d1 + c * d2), rel=1e-12, abs=1e-12)


def test_slice_1d_equals_closed_form_and_origin_value():
    obj, A, b, x0 = _quadratic(seed=1)
    d = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    surf = slice_1d(obj, d, steps=9, span=(-3, 3), progress=False)
    expect = [_closed(A, b, x0 + a * d.numpy()) for a in np.linspace(-3, 3, 9)]
    np.testing.assert_allclose(surf.loss, expect, rtol=1e-12)
    assert surf.loss[4] == pytest.approx(obj.loss())


def test_batched_equals_point_by_point_loop_on_mlp():
    X, y = _data()
    obj = Objective(_mlp(), "cross_entropy", (X, y), batch_size=32)  # 3 batches, the last partial
    dirs = directions(obj, "filter", 2, seed=0)
    surf = slice_2d(obj, dirs, steps=(4, 3), span=(-0.7, 0.7), progress=False, chunk_size=5)
    for i, a in enumerate(surf.axes[0]):
        for j, c in enumerate(surf.axes[1]):
            theta = theta_at(dirs, [a, c])
            assert surf.loss[i, j] == pytest.approx(obj.loss(theta), rel=1e-10)
            model = obj.model_at(theta)
            with torch.no_grad():
                acc = (model(X).argmax(1) == y).double().mean().item()
            assert surf.values["train_accuracy"][i, j] == pytest.approx(acc, abs=1e-12)


def test_chunk_size_does_not_change_values_and_counts_passes():
    X, y = _data()
    obj = Objective(_mlp(), "cross_entropy", (X, y))
    dirs = directions(obj, "layer", 2, seed=1)
    one = slice_2d(obj, dirs, steps=5, progress=False, chunk_size=1, accuracy=False)
    big = slice_2d(obj, dirs, steps=5, progress=False, chunk_size=25, accuracy=False)
    np.testing.assert_allclose(one.loss, big.loss, rtol=1e-12)
    assert one.cost.data_passes == 25 and big.cost.data_passes == 1
    assert big.meta["evaluation"]["chunk_size"] == 25


def test_test_objective_is_evaluated_at_the_same_points():
    X, y = _data()
    net = _mlp()
    train, test = (
        Objective(net, "cross_entropy", (X[:60], y[:60])),
        Objective(net, "cross_entropy", (X[60:], y[60:])),
    )
    dirs = directions(train, "filter", 1, seed=2)
    surf = slice_1d(train, dirs, steps=5, test=test, progress=False)
    for a, v in zip(surf.axes[0], surf.values["test_loss"], strict=True):
        assert v == pytest.approx(test.loss(theta_at(dirs, [a])), rel=1e-10)


# ---------------------------------------------------------------------------- directions
def _conv_bn_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3)
    ).double()


def test_filter_normalised_rows_have_the_norms_of_the_filters():
    X = torch.randn(20, 2, 8, dtype=torch.float64)
    obj = Objective(_conv_bn_net(), "cross_entropy", (X, torch.randint(0, 3, (20,))))
    d = directions(obj, "filter", 2, seed=5)
    theta = obj.unflatten(obj.params)
    for vec in d.vectors:
        for name, part in obj.unflatten(vec).items():
            ref = theta[name]
            if ref.dim() <= 1:  # biases and BatchNorm weight/bias: zero, as in Li et al.'s code
                assert torch.count_nonzero(part) == 0, name
            else:  # one norm per output filter / neuron (first axis)
                got = part.reshape(part.shape[0], -1).norm(dim=1)
                want = ref.reshape(ref.shape[0], -1).norm(dim=1)
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert d.meta["biases_and_bn"].startswith("zero")


def test_include_1d_copies_biases_and_layer_normalisation():
    X = torch.randn(20, 2, 8, dtype=torch.float64)
    obj = Objective(_conv_bn_net(), "cross_entropy", (X, torch.randint(0, 3, (20,))))
    theta = obj.unflatten(obj.params)
    d = directions(obj, "layer", 1, seed=1, include_1d=True)
    for name, part in obj.unflatten(d.vectors[0]).items():
        if part.dim() <= 1:
            torch.testing.assert_close(part, theta[name])
        else:
            assert part.norm().item() == pytest.approx(theta[name].norm().item(), rel=1e-9)


def test_directions_are_reproducible_from_seed():
    obj, *_ = _quadratic(n=6)
    a, b, c = (directions(obj, "random", 2, seed=s).vectors for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pca_directions_orthonormal_and_match_numpy_svd():
    obj, *_ = _quadratic(n=5)
    rng = np.random.default_rng(0)
    snaps = [torch.tensor(rng.normal(size=5)) for _ in range(7)]
    d = directions(obj, "pca", 2, snapshots=snaps)
    V = d.vectors.numpy()
    np.testing.assert_allclose(V @ V.T, np.eye(2), atol=1e-12)
    M = np.stack([s.numpy() for s in snaps]) - snaps[-1].numpy()
    _, s, vt = np.linalg.svd(M)
    np.testing.assert_allclose(d.explained_variance_ratio, s[:2] ** 2 / (s**2).sum(), rtol=1e-10)
    for i in range(2):  # same subspace vector up to sign
        assert abs(V[i] @ vt[i]) == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(d.trajectory, M @ V.T, atol=1e-12)
    torch.testing.assert_close(d.origin, snaps[-1])


def test_hessian_directions_are_top_eigenvectors_of_quadratic():
    obj, A, _, _ = _quadratic(n=6, seed=2)
    d = directions(obj, "hessian", 2, seed=0, tol=1e-10)
    w, U = np.linalg.eigh(A)
    for i in range(2):
        assert abs(d.vectors[i].numpy() @ U[:, -1 - i]) == pytest.approx(1.0, abs=1e-8)
    assert d.meta["eigenvalues"][0] == pytest.approx(w[-1], rel=1e-8)


# ---------------------------------------------------------------------------- interpolation
def test_barrier_definition():
    t = np.array([0.0, 0.25, 0.5, 1.0])
    height, where = barrier(t, np.array([1.0, 2.0, 3.0, 2.0]))
    assert height == pytest.approx(3.0 - 1.5) and where == 0.5
    assert barrier(t, np.array([1.0, 1.25, 1.5, 2.0]))[0] == pytest.approx(0.0)


def test_interpolate_matches_closed_form_and_barrier():
    obj, A, b, x0 = _quadratic(seed=4)
    xa, xb = np.zeros(4), np.ones(4) * 2
    surf = interpolate(obj, torch.tensor(xa), torch.tensor(xb), steps=6, span=(-0.5, 1.5), progress=False)
    t = surf.axes[0]
    assert 0.0 in t and 1.0 in t
    closed = np.array([_closed(A, b, (1 - s) * xa + s * xb) for s in t])
    np.testing.assert_allclose(surf.loss, closed, rtol=1e-12)
    inside = (t >= 0) & (t <= 1)
    rise = closed[inside] - ((1 - t[inside]) * closed[t == 0] + t[inside] * closed[t == 1])
    assert surf.meta["barrier"]["train_loss"]["height"] == pytest.approx(rise.max(), abs=1e-12)
    assert surf.meta["barrier"]["train_loss"]["height"] == pytest.approx(0.0, abs=1e-12)  # convex: no barrier


def test_interpolate_recomputes_batchnorm_statistics_exactly():
    X, y = _data(n=40)
    net_a, net_b = _mlp(bn=True, seed=0), _mlp(bn=True, seed=1)
    obj = Objective(net_a, "cross_entropy", (X, y), batch_size=40)  # one batch: cumulative mean = data mean
    theta_b = Objective(net_b, "cross_entropy", (X, y)).params
    surf = interpolate(obj, obj.params, theta_b, steps=3, recompute_bn=True, progress=False)
    for t, got in zip(surf.axes[0], surf.loss, strict=True):
        model = obj.model_at((1 - t) * obj.params + t * theta_b)
        with torch.no_grad():
            h = model[0](X)
            model[1].running_mean.copy_(h.mean(0))
            model[1].running_var.copy_(h.var(0, unbiased=True))
            want = nn.functional.cross_entropy(model.eval()(X), y).item()
        assert got == pytest.approx(want, rel=1e-10)
    plain = interpolate(obj, obj.params, theta_b, steps=3, progress=False)
    assert not np.allclose(plain.loss[1], surf.loss[1])  # stale statistics give another number midway
    assert surf.meta["recompute_bn"] is True
    # Per point: one pass for the statistics, one for loss and accuracy together.
    assert surf.cost.data_passes == 2 * len(surf.axes[0])


# ---------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    obj, *_ = _quadratic()
    X, y = _data()
    mlp_obj = Objective(_mlp(), "cross_entropy", (X, y))
    with pytest.raises(FlatminimaError, match="no points"):
        slice_1d(obj, torch.ones(4), steps=[], progress=False)
    with pytest.raises(FlatminimaError, match="positive integer"):
        slice_2d(obj, torch.ones(2, 4), steps=0, progress=False)
    with pytest.raises(FlatminimaError, match="shape"):
        slice_1d(obj, torch.ones(5), progress=False)
    with pytest.raises(FlatminimaError, match="shape"):
        slice_2d(mlp_obj, torch.ones(2, mlp_obj.dim - 1), progress=False)
    with pytest.raises(FlatminimaError, match="too small"):
        slice_1d(mlp_obj, None, memory_mb=1e-4, progress=False)
    with pytest.raises(FlatminimaError, match="too small"):
        chunk_size_for(mlp_obj, 1e-4, 10)
    with pytest.raises(FlatminimaError, match="kind"):
        directions(obj, "sideways")
    with pytest.raises(FlatminimaError, match="snapshots"):
        directions(obj, "pca", snapshots=[torch.zeros(3), torch.ones(3)])
    with pytest.raises(FlatminimaError, match="BatchNorm"):
        interpolate(mlp_obj, mlp_obj.params, mlp_obj.params + 1, recompute_bn=True, progress=False)


def test_memory_budget_sets_chunk_size():
    X, y = _data()
    obj = Objective(_mlp(), "cross_entropy", (X, y))
    need = per_point_bytes(obj)
    assert need > 8 * obj.dim  # parameters plus activations
    assert chunk_size_for(obj, 10 * need / 2**20, 100) == 10
    assert chunk_size_for(obj, 1e6, 7) == 7


# ---------------------------------------------------------------------------- output
def test_surface_saves_and_plots(tmp_path):
    X, y = _data()
    obj = Objective(_mlp(), "cross_entropy", (X, y))
    snaps = [obj.params + 0.1 * k * torch.randn(obj.dim, dtype=torch.float64) for k in range(4, 0, -1)] + [
        obj.params
    ]
    pca = directions(obj, "pca", 2, snapshots=snaps)
    surf = slice_2d(obj, pca, steps=(5, 4), progress=False, meta={"model": "mlp", "data": "toy"})
    files = surf.plot(tmp_path / "plane", log=True)
    for ext in ("png", "svg", "csv", "npz", "json"):
        assert (tmp_path / f"plane.{ext}").exists()
    assert (tmp_path / "plane_3d.png").exists() and len(files) == 7
    rows = (tmp_path / "plane.csv").read_text().strip().splitlines()
    assert rows[0].split(",")[:3] == ["alpha", "beta", "train_loss"] and len(rows) == 21
    meta = json.loads((tmp_path / "plane.json").read_text())
    assert meta["directions"]["kind"] == "pca" and len(meta["directions"]["explained_variance_ratio"]) == 2
    saved = np.load(tmp_path / "plane.npz")
    np.testing.assert_allclose(saved["train_loss"], surf.loss)
    np.testing.assert_allclose(saved["trajectory"], pca.trajectory)
    a = slice_1d(obj, None, steps=5, progress=False, label="flat")
    b = slice_1d(obj, None, steps=5, seed=1, progress=False, label="sharp")
    assert all(p.endswith((".png", ".svg")) for p in plot_curves([a, b], tmp_path / "overlay", log=True))
    with pytest.raises(FlatminimaError, match="1-D"):
        plot_curves([surf], tmp_path / "bad")


def test_figures_name_their_model_and_the_path_ends(tmp_path, monkeypatch):
    """A contour's title names its model (the Surface label) and any note; a PCA path marks "start" and
    "end"; an overlay's legend names each curve's model and its title holds no single model's label."""
    from flatminima.landscape import surface as surface_module

    figs = []
    monkeypatch.setattr(surface_module, "save_figure", lambda fig, stem: figs.append(fig) or [str(stem)])
    X, y = _data()
    obj = Objective(_mlp(), "cross_entropy", (X, y))
    snaps = [obj.params + 0.1 * k * torch.randn(obj.dim, dtype=torch.float64) for k in range(4, 0, -1)] + [
        obj.params
    ]
    note = "NOT matched at train loss"
    pca = directions(obj, "pca", 2, snapshots=snaps)
    surf = slice_2d(obj, pca, steps=(5, 4), progress=False, label="net A: train loss 0.5", meta={"note": note})
    surf.plot(tmp_path / "plane", kind="contour", save_data=False)
    ax = figs[-1].axes[0]
    assert "net A: train loss 0.5" in ax.get_title() and note in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("start") for t in legend) and any(t.startswith("end") for t in legend)
    assert not any("θ₀" in t for t in legend)  # the path's last point is its end, not an unexplained θ₀
    a = slice_1d(obj, None, steps=5, progress=False, label="flat net")
    b = slice_1d(obj, None, steps=5, seed=1, progress=False, label="sharp net")
    plot_curves([a, b], tmp_path / "overlay")
    ax = figs[-1].axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("flat net") for t in legend) and any(t.startswith("sharp net") for t in legend)
    assert "flat net" not in ax.get_title()


def test_workflows_take_a_device_and_pass_it_on(tmp_path, monkeypatch):
    """single_figure, train_pair and connect_models hand ``device`` to fit and to every Objective they build."""
    from flatminima.workflows import connect as connect_wf
    from flatminima.workflows import landscape_figures as figures
    from flatminima.workflows.common import get_data

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x_train=x[:48], y_train=y[:48], x_test=x[48:], y_test=y[48:])
    dataset = get_data(str(tmp_path / "d.npz"))
    fits, objs = [], []
    for module in (figures, connect_wf):
        real_fit, real_obj = module.fit, module.Objective
        monkeypatch.setattr(module, "fit", lambda *a, _f=real_fit, **kw: fits.append(kw.get("device")) or _f(*a, **kw))
        monkeypatch.setattr(module, "Objective",
                            lambda *a, _o=real_obj, **kw: objs.append(kw.get("device")) or _o(*a, **kw))
    kw = dict(model_kw={"width": 4}, epochs=1, steps=3, progress=False, device="cpu")
    summary = figures.single_figure(dataset, "interpolate", out=tmp_path / "i", test=False, **kw)
    assert "interpolation" in summary["files"]
    runs = figures.train_pair("mlp", dataset, small_batch=16, large_batch=48, epochs=1, progress=False,
                              device="cpu", width=4)
    assert all(next(r.model.parameters()).device.type == "cpu" for r in runs.values())
    res = connect_wf.connect_models(dataset, tmp_path / "c", model_kw={"width": 4}, epochs=1, curve_epochs=1,
                                    steps=3, plane_steps=0, progress=False, device="cpu")
    assert res["result"] is not None
    assert fits == ["cpu"] * 6, fits  # 2 (interpolate) + 2 (pair) + 2 (connect)
    assert objs and all(d == "cpu" for d in objs), objs
