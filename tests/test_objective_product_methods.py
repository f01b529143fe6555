"""Hessian-product methods: forward-over-reverse checked before use (LayerNorm), finite differences with a
stated error, and compiled models measured on their eager module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cases import tiny_data, tiny_mlp
from flatminima import Objective
from flatminima.curvature import eigenvalues, trace
from flatminima.errors import FlatminimaError


def _data(n: int = 12, d: int = 4, classes: int = 3):
    return tiny_data(n, d, classes)


def _mlp(norm: bool) -> nn.Module:
    return tiny_mlp(4, 6, 3, norm=nn.LayerNorm if norm else None)


def _dense(obj: Objective) -> torch.Tensor:
    """∇²L(θ₀) column by column from the Objective's exact double-backward products (checked against dense
    autograd Hessians in tests/test_objective_exact.py)."""
    return torch.stack([obj.hvp(e) for e in torch.eye(obj.dim, dtype=torch.float64)], 1)


def _random(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_forward_over_reverse_through_layer_norm_is_refused_with_the_reason():
    X, y = _data()
    exact = Objective(_mlp(norm=True), "cross_entropy", (X, y))
    fo = exact.replace(hvp_method="forward_over_reverse")
    v = _random(exact.dim)
    with pytest.raises(FlatminimaError, match="disagrees with double backward") as err:
        fo.hvp(v)
    assert "layer_norm" in str(err.value) and "hvp_method='double_backward'" in str(err.value)
    assert "refused" in fo.describe()["hvp_check"]
    # Without LayerNorm the check passes and the products are the exact ones.
    plain = Objective(_mlp(norm=False), "cross_entropy", (X, y), hvp_method="forward_over_reverse")
    torch.testing.assert_close(plain.hvp(v[:plain.dim]), plain.replace(hvp_method="double_backward").hvp(v[:plain.dim]),
                               rtol=1e-10, atol=1e-12)
    assert plain.describe()["hvp_check"].startswith("agrees with double backward")


def test_finite_difference_products_are_within_their_stated_error():
    X, y = _data()
    exact = Objective(_mlp(norm=True), "cross_entropy", (X, y))
    fd = exact.replace(hvp_method="finite_difference")
    assert fd.describe()["hvp_error"].startswith("estimated at the first product")
    v = _random(exact.dim)
    with fd.meter() as cost:
        hv = fd.hvp(v)
    assert (cost.hvps, cost.data_passes) == (1, 4)  # gradients at θ ± hv and θ ± 2hv (the error estimate)
    with fd.meter() as cost:
        fd.hvp(v)
    assert (cost.hvps, cost.data_passes) == (1, 2)
    ref = exact.hvp(v)
    stated = fd.describe()["hvp_error"]["relative_error"]
    assert 0 < stated < 1e-6  # float64: cbrt(eps)-steps give ~1e-10 relative
    assert float((hv - ref).norm() / ref.norm()) <= stated
    for seed in (2, 3):  # later products: the same step rule, the same accuracy
        u = _random(exact.dim, seed)
        assert float((fd.hvp(u) - exact.hvp(u)).norm() / exact.hvp(u).norm()) <= 10 * stated
    H = _dense(exact)
    top = eigenvalues(fd, k=1, tol=1e-6)
    assert float(top.values[0]) == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-6)
    assert top.product["hvp_method"] == "finite_difference"
    assert top.product["hvp_error"]["relative_error"] == stated
    tr = trace(fd, samples=6, seed=0)
    assert tr.product["hvp_error"]["relative_error"] == stated
    assert eigenvalues(exact, k=1).product["hvp_method"] == "double_backward"


def test_finite_difference_in_float32_states_a_larger_error_and_keeps_it():
    X, y = _data()
    exact = Objective(_mlp(norm=False), "cross_entropy", (X, y))
    fd = Objective(_mlp(norm=False).float(), "cross_entropy", (X.float(), y), hvp_method="finite_difference")
    v = _random(exact.dim)
    hv = fd.hvp(v.float()).double()
    ref = exact.hvp(v)
    stated = fd.describe()["hvp_error"]["relative_error"]
    assert 1e-7 < stated < 0.1
    assert float((hv - ref).norm() / ref.norm()) <= stated


def test_finite_difference_rejects_a_zero_vector():
    X, y = _data()
    fd = Objective(_mlp(norm=False), "cross_entropy", (X, y), hvp_method="finite_difference")
    with pytest.raises(FlatminimaError, match="non-zero vector"):
        fd.hvp(torch.zeros(fd.dim, dtype=torch.float64))


class _Once(torch.autograd.Function):
    """tanh with a first derivative only (a custom kernel's shape): no double backward."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class _OnceTanh(nn.Module):
    def forward(self, x):
        return _Once.apply(x)


def test_a_model_without_second_derivatives_gets_finite_differences():
    X, y = _data()
    model = tiny_mlp(4, 6, 3, act=_OnceTanh)
    obj = Objective(model, "cross_entropy", (X, y))
    with pytest.raises(FlatminimaError, match="finite_difference"):
        obj.hvp(torch.ones(obj.dim, dtype=torch.float64))
    fd = obj.replace(hvp_method="finite_difference")
    twin = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    twin.load_state_dict(model.state_dict())
    exact = Objective(twin, "cross_entropy", (X, y))
    v = _random(obj.dim)
    hv, ref = fd.hvp(v), exact.hvp(v)
    assert float((hv - ref).norm() / ref.norm()) <= fd.describe()["hvp_error"]["relative_error"]


def test_a_compiled_model_is_measured_on_its_eager_module():
    X, y = _data()
    model = _mlp(norm=False)
    compiled = torch.compile(model, backend="eager")  # a real OptimizedModule; inductor is slow to build on CPU
    compiled(X)  # compiled and run once, as a user's model would be
    obj = Objective(compiled, "cross_entropy", (X, y))
    eager = Objective(model, "cross_entropy", (X, y))
    assert obj.param_names == eager.param_names  # the eager module's names, without "_orig_mod."
    assert "eager module" in obj.describe()["compiled"]
    top, ref = eigenvalues(obj, k=1, tol=1e-8), eigenvalues(eager, k=1, tol=1e-8)
    assert float(top.values[0]) == pytest.approx(float(ref.values[0]), rel=1e-12)
    assert "eager module" in top.product["compiled"]
    part = Objective(compiled, "cross_entropy", (X, y), params="_orig_mod.2.*")  # the compiled model's names
    assert part.param_names == ["2.weight", "2.bias"]
    assert type(compiled).__name__ == "OptimizedModule" and compiled._orig_mod is model  # the user's, untouched


def test_the_model_copy_holds_its_parameters_as_views_of_theta():
    """At rest the Objective holds the parameters once: its model copy's selected parameters are views of θ₀
    (a 49M-parameter MLP: 3.25 model sizes at rest before, 1.25 after; benchmarks in docs/benchmarks.md)."""
    X, y = _data()
    model = tiny_mlp(4, 6, 3, norm=nn.BatchNorm1d, seed=None)  # drawn from the global RNG as it stands
    for mode in ("eval", "train"):
        obj = Objective(model, "cross_entropy", (X, y), mode=mode, params=["0.*", "3.weight"])
        theta = obj.params
        start, end = obj._theta0.data_ptr(), obj._theta0.data_ptr() + obj.dim * 8
        chosen = dict(obj.working_model.named_parameters())
        assert all(start <= chosen[n].data_ptr() < end for n in obj.param_names)
        assert chosen["3.bias"].data_ptr() not in range(start, end)  # unselected: its own tensor
        before = obj.loss()
        obj.loss_batched(torch.stack([theta, theta + 0.1]))  # re-points the copy's parameters and back
        assert obj.loss() == before and torch.equal(obj.params, theta)
        copy_ = obj.model_at(theta + 1.0)  # a fresh model: θ₀ and the copy are untouched
        assert torch.equal(obj.params, theta) and obj.loss() == before
        assert all(p.data_ptr() not in range(start, end) for p in copy_.parameters())
    assert all(p.data_ptr() not in range(start, end) for p in model.parameters())  # the user's model: its own


def test_a_compiled_submodule_is_measured_eager_and_the_users_model_keeps_it():
    X, y = _data()
    model = _mlp(norm=False)
    eager = Objective(model, "cross_entropy", (X, y))
    model[2] = torch.compile(model[2], backend="eager")
    obj = Objective(model, "cross_entropy", (X, y))
    assert "eager module" in obj.describe()["compiled"]
    assert obj.param_names == eager.param_names
    v = _random(obj.dim)
    torch.testing.assert_close(obj.hvp(v), eager.hvp(v), rtol=1e-12, atol=1e-14)
    assert type(model[2]).__name__ == "OptimizedModule"  # the user's model still holds its compiled part
