"""Training recipes against hand computations: SAM/ASAM/m-sharpness steps, full-batch GD, perturbed
gradients, noise statistics, SWA averages, warm restarts; determinism, resumption and refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flatminima.errors import FlatminimaError, NonFiniteLossError
from flatminima.train import Ensemble, Recipe, evaluate, fit, make_recipe, train_ensemble, warm_restart_lr
from flatminima.train.noise import WeightNoise
from flatminima.train.sam import sam_step_gradients


def regression(n=12, d=3, seed=0):
    """Linear least squares: L(θ) = mean((Xθ − y)²), a quadratic with ∇L = 2Xᵀ(Xθ − y)/n."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return model, X, y


def grad_ls(theta, X, y):
    return 2 * X.T @ (X @ theta - y) / len(X)


def theta_of(model):
    return model.weight.detach().reshape(-1, 1).clone()


def test_one_sam_step_equals_hand_computation():
    model, X, y = regression()
    th0, lr, rho = theta_of(model), 0.1, 0.3
    fit(model, (X, y), dict(loss="mse", batch_size="full", epochs=1, lr=lr, momentum=0, sam="sam", rho=rho),
        progress=False)
    g = grad_ls(th0, X, y)
    eps = rho * g / g.norm()
    expected = th0 - lr * grad_ls(th0 + eps, X, y)
    assert torch.allclose(theta_of(model), expected, atol=1e-12)


def test_asam_and_m_sharpness_gradients_equal_hand_computation():
    model, X, y = regression(n=8)
    th, rho, eta, m = theta_of(model), 0.2, 0.01, 3
    mse = lambda out, t: ((out - t) ** 2).mean()  # noqa: E731
    sam_step_gradients(model, mse, X, y, rho=rho, adaptive=True, eta=eta, m=m)
    expected = torch.zeros_like(th)
    for i in range(0, 8, m):  # chunks of 3, 3, 2 samples, weighted by their share of the batch
        Xc, yc = X[i:i + m], y[i:i + m]
        T = th.abs() + eta
        g = grad_ls(th, Xc, yc)
        eps = rho * T ** 2 * g / (T * g).norm()
        expected += len(Xc) / 8 * grad_ls(th + eps, Xc, yc)
    assert torch.allclose(model.weight.grad.reshape(-1, 1), expected, atol=1e-12)
    assert torch.allclose(theta_of(model), th)  # the perturbation was removed


def test_full_batch_gd_is_plain_gradient_descent():
    model, X, y = regression()
    th = theta_of(model)
    fit(model, (X, y), dict(loss="mse", batch_size=0, epochs=3, lr=0.05, momentum=0), progress=False)
    for _ in range(3):
        th = th - 0.05 * grad_ls(th, X, y)
    assert torch.allclose(theta_of(model), th, atol=1e-12)


def test_gaussian_noise_gradient_taken_at_perturbed_point_and_removed():
    model, X, y = regression()
    th, sigma, seed = theta_of(model), 0.1, 5
    fit(model, (X, y), dict(loss="mse", batch_size="full", epochs=1, lr=0.1, momentum=0, noise="gaussian",
                            noise_std=sigma, seed=seed), progress=False)
    xi = sigma * torch.randn((1, 3), generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    expected = th - 0.1 * grad_ls(th + xi.reshape(-1, 1), X, y)
    assert torch.allclose(theta_of(model), expected, atol=1e-12)


def test_weight_noise_mean_and_variance():
    model = nn.Linear(100, 100)
    sigma = 0.05
    wn = WeightNoise(model, "gaussian", sigma, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    clean = wn.perturb()
    delta = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before, strict=True)])
    n = delta.numel()
    assert abs(float(delta.mean())) < 4 * sigma / math.sqrt(n)
    assert abs(float(delta.var()) / sigma ** 2 - 1) < 4 * math.sqrt(2 / n)
    wn.restore(clean)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("kind,steps,factor", [("pgd", 20, 20.0), ("anticorrelated", 20, 2.0)])
def test_iterate_noise_accumulates_as_claimed(kind, steps, factor):
    """With a zero gradient, PGD is a random walk (variance tσ²); Anti-PGD telescopes to ξ_t − ξ_0 (2σ²)."""
    torch.manual_seed(0)
    model = nn.Linear(100, 50)
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    sigma = 0.01
    X, y = torch.randn(4, 100), torch.zeros(4, dtype=torch.int64)
    fit(model, (X, y), dict(batch_size="full", epochs=steps, momentum=0, noise=kind, noise_std=sigma),
        loss_fn=lambda out, t: 0 * out.sum(), progress=False)
    delta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]) - w0
    n = delta.numel()
    assert abs(float(delta.var()) / (factor * sigma ** 2) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float(delta.mean())) < 5 * math.sqrt(factor) * sigma / math.sqrt(n)


