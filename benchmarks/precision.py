"""float32 vs float64 measuring: how far apart the study's measures are, and how much time float32 saves.

For each built-in model (``mlp`` and ``cnn1d``) trained briefly on MNIST-1D, every sharpness measure a study
uses is computed on the same trained weights with the Objective in float64 and in float32 (same seeds, same
probes); the table gives |v32 − v64| / |v64| and the seconds of each. The float64 value is the reference.
The settings are the quick preset's, and the other registered measures at their defaults (cheap ones).

    python benchmarks/precision.py --out docs/bench_precision.json [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from flatminima.data import load
from flatminima.models import build
from flatminima.objective import Objective
from flatminima.sharpness import available, measure
from flatminima.train import fit

# the quick preset's measure settings; the rest at cheap settings
MEASURES = {
    "lambda_max": {},
    "trace": {"method": "hutchinson", "probes": 30},
    "average_case": {"sigma": 0.01, "samples": 16},
    "worst_case": {"rho": 0.05, "steps": 5, "restarts": 1},
    "frobenius": {"probes": 30},
    "fisher_rao": {},
    "keskar": {"steps": 5, "restarts": 1},
    "relative_flatness": {},
    "pac_bayes": {"samples": 16},
}
MODELS = {"mlp": {"width": 128, "depth": 2}, "cnn1d": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="mlp,cnn1d")
    ap.add_argument("--out", default="docs/bench_precision.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dataset = load("mnist1d", num_samples=2500, seed=42)  # 2000 train / 500 test
    names = [n for n in MEASURES if n in available()]
    rows, totals = [], {}
    for mname in a.models.split(","):
        torch.manual_seed(0)
        model = build(mname, dataset.input_shape, dataset.num_classes, **MODELS.get(mname, {}))
        t0 = time.perf_counter()
        fit(model, dataset.train, {"lr": 0.05, "batch_size": 64, "epochs": a.epochs}, progress=False)
        train_s = time.perf_counter() - t0
        sums = {"float32": 0.0, "float64": 0.0}
        for name in names:
            got = {}
            for dt in ("float64", "float32"):
                obj = Objective(model, "cross_entropy", dataset.train, dtype=getattr(torch, dt))
                t = time.perf_counter()
                got[dt] = (measure(obj, name, **MEASURES[name]).value, time.perf_counter() - t)
                sums[dt] += got[dt][1]
            v64, v32 = got["float64"][0], got["float32"][0]
            rel = abs(v32 - v64) / abs(v64) if v64 else abs(v32 - v64)
            rows.append({"model": mname, "measure": name, "float64": v64, "float32": v32, "rel_diff": rel,
                         "seconds_float64": got["float64"][1], "seconds_float32": got["float32"][1]})
            print(f"{mname:6s} {name:18s} f64 {v64:12.6g} f32 {v32:12.6g} rel {rel:.2e} "
                  f"({got['float64'][1]:.2f}s vs {got['float32'][1]:.2f}s)", flush=True)
        totals[mname] = {"train_seconds": train_s, "measure_seconds_float64": sums["float64"],
                         "measure_seconds_float32": sums["float32"]}
    print("\n| model | measure | float64 | float32 | rel. diff | s (f64) | s (f32) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['measure']} | {r['float64']:.6g} | {r['float32']:.6g} | {r['rel_diff']:.1e} | "
              f"{r['seconds_float64']:.2f} | {r['seconds_float32']:.2f} |")
    print("\n| model | training (s) | measuring, float64 (s) | measuring, float32 (s) | saved per run |\n"
          "|---|---|---|---|---|")
    for m, t in totals.items():
        print(f"| {m} | {t['train_seconds']:.1f} | {t['measure_seconds_float64']:.1f} | "
              f"{t['measure_seconds_float32']:.1f} | "
              f"{t['measure_seconds_float64'] - t['measure_seconds_float32']:.1f} s "
              f"({t['measure_seconds_float64'] / max(t['measure_seconds_float32'], 1e-9):.1f}×) |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"args": vars(a), "rows": rows, "totals": totals}, indent=1))
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
