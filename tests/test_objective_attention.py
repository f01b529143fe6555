"""Attention models with PyTorch SDPA (math backend inside the Objective) and an op without a second
derivative: exact products against dense Hessians written out here, and the message that names the op."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F  # noqa: N812
from torch.nn.attention import SDPBackend, sdpa_kernel

from flatminima import Objective
from flatminima.curvature import eigenvalues
from flatminima.errors import FlatminimaError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Decoder(nn.Module):
    """One causal self-attention block and a linear head; ``explicit`` writes attention out as
    softmax(QKᵀ/√d + causal mask)V instead of calling F.scaled_dot_product_attention (the reference)."""

    def __init__(self, vocab: int = 7, d: int = 8, heads: int = 2, explicit: bool = False, fused: bool = False):
        super().__init__()
        self.emb, self.qkv, self.out = nn.Embedding(vocab, d), nn.Linear(d, 3 * d), nn.Linear(d, vocab)
        self.heads, self.explicit, self.fused = heads, explicit, fused

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in self.qkv(x).chunk(3, -1))
        if self.explicit:
            mask = torch.ones(t, t, dtype=torch.bool).tril()
            scores = (q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5).masked_fill(~mask, float("-inf"))
            a = scores.softmax(-1) @ v
        elif self.fused:  # the CPU flash kernel called directly: no sdpa_kernel switch reaches it
            a = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, is_causal=True)[0]
        else:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(a.transpose(1, 2).reshape(b, t, d))


def lm_loss_fn(model: nn.Module, batch: tuple) -> torch.Tensor:
    ids, = batch
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def _ids() -> list[tuple[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (6, 6), generator=gen)
    return [(ids[:3],), (ids[3:],)]


class _Call(nn.Module):
    """``loss_fn(model, batch)`` as a module, so functional_call swaps the parameters loss_fn's model sees."""

    def __init__(self, model: nn.Module, loss_fn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def _dense(obj: Objective, model: nn.Module, loss_fn, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """(L(θ₀), ∇²L(θ₀)) of the row-weighted mean of loss_fn over the batches (as the Objective defines it for a
    loss_fn returning batch means), written out here, differentiated twice by autograd in float64."""
    call, shapes = _Call(model, loss_fn), obj.param_shapes

    def f(t: torch.Tensor) -> torch.Tensor:
        parts = torch.split(t, [s.numel() for s in shapes])
        params = {"model." + n: p.view(s) for n, p, s in zip(obj.param_names, parts, shapes, strict=True)}
        total, rows = 0.0, 0
        for b in batches:
            n = next(iter(b.values() if isinstance(b, dict) else b)).shape[0]
            total, rows = total + n * functional_call(call, params, (b,)), rows + n
        return total / rows

    theta = obj.params
    # Plain autograd, one double backward per row: torch.func's transforms (hessian = jacfwd∘jacrev, and even
    # jacrev∘jacrev, vmapped) give wrong second derivatives through layer_norm's weight here (torch 2.13;
    # checked against central differences of the gradient), and BERT's LayerNorm is in the block.
    return f(theta).detach(), torch.autograd.functional.hessian(f, theta)


def _random(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_sdpa_decoder_products_and_top_eigenvalue_are_exact():
    torch.manual_seed(0)
    model = Decoder().double()
    reference = Decoder(explicit=True).double()
    reference.load_state_dict(model.state_dict())
    batches = _ids()
    obj = Objective(model, loss_fn=lm_loss_fn, data=batches)
    value, H = _dense(obj, reference, lm_loss_fn, batches)  # softmax attention written out: independent
    assert obj.loss() == pytest.approx(float(value), rel=1e-12)
    v = _random(obj.dim)
    torch.testing.assert_close(obj.hvp(v), H @ v, rtol=1e-9, atol=1e-11)
    top = eigenvalues(obj, k=1, tol=1e-8)
    assert float(top.values[0]) == pytest.approx(float(torch.linalg.eigvalsh(H.detach())[-1]), rel=1e-7)
    assert "math SDPA" in obj.describe()["attention"]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_transformer_encoder_eval_and_train_mode(mode):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    model = nn.Sequential()
    model.enc, model.head = nn.TransformerEncoder(layer, 1, enable_nested_tensor=True), nn.Linear(8, 3)
    model = model.double()

    def loss_fn(m: nn.Module, batch: tuple) -> torch.Tensor:
        x, pad, y = batch  # padded positions count in the mean: the MHA fast path would zero them
        return F.cross_entropy(m.head(m.enc(x, src_key_padding_mask=pad)).reshape(-1, 3), y.reshape(-1))

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 8, generator=gen, dtype=torch.float64)
    pad = torch.zeros(4, 5, dtype=torch.bool)
    pad[0, 3:] = True
    y = torch.randint(0, 3, (4, 5), generator=gen)
    batches = [(x[:2], pad[:2], y[:2]), (x[2:], pad[2:], y[2:])]
    obj = Objective(model, loss_fn=loss_fn, data=batches, mode=mode, params="enc.layers.0.self_attn.*")
    model.train(mode == "train")
    with sdpa_kernel([SDPBackend.MATH]):  # the reference: the same math, differentiated by torch.func
        value, H = _dense(obj, model, loss_fn, batches)
    assert obj.loss() == pytest.approx(float(value), rel=1e-12)  # no fast path in loss() (no_grad)
    v = _random(obj.dim)
    torch.testing.assert_close(obj.hvp(v), H @ v, rtol=1e-9, atol=1e-11)
    top = eigenvalues(obj, k=1, tol=1e-8)
    assert float(top.values[0]) == pytest.approx(float(torch.linalg.eigvalsh(H.detach())[-1]), rel=1e-7)


transformers = pytest.importorskip("transformers")


def _hf_batches():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 11, (4, 5), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 3:] = 0
    return [{"input_ids": ids[i:i + 2], "attention_mask": mask[i:i + 2], "labels": ids[i:i + 2] % 2}
            for i in (0, 2)]


def _gpt2(attn: str | None):
    cfg = transformers.GPT2Config(vocab_size=11, n_embd=8, n_layer=1, n_head=2, n_positions=8, bos_token_id=0,
                                  eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if attn:
        cfg._attn_implementation = attn
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).double().eval()


def _bert(attn: str | None):
    cfg = transformers.BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=8, max_position_embeddings=8, num_labels=2,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if attn:
        cfg._attn_implementation = attn
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg).double().eval()