def test_swa_average_equals_mean_of_snapshots_and_bn_is_recomputed():
    torch.manual_seed(0)
    X, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    res = fit(model, (X, y), dict(epochs=6, swa=True, swa_start=2, swa_lr=0.02, batch_size="full"),
              progress=False)
    mean = torch.stack(res.snapshots[2:]).mean(0)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.allclose(flat, mean, atol=1e-6)
    assert not torch.allclose(flat, res.snapshots[-1])  # differs from the last iterate
    bn_in = model[0](X).detach()  # update_bn with one full batch: the exact mean and unbiased variance
    assert torch.allclose(model[1].running_mean, bn_in.mean(0), atol=1e-5)
    assert torch.allclose(model[1].running_var, bn_in.var(0, unbiased=True), atol=1e-5)
    assert [row["lr"] for row in res.history][:3] == [0.05, 0.05, 0.05]  # base rate until swa_start + 1
    assert res.history[-1]["lr"] == pytest.approx(0.02)


def test_warm_restart_schedule_matches_formula():
    X, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    lr, t0, t_mult, eta_min = 0.1, 3, 2, 0.001
    res = fit(nn.Linear(2, 2), (X, y), dict(epochs=12, lr=lr, schedule="warm_restarts", t0=t0, t_mult=t_mult,
                                            eta_min=eta_min, batch_size="full"), progress=False)
    got = [row["lr"] for row in res.history]
    starts = [0, 3, 9]  # cycles of 3, 6, 12 epochs
    for e in range(12):
        start = max(s for s in starts if s <= e)
        t_i = t0 * t_mult ** starts.index(start)
        expected = eta_min + 0.5 * (lr - eta_min) * (1 + math.cos(math.pi * (e - start) / t_i))
        assert got[e] == pytest.approx(expected, rel=1e-9)
        assert warm_restart_lr(e, lr, t0, t_mult, eta_min) == pytest.approx(expected, rel=1e-12)


def test_step_and_cosine_schedules():
    X, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    res = fit(nn.Linear(2, 2), (X, y), dict(epochs=5, lr=0.1, schedule="step", step_size=2, gamma=0.5),
              progress=False)
    assert [r["lr"] for r in res.history] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    res = fit(nn.Linear(2, 2), (X, y), dict(epochs=4, lr=0.1, schedule="cosine"), progress=False)
    assert [r["lr"] for r in res.history] == pytest.approx([0.1 * (1 + math.cos(math.pi * e / 4)) / 2
                                                            for e in range(4)])


def small_problem():
    g = torch.Generator().manual_seed(1)
    return torch.randn(60, 12, generator=g), torch.randint(0, 3, (60,), generator=g)


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


RECIPES = [dict(noise="anticorrelated", swa=True, swa_start=2, swa_lr=0.01, augment=["shift", "noise"]),
           dict(optimizer="adamw", lr=0.01, sam="asam", rho=0.1, sam_m=8, schedule="warm_restarts", t0=2,
                label_smoothing=0.1)]


@pytest.mark.parametrize("extra", RECIPES)
def test_same_seed_same_weights_bit_for_bit(extra):
    X, y = small_problem()
    recipe = dict(epochs=3, batch_size=16, seed=3, **extra)
    a, b = net(), net()
    fit(a, (X, y), recipe, progress=False)
    state = torch.get_rng_state()
    fit(b, (X, y), recipe, progress=False)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is left alone
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(),
                                                 strict=True))
    c = net()
    fit(c, (X, y), {**recipe, "seed": 4}, progress=False)
    assert not torch.equal(a[0].weight, c[0].weight)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("extra", RECIPES)
