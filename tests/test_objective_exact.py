"""The Objective against dense float64 references written out here, independently of its code.

Every reference is the loss over the WHOLE data in one call of the torch loss (``torch.func.hessian`` /
``torch.autograd.functional`` of it), so batch sizes, memory chunks and reductions must not change it.
"""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from flatminima import Objective
from flatminima.errors import FlatminimaError

BACKENDS = [("double_backward", True), ("double_backward", False), ("forward_over_reverse", False)]


def _model(d: int = 3, k: int = 4, bn: bool = False, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(d, 5)] + ([nn.BatchNorm1d(5)] if bn else []) + [nn.Tanh()]
    layers += ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(5, k)]
    return nn.Sequential(*layers).double()


def _targets(kind: str, n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "cross_entropy":
        return torch.randint(0, k, (n,), generator=gen)
    if kind == "bce":
        return torch.randint(0, 2, (n, k), generator=gen).double()
    return torch.randn(n, k, generator=gen, dtype=torch.float64)


def _data(kind: str, n: int = 23, d: int = 3, k: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64), _targets(kind, n, k, gen)


def _dense(model: nn.Module, loss: nn.Module, X, y, train: bool = False):
    """(θ₀, f, H): f(θ) = loss(model_θ(X), y) over all data in one call, H = its dense Hessian at θ₀."""
    ref = copy.deepcopy(model).train(train)
    names = [n for n, _ in ref.named_parameters()]
    shapes = [p.shape for _, p in ref.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in ref.parameters()])

    def f(t):
        parts = torch.split(t, [s.numel() for s in shapes])
        return loss(functional_call(ref, {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)},
                                    (X,)), y)

    H = torch.autograd.functional.hessian(f, theta) if train else torch.func.hessian(f)(theta)
    return theta, f, H


MODULES = {
    "cross_entropy": nn.CrossEntropyLoss,
    "mse": nn.MSELoss,
    "bce": nn.BCEWithLogitsLoss,
}


