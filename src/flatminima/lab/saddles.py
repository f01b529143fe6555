"""Claim C6: a statistical test with noise tells a flat minimum from a flat saddle (lab experiment
``saddle_test``, on analytic critical points and a tiny network's minimum and saddle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import statistics as _st
from ..plotting import save_figure, save_table
from ..statistics import Interval, fmt_interval
from ..toy import get
from .outcome_helpers import table_columns
from .registry import ClaimSpec, Context, experiment
from .rules import Outcome, SubTest, band_sub

C6_CASES = {
    "sphere": "minimum",
    "quartic": "minimum",
    "double_well": "minimum",
    "saddle": "saddle",
    "degenerate_saddle": "saddle",
    "monkey_saddle": "saddle",
}


@dataclass(frozen=True)
class SaddleCase:
    """One analytic critical point under the saddle test: what it truly is, the smallest eigenvalue of its
    Hessian, the median p-value and how often (of ``reps`` repetitions) the test named it correctly."""

    name: str
    truth: str
    hessian_min_eig: float
    median_p: float
    correct: int
    reps: int

    @property
    def rate(self) -> float:
        return self.correct / self.reps

    @property
    def interval(self) -> Interval:
        """Wilson 95 % interval of the correct-classification rate."""
        return _st.wilson(self.correct, self.reps)

    def row(self) -> tuple[str, str, float, float, float]:
        return self.name, self.truth, self.hessian_min_eig, self.median_p, self.rate


@dataclass(frozen=True)
class NetworkSaddle:
    """The saddle test at one critical point of a tiny network, against Lanczos' certified λ_min."""

    kind: str
    lambda_min_bound: float  # λ_min + its error bound: < 0 only where a negative eigenvalue is certified
    p_value: float
    verdict: str

    @property
    def agrees(self) -> bool:
        return (self.lambda_min_bound < 0) == (self.verdict == "saddle")


def _tiny_net_objective(seed: int, saddle: bool):
    """A 2-3-2 tanh net with MSE on one-hot targets: at an L-BFGS-converged local minimum, or at the critical
    point 'all weights zero, output bias = mean target', a saddle (the W₁–W₂ cross term has negative
    curvature)."""
    from ..data import load_two_class
    from ..objective import Objective

    d = load_two_class(120, separation=0.0, spread=1.5, seed=seed)  # overlapping: a strict minimum
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    X, T = d.x_train.double(), torch.nn.functional.one_hot(d.y_train, 2).double()
    if saddle:
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
            net[2].bias.copy_(T.mean(0))
    else:
        opt = torch.optim.LBFGS(
            net.parameters(),
            max_iter=300,
            tolerance_grad=1e-10,
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(X), T)
            loss.backward()
            return loss

        opt.step(closure)
    return Objective(net, "mse", (X, T), dtype=torch.float64)


def _classify_point(name: str, truth: str, seeds: Sequence[int]) -> SaddleCase:
    """The noise + short-descent sign test, once per seed, at the origin of landscape ``name``."""
    from ..toy import saddle_test

    land = get(name, dim=2) if name in ("sphere", "quartic", "double_well") else get(name)
    x = torch.zeros(land.dim, dtype=torch.float64)
    if name == "double_well":
        x[0] = -1.0  # the flat one of the two minima
    hmin = float(torch.linalg.eigvalsh(land.hessian(x)).min())
    verdicts = [saddle_test(land.f, x, sigma=0.2, n=20, steps=200, lr=0.3, loss_noise=1e-4, seed=s) for s in seeds]
    k = sum(v.verdict == truth for v in verdicts)
    return SaddleCase(name, truth, hmin, float(np.median([v.p_value for v in verdicts])), k, len(seeds))


