"""Wall time of ``flatminima inspect`` on the built-in MLP / MNIST-1D with ``--compare`` of two other seeds at
``--budget standard`` (target: under a minute on 2 cores).

Set-up (not timed): three seeds of the MLP trained as ``flatminima curvature`` trains them (20 epochs), their
checkpoints in ``--work``. Then the command is run ``--repeats`` times, whole process (start-up included), and
the median wall time and the HVPs spent are printed (and written to ``--json``):

    python benchmarks/inspect_page.py --work /tmp/bench_inspect --json docs/bench_inspect.json
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


def checkpoints(work: Path) -> list[str]:
    from flatminima.workflows.common import get_data, get_model

    data = get_data("mnist1d")
    paths = []
    for seed in (0, 1, 2):
        folder = work / f"seed{seed}"
        get_model("mlp", data, recipe={"epochs": 20, "seed": seed}, out_dir=str(folder), progress=False)
        paths.append(str(folder / "last.pt"))
    return paths


def command(paths: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "flatminima", "inspect", "--checkpoint", paths[0], "--compare", paths[1],
            "--compare", paths[2], "--budget", "standard", "--out", str(out), "--no-progress"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/bench_inspect")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--print-command", action="store_true", help="set up, print the timed command and exit")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    paths = checkpoints(work)
    cmd = command(paths, work / "page")
    if a.print_command:
        print(" ".join(cmd))
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    walls = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        walls.append(time.perf_counter() - t)
    res = json.loads((work / "page" / "inspection.json").read_text())
    out = {"command": " ".join(cmd[1:]), "wall_seconds": walls, "median_seconds": statistics.median(walls),
           "hvps": res["cost"]["hvps"], "hvp_cap": res["plan"]["cap"], "inside_seconds": res["seconds"],
           "estimated_seconds": res["estimated_seconds"], "warnings": [w["kind"] for w in res["warnings"]]}
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
