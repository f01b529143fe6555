"""The edge sets the sharpness a run ends at (claim C18): full-batch gradient descent on a small tanh MLP
trained with MSE ends with λmax ≈ 2/η, so the step size, not the data, decides how flat the end point is.

This is the mechanism behind "large step sizes (and, through batch sharpness, small batches) end flatter":
gradient descent sharpens until λmax reaches its stability threshold 2/η and then hovers there (Cohen et
al. 2021), so across learning rates the final λmax should be a line in 2/η with slope ≈ 1. Each seed draws
its own data set and initialisation, trains at every learning rate of :data:`LRS` and regresses its final
λmax (the median of the last fifth of the run's λmax records, each a Lanczos run on the full-data Hessian
recorded by :class:`flatminima.dynamics.SharpnessMonitor`) on 2/η; the verdict reads the t-interval of
the per-seed slopes.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from .. import statistics as st
from ..plotting import save_figure, save_table
from .registry import ClaimSpec, Context, experiment
from .rules import CONTRADICTED, INCONCLUSIVE, SUPPORTED, Outcome, SubTest, band_test, mde, sign_test

LRS = (0.2, 0.25, 0.3, 0.45, 0.6)  # 2/η from 10 to 3.3; λmax starts near 2.6 (below every threshold)
STEPS = {True: 600, False: 1200}  # quick, full
EVERY = 10
LATE = 0.8  # "final" λmax: the median of the records from 80 % of the run on
BAND = (0.75, 1.25)  # slope of final λmax on 2/η that counts as "tracks the edge"
FLOOR = 0.5  # an interval wholly below this excludes the band on the low side: contradicted

RULE = (f"slope b of final λmax on 2/η (per seed, least squares over {len(LRS)} learning rates), 95% t-interval "
        f"over seeds: supported if it lies within [{BAND[0]:g}, {BAND[1]:g}] and excludes 0; contradicted if it "
        f"lies wholly below {FLOOR:g} (the band excluded on the low side, slopes ≤ 0 included); else "
        "inconclusive; a run whose loss turns non-finite has diverged and is listed and left out, and a seed "
        "needs 3 learning rates that did not diverge to give a slope")


def _setup(seed: int, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g)
    y = torch.sin(X @ torch.randn(6, 2, generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    return model, X, y


def _train(seed: int, lr: float, steps: int) -> dict:
    """Full-batch GD at ``lr``; λmax recorded every :data:`EVERY` steps (warm-started Lanczos, tol 1e-3).

    A run whose loss becomes non-finite has diverged (above the edge gradient descent may leave the basin
    instead of hovering): it stops there, is reported as ``diverged`` and has no final λmax."""
    from ..dynamics import SharpnessMonitor
    from ..errors import NonFiniteLossError

    model, X, y = _setup(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, every=EVERY, seed=seed)
    diverged = False
    for s in range(steps + 1):
        if s:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(X), y)
            if not torch.isfinite(loss):
                diverged = True
                break
            loss.backward()
            opt.step()
        try:
            mon.step(s)
        except NonFiniteLossError:
            diverged = True
            break
    steps_l, lam = mon.series("lambda_max")
    _, loss = mon.series("loss")
    late = [] if diverged else [v for s, v in zip(steps_l, lam, strict=True) if s >= LATE * steps]
    # the first record at 0.9·2/η: the run must have reached the edge well before its late window
    onset = next((s for s, v in zip(steps_l, lam, strict=True) if v >= 0.9 * 2 / lr), None)
    final = float(np.median(late)) if late and all(math.isfinite(v) for v in late) else math.nan
    return {"seed": seed, "lr": lr, "threshold": 2 / lr, "initial": lam[0], "final": final,
            "final_ratio": final * lr / 2, "final_loss": loss[-1] if loss else math.nan, "onset": onset,
            "diverged": diverged, "steps": steps_l, "lambda_max": lam}


def _slope(x: list[float], y: list[float]) -> tuple[float, float]:
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(b), float(a)


def verdict(iv: st.Interval) -> str:
    """The pre-registered rule (:data:`RULE`) on the slope interval, from the lab's rule helpers."""
    if band_test(iv, *BAND) == SUPPORTED and sign_test(iv, 1) == SUPPORTED:
        return SUPPORTED
    if band_test(iv, FLOOR, math.inf) == CONTRADICTED:
        return CONTRADICTED
    return INCONCLUSIVE


