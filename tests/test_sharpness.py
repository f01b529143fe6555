"""Sharpness measures against closed forms on quadratics and dense Hessians (float64)."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev, vmap

from cases import tiny_problem, with_eigenvalues
from flatminima import Objective
from flatminima.sharpness import measure

DT = torch.float64



def quadratic(eigs, seed=0, center=None):
    """L(θ) = ½(θ−θ*)ᵀA(θ−θ*) with A = Q diag(eigs) Qᵀ; returns (objective at θ*, A, θ*)."""
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    A = with_eigenvalues(eigs, generator=g)  # draws Q from g; θ* comes next from the same generator
    star = torch.randn(n, generator=g, dtype=DT) if center is None else center

    def f(x):
        d = x - star
        return 0.5 * d @ A @ d

    return Objective.from_function(f, star.clone(), dtype=DT), A, star


def diagonal(diag, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.diag(torch.tensor(diag, dtype=DT))
    star = torch.randn(len(diag), generator=g, dtype=DT)
    obj = Objective.from_function(lambda x: 0.5 * (x - star) @ A @ (x - star), star.clone(), dtype=DT)
    return obj, A, star


EIGS = [5.0, 2.0, 1.0, 0.5, 0.2, 0.1]


# ------------------------------------------------------------------ average case
def test_average_case_equals_half_sigma2_trace_within_ci():
    obj, A, _ = quadratic(EIGS)
    sigma = 0.1
    exact = 0.5 * sigma ** 2 * float(A.trace())
    r = measure(obj, "average_case", sigma=sigma, samples=64, seed=3)
    lo, hi = r.estimate.interval
    assert r.estimate.level == 0.95 and r.estimate.method == "t"
    assert lo <= exact <= hi
    assert r.stderr > 0 and r.cost.batched_points == 2 * 64 + 1  # antithetic pairs and L(θ)
    assert r.extra["second_order"] == pytest.approx(exact, rel=1e-9)  # Hutch++ spans dim 6: exact


def test_average_case_tight_with_many_samples_away_from_minimum():
    obj, A, star = quadratic(EIGS, seed=1)
    shifted = Objective.from_function(obj.f, star + 0.3, dtype=DT)  # gradient ≠ 0: odd terms average out
    sigma = 0.05
    exact = 0.5 * sigma ** 2 * float(A.trace())
    r = measure(shifted, "average_case", sigma=sigma, samples=4000, chunk_size=1000, seed=0)
    assert abs(r.value - exact) < 4 * r.stderr
    assert r.value == pytest.approx(exact, rel=0.05)
    assert r.stderr / r.value < 0.05


def test_adaptive_average_case_matches_theta_weighted_diagonal():
    obj, A, star = quadratic(EIGS, seed=2)
    sigma = 0.2
    exact = 0.5 * sigma ** 2 * float((star ** 2 * torch.diagonal(A)).sum())
    r = measure(obj, "average_case", sigma=sigma, adaptive=True, samples=3000, chunk_size=1000,
                second_order_samples=400)
    assert abs(r.value - exact) < 4 * r.stderr
    assert abs(r.extra["second_order"] - exact) < 4 * r.extra["second_order_stderr"] + 1e-12


# ------------------------------------------------------------------ worst case
def test_l2_worst_case_is_half_rho2_lambda_max():
    obj, A, _ = quadratic(EIGS)
    rho = 0.1
    exact = 0.5 * rho ** 2 * EIGS[0]
    r = measure(obj, "worst_case", rho=rho, steps=40, seed=1)
    assert r.value <= exact * (1 + 1e-9)  # a feasible point's rise never exceeds the max
    assert r.value == pytest.approx(exact, rel=1e-4)
    assert len(r.extra["restarts"]) == 3 and r.extra["spread"] >= 0


def test_adaptive_l2_worst_case_is_half_rho2_lambda_max_of_DAD():
    obj, A, star = quadratic(EIGS, seed=4)
    rho = 0.05
    D = torch.diag(star.abs())
    exact = 0.5 * rho ** 2 * float(torch.linalg.eigvalsh(D @ A @ D).max())
    r = measure(obj, "worst_case", rho=rho, adaptive=True, steps=100, restarts=4, seed=0)
    assert r.value == pytest.approx(exact, rel=1e-3)
    assert r.value <= exact * (1 + 1e-9)


def test_linf_worst_case_on_diagonal_is_half_rho2_trace():
    obj, A, _ = diagonal([3.0, 1.0, 0.5, 0.1, 2.0])
    rho = 0.2
    r = measure(obj, "worst_case", rho=rho, norm="linf", seed=0)
    assert r.value == pytest.approx(0.5 * rho ** 2 * float(A.trace()), rel=1e-10)


def test_keskar_on_diagonal_is_box_corner_percentage():
    obj, A, star = diagonal([3.0, 1.0, 0.5, 0.1, 2.0], seed=1)
    eps = 0.01
    rise = 0.5 * eps ** 2 * float((torch.diagonal(A) * (star.abs() + 1) ** 2).sum())
    r = measure(obj, "keskar", epsilon=eps)
    assert r.extra["rise"] == pytest.approx(rise, rel=1e-10)
    assert r.value == pytest.approx(100 * rise / (1 + 0.0), rel=1e-10)  # L(θ*) = 0
    assert r.extra["unit"] == "percent"


def test_m_sharpness_is_mean_of_batch_worst_cases():
    # Interpolating linear regression: each batch's loss at w* is (w−w*)ᵀ(X_bᵀX_b/m)(w−w*),
    # so its worst-case rise at w* is ρ²·λmax(X_bᵀX_b/m).
    g = torch.Generator().manual_seed(0)
    X = torch.randn(24, 3, generator=g, dtype=DT)
    w = torch.randn(1, 3, generator=g, dtype=DT)
    model = nn.Linear(3, 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.copy_(w)
    obj = Objective(model, "mse", (X, X @ w.T), dtype=DT)
    rho, m = 0.1, 8
    expected = [rho ** 2 * float(torch.linalg.eigvalsh(X[i:i + m].T @ X[i:i + m] / m).max())
                for i in (0, 8, 16)]
    r = measure(obj, "worst_case", rho=rho, m=m, shuffle=False, steps=60)
    assert r.extra["batches"] == 3
    assert r.extra["batch_rises"] == pytest.approx(expected, rel=1e-5)
    assert r.value == pytest.approx(sum(expected) / 3, rel=1e-5)
    assert r.stderr == pytest.approx(torch.tensor(expected).std().item() / math.sqrt(3), rel=1e-3)
    assert r.cost.grads == 3 * 3 * 60 and r.cost.data_passes > 0


# ------------------------------------------------------------------ PAC-Bayes
def test_pac_bayes_sigma_solves_half_sigma2_trace_equals_target():
    obj, A, _ = quadratic(EIGS)
    target = 0.05
    exact = math.sqrt(2 * target / float(A.trace()))
    r = measure(obj, "pac_bayes", target=target, samples=2000, chunk_size=1000, rtol=1e-4, seed=1)
    s, se = r.extra["sigma"], r.extra["sigma_stderr"]
    assert abs(s - exact) < 4 * se + 2e-4 * exact
    assert s == pytest.approx(exact, rel=0.03)
    assert r.value == pytest.approx(1 / s ** 2)
    assert r.stderr == pytest.approx(2 * se / s ** 3)


def test_magnitude_aware_pac_bayes_closed_form():
    obj, A, star = quadratic(EIGS, seed=5)
    target = 0.02
    exact = math.sqrt(2 * target / float((star ** 2 * torch.diagonal(A)).sum()))  # eps = 0
    r = measure(obj, "pac_bayes", target=target, magnitude_aware=True, eps=0.0, samples=2000,
                chunk_size=1000, rtol=1e-4)
    assert r.extra["sigma"] == pytest.approx(exact, rel=0.05)
    assert abs(r.extra["sigma"] - exact) < 4 * r.extra["sigma_stderr"] + 2e-4 * exact


# ------------------------------------------------------------------ Hessian-based vs dense
def test_hessian_measures_match_dense_quadratic():
    obj, A, _ = quadratic(EIGS, seed=7)
    assert measure(obj, "lambda_max", tol=1e-8).value == pytest.approx(EIGS[0], rel=1e-7)
    assert measure(obj, "trace").value == pytest.approx(float(A.trace()), rel=1e-9)
    assert measure(obj, "frobenius", method="exact").value == pytest.approx(float(A.norm()), rel=1e-10)
    r = measure(obj, "frobenius", samples=400, seed=2)
    assert abs(r.value - float(A.norm())) < 4 * r.stderr
    assert r.extra["squared"] == pytest.approx(r.value ** 2)


def _mlp(seed=0):
    return tiny_problem(4, 6, 3, n=32, seed=seed, act=nn.ReLU)


def _dense(model, X, y, obj):
    def outputs(theta):
        return functional_call(model, obj.unflatten(theta), (X,))

    def loss(theta):
        return nn.functional.cross_entropy(outputs(theta), y)

    theta = obj.params
    H = hessian(loss)(theta)
    J = jacrev(outputs)(theta)  # n × c × dim
    p = torch.softmax(outputs(theta), -1)
    Hz = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / X.shape[0]
    G = torch.einsum("ncd,nce,nef->df", J, Hz, J)
    return H, G


@functools.cache
def _mlp_dense():
    model, X, y = _mlp()
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT)
    return obj, _dense(model, X, y, obj)


@pytest.mark.parametrize("operator", ["hessian", "ggn"])
def test_hessian_measures_match_dense_on_mlp(operator):
    obj, (H, G) = _mlp_dense()
    M = H if operator == "hessian" else G
    assert measure(obj, "lambda_max", operator=operator, tol=1e-9).value == pytest.approx(
        float(torch.linalg.eigvalsh(M).max()), rel=1e-6)
    tr = measure(obj, "trace", operator=operator, samples=60)
    assert abs(tr.value - float(M.trace())) <= 4 * tr.stderr + 1e-8
    fro = measure(obj, "frobenius", operator=operator, method="exact")
    assert fro.value == pytest.approx(float(M.norm()), rel=1e-9)


def test_fisher_rao_matches_per_sample_gradients():
    model, X, y = _mlp(1)
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT, batch_size=20)  # several batches
    theta = obj.params

    def one(t, x, yy):
        return nn.functional.cross_entropy(functional_call(model, obj.unflatten(t), (x[None],)), yy[None])

    grads = vmap(torch.func.grad(one), in_dims=(None, 0, 0))(theta, X, y)
    exact = float((grads @ theta).pow(2).mean())
    # the empirical-Fisher square over all parameters (the paper's default is the model-Fisher norm of
    # the weights: tests/test_sharpness_paper.py)
    r = measure(obj, "fisher_rao", labels="data", squared=True, biases=True)
    assert r.value == pytest.approx(exact, rel=1e-10)


def test_relative_flatness_matches_dense_layer_hessian():
    model, X, y = _mlp(2)
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT)
    params = dict(model.named_parameters())
    W = params["2.weight"].detach()

    def loss_w(w):
        p = {k: v.detach() for k, v in params.items()} | {"2.weight": w}
        return nn.functional.cross_entropy(functional_call(model, p, (X,)), y)

    Hw = hessian(loss_w)(W)  # d × m × d × m
    G = W @ W.T  # ⟨w_s, w_s'⟩ of the rows (neurons' incoming weights), Petzka et al. Def. 3
    exact = float(torch.einsum("st,sjtj->", G, Hw))
    r = measure(obj, "relative_flatness")
    assert r.extra["layer"] == "2.weight"
    assert r.value == pytest.approx(exact, rel=1e-9)
    assert r.cost.hvps == 0  # output layer: closed form, one pass
    h = measure(obj, "relative_flatness", method="hvp")
    assert h.value == pytest.approx(exact, rel=1e-9)
    assert h.cost.hvps == 3 * 6  # rank(W) · m products, W 3 × 6


def test_logit_normalised_variants_run_and_differ():
    model, X, y = _mlp(3)
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT)
    a = measure(obj, "average_case", sigma=0.05, samples=16, second_order_samples=0)
    b = measure(obj, "average_case", sigma=0.05, samples=16, second_order_samples=0, logit_normalize=True)
    assert a.value != pytest.approx(b.value, rel=1e-3)
    assert b.cost.batched_points == 33  # the derived objective's work is counted
    w = measure(obj, "worst_case", rho=0.05, logit_normalize=True, steps=5, restarts=1)
    assert w.value > 0 and w.cost.grads == 5