def test_resume_after_interruption_gives_identical_weights(tmp_path, extra):
    X, y = small_problem()
    recipe = dict(epochs=5, batch_size=16, seed=2, checkpoint_every=2, **extra)
    full = net()
    ref = fit(full, (X, y), recipe, progress=False)

    def stop_at_3(epoch, row, model):
        if epoch == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(net(), (X, y), recipe, checkpoint_dir=tmp_path, progress=False, callback=stop_at_3)
    resumed_model = net(seed=99)  # a different initialisation: the checkpoint must overwrite it
    res = fit(resumed_model, (X, y), recipe, checkpoint_dir=tmp_path, progress=False)
    assert res.epochs_this_call == 3  # epochs 3..5 (the checkpoint was written after epoch 2)
    assert res.epochs_run == 5  # in total, across the resume
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4, 5]
    done = resumed_model.state_dict().values()
    assert all(torch.equal(p, q) for p, q in zip(full.state_dict().values(), done, strict=True))
    assert all(torch.equal(s, t) for s, t in zip(ref.snapshots, res.snapshots, strict=True))
    again = fit(net(seed=7), (X, y), recipe, checkpoint_dir=tmp_path, progress=False)
    assert again.epochs_this_call == 0 and again.epochs_run == 5  # finished: nothing repeated


def test_resume_with_another_recipe_refused(tmp_path):
    X, y = small_problem()
    fit(net(), (X, y), dict(epochs=1), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(FlatminimaError, match=r"different recipe.*\['lr'\]"):
        fit(net(), (X, y), dict(epochs=1, lr=0.2), checkpoint_dir=tmp_path, progress=False)


def test_non_finite_loss_stops_with_clear_message():
    X, y = small_problem()
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        fit(nn.Linear(12, 3), (X * 1e30, y), dict(epochs=3, lr=1000), progress=False)
    X[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        fit(nn.Linear(12, 3), (X, y), dict(epochs=1), progress=False)


def test_recipe_validation_names_the_field():
    with pytest.raises(FlatminimaError, match="optimiser: Extra inputs"):
        make_recipe({"optimiser": "sgd"})
    with pytest.raises(FlatminimaError, match="rho"):
        make_recipe({"rho": -1})
    with pytest.raises(FlatminimaError, match="swa_start"):
        make_recipe({"swa": True, "swa_start": 9, "epochs": 5})
    with pytest.raises(FlatminimaError, match="optimizer"):
        fit(nn.Linear(2, 2), (torch.randn(4, 2), torch.zeros(4, dtype=torch.int64)), {"optimizer": "lbfgs"})
    assert Recipe(batch_size="full").batch_for(37) == 37


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_every_optimizer_steps_like_torch(opt):
    X, y = small_problem()
    torch.manual_seed(0)
    a = nn.Linear(12, 3)
    b = nn.Linear(12, 3)
    b.load_state_dict(a.state_dict())
    fit(a, (X, y), dict(optimizer=opt, lr=0.01, batch_size="full", epochs=2, weight_decay=0.01),
        progress=False)
    kw = {"sgd": dict(momentum=0.9), "rmsprop": dict(momentum=0.9)}.get(opt, {})
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[opt]
    o = cls(b.parameters(), lr=0.01, weight_decay=0.01, **kw)
    for _ in range(2):
        o.zero_grad()
        nn.functional.cross_entropy(b(X), y).backward()
        o.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-7)


def test_label_smoothing_and_augment_shift():
    from flatminima.train.augment import augment

    x = torch.arange(1.0, 7.0).reshape(1, 6).repeat(200, 1)
    out = augment(x, ["shift"], torch.Generator().manual_seed(0), shift=2)
    for row in out:  # each row is the signal moved by k ∈ [−2, 2], zero-filled
        k = next(k for k in range(-2, 3) if torch.equal(row, _shifted(x[0], k)))
        assert -2 <= k <= 2
    seen = {next(k for k in range(-2, 3) if torch.equal(r, _shifted(x[0], k))) for r in out}
    assert seen == {-2, -1, 0, 1, 2}
    X, y = small_problem()
    m = nn.Linear(12, 3)
    with torch.no_grad():  # the first full-batch loss is taken at the initial weights
        smoothed = float(nn.functional.cross_entropy(m(X), y, label_smoothing=0.2))
        plain = float(nn.functional.cross_entropy(m(X), y))
    res = fit(m, (X, y), dict(epochs=1, batch_size="full", label_smoothing=0.2), progress=False)
    assert res.history[0]["train_loss"] == pytest.approx(smoothed, rel=1e-6)
    assert smoothed != pytest.approx(plain, rel=1e-3)


def _shifted(v, k):
    out = torch.zeros_like(v)
    if k >= 0:
        out[k:] = v[:len(v) - k]
    else:
        out[:k] = v[-k:]
    return out


def test_evaluate_accuracy_and_ece():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 0.5]])
    y = torch.tensor([0, 1, 1, 1])
    model = nn.Identity()
    ev = evaluate(model, (logits, y), bins=10)
    p = torch.softmax(logits, 1)
    conf, pred = p.max(1)
    assert ev["accuracy"] == pytest.approx(0.75)
    # bins of width 0.1 hold one prediction each here: ECE = mean |correct − confidence|
    assert ev["ece"] == pytest.approx(float(((pred == y).float() - conf).abs().mean()), rel=1e-6)
    assert ev["nll"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-6)


