"""Curvature algorithms against exact references: dense float64 Hessians and known spectra."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from cases import random_symmetric, spiked_wishart, tiny_mlp, with_eigenvalues
from flatminima import FlatminimaError, Objective
from flatminima.curvature import eigenvalues, power_iteration, spectral_density, trace


@pytest.fixture(scope="module", autouse=True)
def _float64():
    """Every reference here is float64; restore the global default for other test modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _flat_loss(model: nn.Module, loss, X, y):
    """An independent full-data loss of a flat θ (one batch, no flatminima code)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    buffers = dict(model.named_buffers())

    def L(theta):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes, strict=True)}
        return loss(functional_call(model, {**params, **buffers}, (X,)), y)

    return L


def _theta(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.fixture(scope="module")
def tanh_case():
    torch.manual_seed(0)
    X, y = torch.randn(203, 6), torch.randint(0, 3, (203,))
    model = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3))
    H = hessian(_flat_loss(model, nn.functional.cross_entropy, X, y))(_theta(model))
    obj = Objective(model, "cross_entropy", (X, y), batch_size=64)  # 203 = 3·64 + 11: a partial last batch
    return obj, H, torch.linalg.eigvalsh(H)


def test_top_eigenvalues_match_dense_hessian(tanh_case):
    obj, H, exact = tanh_case
    res = eigenvalues(obj, 3, "largest", tol=1e-9, return_vectors=True)
    assert res.converged.all()
    assert torch.allclose(res.values, exact.flip(0)[:3], rtol=1e-6, atol=0)
    for i in range(3):  # the reported residual is the true ‖Hv − λv‖ (up to round-off)
        v = res.vectors[:, i]
        true_res = (H @ v - res.values[i] * v).norm()
        assert true_res <= res.residuals[i] + 1e-9
        assert abs(res.values[i] - exact.flip(0)[i]) <= res.error_bounds[i] + 1e-12
    assert res.cost.hvps == res.iterations + 3  # one true-residual product per returned pair


def test_smallest_and_both_ends(tanh_case):
    obj, _, exact = tanh_case
    low = eigenvalues(obj, 2, "smallest", tol=1e-9)
    assert low.converged.all()
    assert torch.allclose(low.values, exact[:2], rtol=1e-6)
    both = eigenvalues(obj, 1, "both", tol=1e-9)
    assert torch.allclose(both.values, torch.stack([exact[-1], exact[0]]), rtol=1e-6)


def test_same_seed_same_numbers(tanh_case):
    obj, _, _ = tanh_case
    a, b = trace(obj, "hutchinson", 10, seed=3), trace(obj, "hutchinson", 10, seed=3)
    assert a.value == b.value and a.stderr == b.stderr
    assert trace(obj, "hutchinson", 10, seed=4).value != a.value


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_interval_covers_exact(tanh_case, method):
    obj, H, _ = tanh_case
    res = trace(obj, method, 60, seed=1)
    lo, hi = res.interval(z=3.0)
    assert lo <= float(H.trace()) <= hi
    assert res.stderr > 0 and res.cost.hvps == 60


def test_hutchpp_is_exact_when_sketch_spans_space():
    A = torch.diag(torch.tensor([4.0, 2.0, 1.0, -1.0]))
    obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.zeros(4))
    assert trace(obj, "hutch++", 12).value == pytest.approx(6.0, abs=1e-12)


def _quadratic(eigs, seed=0):
    n = len(eigs)
    A = with_eigenvalues(eigs, seed, dtype=None)  # the default dtype: float64 in this module
    return Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.ones(n)), A


def test_repeated_eigenvalues_are_all_found():
    obj, _ = _quadratic([5.0, 5.0, 3.0, 1.0, 1.0, -2.0])
    res = eigenvalues(obj, 3, "largest", tol=1e-10)
    assert torch.allclose(res.values, torch.tensor([5.0, 5.0, 3.0]), atol=1e-9)
    low = eigenvalues(obj, 3, "smallest", tol=1e-10)
    assert torch.allclose(low.values, torch.tensor([-2.0, 1.0, 1.0]), atol=1e-9)


def test_indefinite_saddle_power_iteration_returns_largest_algebraic():
    obj, _ = _quadratic([1.0, 0.5, -4.0])  # |−4| dominates: plain power iteration would return −4
    res = power_iteration(obj, tol=1e-10, max_iter=2000)
    assert res.converged[0]
    assert res.values[0].item() == pytest.approx(1.0, abs=1e-8)
    lanczos = eigenvalues(obj, 1, "smallest", tol=1e-10)
    assert lanczos.values[0].item() == pytest.approx(-4.0, abs=1e-9)


def test_power_iteration_flags_non_convergence():
    obj, _ = _quadratic([1.0, 0.999, 0.5] + [0.1] * 20)
    res = power_iteration(obj, tol=1e-12, max_iter=5)
    assert not res.converged[0]
    assert res.residuals[0] > 1e-12


def test_cnn_with_batchnorm_in_eval_mode():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv1d(1, 3, 3, padding=1), nn.BatchNorm1d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(24, 2))
    model.train()
    X, y = torch.randn(37, 1, 8), torch.randint(0, 2, (37,))
    model(X)  # give BatchNorm non-trivial running statistics
    bn_before = model[1].running_mean.clone()
    obj = Objective(model, "cross_entropy", (X, y), batch_size=10)
    ref_model = Objective(model, "cross_entropy", (X, y)).model_at()  # eval-mode copy
    H = hessian(_flat_loss(ref_model, nn.functional.cross_entropy, X, y))(_theta(model))
    res = eigenvalues(obj, 2, tol=1e-9)
    assert torch.allclose(res.values, torch.linalg.eigvalsh(H).flip(0)[:2], rtol=1e-6)
    assert torch.equal(obj.model_at()[1].running_mean, bn_before)  # products never update BN statistics
    assert torch.equal(model[1].running_mean, bn_before) and model.training  # user's model untouched
    assert res.mode == "eval"


def test_mse_regression_hessian_and_ggn():
    model = tiny_mlp(3, 5, 2, seed=2, dtype=None)
    X, Y = torch.randn(50, 3), torch.randn(50, 2)
    obj = Objective(model, "mse", (X, Y), batch_size=16)
    H = hessian(_flat_loss(model, nn.functional.mse_loss, X, Y))(_theta(model))
    res = eigenvalues(obj, 2, tol=1e-9)
    assert torch.allclose(res.values, torch.linalg.eigvalsh(H).flip(0)[:2], rtol=1e-6)
    # GGN of mean squared error over all N·d entries: G = 2/(N d) Σ_n J_nᵀ J_n
    names = [n for n, _ in model.named_parameters()]
    sizes, shapes = [p.numel() for p in model.parameters()], [p.shape for p in model.parameters()]

    def f(theta):
        parts = zip(names, torch.split(theta, sizes), shapes, strict=True)
        return functional_call(model, {n: t.view(s) for n, t, s in parts}, (X,))

    J = jacrev(f)(_theta(model)).reshape(-1, obj.dim)
    G = 2.0 / Y.numel() * J.T @ J
    v = torch.randn(obj.dim)
    assert torch.allclose(obj.ggn_vp(v), G @ v, atol=1e-12)
    ggn = eigenvalues(obj, 2, operator="ggn", tol=1e-9)
    assert torch.allclose(ggn.values, torch.linalg.eigvalsh(G).flip(0)[:2], rtol=1e-6)
    tr = trace(obj, "hutch++", 3 * obj.dim, operator="ggn").value
    assert tr == pytest.approx(float(G.trace()), rel=1e-8)


def test_spectral_density_negative_mass_and_normalisation():
    eigs = [3.0, 2.0, 1.5, 1.0] + [0.5] * 11 + [-1.0] * 5  # a quarter of the spectrum is negative
    obj, _ = _quadratic(eigs)
    res = spectral_density(obj, samples=40, steps=20, seed=0)
    mass = torch.tensor(res.density).sum() * (res.grid[1] - res.grid[0])
    assert float(mass) == pytest.approx(1.0, abs=1e-3)
    assert abs(res.negative_mass - 0.25) <= 4 * res.negative_mass_stderr
    assert res.nodes.max() == pytest.approx(3.0, abs=1e-8)
    assert res.cost.hvps == 40 * 20


def test_bad_input_is_refused_clearly(tanh_case):
    obj, _, _ = tanh_case
    with pytest.raises(FlatminimaError, match="larger than the number of parameters"):
        eigenvalues(obj, obj.dim + 1)
    with pytest.raises(FlatminimaError, match="which"):
        eigenvalues(obj, 1, "middle")
    with pytest.raises(FlatminimaError, match="tol"):
        eigenvalues(obj, 1, tol=0)
    with pytest.raises(FlatminimaError, match="operator"):
        trace(obj, operator="fisher")
    with pytest.raises(FlatminimaError, match="samples"):
        trace(obj, "hutch++", 3)


def test_loss_fn_objective_has_no_ggn():
    model = nn.Linear(2, 1)
    obj = Objective(model, data=[{"x": torch.randn(4, 2), "y": torch.randn(4, 1)}],
                    loss_fn=lambda m, b: nn.functional.mse_loss(m(b["x"]), b["y"]))
    with pytest.raises(FlatminimaError, match="GGN"):
        obj.ggn_vp(torch.ones(obj.dim))
    assert math.isfinite(eigenvalues(obj, 1, tol=1e-8).values[0].item())


def test_gap_stopping_rule_is_accurate_and_no_slower(tanh_case):
    """stop="gap" (bound min(r, r²/δ)) still meets tol against the dense Hessian, with no more products."""
    obj, _, exact = tanh_case
    top = exact.flip(0)[:2]
    res_r = eigenvalues(obj, 2, "largest", tol=1e-6)
    res_g = eigenvalues(obj, 2, "largest", tol=1e-6, stop="gap")
    assert res_g.converged.all()
    assert torch.all((res_g.values - top).abs() <= 1e-6 * top.abs())
    assert res_g.cost.hvps <= res_r.cost.hvps
    with pytest.raises(FlatminimaError, match="stop"):
        eigenvalues(obj, 1, stop="ritz")


def test_gap_stopping_rule_needs_a_second_ritz_value():
    """With one Ritz value there is no gap: stop="gap" must fall back to the residual, not stop at step 1."""
    obj = Objective.from_function(lambda x: 0.5 * (torch.arange(1.0, 31.0) * x * x).sum(), torch.ones(30))
    res = eigenvalues(obj, 1, "largest", tol=1e-8, stop="gap")
    assert res.cost.hvps > 1 and res.values[0] == pytest.approx(30.0, rel=1e-8)


def test_float32_bounds_are_true_residuals_above_the_rounding_floor(tanh_case):
    """In float32 the recurrence's estimate |β·s| drops far below round-off; the reported residual is the
    true one from a fresh product, never below eps·‖H‖·√dim, and the bound covers the error vs float64."""
    from flatminima.curvature import rounding_floor

    _, _, exact = tanh_case
    torch.manual_seed(0)
    X, y = torch.randn(203, 6), torch.randint(0, 3, (203,))
    model = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3))  # the fixture's model (same seed)
    obj = Objective(model, "cross_entropy", (X, y), batch_size=64, dtype=torch.float32)
    top = exact.flip(0)[:3]
    for stop in ("residual", "gap"):
        res = eigenvalues(obj, 3, "largest", tol=1e-4, stop=stop, max_iter=obj.dim)
        floor = rounding_floor(torch.float32, float(top[0]), obj.dim)
        assert res.floor == pytest.approx(floor, rel=1e-3)
        assert torch.all(res.residuals >= res.floor) and torch.all(res.error_bounds >= res.floor)
        assert torch.all((res.values - top).abs() <= res.error_bounds)  # the bound covers the float64 error
        assert torch.all((res.values - top).abs() <= res.residuals)
        assert res.converged.all()
    power = power_iteration(obj, tol=1e-4, max_iter=2000)
    assert power.residuals[0] >= power.floor > 0
    assert abs(power.values[0] - top[0]) <= power.error_bounds[0]


def test_recurrence_estimate_is_not_trusted_for_a_wrong_operator(tanh_case):
    """A non-symmetric or noisy product makes the recurrence's estimate tiny once the Krylov space fills
    up; the true residual exposes it and the pair is reported NOT converged."""
    obj, _, _ = tanh_case
    gen = torch.Generator().manual_seed(3)
    skew = torch.triu(torch.randn(obj.dim, obj.dim, generator=gen), 1) * 0.05
    plain = obj.hvp
    try:
        obj.hvp = lambda v, theta=None: plain(v, theta) + skew @ v  # non-symmetric
        res = eigenvalues(obj, 1, tol=1e-6, max_iter=obj.dim)
        assert not res.converged.any()
        assert res.residuals[0] > 1e3 * res.recurrence_residuals[0]
        obj.hvp = lambda v, theta=None: plain(v, theta) + 1e-4 * torch.randn(obj.dim, generator=gen)  # noisy
        res = eigenvalues(obj, 1, tol=1e-6, max_iter=obj.dim)
        assert not res.converged.any() and res.residuals[0] > 1e-5
    finally:
        del obj.hvp
    assert eigenvalues(obj, 1, tol=1e-6).converged.all()


# ---- the same algorithms on a matrix: an operator view, a dense tensor, a SciPy LinearOperator ---------------
def _linear_operator(A: torch.Tensor):
    from scipy.sparse.linalg import LinearOperator

    M = A.numpy()
    return LinearOperator(M.shape, matvec=lambda v: M @ v.ravel(), dtype=M.dtype)


def test_eigenvalues_of_a_diagonal_tensor_are_its_largest_entries():
    d = torch.tensor([3.0, -1.0, 9.0, 0.5, 7.0, 2.0, -4.0, 1.5], dtype=torch.float64)
    r = eigenvalues(torch.diag(d), k=3)
    torch.testing.assert_close(r.values, torch.tensor([9.0, 7.0, 3.0], dtype=torch.float64), rtol=1e-9, atol=1e-12)
    assert r.all_converged and r.operator == "matrix" and r.mode == "matrix"
    assert r.cost.hvps >= r.iterations and r.cost.data_passes == 0 and r.cost.seconds > 0
    bottom = eigenvalues(torch.diag(d), k=2, which="smallest")
    torch.testing.assert_close(bottom.values, torch.tensor([-4.0, -1.0], dtype=torch.float64), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("build", [random_symmetric, spiked_wishart], ids=["random symmetric", "spiked Wishart"])
@pytest.mark.parametrize("as_scipy", [False, True], ids=["dense tensor", "scipy LinearOperator"])
def test_matrices_against_numpy_eigvalsh_and_the_exact_trace(build, as_scipy):
    import numpy as np

    A = build(120) if build is random_symmetric else build()
    exact = np.linalg.eigvalsh(A.numpy())
    M = _linear_operator(A) if as_scipy else A
    r = eigenvalues(M, k=3, which="both", tol=1e-8)
    want = np.concatenate([exact[::-1][:3], exact[:3][::-1]])
    assert r.all_converged
    np.testing.assert_allclose(r.values.numpy(), want, rtol=1e-7, atol=1e-8 * abs(exact).max())
    # Each Ritz value is within its certified bound of a true eigenvalue (Bauer-Fike).
    assert (np.abs(r.values.numpy() - want) <= r.error_bounds.numpy() + 1e-12).all()
    assert r.cost.hvps >= r.iterations and r.operator == ("linear_operator" if as_scipy else "matrix")
    tr = trace(M, "hutch++", 60, seed=3)
    assert tr.cost.hvps == 60 and tr.operator == r.operator
    assert abs(tr.value - float(A.trace())) <= 4 * tr.stderr + 1e-9 * abs(exact).sum()
    whole = trace(M, "hutch++", 3 * A.shape[0] + 3)  # the sketch spans the space: exact, no error bar
    assert whole.value == pytest.approx(float(A.trace()), rel=1e-10, abs=1e-9) and whole.stderr == 0.0
    dens = spectral_density(M, samples=2, steps=A.shape[0], seed=1)  # a full Krylov space: Gauss quadrature
    assert dens.cost.hvps == 2 * A.shape[0]
    for nodes, weights in zip(dens.nodes, dens.weights, strict=True):
        np.testing.assert_allclose(np.sort(nodes), exact, atol=1e-8 * abs(exact).max())
        assert weights.sum() == pytest.approx(1.0, rel=1e-10)
    # tr(A)/n is the mean of the spectral measure: the quadrature's first moment, averaged over probes.
    mean = (dens.nodes * dens.weights).sum(1).mean()
    assert mean == pytest.approx(exact.mean(), abs=6 * exact.std() / math.sqrt(2 * A.shape[0]))


def test_a_four_million_diagonal_through_a_scipy_linear_operator():
    import numpy as np
    from scipy.sparse.linalg import LinearOperator

    n = 4_000_000
    d = np.random.default_rng(0).uniform(0.0, 1.0, n)
    d[[5, 1_000_000, 3_999_999]] = [10.0, 7.0, 5.0]
    calls = []

    def matvec(v):
        calls.append(1)
        return d * v.ravel()

    r = eigenvalues(LinearOperator((n, n), matvec=matvec, dtype=np.float64), k=3, tol=1e-8)
    torch.testing.assert_close(r.values, torch.tensor([10.0, 7.0, 5.0], dtype=torch.float64), rtol=1e-9, atol=0)
    assert r.all_converged and r.cost.hvps == len(calls) and r.cost.data_passes == 0


def test_an_objectives_operator_view_gives_the_objectives_results_and_costs():
    model = tiny_mlp(4, 6, 3, dtype=None)
    X, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    obj = Objective(model, "cross_entropy", (X, y), batch_size=16)
    H = obj.hessian
    assert (H.dim, H.dtype, H.device, H.shape) == (obj.dim, obj.dtype, obj.device, (obj.dim, obj.dim))
    V = torch.randn(obj.dim, 3)
    with obj.meter() as cost:
        HV = H @ V
    torch.testing.assert_close(HV, torch.stack([obj.hvp(V[:, j]) for j in range(3)], 1), rtol=1e-12, atol=1e-12)
    assert cost.hvps == 3 and cost.data_passes == 3
    by_obj, by_view = eigenvalues(obj, 2, seed=4), eigenvalues(obj.hessian, 2, seed=4)
    torch.testing.assert_close(by_view.values, by_obj.values, rtol=1e-12, atol=0)
    assert by_view.cost.hvps == by_obj.cost.hvps and by_view.operator == "hessian" and by_view.mode == "eval"
    assert eigenvalues(obj.ggn, 1).operator == "ggn"
    theta = obj.params + 0.1
    torch.testing.assert_close(obj.operator("hessian", theta) @ V[:, 0], obj.hvp(V[:, 0], theta))
    assert trace(obj.hessian, "hutchinson", 4).cost.hvps == 4


def test_matrices_refuse_what_only_an_objective_has_and_non_symmetric_input():
    A = random_symmetric(6)
    with pytest.raises(FlatminimaError, match="already the matrix"):
        eigenvalues(A, operator="ggn")
    with pytest.raises(FlatminimaError, match="theta"):
        trace(A, theta=torch.zeros(6))
    with pytest.raises(FlatminimaError, match="not symmetric"):
        eigenvalues(A + torch.triu(torch.ones(6, 6), 1))
    with pytest.raises(FlatminimaError, match="square"):
        trace(torch.ones(3, 4))
    with pytest.raises(FlatminimaError, match="cannot take the curvature"):
        spectral_density([[1.0]])
    from flatminima.curvature import per_layer

    with pytest.raises(FlatminimaError, match="per_layer needs an Objective"):
        per_layer(A)
