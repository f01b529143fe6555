"""Training dynamics: thresholds exact on a quadratic, the edge of stability on a tanh MLP, warm Lanczos."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cases import tiny_mlp
from flatminima import Objective
from flatminima.curvature import eigenvalues, lanczos
from flatminima.dynamics import SharpnessMonitor, plot_dynamics, preconditioner, stability_threshold, summarize
from flatminima.errors import FlatminimaError

A = torch.diag(torch.tensor([3.0, 1.0, 0.2], dtype=torch.float64))


def _quadratic_run(make_opt, steps=400):
    """Final |θ| after ``steps`` of ``make_opt([θ])`` on f = ½θᵀAθ, and the optimiser."""
    theta = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = make_opt([theta])
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * theta @ A @ theta).backward()
        opt.step()
    return float(theta.detach().norm()), opt


@pytest.mark.parametrize("kind", ["gd", "heavy_ball", "nesterov", "dampened"])
def test_sgd_thresholds_are_exact_on_a_quadratic(kind):
    obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.ones(3, dtype=torch.float64))
    lam = float(eigenvalues(obj, 1, tol=1e-10).values[0])
    assert lam == pytest.approx(3.0, rel=1e-10)
    kw = {"gd": {}, "heavy_ball": {"momentum": 0.9}, "nesterov": {"momentum": 0.5, "nesterov": True},
          "dampened": {"momentum": 0.8, "dampening": 0.5}}[kind]
    th = stability_threshold(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0, **kw))
    # η at which λ = 3 sits exactly on the threshold: threshold(η) = c/η, so η* = c/λ.
    eta_star = th.value / lam
    below, _ = _quadratic_run(lambda p: torch.optim.SGD(p, lr=0.99 * eta_star, **kw), 3000)
    above, opt = _quadratic_run(lambda p: torch.optim.SGD(p, lr=1.01 * eta_star, **kw), 3000)
    assert below < 1e-3 and above > 1e3
    assert stability_threshold(opt).value == pytest.approx(th.value / (1.01 * eta_star), rel=1e-12)
    assert stability_threshold(opt).kind == ("heavy_ball" if kind == "dampened" else kind)


def test_adam_threshold_is_exact_with_its_preconditioner_frozen():
    # Adam's update is θ ← θ − η P⁻¹ m (P from `preconditioner`); with P frozen it is heavy ball with an EMA
    # on P⁻¹A, which is stable exactly below λmax(P⁻¹A) = (2+2β₁)/((1−β₁)η).
    theta = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = torch.optim.Adam([theta], lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    for _ in range(5):
        before = theta.detach().clone()
        opt.zero_grad()
        (0.5 * theta @ A @ theta).backward()
        opt.step()
        p = preconditioner(opt, [theta])
        m = opt.state[theta]["exp_avg"]
        # the step torch took is exactly η P⁻¹ m: P is the preconditioner of the latest update
        assert torch.allclose(before - theta.detach(), 0.01 * m / p, rtol=1e-12, atol=0)
    th = stability_threshold(opt)
    assert th.preconditioned and th.value == pytest.approx(38 / 0.01)
    sharp = float(torch.linalg.eigvalsh(torch.diag(p.rsqrt()) @ A @ torch.diag(p.rsqrt()))[-1])
    b1 = 0.9
    for factor, diverges in ((0.99, False), (1.01, True)):
        eta = factor * (2 + 2 * b1) / ((1 - b1) * sharp)
        x, mom = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        for _ in range(5000):
            mom = b1 * mom + (1 - b1) * (A @ x)
            x = x - eta * mom / p
        assert (not float(x.norm()) < 1e3) == diverges  # NaN (overflow) counts as diverged


def test_v0_warm_start_saves_products_and_checks_input():
    obj = Objective.from_function(lambda x: 0.5 * (x**2 * torch.linspace(0.1, 5, 50, dtype=torch.float64)).sum(),
                                  torch.ones(50, dtype=torch.float64))
    cold = eigenvalues(obj, 1, tol=1e-6, return_vectors=True)
    near = cold.vectors[:, 0] + 1e-7 * torch.randn(50, generator=torch.Generator().manual_seed(1),
                                                   dtype=torch.float64)
    warm = eigenvalues(obj, 1, tol=1e-6, v0=near)
    assert float(warm.values[0]) == pytest.approx(5.0, rel=1e-8) and bool(warm.converged[0])
    assert warm.cost.hvps < cold.cost.hvps / 2
    # a short warm run measures its true residual from the products it kept: no product beyond its steps,
    # and the same residual a fresh product gives
    assert warm.iterations <= lanczos.WARM_KEPT and warm.cost.hvps == warm.iterations
    full = eigenvalues(obj, 1, tol=1e-6, v0=near, return_vectors=True)
    y = full.vectors[:, 0] / full.vectors[:, 0].norm()
    fresh = float((obj.hvp(y) - full.values[0].item() * y).norm())
    assert float(full.residuals[0]) == pytest.approx(max(fresh, full.floor), rel=1e-6, abs=1e-13)
    with pytest.raises(FlatminimaError, match="v0"):
        eigenvalues(obj, 1, v0=torch.zeros(50))
    with pytest.raises(FlatminimaError, match="v0"):
        eigenvalues(obj, 1, v0=torch.ones(7))


def _mlp_data(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g)
    y = torch.sin(X @ torch.randn(6, 2, generator=g))
    model = tiny_mlp(6, 32, 32, 2, seed=seed, dtype=None)
    return model, X, y


def _train(model, X, y, opt, steps, monitor, sched=None):
    monitor.step(0, optimizer=opt)
    for s in range(1, steps + 1):
        opt.zero_grad()
        nn.functional.mse_loss(model(X), y).backward()
        opt.step()
        monitor.step(s)
        if sched is not None:
            sched.step()
    return monitor


@pytest.mark.parametrize("lr", [0.3, 0.6])
def test_gradient_descent_reaches_and_stays_at_2_over_eta(lr):
    model, X, y = _mlp_data()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = _train(model, X, y, opt, 600, SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, every=10))
    s = summarize(mon.history)
    assert s["initial_ratio"] < 0.8 and s["onset"] is not None
    steps, ratio = mon.series("edge_ratio")
    late = [r for st, r in zip(steps, ratio, strict=True) if st >= 300]
    assert all(0.9 <= r <= 1.1 for r in late), late
    _, th = mon.series("threshold")
    assert th[-1] == pytest.approx(2 / lr)


def test_heavy_ball_settles_at_its_threshold():
    model, X, y = _mlp_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.4, momentum=0.5)
    mon = _train(model, X, y, opt, 600, SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, every=10))
    assert mon.threshold.value == pytest.approx(3.0 / 0.4)  # (2 + 2β)/η
    steps, ratio = mon.series("edge_ratio")
    late = [r for st, r in zip(steps, ratio, strict=True) if st >= 300]
    assert ratio[0] < 0.8 and all(0.85 <= r <= 1.15 for r in late), late


def test_adam_preconditioned_sharpness_settles_near_its_threshold(tmp_path):
    model, X, y = _mlp_data()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    mon = SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, every=10, store=tmp_path / "t.sqlite")
    _train(model, X, y, opt, 600, mon)
    steps, ratio = mon.series("edge_ratio")
    _, pre = mon.series("preconditioned_sharpness")
    assert len(pre) == len(mon.series("lambda_max")[0]) - 1  # none at step 0: no second moments yet
    late = [r for st, r in zip(steps, ratio, strict=True) if st >= 300]
    assert ratio[0] < 0.2 and all(0.8 <= r <= 1.2 for r in late), ratio
    assert 0.9 <= sorted(late)[len(late) // 2] <= 1.1
    files = plot_dynamics(mon, tmp_path / "fig")
    assert [f[-3:] for f in files] == ["png", "svg", "csv"]
    assert all(math.isfinite(r["value"]) for r in mon.history)


def test_schedule_moves_the_threshold_and_batch_sharpness():
    model, X, y = _mlp_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    mon = SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, every=5, batch_sharpness=16,
                           batch_samples=4)
    _train(model, X, y, opt, 10, mon, sched)
    _, th = mon.series("threshold")
    assert th == pytest.approx([2 / 0.4, 2 / 0.4, 2 / 0.2])  # the η of the latest update
    _, bs = mon.series("batch_sharpness")
    assert len(bs) == 3 and all(b > 0 for b in bs)
    # the batch sharpness of one batch is gᵀHg/‖g‖², by hand
    one = SharpnessMonitor(model, (X[:16], y[:16]), loss="mse", batch_sharpness=16, batch_samples=1)
    row = {r["measure"]: r["value"] for r in one.record(0)}
    obj = Objective(model, "mse", (X[:16], y[:16]))
    g = obj.grad()
    assert row["batch_sharpness"] == pytest.approx(float(g @ obj.hvp(g) / (g @ g)), rel=1e-6)


def test_batch_sharpness_is_the_mean_over_batches_of_each_batch_hessian_along_its_gradient():
    # E_B[g_Bᵀ H_B g_B/‖g_B‖²] with H_B the Hessian of the batch's own (mean) loss, checked against dense Hessians:
    # a mean of per-batch ratios, not a ratio of means and not the full-data Hessian along g_B.
    model = tiny_mlp(3, 4, 2, seed=3)
    X, y = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64)
    batches = [(X[:5], y[:5]), (X[5:], y[5:])]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def loss_at(theta, xb, yb):
        ps, i = [], 0
        for sh in shapes:
            ps.append(theta[i:i + sh.numel()].reshape(sh))
            i += sh.numel()
        h = torch.tanh(xb @ ps[0].T + ps[1])
        return nn.functional.mse_loss(h @ ps[2].T + ps[3], yb)

    ratios = []
    for xb, yb in batches:
        g = torch.autograd.functional.jacobian(lambda t, xb=xb, yb=yb: loss_at(t, xb, yb), flat)
        H = torch.autograd.functional.hessian(lambda t, xb=xb, yb=yb: loss_at(t, xb, yb), flat)
        ratios.append(float(g @ H @ g / (g @ g)))
    mon = SharpnessMonitor(model, batches, loss="mse", batch_sharpness=5, batch_samples=64, seed=1)
    _, _, cost = mon._batch_sharpness(0)
    gen = torch.Generator().manual_seed(1 * 1_000_003)
    order = torch.randint(2, (64,), generator=gen).tolist()
    row = {r["measure"]: r["value"] for r in mon.record(0)}
    assert row["batch_sharpness"] == pytest.approx(sum(ratios[i] for i in order) / 64, rel=1e-8)
    assert cost.hvps == 64


def test_warm_start_costs_half_and_agrees_with_cold():
    runs = {}
    for warm in (True, False):
        model, X, y = _mlp_data()
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
        runs[warm] = _train(model, X, y, opt, 200, SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt,
                                                                   every=2, warm=warm))
    hv = {w: [r["hvps"] for r in m.history if r["measure"] == "lambda_max"][1:] for w, m in runs.items()}
    assert sum(hv[True]) <= 0.55 * sum(hv[False])  # measured 0.46 here (every=2, a cold refresh every 10)
    _, a = runs[True].series("lambda_max")
    _, b = runs[False].series("lambda_max")
    errors = [abs(x - z) / z for x, z in zip(a, b, strict=True)]
    # warm runs follow their own eigenvector: right to 1% except for a few records after the top two cross
    assert sum(e < 0.01 for e in errors) >= 0.85 * len(errors) and max(errors) < 0.15


def test_extrapolated_warm_start_stays_certified_and_cheap():
    runs = {}
    for extra in (True, False):
        model, X, y = _mlp_data()
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
        mon = SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, every=2, extrapolate=extra, warm=extra)
        runs[extra] = _train(model, X, y, opt, 120, mon)
    rows = [r for r in runs[True].history if r["measure"] == "lambda_max"]
    assert all(r["converged"] for r in rows)  # only the start changes: every record is certified
    hv = {w: sum(r["hvps"] for r in m.history if r["measure"] == "lambda_max") for w, m in runs.items()}
    assert hv[True] <= 0.55 * hv[False]  # measured 0.51 here (120 steps, cold refresh every 10 records)
    _, a = runs[True].series("lambda_max")
    _, b = runs[False].series("lambda_max")
    assert sum(abs(x - z) / z < 0.01 for x, z in zip(a, b, strict=True)) >= 0.85 * len(a)


def test_bad_input():
    model, X, y = _mlp_data()
    with pytest.raises(FlatminimaError, match="no stability threshold"):
        SharpnessMonitor(model, (X, y), loss="mse", optimizer=torch.optim.LBFGS(model.parameters()))
    with pytest.raises(FlatminimaError, match="batch_sharpness"):
        SharpnessMonitor(model, (X, y), loss="mse", batch_sharpness=0)
    with pytest.raises(FlatminimaError, match="no tracked rows"):
        plot_dynamics([], "/tmp/never")


def test_a_schedule_at_lr_0_records_no_threshold_and_rows_reach_the_logger():
    # A schedule ending at 0 (the HF Trainer's default linear decay) takes no step: no threshold, no error.
    model, X, y = _mlp_data(n=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    monitor = SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, run="z",
                               logger=lambda metrics, step: seen.append((step, sorted(metrics))))
    assert {r["measure"] for r in monitor.step(0)} >= {"threshold", "edge_ratio"}
    opt.param_groups[0]["lr"] = 0.0
    rows = {r["measure"]: r["value"] for r in monitor.step(1)}
    assert set(rows) == {"loss", "lambda_max", "lr"} and rows["lr"] == 0.0
    assert seen[1] == (1, ["flatminima/z/lambda_max", "flatminima/z/loss", "flatminima/z/lr"])


def test_preconditioned_sharpness_matches_a_dense_reference():
    from torch.func import functional_call, hessian

    model, X, y = _mlp_data(n=16)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = X.double(), y.double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(model(X), y).backward()
        opt.step()
    row = {r["measure"]: r["value"] for r in
           SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, tol=1e-8).record(3)}
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(t):
        parts = dict(zip(names, (s.view(sh) for s, sh in zip(torch.split(t, [s.numel() for s in shapes]), shapes,
                                                              strict=True)), strict=True))
        return nn.functional.mse_loss(functional_call(model, parts, (X,)), y)

    H = hessian(f)(theta)
    d = preconditioner(opt, list(model.parameters())).rsqrt()
    ref = float(torch.linalg.eigvalsh(d[:, None] * H * d[None, :])[-1])
    assert row["preconditioned_sharpness"] == pytest.approx(ref, rel=1e-6)
    assert row["lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-6)
    assert row["edge_ratio"] == pytest.approx(ref / (38 / 1e-2), rel=1e-6)


def test_fit_step_callback_and_cli_track_sharpness(tmp_path):
    from flatminima.cli.train import run_training
    from flatminima.train import fit
    from flatminima.train.recipes import make_recipe

    model, X, y = _mlp_data(n=40)
    seen = []
    fit(model, (X, y), make_recipe(None, batch_size=16, epochs=2, loss="mse", lr=0.05), progress=False,
        step_callback=lambda s, m, o: seen.append((s, o.param_groups[0]["lr"])))
    assert [s for s, _ in seen] == [0, 1, 2, 3, 4, 5, 6]  # 40 samples in batches of 16: 3 steps an epoch

    recipe = make_recipe(None, optimizer="sgd", momentum=0.0, batch_size="full", loss="mse", lr=0.5, epochs=12)
    summary = run_training("mlp", "two_class", recipe, model_kwargs={"activation": "tanh", "width": 8},
                           data_kwargs={"num_samples": 40}, shifts=False, members=1, out=str(tmp_path),
                           device="cpu", progress=False, track_sharpness={"every": 4})
    d = summary["dynamics"]
    assert d["records"] == 4 and d["threshold"]["value"] == pytest.approx(4.0) and d["probe"] == 32
    assert {"sharpness.png", "sharpness.svg", "sharpness.csv", "track.sqlite"} <= {p.name for p in tmp_path.iterdir()}
    from flatminima.track import load

    assert {r["measure"] for r in load(tmp_path / "track.sqlite")} >= {"lambda_max", "threshold", "loss", "lr"}
    with pytest.raises(FlatminimaError, match="track-sharpness"):
        run_training("mlp", "two_class", recipe, model_kwargs={}, data_kwargs={"num_samples": 40}, shifts=False,
                     members=1, out=str(tmp_path / "b"), device="cpu", progress=False,
                     track_sharpness={"evry": 4})


def test_track_sharpness_options_are_parsed_typed_and_checked():
    from flatminima.cli.train import parse_track_sharpness

    assert parse_track_sharpness("every=4, extrapolate=true,refresh=2,warm=YES,tol=1e-4,batch_sharpness=none") == {
        "every": 4, "extrapolate": True, "refresh": 2, "warm": True, "tol": 1e-4, "batch_sharpness": None}
    for text, value in (("true", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("no", False)):
        assert parse_track_sharpness(f"every=2,extrapolate={text}")["extrapolate"] is value
    assert parse_track_sharpness("every=2,warm=no")["warm"] is False  # not the string 'no', which is truthy
    assert parse_track_sharpness({"every": 4, "extrapolate": True}) == {"every": 4, "extrapolate": True}
    for bad, match in (("every=2,extrapolate=maybe", "extrapolate= takes true/false"),
                       ("every=2,warm=2", "warm= takes true/false"),
                       ("every=2,refresh=-1", "refresh= must be >= 0"), ("every=2,refresh=x", "refresh= takes an"),
                       ("every=0", "every= must be >= 1"), ("every=2,tol=0", "tol= takes a positive"),
                       ("every=2,warm=false,extrapolate=true", "does nothing with warm=false"),
                       ("every=2,extrapolat=true", "optionally"), ("refresh=2", "every=N"), ("every", "key=value")):
        with pytest.raises(FlatminimaError, match=match):
            parse_track_sharpness(bad)


def test_cli_track_sharpness_extrapolate_and_refresh_reach_the_monitor(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    import flatminima.dynamics as dynamics
    from flatminima.cli import app

    made = []
    real = dynamics.SharpnessMonitor

    class Spy(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(dynamics, "SharpnessMonitor", Spy)
    args = ["train", "--model", "mlp", "--model-arg", "activation=tanh", "--model-arg", "width=8", "--data",
            "two_class", "--data-arg", "num_samples=40", "--no-shifts", "--optimizer", "sgd", "--momentum", "0",
            "--batch-size", "full", "--set", "loss=mse", "--lr", "0.5", "--epochs", "12", "--json",
            "--out", str(tmp_path / "run")]
    res = CliRunner().invoke(app, [*args, "--track-sharpness", "every=2,extrapolate=true,refresh=3"])
    assert res.exit_code == 0, res.output
    (monitor,) = made
    assert monitor.extrapolate is True and monitor.refresh == 3 and monitor.warm is True and monitor.every == 2
    d = json.loads(res.output)["dynamics"]
    assert (d["extrapolate"], d["refresh"], d["every"], d["records"]) == (True, 3, 2, 7)  # steps 0, 2, ..., 12
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["dynamics"]["extrapolate"] is True

    res = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "bad"), "--track-sharpness", "every=2,extrapolate=ja"])
    assert isinstance(res.exception, FlatminimaError) and "extrapolate= takes true/false" in str(res.exception)
    assert not (tmp_path / "bad" / "model.pt").exists()  # refused before any training
