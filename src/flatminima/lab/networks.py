"""Lab experiments on small trained networks (claims C1–C5, C10–C12, C14, C15), on scikit-learn digits.

A shared "zoo" of small MLPs trained with many recipes (each with several seeds) is built once per process and
measured once (λ_max by Lanczos, tr(H) by Hutch++, the loss rise under Gaussian weight noise, clean and
shifted
test accuracy, ECE); each claim then reads its comparison off the zoo. Intervals are Student-t across seeds
for
paired differences, or bootstrap over models for rank correlations.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..plotting import save_figure, save_table
from .registry import experiment
from .stats import fmt_ci, sign_verdict, spearman_ci, t_interval

SHIFTS = ("gaussian_noise", "blur")
SEVERITY = 3
SIGMA = 0.01  # weight-noise std for the loss-rise measurements (small: the second-order regime)

# recipe name -> (recipe overrides, model overrides); "base" is the reference for C11
RECIPES: dict[str, tuple[dict, dict]] = {
    "base": ({}, {}),
    "small_batch": ({"batch_size": 8}, {}),
    "full_batch": ({"batch_size": "full", "lr": 0.2, "epochs": 300}, {}),
    "noise": ({"noise": "gaussian", "noise_std": 0.02}, {}),
    "swa": ({"swa": True, "swa_start": 8, "epochs": 16}, {}),
    "cosine": ({"schedule": "cosine"}, {}),
    "adam": ({"optimizer": "adam", "lr": 0.002}, {}),
    "rmsprop": ({"optimizer": "rmsprop", "lr": 0.001, "momentum": 0.0}, {}),
    "weight_decay": ({"weight_decay": 5e-3}, {}),
    "label_smoothing": ({"label_smoothing": 0.1}, {}),
    "dropout": ({}, {"dropout": 0.2}),
    "batchnorm": ({}, {"batchnorm": True}),
    "depth": ({}, {"depth": 3}),
    "sam": ({"sam": "sam", "rho": 0.05}, {}),
    "augment": ({"augment": ["noise", "shift"], "augment_noise": 0.1, "augment_shift": 1}, {}),
}
BASE_RECIPE = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32, "epochs": 12}
BASE_MODEL = {"width": 32, "depth": 2}


@dataclass
class Trained:
    recipe: str
    seed: int
    model: torch.nn.Module
    lambda_max: float
    trace: float
    trace_se: float
    rise: float
    rise_se: float
    train_loss: float
    test_acc: float
    shift_acc: float
    ece: float
    seconds: float

    @property
    def drop(self) -> float:
        """Accuracy lost under shift (clean − shifted, averaged over the shifts at severity 3)."""
        return self.test_acc - self.shift_acc


_ZOO: dict[tuple, list[Trained]] = {}
_DATA: dict = {}


def digits():
    if "digits" not in _DATA:
        from ..data import load_digits

        _DATA["digits"] = load_digits(shifts=list(SHIFTS))
    return _DATA["digits"]


def measure_model(model: torch.nn.Module, ds, *, n: int = 512, seed: int = 0) -> dict:
    """λ_max, tr(H) and E[L(θ+δ)] − L(θ) on (up to) ``n`` training samples, float64, eval mode."""
    from ..objective import Objective
    from ..sharpness import measure
    from ..train import evaluate

    X, y = ds.x_train[:n], ds.y_train[:n]
    obj = Objective(model, "cross_entropy", (X, y), dtype=torch.float64)
    lam = measure(obj, "lambda_max", tol=1e-3, seed=seed)
    tr = measure(obj, "trace", probes=30, seed=seed)
    avg = measure(obj, "average_case", sigma=SIGMA, samples=64, second_order_probes=0, seed=seed)
    clean = evaluate(model, ds.test)
    shifted = np.mean([evaluate(model, ds.shifts[s][SEVERITY])["accuracy"] for s in SHIFTS])
    return {
        "lambda_max": lam.value,
        "trace": tr.value,
        "trace_se": tr.stderr or 0.0,
        "rise": avg.value,
        "rise_se": avg.stderr or 0.0,
        "train_loss": obj.loss(),
        "test_acc": clean["accuracy"],
        "shift_acc": float(shifted),
        "ece": clean.get("ece", float("nan")),
    }


def train_one(recipe: str, seed: int, ds=None, *, epochs: int | None = None) -> Trained:
    from ..models import build
    from ..train import fit

    ds = ds or digits()
    rec, mk = RECIPES[recipe]
    torch.manual_seed(seed)
    model = build("mlp", ds.input_shape, ds.num_classes, **{**BASE_MODEL, **mk})
    r = {**BASE_RECIPE, **rec, "seed": seed}
    if epochs and recipe != "full_batch":
        r["epochs"] = epochs
    t0 = time.perf_counter()
    fit(model, ds.train, r, progress=False)
    m = measure_model(model, ds, seed=seed)
    return Trained(recipe, seed, model, seconds=time.perf_counter() - t0, **m)


def zoo(quick: bool, seed: int, recipes: list[str] | None = None) -> list[Trained]:
    """Train (once per process) every recipe × seed; returns the measured models."""
    seeds = 3 if quick else 5
    out = []
    for name in recipes or list(RECIPES):
        for s in range(seeds):
            key = (name, seed + s)
            if key not in _ZOO:
                _ZOO[key] = [train_one(name, seed + s)]
            out += _ZOO[key]
    return out


def _by(models: list[Trained], recipe: str) -> list[Trained]:
    return sorted((m for m in models if m.recipe == recipe), key=lambda m: m.seed)


def _paired(models, a: str, b: str, attr: str) -> tuple[float, float, float]:
    """t-interval of (a − b) paired by seed."""
    xa, xb = _by(models, a), _by(models, b)
    return t_interval([getattr(p, attr) - getattr(q, attr) for p, q in zip(xa, xb, strict=True)])


def _zoo_table(models: list[Trained], path: Path) -> str:
    cols = (
        "recipe",
        "seed",
        "lambda_max",
        "trace",
        "rise",
        "train_loss",
        "test_acc",
        "shift_acc",
        "drop",
        "ece",
    )
    return save_table(path, {c: [getattr(m, c) for m in models] for c in cols})


def _scatter(models: list[Trained], x: str, y: str, stem: Path, title: str) -> list[str]:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name in dict.fromkeys(m.recipe for m in models):
        pts = [m for m in models if m.recipe == name]
        ax.scatter([getattr(m, x) for m in pts], [getattr(m, y) for m in pts], label=name, s=18)
    ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, stem)


def _result(numbers: dict, summary: str, verdict: str, reason: str, files: list[str]) -> dict:
    return {"numbers": numbers, "summary": summary, "verdict": verdict, "reason": reason, "files": files}


# --- C1 ----------------------------------------------------------------------------------------------------


@experiment(
    "flatness_measures", "C1", "λ_max, trace and spectrum measure flatness (and agree with each other)"
)
def flatness_measures(out: Path, quick: bool, seed: int) -> dict:
    from ..curvature import spectral_density
    from ..objective import Objective
    from ..toy import get

    dw = get("double_well")
    sharp, flat = (float(dw.hessian(torch.tensor([x]))) for x in (1.0, -1.0))
    # the loss rise under noise on the analytic pair (exact second-order check)
    models = zoo(quick, seed, ["base", "small_batch", "full_batch", "sam", "adam", "weight_decay"])
    lam, tr, rise = ([getattr(m, a) for m in models] for a in ("lambda_max", "trace", "rise"))
    r_lt, r_tr = spearman_ci(lam, tr, seed=seed), spearman_ci(tr, rise, seed=seed)
    ds = digits()
    obj = Objective(
        models[0].model, "cross_entropy", (ds.x_train[:512], ds.y_train[:512]), dtype=torch.float64
    )
    dens = (
        spectral_density(obj, seed=seed)
        if "seed" in spectral_density.__code__.co_varnames
        else spectral_density(obj)
    )
    files = [_zoo_table(models, out / "zoo.csv")]
    try:
        files += dens.plot(str(out / "spectral_density"))
    except Exception:  # noqa: BLE001 - the density plot is a bonus, the verdict does not depend on it
        pass
    files += _scatter(models, "lambda_max", "trace", out / "lambda_vs_trace", "λ_max vs tr(H) across recipes")
    verdict = "supported" if sharp > flat and r_lt[1] > 0 and r_tr[1] > 0 else "mixed"
    summary = (
        f"double well: f''(sharp)={sharp:.3g} vs f''(flat)={flat:.3g}; across {len(models)} nets: "
        f"Spearman(λ_max, tr H) {fmt_ci(r_lt, 2)}, Spearman(tr H, noise rise) {fmt_ci(r_tr, 2)}"
    )
    return _result(
        {"sharp": sharp, "flat": flat, "rho_lambda_trace": r_lt, "rho_trace_rise": r_tr},
        summary,
        verdict,
        "the eigenvalue measures rank minima consistently with each other and with the noise rise"
        if verdict == "supported"
        else "the eigenvalue-based measures disagree on the ranking",
        files,
    )


# --- C2 ----------------------------------------------------------------------------------------------------


@experiment("noise_rise", "C2", "Gaussian weight noise raises the loss by ½σ²·tr(H)")
def noise_rise(out: Path, quick: bool, seed: int) -> dict:
    from ..objective import Objective
    from ..sharpness import measure

    models = zoo(quick, seed, ["base", "sam", "full_batch"])
    ds = digits()
    sigmas = [0.003, 0.01, 0.03] if quick else [0.001, 0.003, 0.01, 0.03, 0.1]
    rows = []
    for m in models[:3] if quick else models:
        obj = Objective(m.model, "cross_entropy", (ds.x_train[:512], ds.y_train[:512]), dtype=torch.float64)
        for s in sigmas:
            a = measure(obj, "average_case", sigma=s, samples=128, second_order_probes=0, seed=seed)
            pred = 0.5 * s * s * m.trace
            rows.append((m.recipe, m.seed, s, a.value, a.stderr or 0.0, pred))
    ratios = {s: t_interval([r[3] / r[5] for r in rows if r[2] == s]) for s in sigmas}
    files = [
        save_table(
            out / "noise_rise.csv",
            {
                "recipe": [r[0] for r in rows],
                "seed": [r[1] for r in rows],
                "sigma": [r[2] for r in rows],
                "rise": [r[3] for r in rows],
                "rise_se": [r[4] for r in rows],
                "half_sigma2_trace": [r[5] for r in rows],
            },
        )
    ]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([r[5] for r in rows], [r[3] for r in rows], yerr=[1.96 * r[4] for r in rows], fmt="o", ms=3)
    lim = [min(r[5] for r in rows), max(r[5] for r in rows)]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("½σ²·tr(H) (Hutch++)")
    ax.set_ylabel("measured E[L(θ+δ)] − L(θ)")
    files += save_figure(fig, out / "noise_rise")
    small = ratios[sigmas[0]]
    ok = small[1] <= 1.15 and small[2] >= 0.85
    big = ratios[sigmas[-1]]
    summary = (
        "measured/predicted rise: "
        + ", ".join(f"σ={s}: {fmt_ci(ratios[s])}" for s in sigmas)
        + f" over {len(rows) // len(sigmas)} nets"
    )
    verdict = "supported" if ok else "not supported"
    reason = (
        f"ratio ≈ 1 at small σ; departs at σ={sigmas[-1]} ({big[0]:.2f}) where higher orders enter"
        if ok
        else "the measured rise does not match ½σ²tr(H) even at small σ"
    )
    return _result({"ratios": ratios, "rows": rows}, summary, verdict, reason, files)


# --- C3 / C4 / C5 ------------------------------------------------------------------------------------------


def _flatter_and_better(models, a: str, b: str, out: Path, claim_text: str) -> dict:
    """Is recipe ``a`` flatter than ``b`` (λ_max, tr H) and does it generalise better (test acc)?"""
    d_lam = _paired(models, a, b, "lambda_max")
    d_tr = _paired(models, a, b, "trace")
    d_acc = _paired(models, a, b, "test_acc")
    flatter = sign_verdict((-d_lam[0], -d_lam[2], -d_lam[1]))
    better = sign_verdict(d_acc)
    sub = [m for m in models if m.recipe in (a, b)]
    files = [
        _zoo_table(sub, out / "models.csv"),
        *_scatter(sub, "lambda_max", "test_acc", out / "flatness", claim_text),
    ]
    if flatter == "supported" and better in ("supported", "mixed"):
        verdict = "supported" if better == "supported" else "mixed"
    elif flatter == "not supported":
        verdict = "not supported"
    else:
        verdict = "mixed"
    summary = (
        f"{a} − {b} (paired by seed, n={len(_by(models, a))}): Δλ_max {fmt_ci(d_lam)}, "
        f"Δtr(H) {fmt_ci(d_tr)}, "
        f"Δtest acc {fmt_ci(d_acc)}"
    )
    reason = f"flatter: {flatter}; generalises better: {better}"
    return _result(
        {"d_lambda_max": d_lam, "d_trace": d_tr, "d_test_acc": d_acc}, summary, verdict, reason, files
    )


@experiment("batch_size", "C3", "small batches end flatter than full-batch GD and generalise better")
def batch_size(out: Path, quick: bool, seed: int) -> dict:
    models = zoo(quick, seed, ["small_batch", "full_batch"])
    return _flatter_and_better(models, "small_batch", "full_batch", out, "batch 8 vs full batch")


@experiment("weight_noise", "C4", "training with injected weight noise ends flatter")
def weight_noise(out: Path, quick: bool, seed: int) -> dict:
    models = zoo(quick, seed, ["noise", "base"])
    return _flatter_and_better(models, "noise", "base", out, "weight noise vs none")


@experiment("swa", "C5", "SWA lands in the centre of a wide basin (flatter than the SGD iterate)")
def swa(out: Path, quick: bool, seed: int) -> dict:
    """SWA against the last SGD iterate of the same run (same recipe without averaging, same seed/epochs)."""
    from ..models import build
    from ..train import fit

    ds = digits()
    seeds = 3 if quick else 5
    rows = []
    for s in range(seed, seed + seeds):
        for avg in (True, False):
            torch.manual_seed(s)
            model = build("mlp", ds.input_shape, ds.num_classes, **BASE_MODEL)
            fit(
                model,
                ds.train,
                {**BASE_RECIPE, "epochs": 16, "swa": avg, "swa_start": 8, "swa_lr": 0.05, "seed": s},
                progress=False,
            )
            m = measure_model(model, ds, seed=s)
            rows.append(Trained("swa" if avg else "sgd_iterate", s, model, seconds=0.0, **m))
    return _flatter_and_better(rows, "swa", "sgd_iterate", out, "SWA vs last SGD iterate")


# --- C10 / C11 / C15 ---------------------------------------------------------------------------------------


@experiment("ood_flatness", "C10", "flatter minima lose less accuracy under distribution shift")
def ood_flatness(out: Path, quick: bool, seed: int) -> dict:
    models = zoo(quick, seed)
    rho_l = spearman_ci([m.lambda_max for m in models], [m.drop for m in models], seed=seed)
    rho_t = spearman_ci([m.trace for m in models], [m.drop for m in models], seed=seed)
    files = [
        _zoo_table(models, out / "zoo.csv"),
        *_scatter(models, "lambda_max", "drop", out / "ood_flatness", "accuracy drop under shift vs λ_max"),
    ]
    verdict = sign_verdict(rho_l)
    summary = (
        f"{len(models)} nets, {len(RECIPES)} recipes; Spearman(λ_max, drop) {fmt_ci(rho_l, 2)}, "
        f"Spearman(tr H, drop) {fmt_ci(rho_t, 2)} "
        f"(drop = clean − shifted acc, {'+'.join(SHIFTS)} sev {SEVERITY})"
    )
    reason = {
        "supported": "sharper models lose more under shift (interval above 0)",
        "not supported": "sharper models lose less under shift (interval below 0)",
        "mixed": "the rank correlation's interval contains 0",
    }[verdict]
    return _result({"rho_lambda_drop": rho_l, "rho_trace_drop": rho_t}, summary, verdict, reason, files)


@experiment(
    "interventions",
    "C11",
    "schedules, optimisers, dropout, WD, BN, label smoothing, depth move flatness and OOD",
)
def interventions(out: Path, quick: bool, seed: int) -> dict:
    models = zoo(quick, seed)
    names = [
        n for n in RECIPES if n not in ("base", "small_batch", "full_batch", "noise", "swa", "sam", "augment")
    ]
    rows, both = [], 0
    for n in names:
        d_lam = _paired(models, n, "base", "lambda_max")
        d_drop = _paired(models, n, "base", "drop")
        moves_flat = sign_verdict(d_lam) != "mixed"
        moves_ood = sign_verdict(d_drop) != "mixed"
        both += moves_flat and moves_ood
        rows.append((n, d_lam, d_drop, moves_flat, moves_ood))
    files = [
        save_table(
            out / "interventions.csv",
            {
                "intervention": [r[0] for r in rows],
                "d_lambda_max": [r[1][0] for r in rows],
                "d_lambda_lo": [r[1][1] for r in rows],
                "d_lambda_hi": [r[1][2] for r in rows],
                "d_drop": [r[2][0] for r in rows],
                "d_drop_lo": [r[2][1] for r in rows],
                "d_drop_hi": [r[2][2] for r in rows],
            },
        )
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for n, dl, dd, *_ in rows:
        ax.errorbar(
            dl[0],
            dd[0],
            xerr=[[dl[0] - dl[1]], [dl[2] - dl[0]]],
            yerr=[[dd[0] - dd[1]], [dd[2] - dd[0]]],
            fmt="o",
            label=n,
            capsize=2,
        )
    ax.axhline(0, c="k", lw=0.5)
    ax.axvline(0, c="k", lw=0.5)
    ax.set_xlabel("Δλ_max vs base")
    ax.set_ylabel("Δ accuracy drop under shift vs base")
    ax.legend(fontsize=6)
    files += save_figure(fig, out / "interventions")
    verdict = "supported" if both == len(names) else ("not supported" if both == 0 else "mixed")
    summary = "; ".join(f"{n}: Δλ_max {fmt_ci(dl, 2)}, Δdrop {fmt_ci(dd, 2)}" for n, dl, dd, *_ in rows)
    return _result(
        {"rows": rows, "both": both},
        summary,
        verdict,
        f"{both}/{len(names)} interventions move both λ_max and the shift drop (95% intervals excluding 0)",
        files,
    )


@experiment("regularised_sharpness", "C15", "with regularisation the best models are often the sharpest")
def regularised_sharpness(out: Path, quick: bool, seed: int) -> dict:
    models = zoo(quick, seed, ["base", "weight_decay", "sam", "augment", "label_smoothing"])
    lam = [m.lambda_max for m in models]
    rho_acc = spearman_ci(lam, [m.test_acc for m in models], seed=seed)
    rho_rob = spearman_ci(lam, [m.shift_acc for m in models], seed=seed)
    rho_cal = spearman_ci(lam, [-m.ece for m in models], seed=seed)
    files = [
        _zoo_table(models, out / "zoo.csv"),
        *_scatter(models, "lambda_max", "test_acc", out / "regularised", "accuracy vs λ_max (regularised)"),
    ]
    signs = [sign_verdict(r) for r in (rho_acc, rho_rob, rho_cal)]
    if "supported" in signs and "not supported" not in signs:
        verdict, reason = (
            "supported",
            "sharper models score better on at least one of accuracy/robustness/calibration",
        )
    elif all(s == "mixed" for s in signs):
        verdict, reason = "mixed", "no significant link either way: sharpness is not a reliable signal here"
    elif "not supported" in signs and "supported" not in signs:
        verdict, reason = "not supported", "flatter models score better (the conventional direction)"
    else:
        verdict, reason = "mixed", "sharpness helps one metric and hurts another"
    summary = (
        f"{len(models)} nets; Spearman(λ_max, ·): accuracy {fmt_ci(rho_acc, 2)}, shifted accuracy "
        f"{fmt_ci(rho_rob, 2)}, calibration (−ECE) {fmt_ci(rho_cal, 2)}"
    )
    return _result(
        {"rho_acc": rho_acc, "rho_robust": rho_rob, "rho_calibration": rho_cal},
        summary,
        verdict,
        reason,
        files,
    )


# --- C12 ---------------------------------------------------------------------------------------------------


@experiment("finetune_flatness", "C12", "fine-tuning from a flatter start loses less under shift")
def finetune_flatness(out: Path, quick: bool, seed: int) -> dict:
    """Pre-train on digits classes 0–4 (flat start: SAM + small batch; sharp start: full-batch GD), then
    fine-tune
    both on all ten classes with the same recipe, and compare the accuracy drop under shift."""
    from ..models import build
    from ..train import fit

    ds = digits()
    X, y = ds.train
    src = y < 5
    seeds = 3 if quick else 5
    rows = []
    for s in range(seed, seed + seeds):
        for start, rec in (
            ("flat", {"sam": "sam", "rho": 0.1, "batch_size": 16}),
            ("sharp", {"batch_size": "full", "lr": 0.2, "epochs": 200}),
        ):
            torch.manual_seed(s)
            model = build("mlp", ds.input_shape, ds.num_classes, **BASE_MODEL)
            fit(model, (X[src], y[src]), {**BASE_RECIPE, **rec, "seed": s}, progress=False)
            pre = measure_model(model, ds, seed=s)
            fit(model, (X, y), {**BASE_RECIPE, "lr": 0.02, "epochs": 5, "seed": s}, progress=False)
            post = measure_model(model, ds, seed=s)
            rows.append(Trained(start, s, model, seconds=0.0, **post))
            rows[-1].pre_lambda = pre["lambda_max"]  # type: ignore[attr-defined]
    d_pre = t_interval(
        [a.pre_lambda - b.pre_lambda for a, b in zip(_by(rows, "flat"), _by(rows, "sharp"), strict=True)]
    )
    d_drop = _paired(rows, "flat", "sharp", "drop")
    d_acc = _paired(rows, "flat", "sharp", "test_acc")
    files = [
        _zoo_table(rows, out / "finetuned.csv"),
        *_scatter(rows, "lambda_max", "drop", out / "finetune", "after fine-tuning"),
    ]
    start_flatter = d_pre[2] < 0
    verdict = sign_verdict((-d_drop[0], -d_drop[2], -d_drop[1])) if start_flatter else "mixed"
    summary = (
        f"flat − sharp start: Δλ_max before fine-tuning {fmt_ci(d_pre)}; after: Δdrop under shift "
        f"{fmt_ci(d_drop)}, Δclean acc {fmt_ci(d_acc)} (n={seeds} seeds)"
    )
    reason = (
        "the flat start was not measurably flatter, so the comparison is inconclusive"
        if not start_flatter
        else {
            "supported": "the flatter start loses less under shift",
            "not supported": "the flatter start loses more",
            "mixed": "no significant difference in the shift drop",
        }[verdict]
    )
    return _result({"d_pre_lambda": d_pre, "d_drop": d_drop, "d_acc": d_acc}, summary, verdict, reason, files)


# --- C14 ---------------------------------------------------------------------------------------------------


@experiment("class_separation", "C14", "close classes give sharper 100%-accuracy solutions than far classes")
def class_separation(out: Path, quick: bool, seed: int) -> dict:
    from ..data import load_two_class
    from ..models import build
    from ..objective import Objective
    from ..sharpness import measure
    from ..train import evaluate, fit

    seps, seeds = [0.2, 0.5, 1.0, 2.0, 4.0], 3 if quick else 6
    rows = []
    for sep in seps:
        for s in range(seed, seed + seeds):
            ds = load_two_class(400, separation=sep, spread=0.5, seed=s)
            torch.manual_seed(s)
            model = build("mlp", ds.input_shape, 2, width=16, depth=1)
            fit(model, ds.train, {**BASE_RECIPE, "epochs": 40, "seed": s}, progress=False)
            obj = Objective(model, "cross_entropy", ds.train, dtype=torch.float64)
            lam = measure(obj, "lambda_max", tol=1e-4, seed=s).value
            rows.append((sep, s, lam, evaluate(model, ds.train)["accuracy"], obj.loss()))
    lam = {sep: t_interval([r[2] for r in rows if r[0] == sep]) for sep in seps}
    acc = {sep: float(np.mean([r[3] for r in rows if r[0] == sep])) for sep in seps}
    rho = spearman_ci([r[0] for r in rows], [r[2] for r in rows], seed=seed)
    files = [
        save_table(
            out / "separation.csv",
            {
                "separation": [r[0] for r in rows],
                "seed": [r[1] for r in rows],
                "lambda_max": [r[2] for r in rows],
                "train_acc": [r[3] for r in rows],
                "train_loss": [r[4] for r in rows],
            },
        )
    ]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(seps, [lam[s][0] for s in seps], yerr=[lam[s][0] - lam[s][1] for s in seps], marker="o")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("class separation")
    ax.set_ylabel("λ_max (train)")
    files += save_figure(fig, out / "class_separation")
    perfect = all(a >= 0.999 for a in acc.values())
    verdict = sign_verdict((-rho[0], -rho[2], -rho[1]))
    if not perfect and verdict == "supported":
        verdict = "mixed"
    summary = (
        "λ_max: "
        + ", ".join(f"sep {s}: {fmt_ci(lam[s])}" for s in seps)
        + "; train acc "
        + ", ".join(f"{a:.3f}" for a in acc.values())
        + f"; Spearman(separation, λ_max) {fmt_ci(rho, 2)}"
    )
    reason = (
        "closer classes give sharper solutions"
        if verdict == "supported"
        else "not all runs reached 100% training accuracy"
        if not perfect
        else "no monotone link"
    )
    return _result({"lambda": lam, "train_acc": acc, "rho": rho}, summary, verdict, reason, files)


def seconds_per_model() -> float:
    """Mean training + measuring time of the zoo models built so far (for the report's cost line)."""
    vals = [m.seconds for v in _ZOO.values() for m in v]
    return float(np.mean(vals)) if vals else math.nan
