"""Benchmark studies over the user's own models, on the quick preset (96 runs of an MLP on MNIST-1D):

1. adding one measure to the finished study: only that column is computed, from the kept weights, with no
   training; its wall time against that measure's own cost (the sum of its stored seconds) × runs;
2. the same 96 models as a checkpoint study (a manifest of the kept weights): measuring cost per run
   against measuring inside the training study (each run's ``seconds.measure``).

    python benchmarks/own_models.py --work /tmp/bench_own --added frobenius --json docs/bench_own_models.json

The machine may be shared: the load average before and after each step is recorded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import flatminima.study as study
from flatminima.study.runner import weights_path

NETS = '''
from flatminima.models import build

def mlp(width=128, depth=2):
    return build("mlp", (40,), 10, width=width, depth=depth)
'''


def _rows(folder: Path) -> list[dict]:
    with study.Store(folder) as store:
        return store.rows("done")


def _timed(fn, *args, **kwargs):
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, [load0, os.getloadavg()[0]]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="a scratch folder")
    ap.add_argument("--added", default="frobenius", help="the measure added to the finished study")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    base = study.load_preset("quick").model_dump()
    quick = args.work / "quick"
    first, t_first, load_first = _timed(study.run, base, out=quick, workers=args.workers, progress=False)
    before = {r["id"]: r for r in _rows(quick)}

    added = json.loads(json.dumps(base))
    added["measures"][args.added] = {}
    second, t_added, load_added = _timed(study.run, added, out=quick, workers=args.workers, progress=False)
    after = _rows(quick)
    retrained = sum(r["attempts"] != before[r["id"]]["attempts"] for r in after)
    own = [r["results"]["measures"][args.added]["cost"].get("seconds", 0.0) for r in after]

    # the same models as checkpoints: a manifest of the kept weights and an architecture module of the user's
    ck = args.work / "ckpt"
    ck.mkdir(exist_ok=True)
    (args.work / "bench_nets.py").write_text(NETS)
    sys.path.insert(0, str(args.work))
    axes = list(study.load_preset("quick").axes)
    with (ck / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "seed", *axes])
        for r in after:
            w.writerow([str(weights_path(quick, r["id"])), r["seed"],
                        *[json.dumps(r["config"]["recipe"][a]) if isinstance(r["config"]["recipe"][a], list)
                          else r["config"]["recipe"][a] for a in axes]])
    spec = {"name": "ck", "dtype": base["dtype"], "data": base["data"],
            "checkpoints": {"manifest": str(ck / "manifest.csv"), "model": "bench_nets:mlp"},
            "measures": {k: v for k, v in base["measures"].items() if k != "distance_from_init"}}
    cwd = os.getcwd()
    os.chdir(args.work)
    try:
        third, t_ck, load_ck = _timed(study.run, spec, out=args.work / "ck_study", workers=args.workers,
                                      progress=False)
    finally:
        os.chdir(cwd)
    ck_rows = _rows(args.work / "ck_study")
    keep = [m for m in spec["measures"]]
    train_measure = [sum(r["results"]["measures"][m]["cost"].get("seconds", 0.0) for m in keep) for r in after]
    ck_measure = [sum(r["results"]["measures"][m]["cost"].get("seconds", 0.0) for m in keep) for r in ck_rows]
    result = {
        "runs": len(after),
        "study_seconds": t_first, "study_load": load_first,
        "added_measure": args.added, "added_seconds": t_added, "added_load": load_added,
        "added_executed": second.executed, "retrained": retrained,
        "added_own_cost_sum": sum(own), "added_own_cost_per_run": statistics.mean(own),
        "added_over_own_cost_per_worker": t_added / (sum(own) / args.workers),
        "checkpoint_study_seconds": t_ck, "checkpoint_load": load_ck, "checkpoint_runs": third.counts.done,
        "measure_seconds_per_run_training_study": statistics.mean(train_measure),
        "measure_seconds_per_run_checkpoint_study": statistics.mean(ck_measure),
        "checkpoint_stage_seconds_per_run": statistics.mean(r["results"]["seconds"]["total"] for r in ck_rows),
        "workers": args.workers,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
