"""Unit costs behind the CPU loop of ``flatminima.objective.values_at`` (the numbers quoted in
docs/bench_landscape.md).

Times, best of several runs, on the built-in MLP (40 → 64 → 64 → 10) and MNIST-1D's 4,000 training samples:
- a forward + loss as ``Objective.loss`` computes it (``functional_call`` on θ's views) vs with θ loaded in
  place (the CPU loop);
- ``F.cross_entropy`` vs logsumexp(z) − z_y on 4,000 × 10 logits;
- ``F.linear`` over 4,000 rows with 10 vs 16 output columns, and the 64 → 64 layer's GFLOP/s;
- ``values_at`` per point with batches of 1,024 vs 4,000 rows (merging off vs on), identity on vs off;
- two Python threads on disjoint points vs one (how far two cores scale here).

Usage:  python benchmarks/landscape_parts.py [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import threading
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call


def best_ms(fn, repeats: int = 7, inner: int = 50) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner * 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from flatminima import Objective
    from flatminima.data import load_mnist1d
    from flatminima.landscape import directions
    from flatminima.models import build
    from flatminima.objective import Span

    data = load_mnist1d()
    X, y = data.train
    torch.manual_seed(0)
    net = build("mlp", data.input_shape, data.num_classes).eval()
    params = {n: p.detach() for n, p in net.named_parameters()}
    out: dict[str, float] = {}
    whole = Objective(copy.deepcopy(net), "cross_entropy", data.train, batch_size=len(y))
    theta = whole.params
    with torch.no_grad():
        out["forward_loss_objective_functional_call_ms"] = best_ms(lambda: whole._batch_loss(theta, (X, y)))
        out["forward_loss_bare_functional_call_ms"] = best_ms(
            lambda: F.cross_entropy(functional_call(net, params, (X,)), y))
        out["forward_loss_in_place_ms"] = best_ms(lambda: F.cross_entropy(net(X), y))
        z = net(X)
        out["F.cross_entropy_ms"] = best_ms(lambda: F.cross_entropy(z, y), inner=200)
        out["logsumexp_minus_z_y_ms"] = best_ms(
            lambda: (torch.logsumexp(z, 1) - z.gather(1, y[:, None])[:, 0]).mean(), inner=200)
        h = torch.randn(len(y), 64)
        for cols in (10, 16, 64):
            W, b = torch.randn(cols, 64), torch.randn(cols)
            ms = best_ms(lambda W=W, b=b: F.linear(h, W, b), inner=200)
            out[f"linear_64_to_{cols}_ms"] = ms
            out[f"linear_64_to_{cols}_gflops"] = 2 * len(y) * 64 * cols / ms / 1e6
    objs = {rows: Objective(copy.deepcopy(net), "cross_entropy", data.train, batch_size=rows) for rows in (1024, 4000)}
    dirs = directions(objs[1024], "filter", 2, seed=0)
    span = Span(dirs.origin, dirs.vectors, torch.rand(128, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    per_point = 1.0 / len(span)
    for rows, obj in objs.items():
        for shortcut in (True, False):
            key = f"values_at_batches_{rows}_{'identity' if shortcut else 'no_identity'}_ms_per_point"
            out[key] = best_ms(lambda obj=obj, s=shortcut: obj.values_at(span, ["loss"], shortcut=s), 3, 1) * per_point
    # Batches given as lists (not tuples) are never merged: the 1,024-row batches as they are.
    unmerged = Objective(copy.deepcopy(net), "cross_entropy", [[X[i:i + 1024], y[i:i + 1024]]
                                                               for i in range(0, len(y), 1024)])
    out["values_at_batches_1024_unmerged_ms_per_point"] = best_ms(
        lambda: unmerged.values_at(span, ["loss"]), 3, 1) * per_point
    twins = [copy.deepcopy(objs[1024]) for _ in range(2)]

    def two_threads() -> None:
        threads = [threading.Thread(target=lambda i=i: twins[i].values_at(
            Span(span.origin, span.vectors, span.coefs[i::2]), ["loss"])) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    out["two_python_threads_ms_per_point"] = best_ms(two_threads, 3, 1) * per_point
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
