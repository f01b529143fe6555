"""Scaling of the Objective: HVP time vs parameters and data, 1 vs 2 processes, peak memory HVP vs gradient.

    python benchmarks/scaling.py --out benchmarks/results/scaling.json
    python benchmarks/scaling.py --memory-only --out benchmarks/results/scaling_memory.json

Every measurement of memory runs in a fresh subprocess (``--probe``) with glibc's mmap threshold fixed
(``MALLOC_MMAP_THRESHOLD_``), so large tensors are returned to the OS when freed and the resident set
tracks live memory; the peak of one operation is the kernel's high-water mark (VmHWM, reset just before it through
``/proc/self/clear_refs``) minus the resident set before it.
Timings are medians over repeats, on whatever CPU this runs on (state the load when you report them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from flatminima import Objective, distributed
from flatminima.curvature import eigenvalues, spectral_density, trace
from flatminima.errors import FlatminimaError
from flatminima.models import mlp


def _problem(width: int, n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 40, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    torch.manual_seed(seed)
    return mlp([40], 10, width=width, depth=2), X, y


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# The operations whose peak is measured. ``hvp`` / ``grad``: one product at a new θ without graph reuse
# (the data's full pass); ``hvp_reuse``: three products at the same θ with ``reuse_graph="auto"`` (the
# default: the cached graphs count); ``lanczos``: the top 5 eigenvalues, ``LANCZOS_ITER`` steps (tol 1e-12
# runs them all; its basis is reserved in the budget); ``hutch++``: trace with ``HUTCH_PROBES`` products
# (its sketch); ``slq``: one SLQ probe of ``SLQ_STEPS`` steps.
OPS = ("grad", "hvp", "hvp_reuse", "lanczos", "hutch++", "slq")
LANCZOS_ITER = 40
HUTCH_PROBES = 30
SLQ_STEPS = 40


def _run_op(obj: Objective, op: str, v: torch.Tensor) -> None:
    if op == "grad":
        obj.grad()
    elif op == "hvp":
        obj.hvp(v)
    elif op == "hvp_reuse":
        for _ in range(3):
            obj.hvp(v)
    elif op == "lanczos":
        eigenvalues(obj, k=5, max_iter=LANCZOS_ITER, tol=1e-12)
    elif op == "hutch++":
        trace(obj, "hutch++", samples=HUTCH_PROBES)
    elif op == "slq":
        spectral_density(obj, samples=1, steps=SLQ_STEPS)
    else:
        raise ValueError(op)


def probe(op: str, width: int, n: int, memory_mb: float | None) -> dict:
    """One operation in this (fresh) process: its peak memory above the resident set before it.

    A warm-up of the same operation on 64 samples first: the first double backward of a process loads
    code and caches (about 40 MB, 4 s here) that are paid once per process, not per product. The
    objective (model copy, data, θ₀) exists before the window opens: ``memory_mb`` budgets what the
    operations and the algorithm on top allocate, not the objective at rest.
    """
    model, X, y = _problem(width, 64)
    warm = Objective(model, "cross_entropy", (X, y), reuse_graph=op == "hvp_reuse")
    _run_op(warm, "grad" if op == "grad" else "hvp", torch.randn(warm.dim))
    del warm
    model, X, y = _problem(width, n)
    reuse = "auto" if op in ("hvp_reuse", "lanczos", "hutch++", "slq") else False
    obj = Objective(model, "cross_entropy", (X, y), batch_size=n, reuse_graph=reuse, memory_mb=memory_mb)
    v = torch.randn(obj.dim)
    if memory_mb is not None:
        obj.memory_plan  # measure the bytes per sample outside the window  # noqa: B018
    obj.loss()  # the one-off determinism check, outside the window
    # Reset the kernel's high-water mark (VmHWM) to the current resident set, so an earlier peak (imports,
    # the warm-up) cannot hide or inflate this operation's (ru_maxrss cannot be reset).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _rss_mb()
    high_before = _status_mb("VmHWM:")
    start = time.perf_counter()
    _run_op(obj, op, v)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM:")
    plan = obj.memory_plan
    return {"op": op, "width": width, "n": n, "dim": obj.dim, "memory_mb": memory_mb,
            "peak_above_baseline_mb": peak - before, "seconds": seconds,
            "peak_over_budget": (peak - before) / memory_mb if memory_mb else None,
            "valid": peak > high_before,  # else an earlier high-water mark hides the operation's peak
            "chunk_rows": plan.rows if plan else n, "reuse_graph": plan.reuse_graph if plan else reuse}


def _fresh(op: str, width: int, n: int, memory_mb: float | None) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, __file__, "--probe", op, str(width), str(n), str(memory_mb)]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(width: int, n: int, budget_mb: float) -> list[dict]:
    return [_fresh("grad", width, n, None), _fresh("hvp", width, n, None), _fresh("hvp", width, n, budget_mb)]


def budgets(width: int, n: int, budgets_mb: tuple[float, ...] = (32.0, 128.0, 512.0)) -> list[dict]:
    """Peak / budget of every operation in :data:`OPS` but the gradient, at each budget (fresh processes)."""
    return [_fresh(op, width, n, b) for b in budgets_mb for op in OPS[1:]]


def floor(width: int, n: int) -> dict:
    """The smallest budget the error message advises, and the peak of one HVP just above it.

    Without graph reuse the floor does not depend on the data's size (one row per chunk); ``n`` only
    sets how many one-row chunks the measured product runs through.
    """
    model, X, y = _problem(width, n)
    try:
        Objective(model, "cross_entropy", (X, y), batch_size=n, reuse_graph=False, memory_mb=0.01).memory_plan  # noqa: B018
    except FlatminimaError as err:
        advised = float(str(err).split("raise memory_mb above ")[1].split()[0].rstrip("."))
    else:
        raise AssertionError("a 0.01 MiB budget was accepted")
    rows = [_fresh("hvp", width, n, advised * 1.02)]
    return {"advised_floor_mb": advised, "runs": rows}


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
    parser.add_argument("--memory-only", action="store_true",
                        help="only the memory-budget measurements (peak / budget at 32, 128, 512 MiB, floor)")
    args = parser.parse_args()
    if args.probe:
        op, width, n, budget = args.probe
        print(json.dumps(probe(op, int(width), int(n), None if budget == "None" else float(budget))))
        return
    torch.set_num_threads(1)  # one thread per process, so 1 vs 2 processes compares like with like
    if args.memory_only:
        results = {"budgets": budgets(256, 20000), "floor": floor(256, 2000), "torch": torch.__version__}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
        return
    results = {
        "load_average_at_start": os.getloadavg(),
        "memory": memory(width=256, n=20000, budget_mb=16.0),
        "budgets": budgets(256, 20000),
        "floor": floor(256, 2000),
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
