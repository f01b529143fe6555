"""Training dynamics: the edge of stability, the batch sharpness of SGD, and what a warm-started λmax update costs.

Full-batch training with MSE of a tanh MLP (6 → 32 → 32 → 2, 64 samples, y = sin(XW)): gradient descent
at two learning rates, heavy ball (β = 0.5), Nesterov (β = 0.5) and Adam (β₁ = 0.9), each tracked by a
:class:`flatminima.dynamics.SharpnessMonitor` on all the training data (the full-data Hessian) every
``--every`` steps, and once more with cold Lanczos starts (``warm=False``) on the identical trajectory
(the monitor never changes the run). Reported: the threshold, sharpness/threshold at the start, the edge
onset (first record ≥ 0.9·threshold), the ratio's median and range over the second half of the run,
Hessian-vector products per λmax update warm and cold (same tolerance, ``stop="gap"``, tol 1e-3; the warm
monitor starts cold every ``refresh`` = 10 records), their ratio, the largest relative gap between the warm
and the cold λmax, and the cost of the tracker's earlier cold ``lambda_max`` measure (tol 1e-4, residual).

Mini-batch SGD (``--sections sgd``): a tanh MLP (40 → 64 → 64 → 10) trained with MSE on one-hot targets of
512 MNIST-1D samples by SGD with batches of 32 for ``--sgd-steps`` steps at η ∈ {1, 2, 3} (and batches of 8 at
η = 2), its batch sharpness E_B[g_Bᵀ H_B g_B/‖g_B‖²] (at the training batch size; 32 batches per record) and λmax of the
full-data Hessian recorded every ``--sgd-every`` steps. Reported: both over 2/η at the start, the first
record with batch sharpness ≥ 0.9·2/η, and the batch sharpness ratio's median and range over the second
half of the run (and λmax's).

    OMP_NUM_THREADS=1 python benchmarks/dynamics.py --out docs/bench_dynamics.json   # ~4.5 minutes
    OMP_NUM_THREADS=1 python benchmarks/dynamics.py --sections sgd   # only the SGD part, merged into --out
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from flatminima import Objective
from flatminima.dynamics import SharpnessMonitor, summarize
from flatminima.sharpness import measure

RUNS = [
    ("gd", {"lr": 0.3}),
    ("gd", {"lr": 0.6}),
    ("heavy_ball", {"lr": 0.4, "momentum": 0.5}),
    ("nesterov", {"lr": 0.5, "momentum": 0.5, "nesterov": True}),
    ("adam", {"lr": 5e-3}),
]


def setup(seed: int = 0, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g)
    y = torch.sin(X @ torch.randn(6, 2, generator=g))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    return model, X, y


def run(kind: str, options: dict, steps: int, every: int) -> dict:
    model, X, y = setup()
    opt = (torch.optim.Adam(model.parameters(), **options) if kind == "adam"
           else torch.optim.SGD(model.parameters(), **options))
    warm = SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, every=every)
    cold = SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, every=every, warm=False)
    extra = SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, every=every, extrapolate=True)
    seconds = {"warm": 0.0, "cold": 0.0, "extrapolate": 0.0}
    legacy = []
    for s in range(steps + 1):
        if s:
            opt.zero_grad()
            nn.functional.mse_loss(model(X), y).backward()
            opt.step()
        for name, mon in (("warm", warm), ("cold", cold), ("extrapolate", extra)):
            t = time.perf_counter()
            mon.step(s)
            seconds[name] += time.perf_counter() - t
        if s % (every * 10) == 0:  # the tracker's earlier cold lambda_max measure, sampled
            obj = Objective(model, "mse", (X, y))
            with obj.meter() as cost:
                measure(obj, "lambda_max")
            legacy.append(cost.hvps)
    hv = {n: [r["hvps"] for r in m.history if r["measure"] == "lambda_max"][1:] for n, m in
          (("warm", warm), ("cold", cold), ("extrapolate", extra))}
    # the warm records alone (the refresh records, every 10th, start cold)
    warm_only = {n: [h for i, h in enumerate(hv[n], 1) if i % warm.refresh] for n in ("warm", "extrapolate")}
    _, a = warm.series("lambda_max")
    _, b = cold.series("lambda_max")
    _, e = extra.series("lambda_max")
    steps_r, ratio = warm.series("edge_ratio")
    late = sorted(r for st, r in zip(steps_r, ratio, strict=True) if st >= steps // 2)
    s = summarize(warm.history)
    per = {n: sum(v) / len(v) for n, v in hv.items()}
    return {"optimizer": kind, **{k: v for k, v in options.items() if k != "nesterov"},
            "threshold": warm.threshold.value, "formula": warm.threshold.formula,
            "initial_ratio": s["initial_ratio"], "onset": s["onset"],
            "late_median": late[len(late) // 2], "late_min": late[0], "late_max": late[-1],
            "hvps_warm": per["warm"], "hvps_cold": per["cold"], "warm_over_cold": per["warm"] / per["cold"],
            "hvps_warm_records_only": sum(warm_only["warm"]) / len(warm_only["warm"]),
            "warm_records_over_cold": sum(warm_only["warm"]) / len(warm_only["warm"]) / per["cold"],
            "hvps_extrapolate": per["extrapolate"], "extrapolate_over_cold": per["extrapolate"] / per["cold"],
            "extrapolate_records_over_cold": sum(warm_only["extrapolate"]) / len(warm_only["extrapolate"])
            / per["cold"],
            "max_rel_gap_extrapolate_cold": max(abs(x - z) / z for x, z in zip(e, b, strict=True)),
            "hvps_legacy_lambda_max": sum(legacy) / len(legacy),
            "max_rel_gap_warm_cold": max(abs(x - z) / z for x, z in zip(a, b, strict=True)),
            "seconds_warm": seconds["warm"], "seconds_cold": seconds["cold"]}


SGD_RUNS = ((1.0, 32), (2.0, 32), (3.0, 32), (2.0, 8))  # (η, batch size)


def sgd_run(lr: float, steps: int, every: int, n: int = 512, batch: int = 32, seed: int = 0) -> dict:
    """Mini-batch SGD on MNIST-1D (see the module doc): batch sharpness and λmax against 2/η."""
    from flatminima.data import load_mnist1d

    ds = load_mnist1d()
    X = ds.x_train[:n].reshape(n, -1).float()
    Y = nn.functional.one_hot(ds.y_train[:n], 10).float()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(X.shape[1], 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = SharpnessMonitor(model, (X, Y), loss="mse", optimizer=opt, every=every, batch_sharpness=batch,
                           batch_samples=32, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    t = time.perf_counter()
    for s in range(steps + 1):
        if s:
            idx = torch.randperm(n, generator=gen)[:batch]
            opt.zero_grad()
            nn.functional.mse_loss(model(X[idx]), Y[idx]).backward()
            opt.step()
        mon.step(s)
    edge = 2 / lr
    st, bs = mon.series("batch_sharpness")
    _, lam = mon.series("lambda_max")
    _, loss = mon.series("loss")
    late_bs = sorted(b / edge for s_, b in zip(st, bs, strict=True) if s_ >= steps // 2)
    late_lam = sorted(v / edge for s_, v in zip(st, lam, strict=True) if s_ >= steps // 2)
    onset = next((s_ for s_, b in zip(st, bs, strict=True) if b >= 0.9 * edge), None)
    return {"lr": lr, "batch": batch, "n": n, "steps": steps, "every": every, "threshold": edge,
            "initial_batch_ratio": bs[0] / edge, "initial_lambda_ratio": lam[0] / edge, "batch_onset": onset,
            "late_batch_median": late_bs[len(late_bs) // 2], "late_batch_min": late_bs[0],
            "late_batch_max": late_bs[-1], "late_lambda_median": late_lam[len(late_lam) // 2],
            "late_lambda_min": late_lam[0], "late_lambda_max": late_lam[-1], "final_loss": loss[-1],
            "series": {"step": st, "batch_sharpness": bs, "lambda_max": lam, "loss": loss},
            "seconds": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, nargs="+", default=[10, 2])
    ap.add_argument("--sgd-steps", type=int, default=20000)
    ap.add_argument("--sgd-every", type=int, default=250)
    ap.add_argument("--sections", nargs="+", choices=["edge", "sgd"], default=["edge", "sgd"])
    ap.add_argument("--out", default="docs/bench_dynamics.json")
    args = ap.parse_args()
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    if "sgd" in args.sections:
        sgd = []
        for lr, batch in SGD_RUNS:
            r = sgd_run(lr, args.sgd_steps, args.sgd_every, batch=batch)
            sgd.append(r)
            print(f"SGD lr={lr:g} B={r['batch']} 2/η {r['threshold']:.3g}: batch sharpness/(2/η) start "
                  f"{r['initial_batch_ratio']:.2f}, onset {r['batch_onset']}, late median {r['late_batch_median']:.3f} "
                  f"[{r['late_batch_min']:.3f}, {r['late_batch_max']:.3f}]; λmax/(2/η) start "
                  f"{r['initial_lambda_ratio']:.2f}, late median {r['late_lambda_median']:.3f} "
                  f"[{r['late_lambda_min']:.3f}, {r['late_lambda_max']:.3f}]; final loss {r['final_loss']:.2g} "
                  f"({r['seconds']:.0f} s)", flush=True)
        result["sgd"] = sgd
    if "edge" not in args.sections:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        return
    rows = []
    for every in args.every:
        for kind, options in RUNS:
            row = run(kind, options, args.steps, every) | {"every": every}
            rows.append(row)
            print(f"every={every:3d} {kind:10s} lr={options['lr']:<6g} threshold {row['threshold']:8.4g}  "
                  f"start {row['initial_ratio']:.2f}  onset {row['onset']}  late ratio {row['late_median']:.3f} "
                  f"[{row['late_min']:.3f}, {row['late_max']:.3f}]  HVPs/update warm {row['hvps_warm']:.2f} cold "
                  f"{row['hvps_cold']:.2f} ({row['warm_over_cold']:.2f}; warm records only "
                  f"{row['warm_records_over_cold']:.2f}; extrapolated {row['extrapolate_over_cold']:.2f}, its warm "
                  f"records {row['extrapolate_records_over_cold']:.2f}), legacy {row['hvps_legacy_lambda_max']:.1f}"
                  f"  max |warm-cold|/cold {row['max_rel_gap_warm_cold']:.3f}, extrapolated "
                  f"{row['max_rel_gap_extrapolate_cold']:.3f}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result | {"steps": args.steps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
