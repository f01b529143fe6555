"""Cost and seed-to-seed spread of every sharpness measure on the built-in MLP and CNN (MNIST-1D).

For each model (trained once, seed 0) and each measure configuration, the measure is run with seeds
0..4 on the full training set (1000 samples). We report the mean value, the spread over seeds (standard
deviation), the mean reported standard error, the cost of one run, and for Monte Carlo measures how many
samples/probes/restarts a 5% relative error bar would need: n·(spread/(0.05·|mean|))², the standard
1/√n scaling from the current n.

    python benchmarks/sharpness.py --out docs/bench_sharpness.md [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

from flatminima import Objective
from flatminima.data import load_mnist1d
from flatminima.models import build
from flatminima.sharpness import measure
from flatminima.train import Recipe, fit

# (label, measure name, config, the config key that sets its sample size or None)
CONFIGS = [
    ("lambda_max", "lambda_max", {}, None),
    ("lambda_max ggn", "lambda_max", {"operator": "ggn"}, None),
    ("trace (hutch++, 60)", "trace", {}, "probes"),
    ("trace ggn", "trace", {"operator": "ggn"}, "probes"),
    ("frobenius (30)", "frobenius", {}, "probes"),
    ("worst_case l2 ρ=0.05", "worst_case", {}, "restarts"),
    ("worst_case l2 adaptive ρ=0.5", "worst_case", {"rho": 0.5, "adaptive": True}, "restarts"),
    ("worst_case linf ρ=0.005", "worst_case", {"rho": 0.005, "norm": "linf"}, "restarts"),
    ("worst_case m=128 (4 batches)", "worst_case", {"m": 128, "max_batches": 4}, None),
    ("keskar ε=1e-3", "keskar", {}, "restarts"),
    ("average_case σ=0.01 (64)", "average_case", {}, "samples"),
    ("average_case adaptive σ=0.1", "average_case", {"sigma": 0.1, "adaptive": True}, "samples"),
    ("pac_bayes target 0.1 (32)", "pac_bayes", {}, "samples"),
    ("pac_bayes magnitude-aware", "pac_bayes", {"magnitude_aware": True}, "samples"),
    ("fisher_rao", "fisher_rao", {}, None),
    ("relative_flatness", "relative_flatness", {}, None),
]
DEFAULT_N = {"probes": {"trace": 60, "frobenius": 30}, "restarts": 3, "samples": {"average_case": 64,
                                                                                 "pac_bayes": 32}}


def _n(name: str, key: str | None, config: dict) -> int | None:
    if key is None:
        return None
    if key in config:
        return config[key]
    d = DEFAULT_N[key]
    return d[name] if isinstance(d, dict) else d


def trained(model: str, epochs: int) -> tuple[Objective, dict]:
    data = load_mnist1d(num_samples=1250)
    torch.manual_seed(0)
    net = build(model, data.input_shape, data.num_classes)
    res = fit(net, data.train, Recipe(epochs=epochs, seed=0), progress=False)
    obj = Objective(net, "cross_entropy", data.train)
    return obj, res.history[-1]


# vmap over parameter sets is ~9x slower than a loop for conv nets on CPU: evaluate them one by one.
ONE_BY_ONE = {"cnn1d"}


def run(model: str, seeds: int, epochs: int) -> list[dict]:
    obj, last = trained(model, epochs)
    print(f"{model}: {obj.dim} parameters, train loss {obj.loss():.4f}, last epoch {last}", flush=True)
    rows = []
    for label, name, config, key in CONFIGS:
        if model in ONE_BY_ONE and "chunk_size" in _seed_keys(name):
            config = config | {"chunk_size": 1}
        results = [measure(obj, name, seed=s, **config) if "seed" in _seed_keys(name) else
                   measure(obj, name, **config) for s in range(seeds)]
        values = [r.value for r in results]
        mean = statistics.fmean(values)
        spread = statistics.stdev(values) if len(values) > 1 else math.nan
        errs = [r.stderr for r in results if r.stderr is not None and not math.isnan(r.stderr)]
        n = _n(name, key, config)
        # 1/√n scaling only holds for averages (probes, samples), not for a max over restarts.
        need = (math.ceil(n * (spread / (0.05 * abs(mean))) ** 2)
                if n and key != "restarts" and mean and spread > 0 else None)
        c = results[0].cost
        rows.append({"model": model, "measure": label, "mean": mean, "spread": spread,
                     "rel": spread / abs(mean) if mean else math.nan,
                     "stderr": statistics.fmean(errs) if errs else None, "n": n, "key": key, "need": need,
                     "hvps": c.hvps, "grads": c.grads, "losses": c.losses, "points": c.batched_points,
                     "passes": c.data_passes, "seconds": statistics.median(r.cost.seconds for r in results),
                     "sigma": statistics.fmean(r.extra["sigma"] for r in results) if name == "pac_bayes"
                     else None})
        print(f"  {label:32s} {mean:.5g} ± {spread:.2g} (seeds)  {rows[-1]['seconds']:.2f}s", flush=True)
    return rows


def _seed_keys(name: str) -> set[str]:
    from flatminima.sharpness import entry

    return set(entry(name).defaults())


def table(rows: list[dict]) -> str:
    head = ("| model | measure | mean over seeds | spread (sd) | rel. | mean reported s.e. | n → n for 5% "
            "| cost of one run | seconds |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        cost = ", ".join(f"{r[k]:.0f} {k}" for k in ("hvps", "grads", "losses", "points") if r[k])
        cost += f", {r['passes']:.0f} passes"
        n = f"{r['n']} {r['key']} → {r['need']}" if r["need"] is not None else (
            f"{r['n']} {r['key']}" if r["n"] else ("exact" if r["stderr"] is None else "-"))
        se = f"{r['stderr']:.2g}" if r["stderr"] is not None else "-"
        val = f"{r['mean']:.5g}" + (f" (σ={r['sigma']:.3g})" if r["sigma"] else "")
        lines.append(f"| {r['model']} | {r['measure']} | {val} | {r['spread']:.2g} | {r['rel']:.1%} | {se} | "
                     f"{n} | {cost} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp,cnn1d")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the markdown table here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    start = time.time()
    rows = [r for m in a.models.split(",") for r in run(m, a.seeds, a.epochs)]
    text = table(rows)
    print(text)
    if a.out:
        with open(a.out + ".table.md", "w") as f:
            f.write(f"<!-- {platform.processor() or platform.machine()}, torch {torch.__version__}, "
                    f"{a.threads} thread(s), total {time.time() - start:.0f}s -->\n" + text + "\n")


if __name__ == "__main__":
    main()
