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

Usage:  python benchmarks/landscape.py [--epochs 5] [--repeats 3] [--threads 1] [--json out.json]
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


def ours(obj, dirs, accuracy=False, engine=None):
    from flatminima.landscape import slice_2d

    start, cpu = time.perf_counter(), time.process_time()
    if engine is None:
        surf = slice_2d(obj, dirs, steps=51, accuracy=accuracy, progress=False)
    else:  # the vmap engine (what runs on GPUs), forced on the CPU for comparison
        from flatminima.objective import Span

        g = np.linspace(-1, 1, 51)
        A, B = np.meshgrid(g, g, indexing="ij")
        span = Span(dirs.origin, dirs.vectors, torch.as_tensor(np.stack([A.ravel(), B.ravel()], 1)))
        surf = obj.values_at(span, ["loss"], engine=engine, chunk_size=16)
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
    ref = slice_2d(obj, dirs, steps=(51, beta), accuracy=False, progress=False).loss
    mine = np.stack([ref[i, 1:52] if i % 2 == 0 else ref[i, 0:51] for i in range(51)])
    diff = np.abs(mine - z_theirs)
    return float(diff.max()), float((diff / np.abs(z_theirs)).max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs each (interleaved)")
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
    X, y = (t.to(args.device) for t in data.train)
    objs = {  # the default batches of 1,024 rows, and the single 4,000-row batch loss-landscapes uses
        "1024": Objective(copy.deepcopy(net), "cross_entropy", data.train, device=args.device),
        "4000": Objective(copy.deepcopy(net), "cross_entropy", data.train, device=args.device, batch_size=len(y)),
    }
    obj = objs["1024"]
    dirs = directions(obj, "filter", 2, seed=args.seed)
    rows = {
        "model": f"mlp ({obj.dim} parameters)",
        "data": f"MNIST-1D train ({len(y)} samples)",
        "grid": "51 x 51",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_avg_before": os.getloadavg(),
    }
    variants = {
        "loss-landscapes (loss)": lambda: theirs(obj, dirs, X, y),
        "flatminima loss, batches of 1024": lambda: ours(objs["1024"], dirs),
        "flatminima loss, one batch of 4000": lambda: ours(objs["4000"], dirs),
        "flatminima loss + accuracy, batches of 1024": lambda: ours(objs["1024"], dirs, accuracy=True),
        "flatminima loss, vmap engine (as on GPUs), batches of 1024": lambda: ours(objs["1024"], dirs, engine="vmap"),
    }
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    z = None
    for _ in range(args.repeats):
        for name, run in variants.items():
            w, c, out = run()
            wall[name].append(w)
            cpu[name].append(c)
            if name.startswith("loss-landscapes"):
                z = out
    rows["load_avg_after"] = os.getloadavg()
    ref = min(wall["loss-landscapes (loss)"])
    rows["wall_s_best"] = {k: min(v) for k, v in wall.items()}
    rows["wall_s_all"] = wall
    rows["cpu_s_best"] = {k: min(v) for k, v in cpu.items()}
    rows["speedup_vs_loss_landscapes"] = {k: ref / min(v) for k, v in wall.items()}
    rows["max_abs_diff"], rows["max_rel_diff"] = compare(obj, dirs, z)
    rows["loss_range"] = [float(z.min()), float(z.max())]
    print(json.dumps(rows, indent=2, default=float))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2, default=float)


if __name__ == "__main__":
    main()
