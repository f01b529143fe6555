"""Bad arguments to the Objective and the curvature entry points: a FlatminimaError that names the argument, shows
the value and says what to pass (never a frame from inside torch); and the derivatives under ``torch.no_grad()``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from flatminima import Objective
from flatminima.curvature import eigenvalues, per_layer, spectral_density, trace
from flatminima.errors import FlatminimaError

X = torch.linspace(-1, 1, 24).reshape(8, 3)
Y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
DATA = (X, Y)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def _objective(**options: Any) -> Objective:
    return Objective(_model(), "cross_entropy", DATA, **options)


def _refused(call: Any, *fragments: str) -> str:
    with pytest.raises(FlatminimaError) as info:
        call()
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


class _Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class _SelfUpdating(nn.Module):
    """Rescales its own weight at every forward (a weight clamp or normalisation done in place)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.layer.weight.mul_(1.01)
        return self.layer(x)


# ---------------------------------------------------------------------------------------------- the model
@pytest.mark.parametrize("model", ["resnet18", lambda x: x, None])
def test_model_not_a_module(model: Any) -> None:
    _refused(lambda: Objective(model, "cross_entropy", DATA), "model must be a torch.nn.Module",
             "Objective.from_function")


def test_from_function_needs_a_callable() -> None:
    _refused(lambda: Objective.from_function(3.0, torch.ones(3)), "f must be a callable", "got float")


@pytest.mark.parametrize(("model", "what"), [(_Frozen(), "no trainable parameters"), (nn.ReLU(), "no parameters")])
def test_model_without_trainable_parameters(model: nn.Module, what: str) -> None:
    _refused(lambda: Objective(model, "mse", (X, X)), "model", what, "requires_grad_")


def test_model_that_modifies_its_parameters_in_forward() -> None:
    model = _SelfUpdating()
    obj = Objective(model, "cross_entropy", DATA)
    theta0 = obj.params
    msg = _refused(obj.loss, "model modifies its own parameters in forward", "layer.weight")
    assert "random" not in msg, msg  # not misreported as dropout
    assert torch.equal(obj.params, theta0)  # θ₀ restored, the user's model untouched
    _refused(lambda: obj.hvp(torch.ones(obj.dim)), "modifies its own parameters")


# ---------------------------------------------------------------------------------------------- the loss
def test_unknown_loss_name() -> None:
    _refused(lambda: Objective(_model(), "crossentropy", DATA), "loss must be one of", "'crossentropy'",
             "cross_entropy")


@pytest.mark.parametrize("loss", [3, 0.5, [nn.MSELoss()]])
def test_loss_not_callable(loss: Any) -> None:
    _refused(lambda: Objective(_model(), loss, DATA), "loss must be a loss name", repr(loss))


def test_loss_fn_not_callable() -> None:
    _refused(lambda: Objective(_model(), loss_fn="cross_entropy", data=DATA), "loss_fn must be a callable",
             "'cross_entropy'")


@pytest.mark.parametrize("method", ["loss", "grad", "hvp"])
def test_integer_valued_loss(method: str) -> None:
    def errors(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (outputs.argmax(1) != targets).sum()

    obj = Objective(_model(), errors, DATA)
    call = {"loss": obj.loss, "grad": obj.grad, "hvp": lambda: obj.hvp(torch.ones(obj.dim))}[method]
    _refused(call, "loss(outputs, targets)", "integer-valued", "torch.int64", "floating-point")


def test_integer_valued_loss_fn() -> None:
    obj = Objective(_model(), loss_fn=lambda model, batch: (model(batch[0]).argmax(1) == batch[1]).sum(), data=DATA)
    _refused(obj.grad, "loss_fn(model, batch)", "integer-valued")


# ---------------------------------------------------------------------------------------------- the data
@pytest.mark.parametrize(("data", "fragments"), [
    (5, ("data must be", "got int 5")),
    ("train.csv", ("data must be", "'train.csv'", "tensors")),
    ({"x": X, "y": Y}, ("data must be", "dict", "keys")),
    (X, ("data must be", "one tensor", "data=(X, y)")),
    ((X.numpy(), Y.numpy()), ("data holds ndarray arrays", "torch.as_tensor")),
])
def test_data_of_the_wrong_kind(data: Any, fragments: tuple[str, ...]) -> None:
    _refused(lambda: Objective(_model(), "cross_entropy", data), *fragments)


def test_data_none() -> None:
    _refused(lambda: Objective(_model(), "cross_entropy", None), "data is required")


@pytest.mark.parametrize("data", [
    (X[:0], Y[:0]), [], (),
    torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X[:0], Y[:0]), batch_size=4),
])
def test_empty_data(data: Any) -> None:
    _refused(lambda: Objective(_model(), "cross_entropy", data), "data is empty")


