"""Whole curvature algorithms under ``memory_mb``: several products per process, kept graphs included.

    python benchmarks/memory_algorithms.py

An MLP 40-1000-1000-10 (1.05M parameters) on 400 rows in batches of 10 (40 kept graphs where they fit), in one
fresh process per (algorithm, budget): Lanczos top-3 with max_iter=20, Hutch++ with 12 samples, SLQ with 2
samples of 15 steps. Each budget just above the floor the algorithm's refusal names, and at about 2x and 4x
of it. The peak is the resident high-water mark (VmHWM, reset after the plan and one loss) above the idle
Objective, against the budget; glibc's mmap threshold is fixed so freed tensors leave the resident set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CASES = [("lanczos", 60), ("lanczos", 215), ("lanczos", 420), ("lanczos", 840), ("hutchpp", 60), ("hutchpp", 95),
         ("hutchpp", 185), ("hutchpp", 300), ("slq", 40), ("slq", 160), ("slq", 320), ("slq", 640)]


def _mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def measure(algo: str, budget: float) -> dict:
    import torch

    from flatminima import Objective, curvature
    from flatminima.errors import FlatminimaError
    from flatminima.models import mlp

    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(400, 40, generator=gen), torch.randint(0, 10, (400,), generator=gen)
    torch.manual_seed(0)
    obj = Objective(mlp([40], 10, width=1000, depth=2), "cross_entropy", (X, y), batch_size=10, memory_mb=budget)
    obj.memory_plan, obj.loss()
    Path("/proc/self/clear_refs").write_text("5")
    base = _mb("VmRSS")
    run = {"lanczos": lambda: curvature.eigenvalues(obj, 3, max_iter=20),
           "hutchpp": lambda: curvature.trace(obj, "hutch++", samples=12, seed=0),
           "slq": lambda: curvature.spectral_density(obj, samples=2, steps=15, seed=0)}[algo]
    try:
        run()
    except FlatminimaError as err:
        return {"algo": algo, "budget": budget, "refused": str(err).split(";")[0]}
    peak = _mb("VmHWM") - base
    return {"algo": algo, "budget": budget, "peak_mb": round(peak, 1), "peak_over_budget": round(peak / budget, 2)}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(measure(sys.argv[1], float(sys.argv[2]))))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    for algo, budget in CASES:
        out = subprocess.run([sys.executable, __file__, algo, str(budget)], env=env, capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-400:], flush=True)


if __name__ == "__main__":
    main()
