"""Curvature benchmark: flatminima against PyHessian, hessian-eigenthings and curvlinops, in one run.

Same model (built-in MLP, 15,210 parameters), same full-data loss (mean cross-entropy over 4,000
MNIST-1D training samples, in 4 equal batches of 1,000 so that every library's batch averaging is exact),
same matrix (one H·v compared across libraries). Measured:

1. the reference: flatminima float64 Lanczos (tol 1e-10) cross-checked with SciPy ``eigsh``;
2. top-1 and top-5 eigenvalues: seconds and HVPs of each library's defaults and of a sweep of its
   settings, the first setting that reaches relative error <= 1e-4;
3. the trace: Hutchinson vs Hutch++ vs PyHessian's trace, HVPs and seconds to reach equal standard error,
   against the exact trace (BackPACK's exact Hessian diagonal);
4. the spectral density (smaller MLP, 1,834 parameters, whose dense float64 Hessian gives exact
   eigenvalues): Wasserstein-1 distance of each SLQ quadrature to the exact spectral measure;
5. unit costs (loss, gradient, HVP with each ``hvp_method`` and with/without ``reuse_graph``, in memory and
   streamed in batches of 256) and peak memory (max RSS of a subprocess per library);
6. ``--sections speed``: flatminima alone (no peers needed), seconds of one HVP (graph reused, rebuilt,
   streamed) and of a top-1 Lanczos run, through the public API only; ``--baseline-src <old checkout>/src``
   runs another version in the same process, block for block, and reports the ratio per case.

Run:  python benchmarks/curvature.py [--quick] [--threads 1] [--json docs/bench_curvature.json]
Peers (benchmark only, not package dependencies; ``--no-deps`` keeps a second torch out):
    pip install --no-deps pyhessian hessian-eigenthings curvlinops-for-pytorch backpack-for-pytorch \
        einops einconv unfoldNd linear-operator jaxtyping wadler-lindig
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse.linalg as sla
import torch
from torch import nn

from flatminima import Objective
from flatminima.curvature import eigenvalues, spectral_density, trace
from flatminima.data import load_mnist1d
from flatminima.models import mlp
from flatminima.train import Recipe, fit

warnings.filterwarnings("ignore")
TARGET = 1e-4
BATCH = 1000  # 4,000 = 4 x 1,000: uniform batch averaging (hessian-eigenthings) equals the exact mean


# ----------------------------------------------------------------------------- helpers
def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time over ``repeats`` calls (after the first, which is also timed) and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


class Counter:
    """Counts calls of a wrapped matrix-vector product (columns of a block count one each)."""

    def __init__(self) -> None:
        self.n = 0

    def wrap(self, f: Callable, cols: Callable[[Any], int] = lambda *a, **k: 1) -> Callable:
        def g(*a, **k):
            self.n += cols(*a, **k)
            return f(*a, **k)

        return g


def rel_err(values, ref) -> float:
    values = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    ref = np.asarray(ref, dtype=np.float64)[: len(values)]
    return float(np.max(np.abs(values - ref) / np.abs(ref)))


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(x):
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.4g}"
        return str(x)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- set-up
def setup(
    quick: bool, width: int = 100, epochs: int | None = None
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    ds = load_mnist1d(num_samples=5000)
    n = 1000 if quick else 4000
    X, y = ds.x_train[:n].float(), ds.y_train[:n].long()
    torch.manual_seed(0)
    model = mlp((X.shape[1],), 10, width=width, depth=2)
    fit(
        model,
        (X, y),
        Recipe(optimizer="adam", lr=3e-3, batch_size=64, epochs=epochs or (3 if quick else 10), seed=0),
        progress=False,
    )
    return model.eval(), X, y


def batches(X: torch.Tensor, y: torch.Tensor, size: int = BATCH) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(X[i : i + size], y[i : i + size]) for i in range(0, len(X), size)]


def flat(params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params])


def split_like(v: torch.Tensor, params) -> list[torch.Tensor]:
    out, i = [], 0
    for p in params:
        out.append(v[i : i + p.numel()].view_as(p))
        i += p.numel()
    return out


# ----------------------------------------------------------------------------- peers
def pyhessian_instance(model: nn.Module, X, y, one_batch: bool):
    from pyhessian import hessian

    m = copy.deepcopy(model)
    if one_batch:  # PyHessian's single-batch mode: the whole data set as one batch, gradient graph reused
        return hessian(m, nn.CrossEntropyLoss(), data=(X, y), cuda=False)
    return hessian(m, nn.CrossEntropyLoss(), dataloader=batches(X, y), cuda=False)


def _ph_module():
    import pyhessian  # noqa: F401  (the package re-exports the class under the module's name)

    return sys.modules["pyhessian.hessian"]


def pyhessian_counted(h, counter: Counter):
    """Count PyHessian's products in both modes (the module-level HVP and the dataloader method)."""
    ph = _ph_module()
    if not hasattr(ph, "_orig_hvp"):
        ph._orig_hvp = ph.hessian_vector_product
    ph.hessian_vector_product = counter.wrap(ph._orig_hvp)
    h.dataloader_hv_product = counter.wrap(type(h).dataloader_hv_product.__get__(h))
    return h


