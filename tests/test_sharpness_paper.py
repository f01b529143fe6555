"""Measures exactly as their papers define them, against independent float64 references on small models:
dense Hessians from torch.func.hessian, per-sample gradients by explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from cases import tiny_data, tiny_mlp
from flatminima import FlatminimaError, Objective
from flatminima.sharpness import measure

DT = torch.float64


def _data(n=30, d=4, classes=3, seed=0):
    return tiny_data(n, d, classes, seed)


def _net(*sizes, seed=0):
    return tiny_mlp(*sizes, act=nn.ReLU, seed=seed)


# ------------------------------------------------------------------ relative flatness (Petzka et al. 2021)
def dense_kappa(model, X, y, name):
    """Σ_{s,s'} ⟨w_s, w_s'⟩ Tr(H_{s,s'}), w_s = W[s, :], from the dense Hessian w.r.t. W (d × m × d × m)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    W = params[name]

    def loss_w(w):
        return nn.functional.cross_entropy(functional_call(model, params | {name: w}, (X,)), y)

    H = hessian(loss_w)(W)
    d, m = W.shape
    total = 0.0
    for s in range(d):
        for t in range(d):
            total += float(W[s] @ W[t]) * float(sum(H[s, i, t, i] for i in range(m)))
    return total


@pytest.mark.parametrize("method", ["auto", "output", "hvp"])
def test_relative_flatness_last_layer_matches_dense_hessian(method):
    model = _net(4, 7, 3, seed=1)
    X, y = _data(seed=1)
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT, batch_size=11)  # several batches
    r = measure(obj, "relative_flatness", method=method)
    exact = dense_kappa(model, X, y, "2.weight")
    assert r.config["layer"] == "2.weight"
    assert r.value == pytest.approx(exact, rel=1e-9)
    assert r.config["method"] == ("hvp" if method == "hvp" else "output")
    assert "rows" in r.config["variant"]
    # the weight is 3 × 7 (rank 3): the HVP route costs rank·m = 21 products, the closed form none
    assert r.cost.hvps == (21 if method == "hvp" else 0)


def test_relative_flatness_pairs_rows_not_columns():
    model = _net(4, 7, 3, seed=2)
    X, y = _data(seed=2)
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT)
    W = model[2].weight.detach()
    params = {k: v.detach() for k, v in model.named_parameters()}
    H = hessian(lambda w: nn.functional.cross_entropy(functional_call(model, params | {"2.weight": w}, (X,)), y))(W)
    columns = float(torch.einsum("st,jsjt->", W.T @ W, H))
    r = measure(obj, "relative_flatness")
    assert r.value == pytest.approx(dense_kappa(model, X, y, "2.weight"), rel=1e-9)
    assert abs(r.value - columns) / abs(columns) > 0.05  # the column pairing is another quantity


def test_relative_flatness_hidden_layer_matches_dense_hessian():
    model = _net(4, 5, 6, 3, seed=3)
    X, y = _data(seed=3)
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT)
    r = measure(obj, "relative_flatness", layer="2.weight")  # 6 × 5, not the output layer: HVPs
    assert r.config["method"] == "hvp"
    assert r.value == pytest.approx(dense_kappa(model, X, y, "2.weight"), rel=1e-9)
    assert r.cost.hvps == 5 * 5  # rank 5 · m = 5 inputs
    with pytest.raises(FlatminimaError, match="method='hvp'"):
        measure(obj, "relative_flatness", layer="2.weight", method="output")


def test_relative_flatness_auto_falls_back_when_the_layer_is_not_the_output():
    model = nn.Sequential(*tiny_mlp(4, 6, 3, act=nn.ReLU, seed=4), nn.Tanh())
    X, y = _data(seed=4)
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT)
    r = measure(obj, "relative_flatness")
    assert r.config["method"] == "hvp"
    assert r.value == pytest.approx(dense_kappa(model, X, y, "2.weight"), rel=1e-9)


def test_relative_flatness_rank_deficient_weight():
    model = _net(4, 6, 3, seed=5)
    with torch.no_grad():
        model[2].weight[2] = 2.0 * model[2].weight[0] - model[2].weight[1]  # rank 2
    X, y = _data(seed=5)
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT)
    r = measure(obj, "relative_flatness", method="hvp")
    assert r.extra["rank"] == 2 and r.cost.hvps == 2 * 6
    assert r.value == pytest.approx(dense_kappa(model, X, y, "2.weight"), rel=1e-8)


# ------------------------------------------------------------------ Fisher-Rao norm (Liang et al. 2019)
def loop_fisher_rao(model, X, y, *, labels, biases):
    """(1/n) Σ_i [Σ_c p_c(x_i)] ⟨θ, ∇_θ ℓ(x_i, c)⟩², per-sample gradients by an explicit loop."""
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    theta = [p.detach() * (1.0 if biases or not n.endswith("bias") else 0.0) for n, p in zip(names, params,
                                                                                            strict=True)]
    total = 0.0
    for i in range(X.shape[0]):
        logits = model(X[i:i + 1])
        p = torch.softmax(logits, 1)[0].detach()
        classes = [(int(y[i]), 1.0)] if labels == "data" else [(c, float(p[c])) for c in range(logits.shape[1])]
        for c, weight in classes:
            loss = nn.functional.cross_entropy(logits, torch.tensor([c]))
            grads = torch.autograd.grad(loss, params, retain_graph=True)
            dot = sum(float((g * t).sum()) for g, t in zip(grads, theta, strict=True))
            total += weight * dot ** 2
    return total / X.shape[0]


