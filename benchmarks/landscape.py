"""Benchmark: a 51 x 51 filter-normalised loss plane, flatminima vs the `loss-landscapes` package.

Same model (built-in MLP, trained briefly on MNIST-1D), same data (the full training set), same grid and
the same two direction vectors: the directions are drawn by ``flatminima.landscape.directions`` and handed
to ``loss_landscapes.planar_interpolation`` as the end points start + steps·h·d₁ and start + steps·h·d₂
of a plane whose corner is start = θ₀ − d₁ − d₂ (h = 2/50, the grid step), so both evaluate
L(θ₀ + α·d₁ + β·d₂) on α, β ∈ {−1, −1 + h, …, 1}.

A quirk of ``planar_interpolation`` (loss-landscapes 3.0.x, ``main.py``): even-numbered columns are
evaluated at β offsets 1…steps and odd ones at 0…steps−1 (it steps before evaluating on the way up, after
it on the way down). The comparison follows the points it actually visits: our surface is also evaluated
on the 52-point β grid −1 + j·h, j = 0…51, untimed, and column i of theirs is compared with ours[i, 1:52]
(i even) or ours[i, 0:51] (i odd). The timed flatminima run is the plain 51 x 51 grid.

Usage:  python benchmarks/landscape.py [--epochs 5] [--repeats 1] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time

import numpy as np
import torch


def build(epochs: int, seed: int):
    from flatminima import Objective
    from flatminima.data import load_mnist1d
    from flatminima.models import build as build_model
    from flatminima.train import fit

    data = load_mnist1d()
    torch.manual_seed(seed)
    net = build_model("mlp", data.input_shape, data.num_classes)
    fit(net, data.train, {"epochs": epochs, "batch_size": 64, "seed": seed}, progress=False)
    return net.eval(), data, Objective


def ours(obj, dirs, chunk_size=None):
    from flatminima.landscape import slice_2d

    start, cpu = time.perf_counter(), time.process_time()
    surf = slice_2d(obj, dirs, grid=51, accuracy=False, progress=False, chunk_size=chunk_size)
    return time.perf_counter() - start, time.process_time() - cpu, surf


def theirs(obj, dirs, X, y):
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    steps, h = 51, 2.0 / 50
    d1, d2 = dirs.vectors
    corner = dirs.origin - d1 - d2
    start_model, end1, end2 = (
        obj.model_at(t) for t in (corner, corner + steps * h * d1, corner + steps * h * d2)
    )
    metric = Loss(torch.nn.functional.cross_entropy, X, y)
    t0, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        z = loss_landscapes.planar_interpolation(
            start_model, end1, end2, metric, steps=steps, deepcopy_model=True
        )
    return time.perf_counter() - t0, time.process_time() - cpu, np.asarray(z, dtype=np.float64)


def compare(obj, dirs, z_theirs):
    from flatminima.landscape import slice_2d

    beta = -1.0 + np.arange(52) * (2.0 / 50)
    ref = slice_2d(obj, dirs, grid=(51, beta), accuracy=False, progress=False).loss
    mine = np.stack([ref[i, 1:52] if i % 2 == 0 else ref[i, 0:51] for i in range(51)])
    diff = np.abs(mine - z_theirs)
    return float(diff.max()), float((diff / np.abs(z_theirs)).max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--chunks", default="default,4,16,256", help="chunk sizes to time for flatminima")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for both libraries (1 avoids thrashing on a shared machine)",
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda: both libraries run there")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from flatminima.landscape import directions

    net, data, Objective = build(args.epochs, args.seed)
    obj = Objective(copy.deepcopy(net), "cross_entropy", data.train, device=args.device)
    dirs = directions(obj, "filter", 2, seed=args.seed)
    X, y = (t.to(args.device) for t in data.train)
    rows = {
        "model": f"mlp ({obj.dim} parameters)",
        "data": f"MNIST-1D train ({len(y)} samples)",
        "grid": "51 x 51",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_avg": os.getloadavg(),
    }
    runs = [theirs(obj, dirs, X, y) for _ in range(args.repeats)]
    t_theirs, c_theirs, z = min(r[0] for r in runs), min(r[1] for r in runs), runs[-1][2]
    rows["loss_landscapes_s"], rows["loss_landscapes_cpu_s"] = t_theirs, c_theirs
    wall, cpu = {}, {}
    for c in args.chunks.split(","):
        chunk = None if c == "default" else int(c)
        mine = [ours(obj, dirs, chunk) for _ in range(args.repeats)]
        wall[c], cpu[c] = min(r[0] for r in mine), min(r[1] for r in mine)
    rows["flatminima_s"], rows["flatminima_cpu_s"] = wall, cpu
    rows["speedup_wall"] = {c: t_theirs / t for c, t in wall.items()}
    rows["speedup_cpu"] = {c: c_theirs / t for c, t in cpu.items()}
    rows["max_abs_diff"], rows["max_rel_diff"] = compare(obj, dirs, z)
    rows["loss_range"] = [float(z.min()), float(z.max())]
    print(json.dumps(rows, indent=2, default=float))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2, default=float)


if __name__ == "__main__":
    main()
