"""Optimisers and samplers on analytic landscapes, vectorised over many walkers at once.

Every routine works on a batch of points ``X`` of shape ``(walkers, d)`` and a batched function ``f`` (a
:class:`~flatminima.toy.landscapes.Landscape` or any callable ``(..., d) -> (...)``), so thousands of
independent runs cost one tensor operation per step.

Update rules (g = ∇f, ξ ~ N(0, I)):
- gd: x ← x − ηg;  sgd: x ← x − η(g + s·ξ) (gradient noise of std s);
- langevin: x ← x − ηg + √(2ηT)·ξ (Euler–Maruyama for dx = −∇f dt + √(2T) dW, stationary law ∝ e^{−f/T});
- momentum (heavy ball, Polyak 1964): v ← βv + g, x ← x − ηv;
- adam (Kingma & Ba 2015): m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², x ← x − η m̂/(√v̂ + ε);
- adagrad (Duchi et al. 2011): G ← G + g², x ← x − ηg/(√G + ε) (the step shrinks as 1/√t on a plateau);
- rmsprop (Tieleman & Hinton 2012): v ← ρv + (1−ρ)g², x ← x − ηg/(√v + ε) (the step does not shrink).
Also Newton's method, golden-section line search with two stopping rules, simulated annealing (Kirkpatrick et
al. 1983) and replica exchange (Swendsen & Wang 1986; Hukushima & Nemoto 1996).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import (
    FlatminimaError,
    require_choice,
    require_nonnegative,
    require_positive,
    require_positive_int,
)
from .landscapes import grad as _grad
from .landscapes import hessian as _hessian

Fn = Callable[[torch.Tensor], torch.Tensor]
METHODS = ("gd", "sgd", "langevin", "momentum", "adam", "adagrad", "rmsprop")


@dataclass
class Trajectory:
    """Iterates (steps+1, walkers, d), losses (steps+1, walkers) and step lengths ‖Δx‖ (steps, walkers)."""

    method: str
    xs: torch.Tensor
    losses: torch.Tensor
    step_sizes: torch.Tensor
    evaluations: int

    @property
    def final(self) -> torch.Tensor:
        return self.xs[-1]


def _as_batch(x0) -> torch.Tensor:
    x = torch.as_tensor(x0, dtype=torch.float64).clone()
    return x[None] if x.dim() == 1 else x


def optimize(
    f: Fn,
    x0,
    method: str = "gd",
    *,
    steps: int = 100,
    lr: float = 0.1,
    noise: float = 0.0,
    temperature: float = 0.0,
    beta: float = 0.9,
    beta2: float = 0.999,
    rho: float = 0.9,
    eps: float = 1e-8,
    seed: int = 0,
    record_every: int = 1,
) -> Trajectory:
    """Run ``method`` (one of :data:`METHODS`) for ``steps`` from ``x0`` (d,) or (walkers, d)."""
    require_choice("method", method, METHODS)
    require_positive_int("steps", steps)
    require_positive("lr", lr)
    require_nonnegative("noise", noise)
    require_nonnegative("temperature", temperature)
    require_positive_int("record_every", record_every)
    for name, val in (("beta", beta), ("beta2", beta2), ("rho", rho)):
        if not 0 <= val < 1:
            raise FlatminimaError(f"{name} must be in [0, 1), got {val!r}.")
    gen = torch.Generator().manual_seed(seed)
    x = _as_batch(x0)
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    xs, losses, sizes = [x.clone()], [f(x).detach()], []
    for t in range(1, steps + 1):
        g = _grad(f, x)
        if method == "gd":
            dx = -lr * g
        elif method == "sgd":
            dx = -lr * (g + noise * torch.randn(x.shape, generator=gen, dtype=x.dtype))
        elif method == "langevin":
            dx = -lr * g + math.sqrt(2 * lr * temperature) * torch.randn(
                x.shape, generator=gen, dtype=x.dtype
            )
        elif method == "momentum":
            m = beta * m + g
            dx = -lr * m
        elif method == "adam":
            m, v = beta * m + (1 - beta) * g, beta2 * v + (1 - beta2) * g * g
            dx = -lr * (m / (1 - beta**t)) / ((v / (1 - beta2**t)).sqrt() + eps)
        elif method == "adagrad":
            v = v + g * g
            dx = -lr * g / (v.sqrt() + eps)
        else:  # rmsprop
            v = rho * v + (1 - rho) * g * g
            dx = -lr * g / (v.sqrt() + eps)
        x = x + dx
        if t % record_every == 0 or t == steps:
            xs.append(x.clone())
            losses.append(f(x).detach())
            sizes.append(dx.norm(dim=-1))
    return Trajectory(method, torch.stack(xs), torch.stack(losses), torch.stack(sizes), steps)


def newton(f: Fn, x0, *, steps: int = 30, tol: float = 0.0) -> np.ndarray:
    """Newton's method for a minimum, x ← x − H⁻¹∇f, with exact derivatives; returns the iterates.

    At a simple minimum the error contracts quadratically, e_{k+1} ≈ (f‴/2f″)·e_k²; at a degenerate minimum
    where f′ has a root of multiplicity m, linearly with ratio (m−1)/m (Nocedal & Wright 2006, §3.3;
    Ortega & Rheinboldt 1970).
    """
    require_positive_int("steps", steps)
    x = torch.as_tensor(x0, dtype=torch.float64).reshape(-1).clone()
    out = [x.numpy().copy()]
    for _ in range(steps):
        g = _grad(f, x)
        if float(g.norm()) <= tol or float(g.norm()) == 0.0:
            break
        H = _hessian(f, x)
        x = x - torch.linalg.solve(H, g)
        out.append(x.numpy().copy())
    return np.array(out)


@dataclass
class LineSearchResult:
    x: float
    value: float
    evaluations: int
    rule: str
    bracket: tuple[float, float]


def golden_section(
    f1: Callable[[float], float],
    a: float,
    b: float,
    *,
    rule: str = "interval",
    xtol: float = 1e-8,
    ftol: float = 1e-8,
    max_evals: int = 500,
) -> LineSearchResult:
    """Golden-section minimisation of a unimodal f on [a, b] (Kiefer 1953) with one of two stopping rules.

    - ``rule="interval"``: stop when the bracket is shorter than ``xtol`` (needs log(L/xtol)/log φ evaluations
      whatever f looks like);
    - ``rule="value"``: stop when the two interior values differ by less than ``ftol`` — in a flat valley
      (f ≈ c·x⁴ near the bottom) the values agree long before the bracket is small, so it is far cheaper.
    """
    require_choice("rule", rule, ("interval", "value"))
    require_positive("xtol", xtol)
    require_positive("ftol", ftol)
    if not b > a:
        raise FlatminimaError(f"the bracket must satisfy a < b, got a={a!r}, b={b!r}.")
    invphi = (math.sqrt(5) - 1) / 2
    c, d = b - invphi * (b - a), a + invphi * (b - a)
    fc, fd, evals = f1(c), f1(d), 2
    while evals < max_evals:
        if rule == "interval" and b - a < xtol:
            break
        if rule == "value" and abs(fc - fd) < ftol:
            break
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - invphi * (b - a)
            fc = f1(c)
        else:
            a, c, fc = c, d, fd
            d = a + invphi * (b - a)
            fd = f1(d)
        evals += 1
    x, v = (c, fc) if fc < fd else (d, fd)
    return LineSearchResult(x, v, evals, rule, (a, b))


def cooling_schedule(t0: float, rate: float, steps: int) -> np.ndarray:
    """Geometric cooling T_k = T₀·rateᵏ (Kirkpatrick et al. 1983); rate must lie in (0, 1)."""
    require_positive("t0 (initial temperature)", t0)
    if not isinstance(rate, (int, float)) or not 0 < rate < 1:
        raise FlatminimaError(f"cooling rate must be in (0, 1) (T_k = T0·rate^k), got {rate!r}.")
    require_positive_int("steps", steps)
    return t0 * rate ** np.arange(steps)


@dataclass
class AnnealResult:
    final: torch.Tensor
    final_values: torch.Tensor
    best_values: torch.Tensor
    temperatures: np.ndarray
    acceptance: np.ndarray
    trace: np.ndarray = field(repr=False)


def simulated_annealing(
    f: Fn,
    x0,
    *,
    t0: float = 1.0,
    rate: float = 0.995,
    steps: int = 2000,
    step_size: float = 0.1,
    walkers: int = 1,
    seed: int = 0,
) -> AnnealResult:
    """Metropolis random walk with Gaussian proposals and geometric cooling, for many walkers at once."""
    require_positive("step_size", step_size)
    require_positive_int("walkers", walkers)
    temps = cooling_schedule(t0, rate, steps)
    gen = torch.Generator().manual_seed(seed)
    x = _as_batch(x0)
    if x.shape[0] == 1 and walkers > 1:
        x = x.repeat(walkers, 1)
    fx = f(x)
    best = fx.clone()
    acc, trace = np.empty(steps), np.empty((steps, x.shape[0]))
    for k, T in enumerate(temps):
        prop = x + step_size * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        fp = f(prop)
        accept = torch.rand(fp.shape, generator=gen, dtype=x.dtype) < torch.exp(-(fp - fx).clamp(min=0) / T)
        x = torch.where(accept[:, None], prop, x)
        fx = torch.where(accept, fp, fx)
        best = torch.minimum(best, fx)
        acc[k], trace[k] = float(accept.double().mean()), fx.numpy()
    return AnnealResult(x, fx, best, temps, acc, trace)


@dataclass
class ReplicaExchangeResult:
    """Exchange acceptance per neighbouring pair, round trips (coldest → hottest → coldest) per replica."""

    temperatures: np.ndarray
    exchange_rates: np.ndarray
    round_trips: np.ndarray
    cold_values: np.ndarray
    cold_min: float
    sweeps: int

    @property
    def total_round_trips(self) -> int:
        return int(self.round_trips.sum())


def replica_exchange(
    f: Fn, x0, temperatures, *, sweeps: int = 2000, step_size: float = 0.1, seed: int = 0
) -> ReplicaExchangeResult:
    """Parallel tempering: one Metropolis move per replica per sweep, then neighbour swaps accepted with
    probability min(1, exp[(β_i − β_j)(f_i − f_j)]), alternating even and odd pairs (Hukushima & Nemoto 1996).

    A round trip is counted when a replica that last touched the coldest temperature reaches the hottest and
    comes back; few round trips and near-zero exchange rates mean the ladder is stalled.
    """
    temps = np.asarray(temperatures, dtype=float)
    if temps.ndim != 1 or len(temps) < 2 or np.any(~np.isfinite(temps)) or np.any(temps <= 0):
        raise FlatminimaError(f"temperatures must be ≥ 2 positive finite values, got {temperatures!r}.")
    temps = np.sort(temps)
    require_positive_int("sweeps", sweeps)
    require_positive("step_size", step_size)
    n = len(temps)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = _as_batch(x0)
    x = x.repeat(n, 1) if x.shape[0] == 1 else x
    beta = torch.as_tensor(1 / temps, dtype=torch.float64)
    fx = f(x)
    who = np.arange(n)  # who[k] = replica id sitting at temperature k
    last_end = np.full(n, -1)  # per replica: 0 = last visited coldest, 1 = last visited hottest
    trips, tried, accepted = np.zeros(n, int), np.zeros(n - 1), np.zeros(n - 1)
    cold = np.empty(sweeps)
    for s in range(sweeps):
        prop = x + step_size * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        fp = f(prop)
        acc = torch.rand(n, generator=gen, dtype=x.dtype) < torch.exp(-beta * (fp - fx).clamp(min=0))
        x, fx = torch.where(acc[:, None], prop, x), torch.where(acc, fp, fx)
        fv = fx.numpy()
        for k in range(s % 2, n - 1, 2):
            tried[k] += 1
            delta = (1 / temps[k] - 1 / temps[k + 1]) * (fv[k] - fv[k + 1])
            if delta >= 0 or rng.random() < math.exp(delta):
                accepted[k] += 1
                x[[k, k + 1]] = x[[k + 1, k]]
                fx[[k, k + 1]] = fx[[k + 1, k]]
                fv = fx.numpy()
                who[[k, k + 1]] = who[[k + 1, k]]
        r0, r1 = who[0], who[-1]
        if last_end[r0] == 1:
            trips[r0] += 1
        last_end[r0] = 0
        if last_end[r1] == 0:
            last_end[r1] = 1
        cold[s] = float(fx[0])
    return ReplicaExchangeResult(
        temps, accepted / np.maximum(tried, 1), trips, cold, float(cold.min()), sweeps
    )