def _hf_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    if out.dim() == 3:  # GPT-2: next-token loss on the real tokens
        keep = batch["attention_mask"][:, 1:].reshape(-1).bool()
        targets = batch["input_ids"][:, 1:].reshape(-1)[keep]
        return F.cross_entropy(out[:, :-1].reshape(-1, out.shape[-1])[keep], targets)
    return F.cross_entropy(out, batch["labels"][:, 0])


@pytest.mark.parametrize("build,block", [(_gpt2, "transformer.h.0.attn.*"),
                                         (_bert, "bert.encoder.layer.0.attention.*")])
def test_hugging_face_default_sdpa_equals_eager_dense_hessian(build, block):
    batches = _hf_batches()
    model = build(None)
    assert model.config._attn_implementation == "sdpa"  # the default
    obj = Objective(model, loss_fn=_hf_loss, data=batches, params=block)
    eager = build("eager")
    value, H = _dense(obj, eager, _hf_loss, batches)
    v = _random(obj.dim)
    torch.testing.assert_close(obj.hvp(v), H @ v, rtol=1e-9, atol=1e-11)
    top = eigenvalues(obj, k=1, tol=1e-8)
    assert float(top.values[0]) == pytest.approx(float(torch.linalg.eigvalsh(H.detach())[-1]), rel=1e-7)
    assert obj.describe()["attention"].startswith("math SDPA")


def test_attention_without_second_derivatives_names_what_and_both_ways_out():
    model = _gpt2(None)
    model.config._attn_implementation = "flex_attention"  # as if built so: refused before any work
    obj = Objective(model, loss_fn=_hf_loss, data=_hf_batches(), params="transformer.ln_f.*")
    with pytest.raises(FlatminimaError, match="flex_attention") as err:
        obj.hvp(torch.ones(obj.dim, dtype=torch.float64))
    assert "eager" in str(err.value) and "finite_difference" in str(err.value)
    # a plain PyTorch model with a kernel that has no double backward: the op and both ways out, no HF advice
    fused = Objective(Decoder(fused=True).double(), loss_fn=lm_loss_fn, data=_ids())
    with pytest.raises(FlatminimaError, match="_scaled_dot_product_flash_attention_for_cpu") as err:
        fused.hvp(torch.ones(fused.dim, dtype=torch.float64))
    assert "finite_difference" in str(err.value) and "eager/math" in str(err.value)