def pyhessian_hv(h, v: torch.Tensor) -> torch.Tensor:
    vs = split_like(v, h.params)
    if h.full_dataset:
        return flat(h.dataloader_hv_product(vs)[1])
    ph = _ph_module()
    return flat(getattr(ph, "_orig_hvp", ph.hessian_vector_product)(h.gradsH, h.params, vs))


def eigenthings_op(model, X, y):
    from hessian_eigenthings import HessianOperator, supervised_loss

    return HessianOperator(copy.deepcopy(model), batches(X, y), supervised_loss(nn.functional.cross_entropy))


def curvlinops_op(model, X, y):
    from curvlinops import HessianLinearOperator

    m = copy.deepcopy(model)
    return HessianLinearOperator(
        m, nn.CrossEntropyLoss(), list(m.parameters()), batches(X, y), check_deterministic=False
    )


def scipy_op(
    matvec: Callable[[torch.Tensor], torch.Tensor], n: int, dtype, counter: Counter
) -> sla.LinearOperator:
    def mv(x):
        counter.n += 1
        return matvec(torch.as_tensor(np.ascontiguousarray(x).reshape(-1), dtype=dtype)).detach().numpy()

    return sla.LinearOperator((n, n), matvec=mv, dtype=np.float64 if dtype == torch.float64 else np.float32)


def patch_pyhessian_density() -> None:
    """PyHessian calls ``torch.eig`` (removed in torch 2): the same symmetric eigensolve via ``eigh``."""

    def eig(T, eigenvectors=True):
        w, V = torch.linalg.eigh(T)
        return torch.stack([w, torch.zeros_like(w)], 1), V

    torch.eig = eig


# ----------------------------------------------------------------------------- 1. reference and same matrix
def reference(obj64: Objective, k: int = 5) -> dict:
    start = time.perf_counter()
    lz = eigenvalues(obj64, k, "largest", tol=1e-10, max_iter=min(obj64.dim, 800))
    t_lz = time.perf_counter() - start
    c = Counter()
    start = time.perf_counter()
    ev = sla.eigsh(
        scipy_op(obj64.hvp, obj64.dim, torch.float64, c),
        k=k,
        which="LA",
        tol=1e-12,
        v0=np.random.default_rng(0).standard_normal(obj64.dim),
        return_eigenvectors=False,
    )
    t_es = time.perf_counter() - start
    ev = np.sort(ev)[::-1]
    return {
        "values": lz.values.tolist(),
        "converged": bool(lz.converged.all()),
        "lanczos_hvps": lz.cost.hvps,
        "lanczos_s": t_lz,
        "eigsh_values": ev.tolist(),
        "eigsh_hvps": c.n,
        "eigsh_s": t_es,
        "max_rel_diff": rel_err(ev, lz.values.numpy()),
    }


def same_matrix(model, X, y, obj64: Objective, obj32: Objective) -> list[dict]:
    v = torch.randn(obj32.dim, generator=torch.Generator().manual_seed(1))
    ref = obj64.hvp(v.double())
    rows = {"flatminima float32": obj32.hvp(v)}
    h = pyhessian_instance(model, X, y, one_batch=False)
    rows["PyHessian (dataloader)"] = pyhessian_hv(h, v)
    h1 = pyhessian_instance(model, X, y, one_batch=True)
    rows["PyHessian (one batch)"] = pyhessian_hv(h1, v)
    rows["hessian-eigenthings"] = eigenthings_op(model, X, y).matvec(v)
    rows["curvlinops"] = curvlinops_op(model, X, y) @ v
    return [
        {"library": k, "rel. diff. vs float64 H·v": float((hv.double() - ref).norm() / ref.norm())}
        for k, hv in rows.items()
    ]


