"""Core Objective: exact means over data, parameter selection, no side effects, errors, memory budget.

References are dense float64 Hessians from ``torch.autograd.functional.hessian`` over the full data set in
one batch, and full-batch losses computed directly.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian
from torch.func import functional_call

from cases import tiny_data, tiny_mlp
from flatminima import Objective
from flatminima.errors import FlatminimaError, NonFiniteLossError


def _data(n: int = 50, d: int = 5, classes: int = 3, seed: int = 0):
    return tiny_data(n, d, classes, seed)


def _mlp(d: int = 5, classes: int = 3) -> nn.Module:
    return tiny_mlp(d, 4, classes)


def _full_batch(model: nn.Module, X, y, names=None):
    """(θ, f(θ)) for the full-batch cross-entropy over the parameters ``names`` (default: all)."""
    named = dict(model.named_parameters())
    names = names or list(named)
    shapes = [named[n].shape for n in names]
    theta = torch.cat([named[n].detach().reshape(-1) for n in names])

    def f(t):
        parts = torch.split(t, [s.numel() for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        return nn.functional.cross_entropy(functional_call(model, params, (X,)), y)

    return theta, f


def test_partial_last_batch_gives_exact_full_data_mean():
    X, y = _data(50)
    model = _mlp()
    obj = Objective(model, "cross_entropy", (X, y), batch_size=16)  # 16+16+16+2
    theta, f = _full_batch(model, X, y)
    H = hessian(f, theta)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert obj.loss() == pytest.approx(float(f(theta)), rel=1e-13)
    torch.testing.assert_close(
        obj.grad(), torch.autograd.functional.jacobian(f, theta), rtol=1e-11, atol=1e-13
    )
    for method in ("double_backward", "forward_over_reverse"):
        for reuse in (True, False):
            o = Objective(model, "cross_entropy", (X, y), batch_size=16, hvp_method=method, reuse_graph=reuse)
            torch.testing.assert_close(o.hvp(v), H @ v, rtol=1e-11, atol=1e-13)
    assert obj.n_batches == 4 and obj.total_weight == 50


def test_frozen_parameters_are_excluded_and_patterns_select():
    X, y = _data()
    model = _mlp()
    model[0].weight.requires_grad_(False)
    obj = Objective(model, "cross_entropy", (X, y))
    assert "0.weight" not in obj.param_names and obj.dim == 4 + 4 * 3 + 3
    sub = Objective(_mlp(), "cross_entropy", (X, y), params="2.*")
    assert sub.param_names == ["2.weight", "2.bias"]
    theta, f = _full_batch(_mlp(), X, y, names=["2.weight", "2.bias"])
    v = torch.randn(sub.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(sub.hvp(v), hessian(f, theta) @ v, rtol=1e-11, atol=1e-13)
    assert Objective(_mlp(), "cross_entropy", (X, y), params=["0"]).param_names == ["0.weight", "0.bias"]
    with pytest.raises(FlatminimaError, match="matches no trainable parameter"):
        Objective(_mlp(), "cross_entropy", (X, y), params="nope*")


def test_unused_parameters_have_zero_gradient_and_curvature():
    X, y = _data()

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.unused = _mlp(), nn.Linear(2, 2).double()

        def forward(self, x):
            return self.net(x)

    obj = Objective(Skip(), "cross_entropy", (X, y))
    v = torch.ones(obj.dim, dtype=torch.float64)
    unused = slice(obj.dim - 6, obj.dim)
    assert obj.param_names[-2:] == ["unused.weight", "unused.bias"]
    assert torch.all(obj.grad()[unused] == 0) and torch.all(obj.hvp(v)[unused] == 0)
    assert torch.any(obj.hvp(v)[: obj.dim - 6] != 0)


def test_eval_mode_products_leave_batchnorm_statistics_and_grads_alone():
    X, y = _data()
    model = tiny_mlp(5, 4, 3, norm=nn.BatchNorm1d)
    model.train()
    model(X)  # give the running statistics non-trivial values
    before = copy.deepcopy(model.state_dict())
    obj = Objective(model, "cross_entropy", (X, y), batch_size=16)
    inner = copy.deepcopy(obj.model_at().state_dict())
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h1, g1 = obj.hvp(v), obj.grad()
    obj.ggn_vp(v)
    obj.loss_batched(torch.stack([obj.params, obj.params + 0.1]))
    h2, g2 = obj.hvp(v), obj.grad()
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k]), k
    for k, t in obj.model_at().state_dict().items():
        assert torch.equal(t, inner[k]), k
    assert model.training and all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(h1, h2, rtol=0, atol=0)  # a second call does not accumulate
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_float64_on_a_float32_model():
    X, y = _data()
    model = _mlp().float()
    obj = Objective(model, "cross_entropy", (X.float(), y), dtype=torch.float64)
    assert obj.params.dtype == torch.float64 and obj.grad().dtype == torch.float64
    theta, f = _full_batch(_mlp(), X.float().double(), y)
    assert obj.loss() == pytest.approx(float(f(obj.params)), rel=1e-13)
    assert next(model.parameters()).dtype == torch.float32  # the user's model keeps its dtype


def test_loss_fn_count_weighting():
    X, y = _data(30)
    model = _mlp()
    weights = torch.arange(1, 31, dtype=torch.float64)  # samples of very different weight

    def loss_fn(m, batch):
        x, t, w = batch
        per = nn.functional.cross_entropy(m(x), t, reduction="none")
        return (w * per).sum() / w.sum(), float(w.sum())

    obj = Objective(model, loss_fn=loss_fn, data=(X, y, weights), batch_size=7)
    with torch.no_grad():
        ref = float(
            (weights * nn.functional.cross_entropy(model(X), y, reduction="none")).sum() / weights.sum()
        )
    assert obj.loss() == pytest.approx(ref, rel=1e-13)
    assert obj.total_weight == float(weights.sum())
    plain = Objective(
        model, loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), data=(X, y), batch_size=7
    )
    assert plain.loss() == pytest.approx(float(_full_batch(model, X, y)[1](plain.params)), rel=1e-13)


def test_bad_input_errors():
    X, y = _data()
    model = _mlp()
    X_nan = X.clone()
    X_nan[3, 0] = float("nan")
    with pytest.raises(NonFiniteLossError):
        Objective(model, "cross_entropy", (X_nan, y)).loss()
    with pytest.raises(FlatminimaError, match="empty"):
        Objective(model, "cross_entropy", (X[:0], y[:0]))
    with pytest.raises(FlatminimaError, match="no batches"):
        Objective(model, "cross_entropy", []).loss()
    with pytest.raises(FlatminimaError, match="different lengths"):
        Objective(model, "cross_entropy", (X, y[:10]))
    with pytest.raises(FlatminimaError, match="shapes"):
        Objective(model, "cross_entropy", (torch.randn(8, 7, dtype=torch.float64), y[:8])).loss()
    with pytest.raises(FlatminimaError, match="one-shot"):
        Objective(model, "cross_entropy", ((X[i : i + 10], y[i : i + 10]) for i in range(0, 50, 10)))
    with pytest.raises(FlatminimaError, match="exactly one"):
        Objective(model, data=(X, y))
    with pytest.raises(FlatminimaError, match="v must be"):
        Objective(model, "cross_entropy", (X, y)).hvp(torch.zeros(3))


# ----------------------------------------------------------------------------------- memory budget
def test_memory_budget_splits_batches_and_keeps_exact_values():
    X, y = _data(60)
    model = _mlp()
    ref = Objective(model, "cross_entropy", (X, y), batch_size=60)
    small = Objective(model, "cross_entropy", (X, y), batch_size=60, memory_mb=0.005)
    plan = small.memory_plan
    assert 1 <= plan.rows < 60 and plan.per_sample_bytes > 0
    # The plan spends at most the budget under its own memory model.
    assert plan.fixed_bytes + 3 * plan.rows * plan.per_sample_bytes <= 0.005 * 2**20
    v = torch.randn(ref.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert small.loss() == pytest.approx(ref.loss(), rel=1e-13)
    torch.testing.assert_close(small.grad(), ref.grad(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(small.hvp(v), ref.hvp(v), rtol=1e-12, atol=1e-14)
    assert small.n_batches == -(-60 // plan.rows)
    thetas = ref.params + 0.1 * torch.randn(
        9, ref.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    torch.testing.assert_close(small.loss_batched(thetas), ref.loss_batched(thetas), rtol=1e-12, atol=1e-14)
    assert small.theta_chunk(32) < 32  # the θ chunk shrank to the budget too


def test_memory_budget_per_sample_estimate_matches_saved_activations():
    # Linear(5→4), Tanh, Linear(4→3) + cross-entropy: per sample autograd saves the input row (5), the
    # tanh output (4, saved by tanh's backward and reused by the second Linear) and the logits' softmax
    # pieces; the slope must be at least the 5 + 4 doubles every sample certainly costs.
    X, y = _data(8)
    obj = Objective(_mlp(), "cross_entropy", (X, y), memory_mb=1)
    assert (5 + 4) * 8 <= obj.memory_plan.per_sample_bytes <= 64 * 8


def test_memory_budget_errors_and_graph_reuse():
    X, y = _data(60)
    with pytest.raises(FlatminimaError, match="memory_mb=1e-05 is too small"):
        Objective(_mlp(), "cross_entropy", (X, y), memory_mb=1e-5).loss()
    for bad in (0, -1, True, "1"):
        with pytest.raises(FlatminimaError, match="memory_mb"):
            Objective(_mlp(), "cross_entropy", (X, y), memory_mb=bad)
    bn = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    with pytest.raises(FlatminimaError, match="BatchNorm"):
        Objective(bn, "cross_entropy", (X, y), mode="train", memory_mb=1)
    roomy = Objective(_mlp(), "cross_entropy", (X, y), memory_mb=10)
    tight = Objective(_mlp(), "cross_entropy", (X, y), memory_mb=0.01)
    assert roomy.memory_plan.reuse_graph and not tight.memory_plan.reuse_graph
    v = torch.ones(roomy.dim, dtype=torch.float64)
    torch.testing.assert_close(roomy.hvp(v), tight.hvp(v), rtol=1e-12, atol=1e-14)
    assert roomy.describe()["chunk_rows"] >= 60  # the whole data set fits in one chunk


def test_loss_batched_on_a_conv_net_equals_the_point_by_point_loop():
    """Conv nets take the CPU loop path (vmap's grouped convolutions are slow there): same numbers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 3)).double()
    X, y = torch.randn(23, 1, 8, dtype=torch.float64), torch.randint(0, 3, (23,))
    obj = Objective(model, "cross_entropy", (X, y), batch_size=10)
    thetas = obj.params + 0.1 * torch.randn(5, obj.dim, dtype=torch.float64)
    expected = torch.tensor([obj.loss(t) for t in thetas], dtype=torch.float64)
    assert torch.allclose(obj.loss_batched(thetas, chunk_size=2), expected, rtol=1e-12, atol=0)


def test_function_and_data_objectives_are_one_objective_with_different_sources():
    from flatminima.objective import HVP_BACKENDS, FunctionObjective

    f = Objective.from_function(lambda x: (x**4).sum() + x[0] * x[1], torch.tensor([1.0, 2.0], dtype=torch.float64))
    X, y = _data()
    data = Objective(_mlp(), "cross_entropy", (X, y))
    assert type(f) is FunctionObjective  # the same Objective, built with a one-batch source and f(θ) as its terms
    assert isinstance(f, Objective) and isinstance(data, Objective)
    assert set(HVP_BACKENDS) == {"double_backward", "cached", "forward_over_reverse"}
    torch.testing.assert_close(f.hvp(torch.tensor([1.0, 0.0], dtype=torch.float64)),
                               torch.tensor([12.0, 1.0], dtype=torch.float64))
    with f.meter() as cost, f.reserve(4, "a test") as planned:
        f.loss(), f.grad()
    assert planned is None and (cost.losses, cost.grads, cost.data_passes) == (1, 1, 2.0)
    assert not f.has_model and not f.has_outputs and data.has_model and data.has_outputs
    for call in (f.model_at, lambda: f.working_model, lambda: f.ggn_vp(f.params), lambda: f.outputs(None, None)):
        with pytest.raises(FlatminimaError):
            call()
    assert f.replace(name="quartic").describe()["function"] == "quartic"


def test_with_fixed_views_do_not_share_cached_graphs():
    X, y = _data()
    obj = Objective(_mlp(), "cross_entropy", (X, y), reuse_graph=True)
    v = torch.ones(obj.dim, dtype=torch.float64)
    obj.hvp(v)
    assert obj.graph_cache.held
    view = obj.with_fixed({})
    assert view.graph_cache is not obj.graph_cache and not view.graph_cache.held
    torch.testing.assert_close(view.hvp(v), obj.hvp(v), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["cross_entropy", "mse"])
def test_named_losses_are_the_ones_training_and_studies_use(name):
    """One loss per name: the Objective's named loss equals flatminima.train's over all data (class labels
    regressed as one-hot vectors for "mse"), so a model is measured on the loss it was trained with."""
    from flatminima.train.losses import loss_function

    X, y = _data()
    model = _mlp()
    with torch.no_grad():
        expected = float(loss_function(name)(model(X), y))
    got = Objective(model, name, (X, y), batch_size=7).loss()  # a last partial batch: still the exact mean
    assert got == pytest.approx(expected, rel=1e-12)


def test_mse_compares_a_flat_target_entry_by_entry_not_broadcast():
    model = nn.Linear(3, 1).double()
    X = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randn(10, dtype=torch.float64)  # (N,) targets for (N, 1) outputs
    expected = float(((model(X)[:, 0] - y) ** 2).mean().detach())
    assert Objective(model, "mse", (X, y), batch_size=4).loss() == pytest.approx(expected, rel=1e-12)


def test_progress_bars_follow_the_meter_without_touching_the_objective(monkeypatch):
    """count_products subscribes to the meter: every product (Hessian or GGN, through the objective or its
    operator view) moves the bar, and the objective's methods are never replaced."""
    from flatminima import progress

    steps = []

    @contextlib.contextmanager
    def bar(total, description, *, enabled=True):
        yield lambda by=1.0, **info: steps.append(by)

    monkeypatch.setattr(progress, "progress_bar", bar)
    X, y = _data()
    obj = Objective(_mlp(), "cross_entropy", (X, y))
    v = torch.ones(obj.dim, dtype=torch.float64)
    with progress.count_products(obj, None, "products"):
        obj.hvp(v), obj.ggn_vp(v), obj.loss()
        obj.hessian @ torch.ones(obj.dim, 2, dtype=torch.float64)
    obj.hvp(v)  # after the block: no longer followed
    assert steps == [1, 1, 1, 1] and "hvp" not in vars(obj) and "ggn_vp" not in vars(obj)


def test_an_objective_survives_pickling_with_its_graph_cache_rebuilt():
    import pickle

    X, y = _data()
    obj = Objective(_mlp(), "cross_entropy", (X, y), reuse_graph=True, memory_mb=64)
    v = torch.ones(obj.dim, dtype=torch.float64)
    hv = obj.hvp(v)
    assert obj.graph_cache.held
    copy_ = pickle.loads(pickle.dumps(obj))
    assert not copy_.graph_cache.held and copy_.loss() == obj.loss()
    torch.testing.assert_close(copy_.hvp(v), hv, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reuse", [False, True])
def test_one_hvp_stays_within_the_objective_packages_few_modules(reuse):
    """One product enters the Objective (checks, reduction) and the meter once, and per batch only three
    modules: the product loop, the batch source and the loss terms."""
    import sys
    from collections import Counter
    from pathlib import Path

    import flatminima

    root = Path(flatminima.__file__).parent
    X, y = _data()

    def modules_entered(batch_size: int) -> Counter:
        obj = Objective(_mlp(), "cross_entropy", (X, y), batch_size=batch_size, reuse_graph=reuse)
        v = torch.ones(obj.dim, dtype=torch.float64)
        obj.hvp(v)  # the first pass runs the one-off checks (and builds the cached graph)
        calls: Counter = Counter()

        def profile(frame, event, arg):
            path = Path(frame.f_code.co_filename)
            if event == "call" and path.is_relative_to(root):
                calls[path.relative_to(root).as_posix()] += 1

        sys.setprofile(profile)
        try:
            obj.hvp(v * 2)
        finally:
            sys.setprofile(None)
        return calls

    few, many = modules_entered(25), modules_entered(5)  # 2 batches, then 10
    per_batch = {m for m in many if many[m] > few[m]}  # the modules entered again for every batch
    allowed = {"objective/_products.py", "objective/_batches.py", "objective/_terms.py"}
    assert per_batch <= allowed, (
        f"{sorted(per_batch - allowed)} entered once per batch: per batch a product crosses only the product loop, "
        "the batch source and the loss terms; enter anything else once per operation (in _objective)", few, many)
    assert few["objective/_meter.py"] == many["objective/_meter.py"] > 0  # the product is recorded once
