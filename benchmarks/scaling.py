"""Scaling of the Objective: HVP time vs parameters and data, 1 vs 2 processes, peak memory HVP vs gradient.

    python benchmarks/scaling.py --out benchmarks/results/scaling.json

Every measurement of memory runs in a fresh subprocess (``--probe``) with glibc's mmap threshold fixed
(``MALLOC_MMAP_THRESHOLD_``), so large tensors are returned to the OS when freed and the resident set
tracks live memory; the peak of one operation is ``ru_maxrss`` after it minus the resident set before it.
Timings are medians over repeats, on whatever CPU this runs on (state the load when you report them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from flatminima import Objective, distributed
from flatminima.models import mlp


def _problem(width: int, n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 40, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    torch.manual_seed(seed)
    return mlp([40], 10, width=width, depth=2), X, y


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def probe(op: str, width: int, n: int, memory_mb: float | None) -> dict:
    """One operation in this (fresh) process: its peak memory above the resident set before it.

    A warm-up of the same operation on 64 samples first: the first double backward of a process loads
    code and caches (about 40 MB, 4 s here) that are paid once per process, not per product.
    """
    model, X, y = _problem(width, 64)
    warm = Objective(model, "cross_entropy", (X, y), reuse_graph=False)
    warm.grad() if op == "grad" else warm.hvp(torch.randn(warm.dim))
    del warm
    model, X, y = _problem(width, n)
    obj = Objective(model, "cross_entropy", (X, y), batch_size=n, reuse_graph=False, memory_mb=memory_mb)
    v = torch.randn(obj.dim)
    if memory_mb is not None:
        obj.memory_plan  # plan outside the measured window  # noqa: B018
    before = _rss_mb()
    high_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    obj.grad() if op == "grad" else obj.hvp(v)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"op": op, "width": width, "n": n, "dim": obj.dim, "memory_mb": memory_mb,
            "peak_above_baseline_mb": peak - before, "seconds": seconds,
            "valid": peak > high_before,  # else an earlier high-water mark hides the operation's peak
            "chunk_rows": obj.memory_plan.rows if memory_mb else n}


def _fresh(op: str, width: int, n: int, memory_mb: float | None) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, __file__, "--probe", op, str(width), str(n), str(memory_mb)]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(width: int, n: int, budget_mb: float) -> list[dict]:
    return [_fresh("grad", width, n, None), _fresh("hvp", width, n, None), _fresh("hvp", width, n, budget_mb)]


def _hvp_seconds(width: int, n: int, repeats: int) -> dict:
    model, X, y = _problem(width, n)
    obj = Objective(model, "cross_entropy", (X, y), batch_size=1024, reuse_graph=False)
    v = torch.randn(obj.dim)
    obj.hvp(v)  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        obj.hvp(v)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    obj.grad()
    grad_s = time.perf_counter() - start
    return {"width": width, "n": n, "dim": obj.dim, "hvp_s": statistics.median(times), "grad_s": grad_s}


def _dist_worker(rank: int, world: int, width: int, n: int, repeats: int, path: str) -> None:
    model, X, y = _problem(width, n)
    obj = Objective(model, "cross_entropy", distributed.shard((X, y)), batch_size=1024, reuse_graph=False,
                    distributed=True)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(0))
    obj.hvp(v)
    times = []
    for _ in range(repeats):
        torch.distributed.barrier()
        start = time.perf_counter()
        obj.hvp(v)
        times.append(time.perf_counter() - start)
    if rank == 0:
        Path(path).write_text(json.dumps({"world": world, "hvp_s": statistics.median(times)}))


def distributed_times(width: int, n: int, repeats: int) -> list[dict]:
    rows = []
    for world in (1, 2):
        path = Path(f"/tmp/flatminima_scaling_{os.getpid()}_{world}.json")
        distributed.launch(_dist_worker, world, width, n, repeats, str(path))
        rows.append({"width": width, "n": n, **json.loads(path.read_text())})
        path.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="flatminima scaling benchmark")
    parser.add_argument("--out", default="benchmarks/results/scaling.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probe", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        op, width, n, budget = args.probe
        print(json.dumps(probe(op, int(width), int(n), None if budget == "None" else float(budget))))
        return
    torch.set_num_threads(1)  # one thread per process, so 1 vs 2 processes compares like with like
    results = {
        "load_average_at_start": os.getloadavg(),
        "memory": memory(width=256, n=20000, budget_mb=16.0),
        "vs_params": [_hvp_seconds(w, 4000, args.repeats) for w in (64, 256, 1024)],
        "vs_data": [_hvp_seconds(256, n, args.repeats) for n in (2000, 6000, 18000)],
        "distributed": distributed_times(256, 18000, args.repeats),
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
