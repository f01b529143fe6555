"""Claim C13: the function, not the optimiser, decides which minimum is found (lab experiment
``sphere_vs_rosenbrock``): five optimisers on a function with an equally deep sharp and flat basin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..plotting import save_figure, save_table
from ..statistics import Interval
from ..toy import optimize
from .outcome_helpers import label_axes, table_columns
from .registry import ClaimSpec, Context, experiment
from .rules import Outcome, SubTest, band_sub, newcombe_interval

C13_DELTA = 0.1
C13_METHODS = {"gd": dict(lr=0.02), "gd_lr0.06": dict(lr=0.06), "momentum": dict(lr=0.004, beta=0.9),
               "adam": dict(lr=0.02), "sgd_noise": dict(lr=0.02, noise=3.0)}
C13_NOISY = ("sgd_noise",)
C13_PAIRS = len(C13_METHODS) * (len(C13_METHODS) - 1) // 2
C13_STEPS, C13_WINDOW, C13_GRAD_TOL = 3000, 300, 1e-3


@dataclass(frozen=True)
class BasinOutcome:
    """Where one optimiser's walkers end on the two-basin function: how many settled (see
    :func:`settled_basins`), how many of those in the flat basin, the median final ‖∇f‖ and the mean λ_max
    of the Hessian at (up to 50 of) the settled ends."""

    method: str
    flat: int
    settled: int
    walkers: int
    median_grad_norm: float
    mean_lambda_max: float

    @property
    def unsettled(self) -> int:
        return self.walkers - self.settled

    @property
    def rate(self) -> float:
        """Fraction in the flat basin among the settled walkers (NaN if none settled)."""
        return self.flat / self.settled if self.settled else math.nan


@dataclass(frozen=True)
class PairDifference:
    """Flat-basin rate of optimiser ``a`` minus that of ``b`` among settled walkers (Newcombe interval)."""

    a: str
    b: str
    interval: Interval
    n: int  # the smaller of the two settled counts


def two_basin(x: torch.Tensor) -> torch.Tensor:
    """Equal-depth sharp minimum near x₀ = +1 (f'' ≈ 44) and flat minimum near x₀ = −1 (f'' ≈ 2.8)."""
    x0, x1 = x[..., 0], x[..., 1]
    return (-torch.exp(-((x0 - 1) ** 2) / (2 * 0.15**2)) - torch.exp(-((x0 + 1) ** 2) / (2 * 0.6**2))
            + 0.02 * x0**2 + 0.5 * x1**2)


def settled_basins(xs: torch.Tensor, noisy: bool, *, window: int = C13_WINDOW,
                   grad_tol: float = C13_GRAD_TOL) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where walkers settle: (flat, settled, final gradient norm) per walker from iterates (steps+1, walkers, 2).

    A walker is *settled* if it stays on one side of the barrier (x₀ = 0) for the last ``window`` steps and,
    for a deterministic optimiser, ends with ‖∇f‖ ≤ ``grad_tol`` (a walker bouncing in a well whose curvature
    exceeds 2/lr never does). A noisy optimiser's iterates never come to rest: residence in one basin for the
    whole window is its settling criterion. ``flat`` says which side the settled walker is on (x₀ < 0)."""
    from ..toy.landscapes import grad as _grad

    win = xs[-(window + 1):, :, 0]
    left, right = (win < 0).all(0), (win > 0).all(0)
    g = _grad(two_basin, xs[-1]).norm(dim=-1)
    settled = left | right
    if not noisy:
        settled = settled & (g <= grad_tol)
    return left & settled, settled, g


def _basin_outcome(method: str, x0: torch.Tensor, seed: int) -> BasinOutcome:
    """Run optimiser ``method`` (its settings from :data:`C13_METHODS`) from every start in ``x0``."""
    from ..toy.landscapes import hessian as _hess

    kind = {"sgd_noise": "sgd", "gd_lr0.06": "gd"}.get(method, method)
    tr = optimize(two_basin, x0, kind, steps=C13_STEPS, record_every=1, seed=seed, **C13_METHODS[method])
    flat, settled, g = settled_basins(tr.xs, method in C13_NOISY)
    ends = tr.final[settled][:50]
    lam = (float(np.mean([float(torch.linalg.eigvalsh(_hess(two_basin, e)).max()) for e in ends]))
           if len(ends) else math.nan)
    return BasinOutcome(method, int(flat.sum()), int(settled.sum()), len(x0), float(g.median()), lam)


def _pair_differences(outcomes: Sequence[BasinOutcome], level: float) -> list[PairDifference]:
    """Every pair's difference in flat-basin rate, Newcombe at ``level`` (NaN where one side has no settled
    walker)."""
    pairs = []
    for i, a in enumerate(outcomes):
        for b in outcomes[i + 1:]:
            if a.settled == 0 or b.settled == 0:
                iv = Interval(math.nan, math.nan, math.nan, level, method="no settled walkers")
            else:
                iv = newcombe_interval(a.flat, a.settled, b.flat, b.settled, level)
            pairs.append(PairDifference(a.method, b.method, iv, min(a.settled, b.settled)))
    return pairs