@pytest.mark.parametrize("kind", list(MODULES))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_modules_reductions_exact_whatever_batches_and_chunks(kind, reduction):
    X, y = _data(kind)
    model = _model()
    module = MODULES[kind](reduction=reduction)
    theta, f, H = _dense(model, module, X, y)
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for batch_size, memory_mb in ((23, None), (7, None), (7, 0.0027)):  # 0.0027 MiB: 3 rows per chunk
        obj = Objective(model, module, (X, y), batch_size=batch_size, memory_mb=memory_mb)
        assert obj.reduction == reduction
        assert obj.loss() == pytest.approx(float(f(theta)), rel=1e-12)
        torch.testing.assert_close(obj.grad(), torch.func.grad(f)(theta), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(obj.hvp(v), H @ v, rtol=1e-10, atol=1e-12)
        if memory_mb is not None:
            assert obj.n_batches > 4, obj.memory_plan  # the budget really split the batches
        # the loss through the pointwise engines (landscapes, perturbations) is the same number
        for engine in ("loop", "vmap"):
            got = obj.values_at(theta[None], ["loss"], engine=engine)[0]
            assert float(got[0]) == pytest.approx(float(f(theta)), rel=1e-12)


@pytest.mark.parametrize("kind", list(MODULES))
@pytest.mark.parametrize("method,reuse", BACKENDS)
def test_every_backend_every_builtin_string_loss_matches_the_dense_hessian(kind, method, reuse):
    X, y = _data(kind)
    model = _model()
    theta, _, H = _dense(model, MODULES[kind](), X, y)
    obj = Objective(model, kind, (X, y), batch_size=8, hvp_method=method, reuse_graph=reuse)
    for seed in (1, 2):
        v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(obj.hvp(v), H @ v, rtol=1e-10, atol=1e-12)


def test_cross_entropy_with_ignored_targets_is_the_mean_over_kept_targets():
    X, y = _data("cross_entropy", n=30)
    y[::3] = -100
    model = _model()
    theta, f, H = _dense(model, nn.CrossEntropyLoss(), X, y)
    obj = Objective(model, "cross_entropy", (X, y), batch_size=4)
    assert obj.loss() == pytest.approx(float(f(theta)), rel=1e-12)
    v = torch.ones(obj.dim, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(v), H @ v, rtol=1e-10, atol=1e-12)
    assert obj.total_weight == 20


def test_reduction_none_and_contradictions_are_refused():
    X, y = _data("mse")
    with pytest.raises(FlatminimaError, match="reduction='mean'"):
        Objective(_model(), nn.MSELoss(reduction="none"), (X, y))
    with pytest.raises(FlatminimaError, match="contradicts"):
        Objective(_model(), nn.MSELoss(reduction="sum"), (X, y), reduction="mean")
    with pytest.raises(FlatminimaError, match="reduction must be one of"):
        Objective(_model(), "mse", (X, y), reduction="median")
    with pytest.raises(FlatminimaError, match="one number per batch"):
        Objective(_model(), lambda z, t: (z - t) ** 2, (X, y)).loss()


def test_loss_fn_sum_and_token_weighted_mean():
    X, y = _data("mse", n=23)
    model = _model()
    theta, f_sum, H_sum = _dense(model, nn.MSELoss(reduction="sum"), X, y)

    def batch_sum(m, batch):
        return ((m(batch[0]) - batch[1]) ** 2).sum()

    for memory_mb in (None, 0.004):
        obj = Objective(model, loss_fn=batch_sum, data=(X, y), batch_size=5, reduction="sum", memory_mb=memory_mb)
        assert obj.loss() == pytest.approx(float(f_sum(theta)), rel=1e-12)
        v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        torch.testing.assert_close(obj.hvp(v), H_sum @ v, rtol=1e-10, atol=1e-12)
    # (mean over the batch's entries, number of entries): the mean over every entry of the data
    _, f_mean, H_mean = _dense(model, nn.MSELoss(), X, y)

    def token_mean(m, batch):
        err = (m(batch[0]) - batch[1]) ** 2
        return err.sum() / err.numel(), err.numel()

    obj = Objective(model, loss_fn=token_mean, data=(X, y), batch_size=5)
    assert obj.loss() == pytest.approx(float(f_mean(theta)), rel=1e-12)
    v = torch.ones(obj.dim, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(v), H_mean @ v, rtol=1e-10, atol=1e-12)
    assert obj.total_weight == 23 * 4


def test_float32_model_sums_in_float64():
    X, y = _data("mse", n=4000)
    model = _model().float()
    obj = Objective(model, nn.MSELoss(reduction="sum"), (X.float(), y.float()), batch_size=7)
    with torch.no_grad():
        ref = nn.MSELoss(reduction="sum")(model.double()(X.float().double()), y.float().double())
    assert obj.loss() == pytest.approx(float(ref), rel=1e-6)


# ----------------------------------------------------------------------------- train mode
@pytest.mark.parametrize("method,reuse", BACKENDS)
def test_train_mode_batchnorm_hessian_uses_batch_statistics_and_keeps_buffers(method, reuse):
    X, y = _data("cross_entropy", n=16)
    model = _model(bn=True)
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
    before = {n: b.clone() for n, b in model.named_buffers()}
    theta, f, H = _dense(model, nn.CrossEntropyLoss(), X, y, train=True)
    obj = Objective(model, "cross_entropy", (X, y), mode="train", batch_size=16, hvp_method=method,
                    reuse_graph=reuse)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    if method == "forward_over_reverse":  # torch.func's second derivatives of batch statistics are wrong
        with pytest.raises(FlatminimaError, match="double_backward"):
            obj.hvp(v)
        return
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert obj.loss() == pytest.approx(float(f(theta)), rel=1e-12)
    torch.testing.assert_close(obj.hvp(v), H @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(obj.hvp(v), H @ v, rtol=1e-10, atol=1e-12)
    for n, b in obj.model_at().named_buffers():
        torch.testing.assert_close(b, before[n])  # running statistics never move
    for n, b in model.named_buffers():
        torch.testing.assert_close(b, before[n])


def test_ggn_train_mode_batchnorm_matches_dense_jt_hz_j():
    X, y = _data("cross_entropy", n=12)
    model = _model(bn=True)
    ref = copy.deepcopy(model).train()
    names = [n for n, _ in ref.named_parameters()]
    shapes = [p.shape for _, p in ref.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in ref.parameters()])

    def outputs(t):
        parts = torch.split(t, [s.numel() for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        return functional_call(ref, params, (X,))

    z = outputs(theta).detach()
    J = torch.autograd.functional.jacobian(outputs, theta).reshape(z.numel(), -1)
    Hz = torch.autograd.functional.hessian(lambda u: nn.functional.cross_entropy(u.view_as(z), y),
                                           z.reshape(-1))
    G = J.T @ Hz @ J
    obj = Objective(model, "cross_entropy", (X, y), mode="train", batch_size=12)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(obj.ggn_vp(v), G @ v, rtol=1e-10, atol=1e-12)
    # eval mode: the GGN of every built-in loss, in batches, against the dense one
    for kind in MODULES:
        X, y = _data(kind, n=12)
        model = _model()
        obj = Objective(model, kind, (X, y), batch_size=5)
        out = _outputs_fn(model, X)
        theta = obj.params
        z = out(theta).detach()
        J = torch.func.jacrev(out)(theta).reshape(z.numel(), -1)
        Hz = torch.func.hessian(lambda u, y=y, z=z, kind=kind: MODULES[kind]()(u.view_as(z), y))(z.reshape(-1))
        u = v[:obj.dim]
        torch.testing.assert_close(obj.ggn_vp(u), J.T @ Hz @ J @ u, rtol=1e-10, atol=1e-12)


def _outputs_fn(model: nn.Module, X: torch.Tensor):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def out(t):
        parts = torch.split(t, [s.numel() for s in shapes])
        return functional_call(model, {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}, (X,))

    return out


# ----------------------------------------------------------------------------- determinism
def test_dropout_in_train_mode_is_refused_and_fixed_mask_is_one_function():
    X, y = _data("cross_entropy", n=20)
    model = _model(dropout=0.5)
    with pytest.raises(FlatminimaError, match="mode='eval'.*fixed_mask=True"):
        Objective(model, "cross_entropy", (X, y), mode="train")
    obj = Objective(model, "cross_entropy", (X, y), mode="train", fixed_mask=True, batch_size=8, reuse_graph=False)
    gen = torch.Generator().manual_seed(6)
    u, v = (torch.randn(obj.dim, generator=gen, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(obj.hvp(v), obj.hvp(v), rtol=0, atol=0)
    assert float(u @ obj.hvp(v)) == pytest.approx(float(v @ obj.hvp(u)), rel=1e-10)  # symmetric: one function
    fo = obj.replace(hvp_method="forward_over_reverse")
    torch.testing.assert_close(fo.hvp(v), obj.hvp(v), rtol=1e-10, atol=1e-12)
    assert obj.loss() == pytest.approx(obj.loss(), rel=0)
    assert float(obj.values_at(obj.params[None], ["loss"], engine="loop")[0][0]) == pytest.approx(obj.loss(), rel=1e-12)
    assert float(obj.values_at(obj.params[None], ["loss"], engine="vmap")[0][0]) == pytest.approx(obj.loss(), rel=1e-12)
    assert "one dropout mask per batch" in obj.describe()["fixed_mask"]
    # the masks are real: the fixed-mask loss differs from the eval-mode (no dropout) loss
    assert obj.loss() != pytest.approx(Objective(model, "cross_entropy", (X, y)).loss(), rel=1e-6)


def test_a_random_loss_fn_is_detected_by_two_evaluations():
    X, y = _data("mse")

    def noisy(m, batch):
        return nn.functional.mse_loss(nn.functional.dropout(m(batch[0]), 0.5, training=True), batch[1])

    with pytest.raises(FlatminimaError, match="the loss is random"):
        Objective(_model(), loss_fn=noisy, data=(X, y)).loss()


# ----------------------------------------------------------------------------- mappings
def test_mapping_batches_cast_move_split_and_count():
    X, y = _data("mse", n=21)
    model = _model().float()

    def loss_fn(m, batch):
        assert isinstance(batch, collections.UserDict)
        return nn.functional.mse_loss(m(batch["x"]), batch["y"])

    dict_batches = [{"x": X[i:i + 7].float(), "y": y[i:i + 7].float()} for i in range(0, 21, 7)]
    user = [collections.UserDict(b) for b in dict_batches]
    ref = Objective(model, nn.MSELoss(), (X.float().double(), y.float().double()), dtype=torch.float64)
    for memory_mb in (None, 0.004):
        obj = Objective(model, loss_fn=loss_fn, data=user, dtype=torch.float64, memory_mb=memory_mb)
        assert obj.loss() == pytest.approx(ref.loss(), rel=1e-12)
        v = torch.ones(obj.dim, dtype=torch.float64)
        torch.testing.assert_close(obj.hvp(v), ref.hvp(v), rtol=1e-10, atol=1e-12)
        assert all(isinstance(b, collections.UserDict) and b["x"].dtype == torch.float64 for b in obj.batches())
        if memory_mb is not None:
            assert obj.n_batches > 3


# ----------------------------------------------------------------------------- replace and the protocol
def test_replace_keeps_every_setting():
    X, y = _data("cross_entropy", n=20)
    model = _model()
    obj = Objective(model.float(), nn.CrossEntropyLoss(reduction="sum"), (X.float(), y), params="2.*",
                    mode="train", dtype=torch.float64, batch_size=6, hvp_method="forward_over_reverse",
                    reuse_graph=False, memory_mb=0.05)
    keys = ["mode", "dtype", "device", "hvp_method", "reuse_graph", "distributed", "memory_mb", "reduction",
            "fixed_mask", "param_names"]
    same = obj.replace()
    for key in keys:
        assert getattr(same, key) == getattr(obj, key), key
    assert same._config["batch_size"] == 6
    assert same.loss() == obj.loss() and same.n_batches == obj.n_batches
    torch.testing.assert_close(same.params, obj.params)
    other = obj.replace(data=(X[:10].float(), y[:10]), hvp_method="double_backward")
    assert other.hvp_method == "double_backward" and other.memory_mb == 0.05 and other.reduction == "sum"
    plain = obj.replace(loss=lambda z, t: nn.functional.cross_entropy(z, t, reduction="sum"))
    assert plain.reduction == "sum" and plain.loss() == pytest.approx(obj.loss(), rel=1e-12)
    assert obj.replace(loss="mse").reduction == "mean"
    with pytest.raises(FlatminimaError, match="unknown settings"):
        obj.replace(colour="red")
    f = Objective.from_function(lambda t: (t ** 2).sum(), [1.0, 2.0])
    assert f.replace(x0=[3.0]).loss() == 9.0


def test_public_protocol():
    X, y = _data("cross_entropy", n=10)
    model = _model()
    obj = Objective(model, "cross_entropy", (X, y), batch_size=4)
    assert obj.has_outputs and isinstance(obj.loss_function, nn.CrossEntropyLoss)
    batches = list(obj.batches())
    assert [b[-1].shape[0] for b in batches] == [4, 4, 2]
    out, targets = obj.outputs(None, batches[0])
    torch.testing.assert_close(out, model(X[:4]))
    assert targets is batches[0][-1]
    with obj.meter() as cost:
        obj.record("hvps", points=3, passes=0.5)
    assert cost.hvps == 3 and cost.data_passes == 0.5
    fn = Objective(model, loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), data=(X, y))
    assert not fn.has_outputs and fn.loss_function is None
    assert not Objective.from_function(lambda t: t.sum(), [1.0]).has_outputs
