"""Benchmark the study pipeline: runs/hour of the quick preset with 1 and 2 workers, the store's and the
executor's overhead per run, and the quick preset's report.

    python benchmarks/study.py --out /tmp/bench_study --workers 1 2 --json docs/bench_study.json \
        --figures docs/bench_study

The machine may be shared: the load average before and after each measurement is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import flatminima.study as study


def bench_preset(preset: str, out: Path, workers: int, seeds: int | None = None) -> dict:
    if out.exists():
        shutil.rmtree(out)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    spec = study.load_preset(preset).model_dump()
    if seeds is not None:  # a subset with the same grid (same mix of run lengths), to save time
        spec["seeds"] = seeds
    res = study.run(spec, out=out, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    with study.Store(out) as store:
        rows = store.rows("done")
    stages = {
        k: statistics.mean(r["results"]["seconds"][k] for r in rows)
        for k in ("setup", "train", "measure", "evaluate", "total")
    }
    return {
        "preset": preset,
        "workers": workers,
        "runs": res.executed,
        "failed": res.failed,
        "wall_seconds": wall,
        "runs_per_hour": 3600 * res.executed / wall,
        "mean_run_seconds": stages,
        "overhead_seconds_per_run": res.overhead_seconds,
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg()[0],
    }


def bench_store(n: int = 500) -> dict:
    """Per-run cost of the store alone: register, claim and finish (with a results JSON of realistic size)."""
    results = {
        "measures": {f"m{i}": {"value": 1.0, "stderr": 0.1, "cost": {"hvps": 10.0}} for i in range(6)},
        "metrics": {"shifts": {f"s{i}@{j}": {"acc": 0.5, "drop": 0.1} for i in range(5) for j in range(5)}},
        "seconds": {"total": 1.0},
    }
    with tempfile.TemporaryDirectory() as tmp, study.Store(tmp) as store:
        t0 = time.perf_counter()
        store.add_runs((f"r{i}", "label", 0, {"recipe": {"lr": i}}) for i in range(n))
        t1 = time.perf_counter()
        for i in range(n):
            store.claim(f"r{i}")
            store.finish(f"r{i}", results)
        t2 = time.perf_counter()
    return {
        "runs": n,
        "register_ms_per_run": 1e3 * (t1 - t0) / n,
        "claim_finish_ms_per_run": 1e3 * (t2 - t1) / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--out", default="/tmp/bench_study")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--json", default=None)
    ap.add_argument("--seeds", type=int, default=None, help="override the preset's seed count")
    ap.add_argument("--no-store", action="store_true", help="skip the store micro-benchmark")
    ap.add_argument("--report-only", default=None, help="only build the report of this study folder")
    ap.add_argument("--figures", default=None, help="copy the report's PNG figures here")
    args = ap.parse_args()
    out = {"store": None if args.no_store else bench_store(), "presets": []}
    print(json.dumps(out["store"]), flush=True)
    for w in [] if args.report_only else args.workers:
        r = bench_preset(args.preset, Path(args.out) / f"w{w}", w, args.seeds)
        out["presets"].append(r)
        print(json.dumps(r), flush=True)
    folder = Path(args.report_only) if args.report_only else Path(args.out) / f"w{args.workers[0]}"
    t0 = time.perf_counter()
    rep = study.report(folder)
    out["report"] = {
        "seconds": time.perf_counter() - t0,
        "html": str(rep.html),
        "html_bytes": rep.html.stat().st_size,
        "table": [
            {
                k: r[k]
                for k in (
                    "measure",
                    "target",
                    "n",
                    "tau",
                    "tau_low",
                    "tau_high",
                    "rho",
                    "rho_low",
                    "rho_high",
                    "granulated_tau",
                    "verdict",
                )
            }
            for r in rep.table
        ],
        "notes": rep.notes,
    }
    if args.figures:
        dest = Path(args.figures)
        dest.mkdir(parents=True, exist_ok=True)
        for f in rep.figures:
            if f.endswith(".png"):
                shutil.copy(f, dest / Path(f).name)
        shutil.copy(rep.html, dest / "report.html")
    print(json.dumps(out["report"], indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