def _equivalence_sub(outcomes: Sequence[BasinOutcome], pairs: Sequence[PairDifference]) -> SubTest:
    """One sub-test for the family of pairs: it reads the largest difference; supported only if every pair's
    interval lies in ±δ, contradicted if any lies wholly outside."""
    verdicts = [band_sub(f"{p.a} − {p.b}", "", p.interval, p.n, -C13_DELTA, C13_DELTA).verdict for p in pairs]
    worst = max(pairs, key=lambda p: abs(p.interval.estimate) if not math.isnan(p.interval.estimate) else -1.0)
    v = ("contradicted" if "contradicted" in verdicts else "supported" if all(x == "supported" for x in verdicts)
         else "inconclusive")
    return SubTest(f"largest pairwise difference in flat-basin rate among settled walkers ({worst.a} − {worst.b})",
                   "the optimiser does not change which minimum is found", worst.interval,
                   f"every pair ⊂ [±{C13_DELTA}] → supported; any pair wholly outside → contradicted", v, worst.n,
                   note="unsettled: " + ", ".join(f"{o.method} {o.unsettled}/{o.walkers}" for o in outcomes))


def _basin_files(out: Path, outcomes: Sequence[BasinOutcome], pairs: Sequence[PairDifference]) -> list:
    files = [
        save_table(out / "basins.csv", table_columns(outcomes, method="method", flat_basin="flat", settled="settled",
                                                     unsettled="unsettled", walkers="walkers",
                                                     median_final_grad_norm="median_grad_norm",
                                                     mean_lambda_max_settled="mean_lambda_max")),
        save_table(out / "pairs.csv", {"a": [p.a for p in pairs], "b": [p.b for p in pairs],
                                       "diff": [p.interval.estimate for p in pairs],
                                       "low": [p.interval.low for p in pairs],
                                       "high": [p.interval.high for p in pairs]}),
    ]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    xi = np.arange(len(outcomes))
    ax.bar(xi - 0.2, [o.rate for o in outcomes], 0.4, label="flat, among settled")
    ax.bar(xi + 0.2, [o.unsettled / o.walkers for o in outcomes], 0.4, label="unsettled (of all)")
    ax.set_xticks(xi, [o.method for o in outcomes], fontsize=8)
    label_axes(ax, "", "fraction", title="equal-depth sharp (x₀=1) vs flat (x₀=−1) minimum", legend=True, fontsize=7)
    return files + save_figure(fig, out / "optimiser_basins")


@experiment(ClaimSpec(
    "C13", "sphere_vs_rosenbrock",
    "On analytic functions the sharpness of the minimum found reflects the function, not the quality of the "
    "optimiser.",
    hypothesis="on a function with an equally deep sharp (f'' ≈ 44) and flat (f'' ≈ 2.8) minimum, GD at "
               "lr 0.02 and 0.06 (above 2/44: unstable in the sharp well), momentum, Adam and noisy SGD from "
               "the same starts end in the flat basin at the same rate among the walkers that settle in a "
               "minimum (the function decides, not the optimiser)",
    quantity=f"per optimiser, among walkers settled after {C13_STEPS} steps (on one side of the barrier for "
             f"the last {C13_WINDOW} steps and, for the deterministic ones, final ‖∇f‖ ≤ {C13_GRAD_TOL:g}): "
             "the fraction in the flat basin; the 10 pairwise differences with Newcombe intervals at Bonferroni "
             "level 1 − 0.05/10; unsettled walkers reported per optimiser, not counted in either basin",
    rule=f"supported if every pairwise interval ⊂ [−{C13_DELTA}, {C13_DELTA}]; contradicted if some interval "
         f"lies wholly outside it (the optimiser moves the outcome by > {C13_DELTA}); else inconclusive",
    power="n = 1000 walkers per optimiser (fewer where walkers do not settle): Newcombe half-width 0.045 at "
          "the Bonferroni level with 589–597 settled GD-lr-0.06 walkers (full run, 3 sets), inside the ±0.1 band",
    n_full=1000, n_quick=200, quick_powered=True, cost_s=8))
def sphere_vs_rosenbrock(ctx: Context) -> Outcome:
    n = len(ctx.seeds)
    gen = torch.Generator().manual_seed(ctx.seeds[0])
    x0 = torch.column_stack([6 * torch.rand(n, generator=gen, dtype=torch.float64) - 3,
                             2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1])
    outcomes = [_basin_outcome(m, x0, ctx.seeds[0]) for m in C13_METHODS]
    pairs = _pair_differences(outcomes, 1 - 0.05 / C13_PAIRS)
    sub = _equivalence_sub(outcomes, pairs)
    files = _basin_files(ctx.out, outcomes, pairs)
    summary = (", ".join(f"{o.method}: flat {o.rate:.2f} of {o.settled} settled, {o.unsettled} unsettled "
                         f"(mean λ_max {o.mean_lambda_max:.3g})" for o in outcomes) + f"; {sub.line(2)}")
    numbers = {"flat_fraction": {o.method: o.rate for o in outcomes},
               "settled": {o.method: o.settled for o in outcomes},
               "unsettled": {o.method: o.unsettled for o in outcomes}}
    return Outcome(summary, [sub], numbers, files, n)
