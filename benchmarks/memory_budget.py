"""Is ``memory_mb`` a promise? Peak memory of one Hessian-vector product against the budget.

    python benchmarks/memory_budget.py --out benchmarks/results/memory_budget.json
    python benchmarks/memory_budget.py --sizes 1 --budgets 1.2 2 4       # the 1M model only

For GPT-2-style transformers of about 1M, 10M and 50M parameters (eager attention, a language-model loss on
8 sequences of 64 tokens) and three budgets each (1.2×, 2× and 4× the smallest budget the plan names, read
from its refusal of a tiny budget), every measurement runs in a fresh subprocess with glibc's mmap threshold
fixed (``MALLOC_MMAP_THRESHOLD_``), so freed tensors go back to the OS and the resident set tracks live
memory. The peak of one product is the kernel's high-water mark (VmHWM, reset just before the product
through ``/proc/self/clear_refs``) minus the resident set of the idle Objective before it (its model
copy, θ₀ and the data included), the quantity the budget covers. A budget the plan refuses is recorded
with the floor it names, and that floor is measured too (it must work).
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


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _objective(size: int, memory_mb: float | None):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from flatminima import Objective

    s = SIZES[size]
    config = GPT2Config(vocab_size=s["vocab"], n_positions=64, n_embd=s["n_embd"], n_layer=s["n_layer"],
                        n_head=s["n_head"], attn_implementation="eager")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    tokens = torch.randint(0, s["vocab"], (8, 64), generator=torch.Generator().manual_seed(1))

    def lm_loss(model, batch):
        (ids,) = batch
        return model(input_ids=ids, labels=ids).loss

    return Objective(model, loss_fn=lm_loss, data=[(tokens,)], memory_mb=memory_mb, reuse_graph=False)


def probe(size: int, memory_mb: float) -> dict:
    """One product under ``memory_mb`` in this (fresh) process: peak above the idle objective."""
    import torch

    from flatminima.errors import FlatminimaError

    torch.set_num_threads(2)
    obj = _objective(size, memory_mb)
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
    return {"dim": obj.dim, "rows": plan.rows, "planned_mb": plan.peak_bytes / 2**20, "peak_mb": peak,
            "ratio": peak / memory_mb}


def floor_of(size: int) -> float:
    from flatminima.errors import FlatminimaError

    try:
        _objective(size, 1e-3).memory_plan  # noqa: B018 - the refusal names the floor
    except FlatminimaError as err:
        return float(str(err).split("raise memory_mb above ")[1].split()[0].rstrip("."))
    raise RuntimeError("a 1 KiB budget was accepted")


def run(size: int, memory_mb: float) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, __file__, "--probe", str(size), str(memory_mb)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", nargs=2, type=float)
    ap.add_argument("--sizes", nargs="*", type=int, default=[1, 10, 50])
    ap.add_argument("--budgets", nargs="*", type=float, default=[1.2, 2.0, 4.0])
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(int(args.probe[0]), args.probe[1])))
        return
    rows = []
    for size in args.sizes:
        floor = floor_of(size)
        for factor in args.budgets:
            budget = round(floor * factor, 1)
            r = run(size, budget) | {"size_m": size, "floor_mb": floor, "budget_mb": budget}
            rows.append(r)
            print(json.dumps(r), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
