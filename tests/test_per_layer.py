"""Per-layer curvature against dense block Hessians (torch.func.hessian, float64, tiny models)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from cases import tiny_problem
from flatminima import Objective
from flatminima.curvature import blocks_of, per_layer
from flatminima.errors import FlatminimaError


def _tiny():
    return tiny_problem(3, 4, 3, n=40, seed=0, data_seed=1)


def _dense_block(model, x, y, names):
    """Dense Hessian of the mean cross-entropy over the tensors ``names`` (the others fixed)."""
    params = dict(model.named_parameters())
    fixed = {n: p.detach() for n, p in params.items() if n not in names}
    shapes = [params[n].shape for n in names]
    theta = torch.cat([params[n].detach().reshape(-1) for n in names])

    def f(t):
        parts = torch.split(t, [s.numel() for s in shapes])
        state = fixed | {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        return nn.functional.cross_entropy(functional_call(model, state, (x,)), y)

    return hessian(f)(theta)


def test_lambda_max_and_exact_trace_match_dense_blocks():
    model, x, y = _tiny()
    obj = Objective(model, "cross_entropy", (x, y), batch_size=16)
    res = per_layer(obj, samples=200, method="hutch++", tol=1e-10, progress=False)
    assert [b.name for b in res.layers] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for block in res.layers:
        H = _dense_block(model, x, y, block.params)
        assert block.size == H.shape[0]
        assert block.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(H).max()), rel=1e-8, abs=1e-12)
        # probes >= 3·size: the Hutch++ sketch spans the block, so the trace is exact
        assert block.trace == pytest.approx(float(torch.trace(H)), rel=1e-8, abs=1e-12)
    assert res.complete
    assert sum(b.share for b in res.layers) == pytest.approx(1.0, abs=1e-12)
    assert res.total_trace == pytest.approx(float(torch.trace(_dense_block(model, x, y, obj.param_names))),
                                            rel=1e-8)


def test_hutchinson_trace_within_its_standard_error():
    model, x, y = _tiny()
    obj = Objective(model, "cross_entropy", (x, y))
    res = per_layer(obj, samples=60, seed=3, progress=False)
    for block in res.layers:
        exact = float(torch.trace(_dense_block(model, x, y, block.params)))
        assert block.trace_stderr > 0 or block.size == 1
        assert abs(block.trace - exact) <= 4 * block.trace_stderr + 1e-10
    assert sum(b.share for b in res.layers) == pytest.approx(1.0, abs=1e-12)
    assert res.cost.hvps > 0 and all(b.cost.hvps > 0 for b in res.layers)


def test_module_grouping_and_subsets():
    model, x, y = _tiny()
    obj = Objective(model, "cross_entropy", (x, y))
    assert blocks_of(obj, "module") == {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}
    res = per_layer(obj, group="module", samples=100, method="hutch++", tol=1e-10, progress=False)
    for block in res.layers:
        H = _dense_block(model, x, y, block.params)
        assert block.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(H).max()), rel=1e-8)
    sub = per_layer(obj, blocks="2.*", samples=20, progress=False)
    assert not sub.complete and [b.name for b in sub.layers] == ["2.weight", "2.bias"]
    with pytest.raises(FlatminimaError, match="matches no parameter"):
        per_layer(obj, blocks="nope*", progress=False)
    with pytest.raises(FlatminimaError, match="group"):
        per_layer(obj, group="layer", progress=False)


def test_builtin_cnn_plot_and_dict(tmp_path):
    from flatminima.models import build

    torch.manual_seed(0)
    net = build("cnn1d", (40,), 10)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 40, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    obj = Objective(net, "cross_entropy", (x, y))
    res = per_layer(obj, samples=4, max_iter=20, progress=False, meta={"model": "cnn1d"})
    assert len(res.layers) == len(list(net.parameters()))
    files = res.plot(str(tmp_path / "pl"))
    assert {p.rsplit(".", 1)[1] for p in files} == {"png", "svg", "csv"}
    d = res.to_dict()
    assert d["layers"][0]["name"] == res.layers[0].name and d["complete"]


def test_hugging_face_gpt2_block_matches_dense():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    from flatminima.models.transformer import lm_loss

    cfg = transformers.GPT2Config(vocab_size=11, n_embd=8, n_layer=1, n_head=2, n_positions=8, bos_token_id=0,
                                  eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    ids = torch.randint(1, 11, (4, 5), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": ids[i:i + 2], "attention_mask": torch.ones_like(ids[i:i + 2]),
                "labels": ids[i:i + 2]} for i in (0, 2)]
    obj = Objective(model, loss_fn=lm_loss, data=batches)
    res = per_layer(obj, blocks="transformer.h.0.attn.c_proj", group="module", samples=300, method="hutch++",
                    tol=1e-10, progress=False)
    (block,) = res.layers
    assert block.name == "transformer.h.0.attn.c_proj" and block.size == 8 * 8 + 8
    sub = obj.replace(params=block.params)
    H = torch.stack([sub.hvp(e) for e in torch.eye(sub.dim, dtype=torch.float64)])
    H = (H + H.T) / 2
    assert block.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(H).max()), rel=1e-7)
    assert block.trace == pytest.approx(float(torch.trace(H)), rel=1e-7)