# ----------------------------------------------------------------------------- 2. top eigenvalues
def top_eigen(
    model, X, y, obj32: Objective, ref: np.ndarray, k: int, repeats: int, quick: bool
) -> list[dict]:
    rows: list[dict] = []

    def add(library, setting, run: Callable[[], tuple[Any, int]], default=False):
        secs, (values, hvps) = timed(run, repeats)
        rows.append(
            {
                "library": library,
                "setting": setting + (" (default)" if default else ""),
                "HVPs": hvps,
                "seconds": secs,
                "rel. error": rel_err(values, ref[:k]),
            }
        )

    def fm(tol, stop="residual"):
        def run():
            r = eigenvalues(obj32, k, "largest", tol=tol, stop=stop)
            return r.values.numpy(), r.cost.hvps

        return run

    for tol in [1e-2, 1e-3, 1e-4, 1e-5]:
        add(
            "flatminima Lanczos",
            f"tol={tol:g}" + (" (residual bound)" if tol == TARGET else ""),
            fm(tol),
            default=tol == 1e-5,
        )
    add("flatminima Lanczos", f"tol={TARGET:g}, stop='gap' (gap-refined bound)", fm(TARGET, "gap"))

    def es(tol, op_factory, library):
        def run():
            c = Counter()
            op = op_factory(c)
            vals = sla.eigsh(
                op,
                k=k,
                which="LA",
                tol=tol,
                v0=np.random.default_rng(0).standard_normal(op.shape[0]),
                return_eigenvectors=False,
            )
            return vals, c.n

        return run

    for tol in [0.0, 1e-3]:  # ARPACK's tol barely changes its count here (21 products at 0 and 1e-2)
        add(
            "SciPy eigsh on flatminima H",
            f"tol={tol:g}",
            es(tol, lambda c: scipy_op(obj32.hvp, obj32.dim, torch.float32, c), "scipy"),
            default=tol == 0.0,
        )
    H_cl = curvlinops_op(model, X, y)
    for tol in [0.0, 1e-3]:
        add(
            "curvlinops + eigsh",
            f"tol={tol:g}",
            es(tol, lambda c: scipy_op(lambda v: H_cl @ v, obj32.dim, torch.float32, c), "cl"),
            default=tol == 0.0,
        )

    op = eigenthings_op(model, X, y)
    from hessian_eigenthings import lanczos

    for it in [None, 10, 12, 15, 20, 30]:
        if it is not None and it < k:
            continue

        def run(it=it):
            c = Counter()
            op.matvec = c.wrap(type(op).matvec.__get__(op))
            r = lanczos(op, k=k, max_iter=it, which="LA", seed=0)
            return r.eigenvalues.numpy(), c.n

        add("hessian-eigenthings Lanczos", f"max_iter={it if it else 2 * k}", run, default=it is None)

    for one_batch in (False, True):
        name = "PyHessian power it. " + ("(one batch)" if one_batch else "(dataloader)")
        h = pyhessian_instance(model, X, y, one_batch)
        # The sweep runs in the faster one-batch mode; the dataloader mode is timed at its default and 1e-6.
        tols = [1e-3, 1e-4, 1e-5, 1e-6] if one_batch else [1e-3, 1e-6]
        for tol in tols if not quick else [1e-3, 1e-5]:

            def run(tol=tol, h=h):
                c = Counter()
                pyhessian_counted(h, c)
                torch.manual_seed(0)
                vals, _ = h.eigenvalues(maxIter=1000, tol=tol, top_n=k)
                return vals, c.n

            add(name, f"tol={tol:g}", run, default=tol == 1e-3)
    return rows