SPEC = ClaimSpec(
    "C18", "edge_sharpness",
    "The edge of stability sets the sharpness a run ends at: full-batch GD ends with λmax ≈ 2/η, so larger "
    "steps end flatter (the lab's own addition: the mechanism behind C3; Cohen et al. 2021).",
    hypothesis="final λmax = a + b·(2/η) with b ≈ 1 across learning rates (full-batch GD, MSE, tanh MLP)",
    quantity=f"per seed: least-squares slope b of the final λmax (median of the last {1 - LATE:.0%} of the λmax "
             f"records, full-data Hessian) on 2/η over η ∈ {LRS}; 95% t-interval of b over seeds; Spearman ρ "
             "of final λmax and 2/η pooled, for information",
    rule=RULE,
    power="n = 6 seeds (quick 3); measured (full run, 3 sets) per-seed slopes with s ≈ 0.007–0.009, so the "
          "t-interval's half-width is ≈ 0.01 at n = 6 (≈ 0.06 at the quick n = 3), well inside the band",
    n_full=6, n_quick=3, quick_powered=True, cost_s=43)


@experiment(SPEC)
def edge_sharpness(ctx: Context) -> Outcome:
    steps = STEPS[ctx.quick]
    runs = [_train(seed, lr, steps) for seed in ctx.seeds for lr in LRS]
    slopes, intercepts = [], []
    for seed in ctx.seeds:
        rs = [r for r in runs if r["seed"] == seed and math.isfinite(r["final"])]
        if len(rs) >= 3:
            b, a = _slope([r["threshold"] for r in rs], [r["final"] for r in rs])
            slopes.append(b)
            intercepts.append(a)
    iv = st.t_interval(slopes) if len(slopes) >= 2 else st.Interval(math.nan, math.nan, math.nan, 0.95)
    ok = [r for r in runs if math.isfinite(r["final"])]
    rho = st.spearman_rho([r["threshold"] for r in ok], [r["final"] for r in ok])
    ratios = [r["final_ratio"] for r in ok]
    sub = SubTest("slope of final λmax on 2/η", "b ≈ 1: the final sharpness tracks the edge", iv, RULE,
                  verdict(iv), len(slopes), mde(slopes) if len(slopes) >= 2 else math.nan,
                  note=f"Spearman ρ = {rho:.3f}")
    files = [save_table(ctx.out / "runs.csv", {k: [r[k] for r in runs] for k in
                                               ("seed", "lr", "threshold", "initial", "onset", "final",
                                                "final_ratio", "final_loss", "diverged")})]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, lr in enumerate(LRS):
        r = next(r for r in runs if r["lr"] == lr)
        left.plot(r["steps"], r["lambda_max"], color=f"C{i}", lw=1, label=f"η = {lr:g}")
        left.axhline(2 / lr, color=f"C{i}", ls="--", lw=0.8)
    left.set_xlabel("step")
    left.set_ylabel("λmax (dashed: 2/η)")
    left.set_title(f"seed {ctx.seeds[0]}")
    left.legend(fontsize=7)
    right.scatter([r["threshold"] for r in ok], [r["final"] for r in ok], s=14)
    t = np.linspace(0, max(r["threshold"] for r in runs) * 1.05, 2)
    right.plot(t, t, color="k", lw=0.8, label="λmax = 2/η")
    right.set_xlabel("2/η")
    right.set_ylabel("final λmax")
    right.set_title(f"slope {st.fmt_interval(iv, 3)}")
    right.legend(fontsize=7)
    fig.tight_layout()
    files += save_figure(fig, ctx.out / "edge_sharpness")
    plt.close(fig)
    onsets = [r["onset"] for r in runs if not r["diverged"]]
    latest = None if None in onsets else max(onsets, default=None)
    diverged = [(r["seed"], r["lr"]) for r in runs if r["diverged"]]
    summary = (f"{len(ctx.seeds)} seeds × η ∈ {LRS}, {steps} full-batch GD steps: slope of final λmax on 2/η "
               f"{st.fmt_interval(iv, 3)} (per seed {', '.join(f'{b:.3f}' for b in slopes)}; intercept "
               f"{np.mean(intercepts):.3f}), final λmax/(2/η) {min(ratios):.3f}–{max(ratios):.3f}, Spearman ρ "
               f"{rho:.3f}; every run at 0.9·2/η by step {latest if latest is not None else '(never, some run)'} of "
               f"{steps}" + (f"; diverged (left out): {', '.join(f'seed {a} at η = {b:g}' for a, b in diverged)}"
                            if diverged else ""))
    numbers = {"slope": iv.triple(), "latest_onset": latest, "diverged": diverged,
               "slopes": slopes, "intercepts": intercepts, "spearman_rho": rho,
               "final_ratio_min": min(ratios), "final_ratio_max": max(ratios), "steps": steps, "lrs": list(LRS)}
    return Outcome(summary, [sub], numbers, files, len(slopes))