def test_inputs_and_targets_of_different_lengths() -> None:
    _refused(lambda: Objective(_model(), "cross_entropy", (X, Y[:5])), "data tensors have different lengths",
             "[8, 5]")


def test_a_dataset_is_data() -> None:
    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            if not 0 <= i < len(self):
                raise IndexError(i)
            return X[2 * i:2 * i + 2], Y[2 * i:2 * i + 2]

    assert math.isfinite(Objective(_model(), "cross_entropy", Pairs()).loss())


# ---------------------------------------------------------------------------------------------- the settings
@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "32", True])
def test_batch_size(batch_size: Any) -> None:
    _refused(lambda: _objective(batch_size=batch_size), "batch_size must be a positive whole number",
             repr(batch_size))


@pytest.mark.parametrize("seed", ["0", -1, 2**40, 1.5])
def test_objective_seed(seed: Any) -> None:
    _refused(lambda: _objective(seed=seed), "seed must be an integer in [0, 4294967295]", repr(seed))


@pytest.mark.parametrize(("dtype", "fragment"), [
    (torch.float16, "dtype=float16"), (torch.int32, "dtype must be a floating torch dtype"),
    ("double", "dtype='double' is not supported"), ("float16", "dtype='float16'"),
])
def test_dtype(dtype: Any, fragment: str) -> None:
    _refused(lambda: _objective(dtype=dtype), fragment, "float64")


@pytest.mark.parametrize(("device", "fragment"), [
    ("tpu", "device='tpu' is not a device name"),
    ("cuda:97", "device='cuda:97'"),
    (3.5, "device must be a device name"),
])
def test_device(device: Any, fragment: str) -> None:
    _refused(lambda: _objective(device=device), fragment, "cpu")


@pytest.mark.parametrize("memory_mb", [0, -5, math.inf, math.nan, "1GB"])
def test_memory_budget(memory_mb: Any) -> None:
    _refused(lambda: _objective(memory_mb=memory_mb), "memory_mb must be a finite number in (0,", repr(memory_mb))


# ---------------------------------------------------------------------------------------------- curvature
@pytest.mark.parametrize(("k", "fragment"), [(0, "k must be a positive integer"), (1.5, "k must be a positive integer"),
                                             ("2", "k must be a positive integer"), (9, "k=9 is larger than the number "
                                                                                        "of parameters (8)")])
def test_eigenvalues_k(k: Any, fragment: str) -> None:
    _refused(lambda: eigenvalues(_objective(), k=k), fragment)


@pytest.mark.parametrize("tol", [0, -1e-3, 1, 2.0, math.nan, "1e-3"])
def test_eigenvalues_tol(tol: Any) -> None:
    _refused(lambda: eigenvalues(_objective(), tol=tol), "tol must be", repr(tol))
    if isinstance(tol, (int, float)) and tol >= 1:
        _refused(lambda: eigenvalues(_objective(), tol=tol), "in (0, 1)")


@pytest.mark.parametrize("call", [
    lambda obj: eigenvalues(obj, seed=-3), lambda obj: trace(obj, samples=12, seed="a"),
    lambda obj: spectral_density(obj, seed=1.5), lambda obj: per_layer(obj, seed=-1, progress=False),
])
def test_curvature_seed(call: Any) -> None:
    _refused(lambda: call(_objective()), "seed must be an integer")


@pytest.mark.parametrize("samples", [0, -5, 10.5, "60"])
def test_trace_samples(samples: Any) -> None:
    _refused(lambda: trace(_objective(), samples=samples), "samples must be a positive integer", repr(samples))


@pytest.mark.parametrize(("options", "fragment"), [
    ({"samples": 0}, "samples must be a positive integer"), ({"steps": -2}, "steps must be a positive integer"),
    ({"sigma": -1.0}, "sigma must be a positive finite number"), ({"sigma": math.nan}, "sigma must be"),
    ({"grid_points": 1}, "grid_points must be at least 2"), ({"grid_points": 0}, "grid_points must be"),
])
def test_spectral_density_arguments(options: dict[str, Any], fragment: str) -> None:
    _refused(lambda: spectral_density(_objective(), **options), fragment)