def head_to_head(
    model, X, y, obj32: Objective, ref: np.ndarray, k: int, max_iter: int, rounds: int, ph_tol: float = 1e-6
) -> dict:
    """flatminima vs the peers at the settings that reach 1e-4: hessian-eigenthings at its tuned ``max_iter``
    (the fastest peer) and PyHessian power iteration in its faster one-batch mode at ``tol=ph_tol`` (its
    first tolerance reaching 1e-4 in the sweep), timed in alternation so that each round's ratio sees the
    same machine load; medians over ``rounds`` of the per-round ratios. flatminima's rows also record the
    certificate each result reports (true residual, error bound, converged) after the true-residual check."""
    from hessian_eigenthings import lanczos

    op = eigenthings_op(model, X, y)
    h = pyhessian_instance(model, X, y, one_batch=True)
    certs: dict[str, dict] = {}

    def fm(**kw):
        def run(name):
            r = eigenvalues(obj32, k, tol=TARGET, **kw)
            certs[name] = {
                "HVPs": r.cost.hvps,
                "max bound / |λ|": float((r.error_bounds / r.values.abs()).max()),
                "max true residual / |λ|": float((r.residuals / r.values.abs()).max()),
                "converged": bool(r.converged.all()),
            }
            return r.values

        return run

    def ph(name):
        torch.manual_seed(0)
        vals, _ = h.eigenvalues(maxIter=1000, tol=ph_tol, top_n=k)
        return torch.as_tensor(vals)

    he, pyh = f"hessian-eigenthings max_iter={max_iter}", f"PyHessian one batch tol={ph_tol:g}"
    runs = {
        "flatminima tol=1e-4 stop='gap'": fm(stop="gap"),
        "flatminima tol=1e-4 (residual)": fm(),
        he: lambda name: lanczos(op, k=k, max_iter=max_iter, which="LA", seed=0).eigenvalues,
        pyh: ph,
    }
    secs: dict[str, list[float]] = {name: [] for name in runs}
    errs = {}
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            vals = fn(name)
            secs[name].append(time.perf_counter() - start)
            errs[name] = rel_err(np.asarray(vals, dtype=np.float64), ref[:k])
    rows = []
    for name in runs:
        row = {"k": k, "run": name, "seconds": statistics.median(secs[name]), "rel. error": errs[name]}
        for peer, col in ((he, "time / hessian-eigenthings"), (pyh, "time / PyHessian")):
            row[col] = statistics.median(a / b for a, b in zip(secs[name], secs[peer], strict=True))
        rows.append(row | certs.get(name, {}))
    return {"rows": rows}


def best_rows(rows: list[dict]) -> list[dict]:
    """Per library, the fastest setting that reaches the target error (or a row saying none did)."""
    out = []
    for lib in dict.fromkeys(r["library"] for r in rows):
        ok = [r for r in rows if r["library"] == lib and r["rel. error"] <= TARGET]
        out.append(
            min(ok, key=lambda r: r["seconds"]) if ok else {"library": lib, "setting": "none reached 1e-4"}
        )
    return out


# ----------------------------------------------------------------------------- 3. trace
def exact_trace(model, X, y) -> tuple[float, float]:
    """tr(H) = Σ_i H_ii from BackPACK's exact Hessian diagonal (Dangel, Kunstner & Hennig 2020)."""
    from backpack import backpack, extend
    from backpack.extensions import DiagHessian

    start = time.perf_counter()
    m = extend(copy.deepcopy(model).double())
    lossf = extend(nn.CrossEntropyLoss(reduction="sum"))
    total = 0.0
    for xb, yb in batches(X, y):
        m.zero_grad()
        loss = lossf(m(xb.double()), yb)
        with backpack(DiagHessian()):
            loss.backward()
        total += sum(float(p.diag_h.sum()) for p in m.parameters())
    return total / len(X), time.perf_counter() - start


def trace_bench(model, X, y, obj32: Objective, exact: float, seeds: int, quick: bool) -> dict:
    rows = []
    budgets = [12, 30, 60, 90] if quick else [12, 18, 30, 45, 60, 90, 150]
    for method in ("hutchinson", "hutch++"):
        for m in budgets:
            res = [trace(obj32, method, m, seed=s) for s in range(seeds)]
            errs = np.array([r.value - exact for r in res])
            rows.append(
                {
                    "method": f"flatminima {method}",
                    "HVPs": m,
                    "seconds": statistics.median(r.cost.seconds for r in res),
                    "rel. stderr (reported)": statistics.median(r.stderr for r in res) / abs(exact),
                    "rel. RMS error (over seeds)": float(np.sqrt(np.mean(errs**2))) / abs(exact),
                }
            )
    # PyHessian's trace: Hutchinson stopped when the running mean changes by < tol (relative); its stderr
    # is not reported, we compute it from the samples it returns.
    for one_batch in (False, True):
        h = pyhessian_instance(model, X, y, one_batch)
        for tol, max_iter in [(1e-3, 100), (0.0, 90)]:
            vals, secs, ses = [], [], []
            for s in range(seeds):
                torch.manual_seed(s)
                start = time.perf_counter()
                samples = h.trace(maxIter=max_iter, tol=tol)
                secs.append(time.perf_counter() - start)
                vals.append(np.mean(samples))
                ses.append(
                    np.std(samples, ddof=1) / math.sqrt(len(samples)) if len(samples) > 1 else float("nan")
                )
                n = len(samples)
            errs = np.array(vals) - exact
            rows.append(
                {
                    "method": "PyHessian trace "
                    + ("(one batch)" if one_batch else "(dataloader)")
                    + (" default tol=1e-3" if tol else f" tol=0, maxIter={max_iter}"),
                    "HVPs": n,
                    "seconds": statistics.median(secs),
                    "rel. stderr (reported)": statistics.median(ses) / abs(exact),
                    "rel. RMS error (over seeds)": float(np.sqrt(np.mean(errs**2))) / abs(exact),
                }
            )
    # Equal standard error: the target is Hutchinson's reported stderr at 90 probes.
    hut = [r for r in rows if r["method"] == "flatminima hutchinson"]
    target = next(r for r in hut if r["HVPs"] == 90)["rel. stderr (reported)"]
    hpp = [r for r in rows if r["method"] == "flatminima hutch++" and r["rel. stderr (reported)"] <= target]
    hpp_rms = [
        r
        for r in rows
        if r["method"] == "flatminima hutch++"
        and r["rel. RMS error (over seeds)"]
        <= next(x for x in hut if x["HVPs"] == 90)["rel. RMS error (over seeds)"]
    ]
    return {
        "exact": exact,
        "rows": rows,
        "target_rel_stderr": target,
        "hutchpp_hvps_at_target": min((r["HVPs"] for r in hpp), default=None),
        "hutchpp_hvps_at_rms": min((r["HVPs"] for r in hpp_rms), default=None),
    }