def _classify_network(kind: str, seed: int) -> NetworkSaddle:
    """The saddle test at a trained ("trained") or all-zero ("zero-weights") tiny network."""
    from ..curvature import eigenvalues
    from ..toy import saddle_test

    obj = _tiny_net_objective(seed, saddle=kind == "zero-weights")
    res = eigenvalues(obj, 1, "smallest", tol=1e-6)
    # negative only when certified: λ_min + error bound < 0 (interpolating minima have λ_min ≈ 0 ± round-off)
    lam = float(res.values[0]) + float(res.error_bounds[0])
    r = saddle_test(obj, sigma=0.05, n=12, steps=30, lr=0.2, tol=1e-9, seed=seed)
    return NetworkSaddle(kind, lam, r.p_value, r.verdict)


def _pooled_sub(cases: Sequence[SaddleCase], truth: str, name: str, hypothesis: str, low: float) -> SubTest:
    """The correct-classification rate pooled over the points whose truth is ``truth``, Wilson 95 %, in a band."""
    pool = [c for c in cases if c.truth == truth]
    n = sum(c.reps for c in pool)
    return band_sub(name, hypothesis, _st.wilson(sum(c.correct for c in pool), n), n, low, 1.0)


def _saddle_files(out: Path, cases: Sequence[SaddleCase]) -> list:
    files = [save_table(out / "analytic.csv", table_columns(
        cases, case="name", truth="truth", hessian_min_eig="hessian_min_eig", median_p="median_p",
        correct_rate="rate"))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([c.name for c in cases], [c.rate for c in cases],
           color=["C0" if c.truth == "minimum" else "C3" for c in cases])
    ax.axhline(0.95, ls="--", c="k", lw=0.8)
    ax.set_ylabel("fraction classified correctly")
    ax.tick_params(axis="x", rotation=30)
    return files + save_figure(fig, out / "saddle_test")


@experiment(ClaimSpec(
    "C6", "saddle_test", "A statistical test using noise can tell a truly flat minimum from a flat saddle.",
    hypothesis="the noise + short-descent sign test classifies minima (incl. flat x⁴) as minima at rate ≥ 0.9 "
               "and saddles (incl. the degenerate saddle with a PSD Hessian) as saddles at rate ≥ 0.8",
    quantity="correct-classification rates pooled over 3 minima and over 3 saddles, Wilson 95% over n "
             "repetitions per point (disjoint seeds)",
    rule="minima: supported if the interval ⊂ [0.9, 1], contradicted if wholly below 0.9; saddles: the same "
         "with 0.8; else inconclusive; claim by the combine rule",
    power="n = 100 repetitions per point (300 per pool): Wilson half-width ≈ 0.03",
    n_full=100, n_quick=20, cost_s=12))
def saddle_test_experiment(ctx: Context) -> Outcome:
    cases = [_classify_point(name, truth, ctx.seeds) for name, truth in C6_CASES.items()]
    nets = [_classify_network(kind, ctx.seeds[0]) for kind in ("trained", "zero-weights")]
    net_ok = all(r.agrees for r in nets)
    parts = {
        # accepts minima at ≥ 1 − α within its interval
        "calibrated on minima": all(c.interval.high >= 0.95 for c in cases if c.truth == "minimum"),
        "detects saddles (incl. degenerate)": all(c.interval.estimate >= 0.8 for c in cases if c.truth == "saddle"),
        "agrees with Lanczos λ_min on a network": net_ok,
    }
    subs = [
        _pooled_sub(cases, "minimum", "correct on minima", "calibrated on minima", 0.9),
        _pooled_sub(cases, "saddle", "correct on saddles", "detects saddles", 0.8),
    ]
    files = _saddle_files(ctx.out, cases)
    summary = (
        "; ".join(f"{c.name}: correct {fmt_interval(c.interval, 2)}" for c in cases)
        + "; network: "
        + ", ".join(f"{r.kind} λ_min+bound={r.lambda_min_bound:.3g} p={r.p_value:.2g} → {r.verdict}" for r in nets)
    )
    numbers = {"analytic": [c.row() for c in cases], "network": [astuple(r) for r in nets], "parts": parts}
    return Outcome(summary + f"; network agrees with Lanczos: {net_ok}", subs, numbers, files, len(ctx.seeds))