@pytest.mark.parametrize("call", [
    lambda obj: eigenvalues(obj, operator="hesian"), lambda obj: trace(obj, operator="fisher"),
    lambda obj: spectral_density(obj, operator="hess"), lambda obj: per_layer(obj, operator="hess", progress=False),
])
def test_unknown_operator(call: Any) -> None:
    _refused(lambda: call(_objective()), "operator must be one of ['hessian', 'ggn']")


@pytest.mark.parametrize("call", [eigenvalues, lambda a: trace(a, samples=12), spectral_density])
def test_non_symmetric_dense_matrix(call: Any) -> None:
    A = torch.tensor([[2.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    _refused(lambda: call(A), "obj, the matrix, is not symmetric", "(A + A.T) / 2")


def test_dense_matrix_with_nan() -> None:
    _refused(lambda: eigenvalues(torch.full((3, 3), math.nan)), "obj, the matrix, has NaN or infinite entries")


def test_dense_matrix_not_square_or_integer() -> None:
    _refused(lambda: eigenvalues(torch.ones(3, 2)), "square", "(3, 2)")
    _refused(lambda: eigenvalues(torch.eye(3, dtype=torch.int64)), "real floating point", "int64")


def test_not_a_curvature() -> None:
    _refused(lambda: eigenvalues("hessian"), "cannot take the curvature of a str")


# ---------------------------------------------------------------------------------------------- under no_grad
@pytest.mark.parametrize("reuse_graph", [True, False])
@pytest.mark.parametrize("hvp_method", ["double_backward", "forward_over_reverse", "finite_difference"])
def test_derivatives_under_no_grad(reuse_graph: bool, hvp_method: str) -> None:
    """A caller's no_grad (an evaluation loop, a callback) does not reach the Objective's own derivatives."""
    obj = Objective(_model(), "cross_entropy", DATA, dtype=torch.float64, reuse_graph=reuse_graph,
                    hvp_method=hvp_method)
    v = torch.linspace(-1, 1, obj.dim, dtype=torch.float64)
    grad, hv, gv = obj.grad(), obj.hvp(v), obj.ggn_vp(v)
    fresh = Objective(_model(), "cross_entropy", DATA, dtype=torch.float64, reuse_graph=reuse_graph,
                      hvp_method=hvp_method)  # its first product (the graph cache, the checks) under no_grad
    with torch.no_grad():
        for o in (fresh, obj):
            torch.testing.assert_close(o.hvp(v), hv)
            torch.testing.assert_close(o.grad(), grad)
            torch.testing.assert_close(o.ggn_vp(v), gv)
        assert not torch.is_grad_enabled()  # the caller's mode is restored
    assert torch.is_grad_enabled()


def test_eigenvalues_and_trace_under_no_grad() -> None:
    obj = Objective(_model(), "cross_entropy", DATA, dtype=torch.float64)
    top, tr = eigenvalues(obj, k=2, seed=0), trace(obj, samples=12, seed=0)
    with torch.no_grad():
        top2, tr2 = eigenvalues(_objective(dtype=torch.float64), k=2, seed=0), trace(obj, samples=12, seed=0)
    np.testing.assert_allclose(top2.values.numpy(), top.values.numpy(), rtol=1e-10)
    assert tr2.value == pytest.approx(tr.value, rel=1e-10)


def test_function_objective_under_no_grad() -> None:
    A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.ones(3, dtype=torch.float64))
    with torch.no_grad():
        torch.testing.assert_close(obj.hvp(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)),
                                   torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64))
        torch.testing.assert_close(obj.grad(), torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))


class _WrappingDataset(torch.utils.data.Dataset):
    """A map-style Dataset whose ``__getitem__`` wraps its index: iterating it never ends (no IndexError)."""

    def __getitem__(self, i: int):
        return X[i % len(X)], Y[i % len(Y)]


class _SizedWrappingDataset(_WrappingDataset):
    def __len__(self) -> int:
        return len(X)


def test_a_map_style_dataset_is_batched_over_its_length():
    # before: the Objective iterated it by index until IndexError, which this one never raises (a hang)
    by_dataset = Objective(_model(), "cross_entropy", _SizedWrappingDataset(), batch_size=3)
    by_tensors = _objective(batch_size=3)
    assert float(by_dataset.loss()) == pytest.approx(float(by_tensors.loss()), rel=1e-6)
    v = torch.ones(by_tensors.dim)
    torch.testing.assert_close(by_dataset.hvp(v), by_tensors.hvp(v))


def test_a_map_style_dataset_without_a_length_is_refused():
    with pytest.raises(FlatminimaError, match="without __len__.*DataLoader"):
        Objective(_model(), "cross_entropy", _WrappingDataset(), batch_size=3)
