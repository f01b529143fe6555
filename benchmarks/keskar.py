"""Small- vs large-batch Adam at matched training loss (Keskar et al. 2017), on MNIST-1D, from the library.

Every run stops at the first epoch whose exact train loss (eval mode, all 2000 training signals) is
<= ``--target`` (``Recipe.target_train_loss``), so the two batch sizes are compared equally converged.
Per seed: top Hessian eigenvalue (Lanczos), Hutchinson trace, test accuracy, epochs, whether the target
was reached.

    python benchmarks/keskar.py --out docs/bench_keskar.json [--seeds 3] [--target 0.05]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from flatminima.data import load
from flatminima.models import build
from flatminima.objective import Objective
from flatminima.sharpness import measure
from flatminima.train import evaluate, fit


def one_run(dataset, batch, lr, seed, target, cap, dtype) -> dict:
    torch.manual_seed(seed)
    model = build("mlp", dataset.input_shape, dataset.num_classes, width=128, depth=2)
    t0 = time.perf_counter()
    res = fit(model, dataset.train, {"optimizer": "adam", "lr": lr, "batch_size": batch, "epochs": cap,
                                     "seed": seed, "target_train_loss": target}, progress=False)
    train_s = time.perf_counter() - t0
    obj = Objective(model, "cross_entropy", dataset.train, dtype=dtype)
    lam = measure(obj, "lambda_max", seed=seed)
    tr = measure(obj, "trace", seed=seed)
    test = evaluate(model, dataset.test)
    return {"batch_size": batch, "lr": lr, "seed": seed, "epochs_run": res.epochs_run,
            "final_train_loss": res.final_train_loss, "reached_target": res.reached_target,
            "lambda_max": lam.value, "trace": tr.value, "trace_se": tr.stderr, "test_acc": test["accuracy"],
            "train_seconds": train_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.05)
    ap.add_argument("--small", type=int, default=64)
    ap.add_argument("--small-lr", type=float, default=1e-3)
    ap.add_argument("--large-lr", type=float, default=1e-3)
    ap.add_argument("--small-cap", type=int, default=500, help="epoch cap at the small batch")
    ap.add_argument("--large-cap", type=int, default=20000, help="epoch cap (= steps) at full batch")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="docs/bench_keskar.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dataset = load("mnist1d", num_samples=2500, seed=42)  # 2000 train / 500 test
    n, dtype = len(dataset.train[0]), getattr(torch, a.dtype)
    rows = []
    for batch, lr, cap in ((a.small, a.small_lr, a.small_cap), (n, a.large_lr, a.large_cap)):
        for seed in range(a.seeds):
            rows.append(one_run(dataset, batch, lr, seed, a.target, cap, dtype))
            r = rows[-1]
            print(f"batch {batch:5d} lr {lr:g} seed {seed}: {r['epochs_run']} epochs "
                  f"({r['train_seconds']:.0f}s), train loss {r['final_train_loss']:.4f} "
                  f"reached={r['reached_target']}, λmax {r['lambda_max']:.3f}, trace {r['trace']:.1f}, "
                  f"test acc {r['test_acc']:.3f}", flush=True)
    print("\n| batch | lr | seed | epochs | train loss | reached | λmax | trace | test acc |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} | {r['lr']:g} | {r['seed']} | {r['epochs_run']} | {r['final_train_loss']:.4f} | "
              f"{r['reached_target']} | {r['lambda_max']:.3f} | {r['trace']:.1f} | {r['test_acc']:.3f} |")
    for batch in (a.small, n):
        sel = [r for r in rows if r["batch_size"] == batch]
        print(f"| {batch} | mean | | {statistics.mean(r['epochs_run'] for r in sel):.0f} | | "
              f"{sum(r['reached_target'] for r in sel)}/{len(sel)} | "
              f"{statistics.mean(r['lambda_max'] for r in sel):.3f} | {statistics.mean(r['trace'] for r in sel):.1f} | "
              f"{statistics.mean(r['test_acc'] for r in sel):.3f} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"args": vars(a), "runs": rows}, indent=1))
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