# ----------------------------------------------------------------------------- 4. density
def w1_measures(nodes_a, weights_a, nodes_b, weights_b) -> float:
    """Wasserstein-1 distance of two discrete measures on the line: ∫ |F_a(t) − F_b(t)| dt."""
    t = np.concatenate([nodes_a, nodes_b])
    w = np.concatenate(
        [np.asarray(weights_a) / np.sum(weights_a), -np.asarray(weights_b) / np.sum(weights_b)]
    )
    order = np.argsort(t)
    t, cdf_diff = t[order], np.cumsum(w[order])
    return float(np.sum(np.abs(cdf_diff[:-1]) * np.diff(t)))


def dense_hessian(obj64: Objective) -> torch.Tensor:
    eye = torch.eye(obj64.dim, dtype=torch.float64)
    H = torch.stack([obj64.hvp(eye[i]) for i in range(obj64.dim)])
    return (H + H.T) / 2


def density_bench(quick: bool, seeds: int) -> dict:
    """W1 of each SLQ quadrature to the exact spectral measure, mean and spread over ``seeds`` probe draws."""
    model, X, y = setup(quick, width=24)
    obj32 = Objective(model, "cross_entropy", (X, y), batch_size=BATCH)
    obj64 = Objective(model, "cross_entropy", (X, y), batch_size=BATCH, dtype=torch.float64)
    start = time.perf_counter()
    exact = torch.linalg.eigvalsh(dense_hessian(obj64)).numpy()
    t_dense = time.perf_counter() - start
    spread = float(exact.max() - exact.min())
    patch_pyhessian_density()
    rows = []

    def add(library, setting, hvps, runs):
        secs = [t for t, _ in runs]
        w1 = np.array([w1_measures(n, w, exact, np.ones_like(exact)) / spread for _, (n, w) in runs])
        rows.append(
            {
                "library": library,
                "setting": setting,
                "HVPs": hvps,
                "seconds": statistics.median(secs),
                "W1 / spectral range": float(w1.mean()),
                "W1 sd over seeds": float(w1.std(ddof=1)),
            }
        )

    for probes, steps, label in [(4, 60, "flatminima default"), (1, 100, "PyHessian default"), (4, 100, "")]:
        setting = f"{probes} probes x {steps} steps" + (f" ({label})" if label else "")
        runs = []
        for s in range(seeds):
            start = time.perf_counter()
            d = spectral_density(obj32, probes, steps, seed=s)
            runs.append((time.perf_counter() - start, (d.nodes.ravel(), d.weights.ravel())))
        add("flatminima SLQ", setting, d.cost.hvps, runs)
        for one_batch in (False, True):
            h = pyhessian_instance(model, X, y, one_batch)
            runs = []
            for s in range(seeds):
                torch.manual_seed(s)
                start = time.perf_counter()
                ev, wt = h.density(iter=steps, n_v=probes)
                runs.append((time.perf_counter() - start, (np.ravel(ev), np.ravel(wt))))
            add(
                "PyHessian SLQ " + ("(one batch)" if one_batch else "(dataloader)"),
                setting,
                probes * steps,
                runs,
            )
    return {
        "dim": obj32.dim,
        "dense_seconds": t_dense,
        "lambda_min": float(exact.min()),
        "lambda_max": float(exact.max()),
        "seeds": seeds,
        "rows": rows,
    }