@pytest.mark.parametrize("labels", ["model", "data"])
@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize("squared", [False, True])
def test_fisher_rao_matches_per_sample_gradient_loops(labels, biases, squared):
    model = _net(4, 6, 3, seed=6)
    X, y = _data(n=25, seed=6)
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT, batch_size=8)
    r = measure(obj, "fisher_rao", labels=labels, biases=biases, squared=squared)
    sq = loop_fisher_rao(model, X, y, labels=labels, biases=biases)
    assert r.value == pytest.approx(sq if squared else math.sqrt(sq), rel=1e-10)
    assert r.config["labels"] == labels and r.config["biases"] is biases and "variant" in r.config
    assert r.stderr is None


def test_fisher_rao_default_is_the_papers_norm_and_bias_free_identity():
    """Bias-free ReLU net of depth L = 2: ⟨θ, ∇ℓ⟩ = (L+1)⟨∂ℓ/∂f, f⟩ (Liang et al. Lemma 2.1)."""
    model = tiny_mlp(4, 6, 5, 3, act=nn.ReLU, bias=False, seed=7)
    X, y = _data(n=20, seed=7)
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT)
    r = measure(obj, "fisher_rao")
    assert r.config["squared"] is False and r.config["labels"] == "model" and r.config["biases"] is False
    with torch.no_grad():
        f = model(X)
        p = torch.softmax(f, 1)
        inner = (f * p).sum(1, keepdim=True) - f  # ⟨p − e_c, f⟩ for every class c
        closed = 9.0 * float((p * inner.pow(2)).sum(1).mean())  # (L+1)² = 9
    assert r.value == pytest.approx(math.sqrt(closed), rel=1e-10)


def test_fisher_rao_model_labels_need_cross_entropy():
    model = _net(4, 6, 3, seed=8)
    X, _ = _data(seed=8)
    obj = Objective(model, "mse", (X, torch.randn(X.shape[0], 3, dtype=DT)), dtype=DT)
    with pytest.raises(FlatminimaError, match="labels='data'"):
        measure(obj, "fisher_rao")
    assert measure(obj, "fisher_rao", labels="data").value > 0
    ls = Objective(model, lambda o, t: nn.functional.cross_entropy(o, t, label_smoothing=0.1),
                   (X, torch.zeros(X.shape[0], dtype=torch.long)), dtype=DT)
    with pytest.raises(FlatminimaError, match="cross-entropy"):
        measure(ls, "fisher_rao")


# ------------------------------------------------------------------ PAC-Bayes magnitude-aware σ′ (Jiang et al.)
def test_magnitude_aware_perturbation_has_the_papers_variance():
    from flatminima.sharpness.pac_bayes import magnitude_aware_perturbations

    g = torch.Generator().manual_seed(0)
    theta = torch.tensor([0.0, 1e-4, 0.01, -0.3, 2.0, -5.0], dtype=DT)
    sigma, eps, n = 0.2, 1e-3, 40000
    u = magnitude_aware_perturbations(theta, sigma, eps, torch.randn(n, theta.numel(), generator=g, dtype=DT))
    expected = sigma ** 2 * theta ** 2 + eps ** 2
    assert torch.allclose(u.var(0), expected, rtol=0.04)  # 4 s.e. of a variance from 40000 draws: 2.8%
    assert u.mean(0).abs().max() < 4 * expected.sqrt().max() / n ** 0.5


def _trained_classifier():
    g = torch.Generator().manual_seed(9)
    X = torch.randn(200, 2, generator=g, dtype=DT)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    model = tiny_mlp(2, 8, 2, act=nn.ReLU, seed=9)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model, X, y


def test_pac_bayes_mag_sigma_gives_the_target_accuracy_drop():
    model, X, y = _trained_classifier()
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT)
    r = measure(obj, "pac_bayes_mag", samples=32, seed=0)
    sigma = r.extra["sigma"]
    assert r.extra["train_accuracy"] > 0.95 and r.extra["converged"]
    assert r.value == pytest.approx(1 / sigma ** 2)
    assert abs(r.extra["drop"] - 0.1) <= 1e-2
    assert r.config["target"] == 0.1 and r.config["eps"] == 1e-3 and "bisection" in r.config["search"]
    # independent check: fresh draws, explicit perturbed models, the expected accuracy drop is the target
    g = torch.Generator().manual_seed(123)
    base = float((model(X).argmax(1) == y).double().mean())
    accs = []
    for _ in range(300):
        m = _net(2, 8, 2)
        with torch.no_grad():
            for p, q in zip(m.parameters(), model.parameters(), strict=True):
                std = (sigma ** 2 * q ** 2 + 1e-6).sqrt()
                p.copy_(q + std * torch.randn(q.shape, generator=g, dtype=DT))
            accs.append(float((m(X).argmax(1) == y).double().mean()))
    drop = base - float(np.mean(accs))
    se = float(np.std(accs)) / math.sqrt(len(accs))
    assert abs(drop - 0.1) <= 0.01 + 4 * se + 4 * r.extra["drop_stderr"]


def test_pac_bayes_mag_unreachable_targets_are_clear_errors():
    model, X, y = _trained_classifier()
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT)
    with pytest.raises(FlatminimaError, match="sigma_max"):
        measure(obj, "pac_bayes_mag", sigma_max=1e-3, samples=4)
    with pytest.raises(FlatminimaError, match="noise floor"):
        measure(obj, "pac_bayes_mag", eps=10.0, samples=4)
