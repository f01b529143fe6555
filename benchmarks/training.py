"""Training benchmarks, run on demand, not in the test suite.

1. Seconds per epoch of each built-in model (MNIST-1D signals and 8x8 digits).
2. Small- vs large-batch SGD on MNIST-1D (Keskar et al. 2017): top Hessian eigenvalue and generalisation
   gap per batch size, over seeds.
3. SAM vs SGD and SWA vs its last iterate: top eigenvalue, Hutch++ trace, test accuracy, over seeds.

    python benchmarks/training.py --out docs/bench_training_data [--seeds 3] [--epochs 60]

Writes ``results.json`` and CSV tables into ``--out`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from flatminima.curvature import eigenvalues, trace
from flatminima.data import load
from flatminima.models import build
from flatminima.objective import Objective
from flatminima.plotting import save_table
from flatminima.train import evaluate, fit


def curvature(model, dataset, probes: int) -> dict:
    """Top Hessian eigenvalue (Lanczos) and Hutch++ trace of the full-train-set loss, eval mode, float64."""
    obj = Objective(model, "cross_entropy", dataset.train, dtype=torch.float64)
    top = eigenvalues(obj, 1, tol=1e-4, seed=0)
    tr = trace(obj, method="hutch++", samples=probes, seed=0)
    return {"lambda_max": float(top.values[0]), "trace": float(tr.value), "trace_se": float(tr.stderr),
            "hvps": int(top.cost.hvps + tr.cost.hvps)}


def measure(model, dataset, probes: int) -> dict:
    tr, te = evaluate(model, dataset.train), evaluate(model, dataset.test)
    return {"train_loss": tr["loss"], "test_loss": te["loss"], "train_acc": tr["accuracy"],
            "test_acc": te["accuracy"], "gap_acc": tr["accuracy"] - te["accuracy"],
            "gap_loss": te["loss"] - tr["loss"], **curvature(model, dataset, probes)}


def speed(epochs: int) -> list[dict]:
    # warm-up: the first optimiser step imports torch._dynamo (seconds), which is no per-epoch cost
    fit(torch.nn.Linear(2, 2), (torch.randn(4, 2), torch.zeros(4, dtype=torch.int64)), {"epochs": 1},
        progress=False)
    rows = []
    for data, models in (("mnist1d", ("mlp", "cnn1d", "resnet", "vgg")),
                         ("digits", ("mlp", "cnn2d", "resnet", "vgg"))):
        ds = load(data, num_samples=2000) if data == "mnist1d" else load(data)
        for name in models:
            torch.manual_seed(0)
            net = build(name, ds.input_shape, ds.num_classes)
            res = fit(net, ds.train, {"epochs": epochs, "batch_size": 64}, progress=False)
            rows.append({"data": data, "model": name, "params": sum(p.numel() for p in net.parameters()),
                         "train_samples": len(ds.x_train), "s_per_epoch": res.seconds / epochs})
            print(rows[-1], flush=True)
    return rows


def run(ds, recipe: dict, seed: int, width: int) -> tuple:
    torch.manual_seed(seed)
    net = build("mlp", ds.input_shape, ds.num_classes, width=width)
    res = fit(net, ds.train, {**recipe, "seed": seed}, progress=False)
    return net, res


def keskar(ds, seeds: list[int], epochs: int | dict, width: int, probes: int) -> list[dict]:
    """Same learning rate and momentum for every batch size (as Keskar et al.); ``epochs`` one number
    (equal epochs) or a per-batch-size dict (long enough for the large batches to fit the training set)."""
    rows = []
    for bs in (32, 256, "full"):
        n_epochs = epochs[str(bs)] if isinstance(epochs, dict) else epochs
        for seed in seeds:
            recipe = {"batch_size": bs, "epochs": n_epochs, "lr": 0.05, "momentum": 0.9}
            net, res = run(ds, recipe, seed, width)
            rows.append({"batch_size": str(bs), "seed": seed, "epochs": n_epochs, "seconds": res.seconds,
                         **measure(net, ds, probes)})
            print(rows[-1], flush=True)
    return rows


def sam_swa(ds, seeds: list[int], epochs: int, width: int, probes: int) -> list[dict]:
    rows = []
    base = {"batch_size": 64, "epochs": epochs, "lr": 0.05, "momentum": 0.9}
    for seed in seeds:
        for label, extra in (("SGD", {}), ("SAM rho=0.05", {"sam": "sam", "rho": 0.05}),
                             ("SWA", {"swa": True, "swa_start": int(0.75 * epochs), "swa_lr": 0.02})):
            net, res = run(ds, {**base, **extra}, seed, width)
            rows.append({"recipe": label, "seed": seed, "seconds": res.seconds, **measure(net, ds, probes)})
            print(rows[-1], flush=True)
            if res.last_iterate is not None:
                net.load_state_dict(res.last_iterate)
                rows.append({"recipe": "SWA last iterate", "seed": seed, "seconds": res.seconds,
                             **measure(net, ds, probes)})
                print(rows[-1], flush=True)
    return rows


def summarise(rows: list[dict], key: str, cols: list[str]) -> str:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    lines = [f"| {key} | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for g, rs in groups.items():
        cells = []
        for c in cols:
            vals = [r[c] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
            cells.append(f"{statistics.mean(vals):.4g} ± {sd:.2g}")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/bench_training_data")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--speed-epochs", type=int, default=2)
    ap.add_argument("--samples", type=int, default=2000, help="MNIST-1D samples (80% train)")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--probes", type=int, default=30)
    ap.add_argument("--keskar-epochs", default="",
                    help="per batch size, e.g. 32:30,256:240,full:1500 (default: --epochs for all)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: speed,keskar,samswa")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, results = time.time(), {"args": vars(a), "torch_threads": torch.get_num_threads()}
    seeds = list(range(a.seeds))
    ds = load("mnist1d", num_samples=a.samples)
    if "speed" not in a.skip:
        results["speed"] = speed(a.speed_epochs)
    if "keskar" not in a.skip:
        per_bs = dict(kv.split(":") for kv in a.keskar_epochs.split(",")) if a.keskar_epochs else None
        epochs = {k: int(v) for k, v in per_bs.items()} if per_bs else a.epochs
        results["keskar"] = keskar(ds, seeds, epochs, a.width, a.probes)
    if "samswa" not in a.skip:
        results["sam_swa"] = sam_swa(ds, seeds, a.epochs, a.width, a.probes)
    results["seconds"] = time.time() - t0
    (out / "results.json").write_text(json.dumps(results, indent=2))
    for part in ("speed", "keskar", "sam_swa"):
        if part in results:
            save_table(out / f"{part}.csv", {k: [r[k] for r in results[part]] for k in results[part][0]})
    cols = ["train_acc", "test_acc", "gap_acc", "gap_loss", "lambda_max", "trace"]
    if "keskar" in results:
        print(summarise(results["keskar"], "batch_size", cols))
    if "sam_swa" in results:
        print(summarise(results["sam_swa"], "recipe", cols))
    print(f"total {results['seconds']:.0f}s")


if __name__ == "__main__":
    main()
