"""Hugging Face models built from tiny configs (no downloads): exact products with SDPA (the default, run on the
math backend inside the Objective) and with eager attention."""

from __future__ import annotations

import os

import pytest
import torch
from torch.func import functional_call

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from flatminima import Objective  # noqa: E402
from flatminima.models.transformer import classification_loss, lm_loss  # noqa: E402


def _bert(attn: str | None):
    cfg = transformers.BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=8, max_position_embeddings=8, num_labels=2,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if attn is not None:
        cfg._attn_implementation = attn
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg).double().eval()


def _gpt2(attn: str | None):
    cfg = transformers.GPT2Config(vocab_size=11, n_embd=8, n_layer=1, n_head=2, n_positions=8, bos_token_id=0,
                                  eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if attn is not None:
        cfg._attn_implementation = attn
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).double().eval()


def _batches(labels: str):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 11, (6, 5), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 3:] = 0
    y = torch.randint(0, 2, (6,), generator=gen) if labels == "class" else ids
    return [{"input_ids": ids[i:i + 3], "attention_mask": mask[i:i + 3], "labels": y[i:i + 3]} for i in (0, 3)]


def _dense_hessian(obj: Objective, model, loss_fn, batches):
    """Dense Hessian over the selected block of the token/sequence-weighted mean, written out here."""
    theta0 = obj.params
    shapes = obj.param_shapes

    def f(t):
        parts = torch.split(t, [s.numel() for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(obj.param_names, parts, shapes, strict=True)}
        total, count = 0.0, 0
        for b in batches:
            mean, n = loss_fn(_Wrapped(model, params), b)
            total, count = total + mean * n, count + n
        return total / count

    return theta0, f, torch.autograd.functional.hessian(f, theta0)


class _Wrapped(torch.nn.Module):
    def __init__(self, model, params):
        super().__init__()
        self.model, self.params = model, params

    def forward(self, **kwargs):
        return functional_call(self.model, self.params, (), kwargs)


@pytest.mark.parametrize("build,loss_fn,labels,block", [
    (_bert, classification_loss, "class", "classifier.*"),
    (_gpt2, lm_loss, "lm", "transformer.h.0.attn.c_attn.*"),
])
def test_default_sdpa_attention_and_eager_are_exact(build, loss_fn, labels, block):
    batches = _batches(labels)
    sdpa = Objective(build(None), loss_fn=loss_fn, data=batches, params=block)
    model = build("eager")
    obj = Objective(model, loss_fn=loss_fn, data=batches, params=block)
    theta, f, H = _dense_hessian(obj, model, loss_fn, batches)
    assert obj.loss() == pytest.approx(float(f(theta).detach()), rel=1e-12)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(v), H @ v, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(sdpa.hvp(v), H @ v, rtol=1e-9, atol=1e-11)  # SDPA's math backend: same numbers
    assert sdpa.loss() == pytest.approx(obj.loss(), rel=1e-12)
    fo = obj.replace(hvp_method="forward_over_reverse")
    torch.testing.assert_close(fo.hvp(v), H @ v, rtol=1e-9, atol=1e-11)
