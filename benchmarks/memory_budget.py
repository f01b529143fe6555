"""Is ``memory_mb`` a promise? Peak memory of one Hessian-vector product against the budget.

    python benchmarks/memory_budget.py --out benchmarks/results/memory_budget.json
    python benchmarks/memory_budget.py --sizes 1 --budgets 1.2 2 4       # the 1M model only
    python benchmarks/memory_budget.py --sizes 50 --model gpt2-sdpa --seq 256 --reuse-graph --floor

Transformers of about 1M, 10M and 50M parameters, a language-model loss on one batch of 8 sequences of
``--seq`` tokens (64 by default), and budgets of 1.2×, 2× and 4× the smallest budget the plan names (read
from its refusal of a tiny budget; ``--floor`` measures that floor itself too). ``--model``: Hugging Face
GPT-2 with eager attention (the default) or its default SDPA attention, BERT (masked-LM head, SDPA),
``nn.TransformerEncoder`` (SDPA inside ``nn.MultiheadAttention``) or ``flatminima.models.TransformerLM``
(attention written out); the last two with an untied head and two layers fewer, for about the same count.
``--reuse-graph`` keeps the Objective's default (graph reuse, where the plan lets it); off by default here;
``--rows`` and ``--batch-size`` spread more sequences over several batches (each kept graph its own).

Every measurement runs in a fresh subprocess with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``),
so freed tensors go back to the OS and the resident set tracks live memory. The plan is read first
(``memory_plan``, as ``reserve`` does for Lanczos, Hutch++ and SLQ), outside any product. The peak of one
product is the kernel's high-water mark (VmHWM, reset just before the product through
``/proc/self/clear_refs``) minus the resident set of the idle Objective before it (its model copy, θ₀ and
the data included), the quantity the budget covers. A budget the plan refuses is recorded with the floor it
names.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SIZES = {1: dict(n_embd=128, n_layer=4, n_head=4, vocab=1000),
         10: dict(n_embd=384, n_layer=5, n_head=6, vocab=8000),
         50: dict(n_embd=768, n_layer=6, n_head=12, vocab=16000)}
# The untied-head encoders (torch, flatminima) take two layers fewer for about the same parameter count.
MODELS = ("gpt2-eager", "gpt2-sdpa", "bert-sdpa", "torch-encoder", "flatminima-lm")
ROWS = 8  # sequences in the one batch


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _model(name: str, size: int, seq: int):
    """(model, loss_fn) of ``name`` at about ``size`` million parameters, in eval mode."""
    import torch
    from torch import nn

    s = SIZES[size]
    torch.manual_seed(0)
    if name.startswith("gpt2-"):
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=s["vocab"], n_positions=seq, n_embd=s["n_embd"], n_layer=s["n_layer"],
                            n_head=s["n_head"], attn_implementation=name.split("-")[1])
        model = GPT2LMHeadModel(config)
    elif name == "bert-sdpa":
        from transformers import BertConfig, BertForMaskedLM

        config = BertConfig(vocab_size=s["vocab"], hidden_size=s["n_embd"], num_hidden_layers=s["n_layer"],
                            num_attention_heads=s["n_head"], intermediate_size=4 * s["n_embd"],
                            max_position_embeddings=max(seq, 512), attn_implementation="sdpa")
        model = BertForMaskedLM(config)
    elif name == "torch-encoder":
        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                d = s["n_embd"]
                self.tok, self.pos = nn.Embedding(s["vocab"], d), nn.Embedding(seq, d)
                layer = nn.TransformerEncoderLayer(d, s["n_head"], 4 * d, batch_first=True)
                self.encoder = nn.TransformerEncoder(layer, max(s["n_layer"] - 2, 1), enable_nested_tensor=False)
                self.head = nn.Linear(d, s["vocab"])

            def forward(self, input_ids):
                x = self.tok(input_ids) + self.pos(torch.arange(input_ids.shape[1]))
                return self.head(self.encoder(x))

        model = Encoder()
    elif name == "flatminima-lm":
        from flatminima.models.transformer import TransformerLM

        model = TransformerLM(vocab_size=s["vocab"], d_model=s["n_embd"], n_heads=s["n_head"],
                              n_layers=max(s["n_layer"] - 2, 1), max_len=seq)
    else:
        raise ValueError(f"unknown model {name!r}; one of {MODELS}")

    def loss_fn(model, batch):
        (ids,) = batch
        if name.startswith(("gpt2", "bert")):
            return model(input_ids=ids, labels=ids).loss
        logits = model(ids)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))

    return model.eval(), loss_fn


def _objective(size: int, memory_mb: float | None, name: str = "gpt2-eager", seq: int = 64,
               reuse_graph: bool = False, rows: int = ROWS, batch_size: int | None = None):
    import torch

    from flatminima import Objective

    model, loss_fn = _model(name, size, seq)
    tokens = torch.randint(0, SIZES[size]["vocab"], (rows, seq), generator=torch.Generator().manual_seed(1))
    data = [(part,) for part in tokens.split(batch_size or rows)]
    return Objective(model, loss_fn=loss_fn, data=data, memory_mb=memory_mb, reuse_graph=reuse_graph)


def probe(size: int, memory_mb: float, name: str, seq: int, reuse_graph: bool, rows: int = ROWS,
          batch_size: int | None = None) -> dict:
    """One product under ``memory_mb`` in this (fresh) process: peak above the idle objective."""
    import torch

    from flatminima.errors import FlatminimaError

    torch.set_num_threads(2)
    obj = _objective(size, memory_mb, name, seq, reuse_graph, rows, batch_size)
    try:
        plan = obj.memory_plan
    except FlatminimaError as err:
        return {"refused": str(err)}
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(2))
    obj.loss()  # first-use checks outside the measured product
    before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    obj.hvp(v)
    peak = _status_mb("VmHWM") - before
    return {"dim": obj.dim, "rows": plan.rows, "reuse": plan.reuse_graph, "planned_mb": plan.peak_bytes / 2**20,
            "per_sample_mb": plan.per_sample_bytes / 2**20, "peak_mb": peak, "ratio": peak / memory_mb}


def floor_of(size: int, name: str, seq: int, reuse_graph: bool, rows: int = ROWS, batch_size: int | None = None
             ) -> float:
    from flatminima.errors import FlatminimaError

    try:
        _objective(size, 1e-3, name, seq, reuse_graph, rows, batch_size).memory_plan  # noqa: B018 - the refusal names the floor
    except FlatminimaError as err:
        return float(str(err).split("raise memory_mb above ")[1].split()[0].rstrip("."))
    raise RuntimeError("a 1 KiB budget was accepted")


def run(size: int, memory_mb: float, name: str, seq: int, reuse_graph: bool, rows: int = ROWS,
        batch_size: int | None = None) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="2")
    cmd = [sys.executable, __file__, "--probe", str(size), str(memory_mb), "--model", name, "--seq", str(seq),
           "--rows", str(rows)] + (["--batch-size", str(batch_size)] if batch_size else [])
    out = subprocess.run(cmd + (["--reuse-graph"] if reuse_graph else []), env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", nargs=2, type=float)
    ap.add_argument("--sizes", nargs="*", type=int, default=[1, 10, 50])
    ap.add_argument("--budgets", nargs="*", type=float, default=[1.2, 2.0, 4.0])
    ap.add_argument("--model", choices=MODELS, default="gpt2-eager")
    ap.add_argument("--seq", type=int, default=64, help="tokens per sequence (8 sequences)")
    ap.add_argument("--rows", type=int, default=ROWS, help="sequences in the data")
    ap.add_argument("--batch-size", type=int, help="sequences per batch (default: all in one)")
    ap.add_argument("--reuse-graph", action="store_true", help="the Objective's default; off by default here")
    ap.add_argument("--floor", action="store_true", help="measure the named floor itself (1x) too")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(int(args.probe[0]), args.probe[1], args.model, args.seq, args.reuse_graph,
                               args.rows, args.batch_size)))
        return
    rows = []
    for size in args.sizes:
        floor = floor_of(size, args.model, args.seq, args.reuse_graph, args.rows, args.batch_size)
        for factor in ([1.0] if args.floor else []) + args.budgets:
            budget = floor if factor == 1.0 else round(floor * factor, 1)
            r = run(size, budget, args.model, args.seq, args.reuse_graph, args.rows, args.batch_size) | {
                "model": args.model, "seq": args.seq, "rows_total": args.rows, "batch_size": args.batch_size,
                "reuse_graph": args.reuse_graph, "size_m": size,
                "floor_mb": floor, "budget_mb": budget}
            rows.append(r)
            print(json.dumps(r), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
