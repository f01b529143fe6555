"""Values at many points: the CPU loop, vmap and the input-layer identity against point-by-point references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cases import tiny_data, tiny_mlp
from flatminima import FlatminimaError, Objective
from flatminima.objective import Span, values_at
from flatminima.objective._pointwise import _InputLayers, _loss_of


def _data(n=90, shape=(6,), classes=3, seed=0):
    return tiny_data(n, shape, classes, seed)


def _mlp(seed=0):
    return nn.Sequential(nn.Flatten(), *tiny_mlp(6, 8, 3, seed=seed))  # Flatten first: names 1.weight, ...


def _cnn1d(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 3, 3, padding=1, padding_mode="circular"), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 6, 3)).double()


def _cnn2d(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).double()


class _ScaledInput(nn.Module):
    """A Linear whose input depends on θ (a learned input scale): the identity must not be used on it."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(6))
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(x * self.scale)


class _Tied(nn.Module):
    """One Linear called twice per forward: not a single input layer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(torch.tanh(self.fc(x)))))


def _span(obj, points=7, k=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    vectors = 0.3 * torch.randn(k, obj.dim, generator=g, dtype=torch.float64)
    coefs = torch.rand(points, k, generator=g, dtype=torch.float64) * 4 - 2
    return Span(obj.params, vectors, coefs)


def _reference(obj, span):
    thetas = span.rows(0, len(span))
    losses = torch.tensor([obj.loss(t) for t in thetas], dtype=torch.float64)
    X, y = obj._reference_data
    accs = torch.tensor([float((obj.model_at(t)(X).argmax(-1) == y).double().mean()) for t in thetas],
                        dtype=torch.float64)
    return losses, accs


def _objective(model, shape, batch_size=32):
    X, y = _data(shape=shape)
    obj = Objective(model, "cross_entropy", (X, y), batch_size=batch_size)
    obj._reference_data = (X, y)
    return obj


@pytest.mark.parametrize(("build", "shape"), [(_mlp, (6,)), (_cnn1d, (1, 6)), (_cnn2d, (2, 4, 4)),
                                               (_ScaledInput, (6,)), (_Tied, (6,))])
@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_loss_and_accuracy_equal_the_point_by_point_loop(build, shape, engine):
    obj = _objective(build().double(), shape)
    span = _span(obj)
    losses, accs = _reference(obj, span)
    got_loss, got_acc = values_at(obj, span, ["loss", "accuracy"], chunk_size=4, engine=engine)
    torch.testing.assert_close(got_loss, losses, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(got_acc, accs, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("build", "shape", "layer"), [(_mlp, (6,), "1"), (_cnn1d, (1, 6), "0"),
                                                        (_cnn2d, (2, 4, 4), "0")])
def test_input_layer_identity_is_found_and_exact(build, shape, layer):
    obj = _objective(build(), shape)
    span = _span(obj)
    batch = next(iter(obj.batches()))
    found = _InputLayers.find(obj, span, batch, _loss_of(obj), memory_mb=512)
    assert found is not None
    named = dict(obj.working_model.named_modules())
    assert [m for m, _, _ in found.layers] == [named[layer]]
    fast = values_at(obj, span, ["loss"])[0]
    plain = values_at(obj, span, ["loss"], shortcut=False)[0]
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("build", "why"), [(_ScaledInput, "input depends on θ"), (_Tied, "called twice")])
def test_input_layer_identity_refuses_layers_it_cannot_serve(build, why):
    obj = _objective(build().double(), (6,))
    batch = next(iter(obj.batches()))
    found = _InputLayers.find(obj, _span(obj), batch, _loss_of(obj), memory_mb=512)
    assert found is None, why


def test_input_layer_identity_respects_the_memory_budget():
    obj = _objective(_mlp(), (6,))
    batch = next(iter(obj.batches()))
    assert _InputLayers.find(obj, _span(obj), batch, _loss_of(obj), memory_mb=1e-6) is None


def test_model_and_parameters_are_restored_even_when_the_forward_fails():
    obj = _objective(_mlp(), (6,))
    before = {k: v.clone() for k, v in obj.working_model.state_dict().items()}
    data_ptrs = [p.data_ptr() for p in obj.working_model.parameters()]
    values_at(obj, _span(obj), ["loss"])
    obj._source.stored_batches = [(torch.randn(4, 5, dtype=torch.float64), torch.zeros(4, dtype=torch.long))]  # wrong
    with pytest.raises(FlatminimaError, match="forward failed"):
        values_at(obj, _span(obj), ["loss"], shortcut=False)
    after = obj.working_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.data_ptr() for p in obj.working_model.parameters()] == data_ptrs


def test_loss_fn_user_losses_and_ignored_targets_match_the_reference():
    X, y = _data()
    y[::7] = -100  # ignore_index: the fast cross-entropy must hand these batches to F.cross_entropy

    def loss_fn(model, batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1]), int((batch[1] >= 0).sum())

    def summed(z, t):  # not a per-row mean: batches must not be merged for it
        return nn.functional.cross_entropy(z, t.clamp(min=0), reduction="sum")

    for obj in (Objective(_mlp(), "cross_entropy", (X, y), batch_size=32),
                Objective(_mlp(), summed, (X, y), batch_size=32),
                Objective(_mlp(), loss_fn=loss_fn, data=(X, y), batch_size=32)):
        span = _span(obj)
        ref = torch.tensor([obj.loss(t) for t in span.rows(0, len(span))], dtype=torch.float64)
        torch.testing.assert_close(values_at(obj, span, ["loss"])[0], ref, rtol=1e-12, atol=1e-13)


def test_matrix_points_progress_and_cost():
    obj = _objective(_mlp(), (6,))
    thetas = _span(obj, points=5).rows(0, 5)
    seen = []
    with obj.meter() as cost:
        values = values_at(obj, thetas, ["loss"], chunk_size=2, on_progress=seen.append)[0]
    torch.testing.assert_close(values, torch.tensor([obj.loss(t) for t in thetas], dtype=torch.float64))
    assert seen == sorted(seen) and seen[-1] == 5
    assert cost.batched_points == 5 and cost.data_passes == 3  # ⌈5 / 2⌉ chunks, one pass each


def test_bad_points_are_refused():
    obj = _objective(_mlp(), (6,))
    with pytest.raises(FlatminimaError, match="shape"):
        values_at(obj, torch.zeros(3, obj.dim + 1, dtype=torch.float64))
    with pytest.raises(FlatminimaError, match="no points"):
        values_at(obj, torch.zeros(0, obj.dim, dtype=torch.float64))
    with pytest.raises(FlatminimaError, match="coefs"):
        values_at(obj, Span(obj.params, torch.zeros(2, obj.dim), torch.zeros(3, 3)))
    with pytest.raises(FlatminimaError, match="engine"):
        values_at(obj, obj.params[None], engine="gpu")
    with pytest.raises(FlatminimaError, match="chunk_size"):
        values_at(obj, obj.params[None], chunk_size=0)


def test_streamed_data_and_train_mode_leave_the_model_untouched():
    X, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32)
    net = tiny_mlp(6, 8, 3, norm=nn.BatchNorm1d)
    for obj in (Objective(net, "cross_entropy", loader), Objective(net, "cross_entropy", (X, y), mode="train")):
        span = _span(obj)
        ref = torch.tensor([obj.loss(t) for t in span.rows(0, len(span))], dtype=torch.float64)
        before = {k: v.clone() for k, v in obj.working_model.state_dict().items()}
        torch.testing.assert_close(values_at(obj, span, ["loss"])[0], ref, rtol=1e-12, atol=1e-13)
        after = obj.working_model.state_dict()  # train-mode forwards moved BatchNorm statistics: restored
        assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(("params", "shortcut_used"), [("1.*", True), ("3.*", False)])
def test_a_parameter_selection_is_respected(params, shortcut_used):
    X, y = _data()
    obj = Objective(_mlp(), "cross_entropy", (X, y), batch_size=32, params=params)
    span = _span(obj)
    batch = next(iter(obj.batches()))
    assert (_InputLayers.find(obj, span, batch, _loss_of(obj), memory_mb=512) is not None) == shortcut_used
    ref = torch.tensor([obj.loss(t) for t in span.rows(0, len(span))], dtype=torch.float64)
    torch.testing.assert_close(values_at(obj, span, ["loss"])[0], ref, rtol=1e-12, atol=1e-13)


def test_batches_with_shared_tensors_are_not_merged():
    X, y = _data()
    scale = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)  # one tensor shared by every batch, not per row

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x, s):
            return self.net(x * s)

    batches = [(X[i:i + 32], scale, y[i:i + 32]) for i in range(0, 90, 32)]
    obj = Objective(Scaled(), "cross_entropy", batches)
    span = _span(obj)
    ref = torch.tensor([obj.loss(t) for t in span.rows(0, len(span))], dtype=torch.float64)
    torch.testing.assert_close(values_at(obj, span, ["loss"])[0], ref, rtol=1e-12, atol=1e-13)