# ----------------------------------------------------------------------------- 5. unit costs and memory
def block(fn: Callable[[], Any], calls: int) -> float:
    """Mean seconds per call over ``calls`` consecutive calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def unit_costs(model, X, y, rounds: int) -> list[dict]:
    """Seconds per operation and its ratio to one gradient, timed in alternation (gradient, operation) so
    that the ratio of each round is measured under the same machine load; medians over ``rounds``."""
    rows = []
    stream = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=256)
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(2))
    cases = [("in memory (X, y), batches of 1024", (X, y)), ("streamed DataLoader, batches of 256", stream)]
    for data_label, data in cases:
        base = Objective(model, "cross_entropy", data)
        ops: list[tuple[str, Callable]] = [("loss", base.loss), ("gradient", base.grad)]
        variants = [("double_backward", False), ("forward_over_reverse", False)]
        if isinstance(data, tuple):
            variants.insert(1, ("double_backward", True))
        for method, reuse in variants:
            obj = Objective(model, "cross_entropy", data, hvp_method=method, reuse_graph=reuse)
            obj.hvp(v)  # builds the cached graph once (reuse) and warms up
            ops.append((f"HVP {method}, reuse_graph={reuse}", lambda obj=obj: obj.hvp(v)))
        base.grad()
        for name, op in ops:
            secs, ratios = [], []
            for _ in range(rounds):  # blocks of 5 calls: a few ms each is below the scheduler's noise
                t_grad = block(base.grad, 5)
                t_op = block(op, 5)
                secs.append(t_op)
                ratios.append(t_op / t_grad)
            rows.append(
                {
                    "data": data_label,
                    "operation": name,
                    "seconds": statistics.median(secs),
                    "x gradient": statistics.median(ratios),
                }
            )
    return rows


def memory_probe(lib: str, state_path: str) -> None:
    """Run one top-5 computation in this (fresh) process and print its max RSS in MiB."""
    st = torch.load(state_path, weights_only=False)
    model, X, y = st["model"], st["X"], st["y"]
    k = 5
    if lib == "flatminima":
        eigenvalues(Objective(model, "cross_entropy", (X, y), batch_size=BATCH), k, tol=TARGET)
    elif lib == "flatminima-streamed":
        eigenvalues(Objective(model, "cross_entropy", batches(X, y, 256), reuse_graph=False), k, tol=TARGET)
    elif lib == "pyhessian":
        torch.manual_seed(0)
        pyhessian_instance(model, X, y, one_batch=False).eigenvalues(maxIter=1000, tol=1e-6, top_n=k)
    elif lib == "pyhessian-one-batch":
        torch.manual_seed(0)
        pyhessian_instance(model, X, y, one_batch=True).eigenvalues(maxIter=1000, tol=1e-6, top_n=k)
    elif lib == "hessian-eigenthings":
        from hessian_eigenthings import lanczos

        lanczos(eigenthings_op(model, X, y), k=k, max_iter=40, which="LA", seed=0)
    elif lib == "curvlinops":
        sla.eigsh(curvlinops_op(model, X, y).to_scipy(np.float32), k=k, which="LA")
    print(json.dumps({"max_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(model, X, y) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state.pt")
        torch.save({"model": model, "X": X, "y": y}, path)
        for lib in [
            "baseline",
            "flatminima",
            "flatminima-streamed",
            "pyhessian",
            "pyhessian-one-batch",
            "hessian-eigenthings",
            "curvlinops",
        ]:
            out = subprocess.run(
                [sys.executable, __file__, "--memory-probe", lib, "--state", path],
                capture_output=True,
                text=True,
                check=True,
                env=os.environ | {"OMP_NUM_THREADS": "1"},
            )
            rows.append(
                {
                    "library": lib,
                    "max RSS MiB": json.loads(out.stdout.strip().splitlines()[-1])["max_rss_mib"],
                }
            )
    base = rows[0]["max RSS MiB"]
    for r in rows:
        r["above baseline MiB"] = r["max RSS MiB"] - base
    return rows


# ----------------------------------------------------------------------------- 6. speed of the core paths
def load_baseline(src: str):
    """Another version of the package (``src``/flatminima, e.g. an old checkout's), imported in this same
    process as ``flatminima_baseline`` (a copy under that name: its imports are relative), so the two are
    timed call by call under the same machine load."""
    import importlib
    import shutil

    where = tempfile.mkdtemp(prefix="flatminima-baseline-")
    shutil.copytree(os.path.join(src, "flatminima"), os.path.join(where, "flatminima_baseline"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, where)
    return importlib.import_module("flatminima_baseline"), importlib.import_module("flatminima_baseline.curvature")


def speed_cases(package, curvature, model, X, y) -> list[tuple[str, Callable[[], Any], int]]:
    """(name, call, calls per block) of the speed section, built with ``package`` (flatminima or a baseline)."""
    Obj = package.Objective
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(2))
    reuse = Obj(model, "cross_entropy", (X, y), batch_size=BATCH)  # in memory: graph reuse ("auto")
    rebuild = Obj(model, "cross_entropy", (X, y), batch_size=BATCH, reuse_graph=False)
    streamed = Obj(model, "cross_entropy", batches(X, y, 256), reuse_graph=False)
    for obj in (reuse, rebuild, streamed):
        obj.hvp(v)  # warm-up (and the cached graph, for reuse)
    return [
        ("HVP, graph reused", lambda: reuse.hvp(v), 20),
        ("HVP, graph rebuilt", lambda: rebuild.hvp(v), 10),
        ("HVP, streamed batches of 256", lambda: streamed.hvp(v), 10),
        ("top-1 Lanczos tol 1e-4 (fresh Objective)",
         lambda: curvature.eigenvalues(Obj(model, "cross_entropy", (X, y), batch_size=BATCH), 1, tol=TARGET), 1),
        ("top-1 Lanczos tol 1e-4 (graph rebuilt)", lambda: curvature.eigenvalues(rebuild, 1, tol=TARGET), 1),
    ]


def speed(model, X, y, rounds: int, baseline: str | None = None) -> list[dict]:
    """Seconds of one HVP and of a top-1 Lanczos run (flatminima only, its public API only: the same
    script times any version of the package, so a refactoring's before and after are compared on one machine).

    Each row is the median over ``rounds`` of a block of calls; the cases alternate inside every round so
    that machine load drifts hit all of them alike. With ``baseline`` (the ``src`` folder of another
    version) that version runs in the same process, each block right after the same block of this one, and
    each row adds the median of the per-round ratios (this / baseline) and their interquartile range."""
    import flatminima
    from flatminima import curvature

    versions = {"this": speed_cases(flatminima, curvature, model, X, y)}
    if baseline:
        versions["baseline"] = speed_cases(*load_baseline(baseline), model, X, y)
    times = {(w, name): [] for w, cases in versions.items() for name, _, _ in cases}
    for _ in range(rounds):
        for i in range(len(versions["this"])):
            for w, cases in versions.items():
                name, fn, calls = cases[i]
                times[(w, name)].append(block(fn, calls))
    rows = []
    for i, (name, fn, _) in enumerate(versions["this"]):
        t = times[("this", name)]
        row = {"case": name, "seconds": statistics.median(t), "min seconds": min(t),
               "HVPs": int(fn().cost.hvps) if i >= 3 else None}
        if baseline:
            b = times[("baseline", name)]
            ratios = sorted(x / y for x, y in zip(t, b, strict=True))
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            bfn = versions["baseline"][i][1]
            row |= {"baseline seconds": statistics.median(b), "this / baseline": statistics.median(ratios),
                    "ratio IQR": f"{q[0]:.3f}-{q[2]:.3f}",
                    "baseline HVPs": int(bfn().cost.hvps) if i >= 3 else None}
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- main
SECTIONS = ("eigen", "h2h", "trace", "density", "units", "memory", "speed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 samples, fewer settings and repeats")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}; with --json, other keys are kept",
    )
    ap.add_argument("--json", default=None, help="write all measurements to this JSON file")
    ap.add_argument("--baseline-src", default=None,
                    help="speed section: also time the flatminima in this src folder, in the same process")
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--state", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        if args.memory_probe != "baseline":
            memory_probe(args.memory_probe, args.state)
        else:
            torch.load(args.state, weights_only=False)
            import curvlinops  # noqa: F401  (the same imports as the other probes)
            import hessian_eigenthings  # noqa: F401
            import pyhessian  # noqa: F401

            print(json.dumps({"max_rss_mib": peak_rss_mib()}))
        return
    run(args, set(args.sections.split(",")))


def run(args: argparse.Namespace, sections: set[str]) -> None:
    t0 = time.perf_counter()
    repeats = 1 if args.quick else args.repeats
    model, X, y = setup(args.quick)
    obj32 = Objective(model, "cross_entropy", (X, y), batch_size=BATCH)
    obj64 = Objective(model, "cross_entropy", (X, y), batch_size=BATCH, dtype=torch.float64)
    out: dict[str, Any] = {}
    if args.json and os.path.exists(args.json) and sections != set(SECTIONS):
        with open(args.json) as f:
            out = json.load(f)
    out.update(
        {
            "command": " ".join(sys.argv),
            "threads": torch.get_num_threads(),
            "samples": len(X),
            "dim": obj32.dim,
            "loss": obj32.loss(),
            "torch": torch.__version__,
        }
    )
    print(
        f"# MLP with {obj32.dim} parameters, {len(X)} samples, loss {out['loss']:.4f}, "
        f"{args.threads} thread(s)"
    )

    if "eigen" in sections:
        ref = reference(obj64)
        out["reference"] = ref
        print(
            f"\n## Reference (float64)\nLanczos tol 1e-10: {np.round(ref['values'], 6).tolist()} "
            f"({ref['lanczos_hvps']} HVPs); eigsh tol 1e-12: {ref['eigsh_hvps']} HVPs; "
            f"max rel. diff {ref['max_rel_diff']:.2e}"
        )
        refv = np.asarray(ref["values"])
        out["same_matrix"] = same_matrix(model, X, y, obj64, obj32)
        print(
            "\n## Same matrix: one H·v\n"
            + table(out["same_matrix"], ["library", "rel. diff. vs float64 H·v"])
        )
        for k in (1, 5):
            rows = top_eigen(model, X, y, obj32, refv, k, repeats, args.quick)
            out[f"top{k}"] = rows
            out[f"top{k}_best"] = best_rows(rows)
            cols = ["library", "setting", "HVPs", "seconds", "rel. error"]
            print(f"\n## Top-{k} eigenvalues\n" + table(rows, cols))
            print(
                f"\nFastest setting per library reaching rel. error <= {TARGET:g}:\n"
                + table(out[f"top{k}_best"], cols)
            )

    if "h2h" in sections:
        refv = (
            np.asarray(out["reference"]["values"])
            if "reference" in out
            else np.asarray(reference(obj64)["values"])
        )
        out["head_to_head"] = []
        for k, it in ((1, 15), (5, 20)):  # the smallest max_iter of the sweep reaching 1e-4 (top-1, top-5)
            out["head_to_head"] += head_to_head(model, X, y, obj32, refv, k, it, 3 if args.quick else 7)[
                "rows"
            ]
        cols = ["k", "run", "seconds", "rel. error", "time / hessian-eigenthings", "time / PyHessian", "HVPs",
                "max bound / |λ|", "converged"]
        print("\n## Head to head, alternating\n" + table(out["head_to_head"], cols))

    if "trace" in sections:
        exact, t_exact = exact_trace(model, X, y)
        tr = trace_bench(model, X, y, obj32, exact, seeds=3 if args.quick else 5, quick=args.quick)
        tr["exact_seconds"] = t_exact
        out["trace"] = tr
        cols = ["method", "HVPs", "seconds", "rel. stderr (reported)", "rel. RMS error (over seeds)"]
        print(f"\n## Trace (exact {exact:.5g} from BackPACK's Hessian diagonal)\n" + table(tr["rows"], cols))
        print(
            f"Hutchinson's stderr at 90 HVPs: {tr['target_rel_stderr']:.3g}; Hutch++ reaches it with "
            f"{tr['hutchpp_hvps_at_target']} HVPs (by RMS error: {tr['hutchpp_hvps_at_rms']})"
        )

    if "density" in sections:
        dens = density_bench(args.quick, 3 if args.quick else 5)
        out["density"] = dens
        cols = ["library", "setting", "HVPs", "seconds", "W1 / spectral range", "W1 sd over seeds"]
        print(
            f"\n## Spectral density (MLP with {dens['dim']} parameters; exact eigenvalues from a dense "
            "float64 "
            f"Hessian, {dens['dense_seconds']:.1f} s)\n" + table(dens["rows"], cols)
        )

    if "units" in sections:
        out["unit_costs"] = unit_costs(model, X, y, 5 if args.quick else 15)
        print("\n## Unit costs\n" + table(out["unit_costs"], ["data", "operation", "seconds", "x gradient"]))

    if "speed" in sections:
        out["speed"] = speed(model, X, y, 5 if args.quick else 15, args.baseline_src)
        cols = ["case", "seconds", "min seconds", "HVPs"]
        if args.baseline_src:
            out["speed_baseline_src"] = args.baseline_src
            cols += ["baseline seconds", "baseline HVPs", "this / baseline", "ratio IQR"]
        print("\n## Speed (flatminima only)\n" + table(out["speed"], cols))

    if "memory" in sections:
        out["memory"] = memory(model, X, y)
        print(
            "\n## Peak memory (top-5 eigenvalues, fresh subprocess each)\n"
            + table(out["memory"], ["library", "max RSS MiB", "above baseline MiB"])
        )
    out["total_seconds"] = time.perf_counter() - t0
    print(f"\nTotal {out['total_seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
