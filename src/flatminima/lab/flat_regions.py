"""Claim C8: optimisers in flat regions (lab experiment ``flat_regions``, a demonstration): AdaGrad vs
RMSProp steps on a plateau, warm restarts, line-search stopping rules, Newton at a degenerate minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import statistics as _st
from ..plotting import save_figure, save_table
from ..statistics import Interval, fmt_interval
from ..toy import golden_section, newton, optimize
from .outcome_helpers import demonstration_outcome, label_axes
from .registry import ClaimSpec, Context, experiment
from .rules import Outcome


@dataclass(frozen=True)
class AdaptiveSteps:
    """Step sizes |Δx_t| of AdaGrad and RMSProp on a tilted plateau and the slope of log |Δx_t| in log t
    (AdaGrad: η/√t, slope −1/2; RMSProp: ≈ η, constant)."""

    adagrad: np.ndarray
    rmsprop: np.ndarray
    slope: float


@dataclass(frozen=True)
class WarmRestarts:
    """Fractions of walkers in the deep basin (Wilson 95 %) at a constant lr and with warm restarts."""

    constant: Interval
    restarts: Interval


@dataclass(frozen=True)
class StoppingRules:
    """Golden-section evaluations in a flat valley under an interval rule and a function-value rule."""

    interval_evals: int
    value_evals: int


@dataclass(frozen=True)
class NewtonRates:
    """Newton errors at a simple and a degenerate (x⁴) minimum: the order at the simple one
    (log e₃ / log e₂ ≈ 2) and the last error ratio at x⁴ ((m − 1)/m = 2/3 for multiplicity m = 3)."""

    simple: np.ndarray
    flat: np.ndarray
    order: float
    ratio: float


def _warm_restart_lr(t: int, period: int, lr_max: float, lr_min: float) -> float:
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * (t % period) / period))


def _adaptive_steps(steps: int = 400) -> AdaptiveSteps:
    """AdaGrad and RMSProp at lr 0.1 on the tilted plateau f = 1e-4·x."""
    def plateau(x):
        return 1e-4 * x.sum(-1)

    ada = optimize(plateau, [0.0], "adagrad", steps=steps, lr=0.1).step_sizes[:, 0].numpy()
    rms = optimize(plateau, [0.0], "rmsprop", steps=steps, lr=0.1).step_sizes[:, 0].numpy()
    slope = float(np.polyfit(np.log(np.arange(1, steps + 1)), np.log(ada), 1)[0])
    return AdaptiveSteps(ada, rms, slope)


def _shallow_and_deep(x: torch.Tensor) -> torch.Tensor:
    """A shallow sharp basin at 0 (f'' ≈ 7.5: unstable for lr > 0.27) next to a deep wide one at 2 (f'' ≈ 1)."""
    x0 = x[..., 0]
    return -0.3 * torch.exp(-(x0**2) / 0.08) - torch.exp(-((x0 - 2.0) ** 2) / 2.0)


def _warm_restarts(walkers: int, seed: int, total: int = 400, period: int = 100) -> WarmRestarts:
    """Noisy GD from the shallow basin at a constant lr 0.05 and with cosine warm restarts (0.8 → 0.01 every
    ``period`` steps); both see the same starts and the same gradient noise."""
    from ..toy.landscapes import grad as _grad

    gen = torch.Generator().manual_seed(seed)
    x_const = 0.1 * torch.randn(walkers, 1, generator=gen, dtype=torch.float64)
    x_wr = x_const.clone()
    for t in range(total):
        noise = 0.02 * torch.randn(walkers, 1, generator=gen, dtype=torch.float64)
        x_const = x_const - 0.05 * (_grad(_shallow_and_deep, x_const) + noise)
        lr = _warm_restart_lr(t, period, 0.8, 0.01)
        x_wr = x_wr - lr * (_grad(_shallow_and_deep, x_wr) + noise)
    return WarmRestarts(_st.wilson(int((x_const[:, 0] > 1.0).sum()), walkers),
                        _st.wilson(int((x_wr[:, 0] > 1.0).sum()), walkers))


def _stopping_rules() -> StoppingRules:
    """Golden section on the flat valley f = x⁴ over [−1, 2], to xtol 1e-8 and to ftol 1e-8."""
    ls_int = golden_section(lambda x: x**4, -1.0, 2.0, rule="interval", xtol=1e-8)
    ls_val = golden_section(lambda x: x**4, -1.0, 2.0, rule="value", ftol=1e-8)
    return StoppingRules(ls_int.evaluations, ls_val.evaluations)


def _newton_rates() -> NewtonRates:
    """Newton from 0.3 on x² + x³/3 (simple minimum) and on x⁴ (degenerate minimum)."""
    simple = newton(lambda x: (x**2 + x**3 / 3).sum(-1), [0.3], steps=5)[:, 0]
    flat = newton(lambda x: (x**4).sum(-1), [0.3], steps=12)[:, 0]
    order = float(np.log(abs(simple[3])) / np.log(abs(simple[2])))
    return NewtonRates(simple, flat, order, float(flat[-1] / flat[-2]))


def _flat_regions_files(out: Path, st: AdaptiveSteps, nw: NewtonRates) -> list:
    t = np.arange(1, len(st.adagrad) + 1)
    files = [save_table(out / "steps.csv", {"t": t, "adagrad": st.adagrad, "rmsprop": st.rmsprop})]
    fig, axs = plt.subplots(1, 2, figsize=(8, 3.2))
    axs[0].loglog(t, st.adagrad, label="AdaGrad")
    axs[0].loglog(t, st.rmsprop, label="RMSProp")
    label_axes(axs[0], "step t", "|Δx| on a plateau", legend=True)
    axs[1].semilogy(np.abs(nw.simple) + 1e-300, "o-", label="simple minimum")
    axs[1].semilogy(np.abs(nw.flat), "s-", label="x⁴ (multiplicity 3)")
    label_axes(axs[1], "Newton iteration", "|x − x*|", legend=True)
    return files + save_figure(fig, out / "flat_regions")


@experiment(ClaimSpec(
    "C8", "flat_regions",
    "In flat regions: AdaGrad's step shrinks and stalls, RMSProp keeps moving; warm restarts can kick an "
    "optimiser out of a shallow basin into a deeper one; a function-value stopping rule is far cheaper than an "
    "interval rule in a flat valley; Newton's method degrades from quadratic to linear convergence at a "
    "degenerate minimum.",
    hypothesis="mechanisms with closed forms (AdaGrad step η/√t, Newton ratio (m−1)/m) or built by "
               "construction (a sharp shallow basin next to a wide deep one)",
    quantity="AdaGrad/RMSProp step laws, deep-basin rates with and without warm restarts (Wilson), "
             "golden-section evaluations per stopping rule, Newton error ratios",
    rule="demonstration: the outcomes follow from the constructions and closed forms, so no verdict; the "
         "construction checks are printed",
    power="one seed set of walkers (200 quick, 1000 full)", n_full=1, n_quick=1, kind="demonstration", cost_s=1,
    quick_powered=True))
def flat_regions(ctx: Context) -> Outcome:
    st = _adaptive_steps()
    wr = _warm_restarts(200 if ctx.quick else 1000, ctx.seeds[0])
    ls = _stopping_rules()
    nw = _newton_rates()
    parts = {
        "AdaGrad step ∝ t^-1/2, RMSProp constant":
            abs(st.slope + 0.5) < 0.02 and abs(st.rmsprop[-1] / 0.1 - 1) < 0.02,
        "warm restarts reach the deeper basin": wr.restarts.low > wr.constant.high,
        "value rule far cheaper": ls.value_evals < 0.5 * ls.interval_evals,
        "Newton linear (2/3) at x⁴, quadratic at simple min": abs(nw.ratio - 2 / 3) < 1e-6 and nw.order > 1.8,
    }
    files = _flat_regions_files(ctx.out, st, nw)
    summary = (
        f"AdaGrad step slope in log t {st.slope:.3f} (theory −0.5), RMSProp final step {st.rmsprop[-1]:.4g} "
        f"(lr 0.1); deep basin reached: constant lr {fmt_interval(wr.constant, 2)}, warm restarts "
        f"{fmt_interval(wr.restarts, 2)}; golden section evals interval {ls.interval_evals} vs value "
        f"{ls.value_evals}; Newton ratio at x⁴ {nw.ratio:.6f} (theory 2/3), order at simple minimum {nw.order:.2f}"
    )
    numbers = {
        "adagrad_slope": st.slope,
        "rms_final": float(st.rmsprop[-1]),
        "deep_const": wr.constant.triple(),
        "deep_warm_restarts": wr.restarts.triple(),
        "evals_interval": ls.interval_evals,
        "evals_value": ls.value_evals,
        "newton_ratio": nw.ratio,
        "newton_order": nw.order,
        "parts": parts,
    }
    return demonstration_outcome(numbers, parts, summary, files)