def test_ensemble_averages_probabilities():
    X, y = small_problem()
    ens, results = train_ensemble(lambda: nn.Linear(12, 3), (X, y), dict(epochs=2), members=3, progress=False)
    assert isinstance(ens, Ensemble) and len(results) == 3
    assert not torch.equal(ens.members[0].weight, ens.members[1].weight)
    with torch.no_grad():
        p = torch.stack([torch.softmax(m(X), 1) for m in ens.members]).mean(0)
        assert torch.allclose(ens(X).exp(), p, atol=1e-6)
    nll = float(-p[torch.arange(60), y].log().mean())
    assert evaluate(ens, (X, y))["nll"] == pytest.approx(nll, rel=1e-5)


# matched training loss ------------------------------------------------------------------------------------

TARGET_RECIPE = dict(epochs=30, batch_size=16, lr=0.05, seed=3, label_smoothing=0.1, augment=["noise"])


def test_target_train_loss_stops_at_the_first_epoch_at_or_below_it(tmp_path):
    X, y = small_problem()
    free = net()
    ref = fit(free, (X, y), TARGET_RECIPE, progress=False, checkpoint_dir=tmp_path / "ref",
              callback=lambda e, row, m: torch.save(m.state_dict(), tmp_path / f"e{e}.pt"))
    losses = []
    for e in range(1, 31):  # the exact loss of every epoch's weights, BatchNorm running statistics included
        m = net()
        m.load_state_dict(torch.load(tmp_path / f"e{e}.pt"))
        with torch.no_grad():
            losses.append(float(nn.functional.cross_entropy(m.eval()(X), y)))
    assert ref.reached_target is None and ref.epochs_run == 30
    assert ref.final_train_loss == pytest.approx(losses[-1], rel=1e-6)
    target = (losses[4] + losses[-1]) / 2  # reached somewhere after epoch 5
    first = next(e for e, v in enumerate(losses, 1) if v <= target)
    assert 5 < first < 30
    res = fit(net(), (X, y), dict(TARGET_RECIPE, target_train_loss=target), progress=False,
              checkpoint_dir=tmp_path / "t")
    assert res.epochs_run == first and len(res.history) == first and res.reached_target is True
    assert res.final_train_loss == pytest.approx(losses[first - 1], rel=1e-6) and res.final_train_loss <= target
    assert res.history[-1]["exact_train_loss"] == res.final_train_loss
    assert all(r["exact_train_loss"] > target for r in res.history[:-1])
    # the weights are those of the uninterrupted run at that epoch (the extra pass changes nothing)
    m = net()
    m.load_state_dict(torch.load(tmp_path / f"e{first}.pt"))
    assert all(torch.equal(p, q) for p, q in zip(m.state_dict().values(), res.model.state_dict().values(),
                                                  strict=True))
    # a resumed run that had reached the target trains no further
    again = fit(net(seed=5), (X, y), dict(TARGET_RECIPE, target_train_loss=target), progress=False,
                checkpoint_dir=tmp_path / "t")
    assert again.epochs_this_call == 0 and again.epochs_run == first and again.reached_target is True
    assert again.final_train_loss == res.final_train_loss


def test_target_never_reached_is_kept_and_flagged():
    X, y = small_problem()
    res = fit(net(), (X, y), dict(TARGET_RECIPE, epochs=3, target_train_loss=1e-6), progress=False)
    assert res.epochs_run == 3 and res.reached_target is False
    assert res.final_train_loss > 1e-6 and len(res.history) == 3


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf")])
def test_non_positive_target_refused(bad):
    with pytest.raises(FlatminimaError, match="target_train_loss must be a finite training loss > 0"):
        make_recipe(target_train_loss=bad)


def test_target_with_swa_refused():
    with pytest.raises(FlatminimaError, match="target_train_loss cannot be combined with swa"):
        make_recipe(target_train_loss=0.1, swa=True, epochs=5)
