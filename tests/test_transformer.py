"""Dict-batch transformers through loss_fn: exact target weighting, exact Hessian products, HF models."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import hessian
from torch.func import functional_call

from flatminima import Objective, curvature
from flatminima.errors import FlatminimaError
from flatminima.models.transformer import (
    IGNORE_INDEX,
    SequenceClassifier,
    TransformerLM,
    classification_loss,
    lm_loss,
    mse_loss,
    toy_lm_batches,
    toy_regression_batches,
)


def _lm(d_model: int = 4, n_heads: int = 2, vocab_size: int = 8):
    torch.manual_seed(0)
    return TransformerLM(
        vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, n_layers=1, max_len=8
    ).double()


def _global_token_mean(model, batches, params=None):
    """Reference: one cross-entropy over every target token of every batch, concatenated."""
    logits, labels = [], []
    for b in batches:
        out = (
            model(b["input_ids"], b["attention_mask"])
            if params is None
            else functional_call(model, params, (b["input_ids"], b["attention_mask"]))
        )
        lab = b["labels"][:, 1:].masked_fill(b["attention_mask"][:, 1:] == 0, IGNORE_INDEX)
        logits.append(out[:, :-1].reshape(-1, out.shape[-1]))
        labels.append(lab.reshape(-1))
    return torch.nn.functional.cross_entropy(torch.cat(logits), torch.cat(labels), ignore_index=IGNORE_INDEX)


def test_lm_loss_weights_by_target_tokens():
    model, batches = _lm(), toy_lm_batches(10, 8, 8, batch_size=3, seed=1)  # padding + partial last batch
    obj = Objective(model, loss_fn=lm_loss, data=batches)
    with torch.no_grad():
        ref = float(_global_token_mean(model, batches))
    assert obj.loss() == pytest.approx(ref, rel=1e-12)
    tokens = sum(int((b["attention_mask"][:, 1:] == 1).sum()) for b in batches)
    assert obj.total_weight == tokens
    with torch.no_grad():
        per_batch = sum(float(lm_loss(model, b)[0]) for b in batches) / len(batches)
    assert abs(per_batch - ref) > 1e-6  # the weighting matters on this data: a mean of batch means is wrong


def test_lm_hvp_and_eigenvalues_match_dense_hessian():
    model, batches = _lm(d_model=2, n_heads=1, vocab_size=5), toy_lm_batches(6, 6, 5, batch_size=4, seed=2)
    obj = Objective(model, loss_fn=lm_loss, data=batches)
    names, shapes = obj.param_names, obj.param_shapes

    def f(theta):
        parts = torch.split(theta, [s.numel() for s in shapes])
        named = {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        return _global_token_mean(model, batches, named)

    # torch.autograd.functional.hessian (dense, double backward): torch.func.hessian (vmap of jvp over
    # jacrev) disagrees with it and with finite differences on the LayerNorm weights in torch 2.13.
    H = hessian(f, obj.params, vectorize=True)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(v), H @ v, rtol=1e-9, atol=1e-11)
    eps = 1e-5  # and an independent check: central differences of the gradient
    fd = (obj.grad(obj.params + eps * v) - obj.grad(obj.params - eps * v)) / (2 * eps)
    torch.testing.assert_close(obj.hvp(v), fd, rtol=1e-5, atol=1e-7)
    top = curvature.eigenvalues(obj, 1, tol=1e-9).values[0]
    assert top == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-7)


def test_memory_budget_splits_dict_batches_exactly():
    model, batches = _lm(), toy_lm_batches(12, 8, 8, batch_size=12, seed=3)
    ref = Objective(model, loss_fn=lm_loss, data=batches)
    small = Objective(model, loss_fn=lm_loss, data=batches, memory_mb=0.05)
    assert small.memory_plan.rows < 12
    v = torch.randn(ref.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert small.loss() == pytest.approx(ref.loss(), rel=1e-12)
    torch.testing.assert_close(small.hvp(v), ref.hvp(v), rtol=1e-10, atol=1e-12)
    assert small.n_batches > ref.n_batches
    thetas = ref.params + 0.05 * torch.randn(
        4, ref.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    torch.testing.assert_close(
        small.loss_batched(thetas), torch.tensor([ref.loss(t) for t in thetas], dtype=torch.float64)
    )


def test_regression_weights_by_targets_and_masks_padding():
    torch.manual_seed(1)
    seq = SequenceClassifier(
        vocab_size=8, num_outputs=1, d_model=4, n_heads=2, n_layers=1, max_len=8
    ).double()
    batches = toy_regression_batches(10, 8, 8, batch_size=4, seed=4)
    obj = Objective(seq, loss_fn=mse_loss, data=batches)
    pred = torch.cat([seq(b["input_ids"], b["attention_mask"]).reshape(-1) for b in batches]).detach()
    target = torch.cat([b["labels"] for b in batches]).double()
    assert obj.loss() == pytest.approx(float(((pred - target) ** 2).mean()), rel=1e-12)
    assert obj.total_weight == 10
    # Token-level targets: padding positions carry no target.
    lm = _lm()
    b = toy_lm_batches(4, 8, 8, batch_size=4, seed=5)[0]
    y = torch.randn(4, 8, 8, dtype=torch.float64)
    value, count = mse_loss(lm, {**b, "labels": y})
    mask = b["attention_mask"].bool()
    out = lm(b["input_ids"], b["attention_mask"]).detach()
    assert count == int(mask.sum()) * 8
    assert float(value) == pytest.approx(float(((out - y)[mask] ** 2).mean()), rel=1e-12)


def test_sequence_classification_and_batched_loss():
    torch.manual_seed(2)
    clf = SequenceClassifier(
        vocab_size=8, num_outputs=3, d_model=4, n_heads=2, n_layers=1, max_len=8
    ).double()
    batches = toy_lm_batches(7, 8, 8, batch_size=3, seed=6)
    batches = [{**b, "labels": b["input_ids"][:, 0] % 3} for b in batches]
    obj = Objective(clf, loss_fn=classification_loss, data=batches)
    logits = torch.cat([clf(b["input_ids"], b["attention_mask"]) for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    assert obj.loss() == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-12)
    thetas = obj.params + 0.1 * torch.randn(
        3, obj.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    torch.testing.assert_close(
        obj.loss_batched(thetas), torch.tensor([obj.loss(t) for t in thetas], dtype=torch.float64)
    )


def test_padding_does_not_change_outputs_of_real_tokens():
    model = _lm()
    ids = torch.tensor([[1, 2, 3, 0, 0]])
    short = model(ids[:, :3])
    padded = model(ids, torch.tensor([[1, 1, 1, 0, 0]]))
    torch.testing.assert_close(padded[:, :3], short)
    assert torch.isfinite(padded).all()


def test_bad_input():
    with pytest.raises(FlatminimaError, match="divisible"):
        TransformerLM(d_model=6, n_heads=4)
    model = _lm()
    with pytest.raises(FlatminimaError, match="max_len"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(FlatminimaError, match="labels"):
        mse_loss(model, {"input_ids": torch.zeros(1, 4, dtype=torch.long)})
    with pytest.raises(FlatminimaError, match="input_ids"):
        lm_loss(model, (torch.zeros(1, 4), torch.zeros(1)))


def test_huggingface_model_through_the_same_loss():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=8, n_positions=8, n_embd=8, n_layer=1, n_head=2, attn_implementation="eager"
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).double().eval()
    batches = toy_lm_batches(5, 8, 8, batch_size=5, seed=7)
    b = batches[0]
    ours, count = lm_loss(model, b)
    theirs = model(
        input_ids=b["input_ids"],
        attention_mask=b["attention_mask"],
        labels=b["labels"].masked_fill(b["attention_mask"] == 0, IGNORE_INDEX),
    ).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)  # HF computes its loss in float32
    obj = Objective(model, loss_fn=lm_loss, data=batches)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hv = obj.hvp(v)
    eps = 1e-5  # central difference of the exact gradient: H v = (g(θ+εv) − g(θ−εv)) / 2ε + O(ε²)
    fd = (obj.grad(obj.params + eps * v) - obj.grad(obj.params - eps * v)) / (2 * eps)
    # HF casts parts of the computation to float32 (masks, loss): a relative error, not an exact match.
    assert float((hv - fd).norm() / hv.norm()) < 1e-4
