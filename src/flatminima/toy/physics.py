"""Small explicit physical landscapes for claim C9, with exact references to check simulations against.

1. One-dimensional overdamped Langevin dynamics dx = −U′(x)dt + √(2T)dW (friction γ = 1, k_B = 1):
   - stationary law p(x) ∝ exp(−U(x)/T) (Gibbs), computed by quadrature;
   - exact mean first-passage time a → b (Gardiner, Handbook of Stochastic Methods, §5.2.7):
     τ = (1/T) ∫_a^b dy e^{U(y)/T} ∫_{−∞}^y e^{−U(z)/T} dz;
   - Kramers' high-barrier rate (Kramers 1940; Hänggi, Talkner & Borkovec 1990, Rev. Mod. Phys. 62:251):
     k = √(U″(a)|U″(s)|)/(2π) · exp(−ΔU/T), an Arrhenius law with a curvature prefactor.
2. A two-basin free-energy model of protein aggregation: a broad, high-entropy basin (disordered ensemble)
   against a narrow, low-enthalpy basin (amyloid fibril). Temperature decides which wins (ΔG = ΔH − TΔS with
   the entropy from the basin widths); a seed lowers the barrier and speeds conversion by ≈ e^{s/T}.
3. PF₅ Berry pseudorotation (Berry 1960): 20 permutational isomers, each linked to 3 others by one
   pseudorotation — the Desargues graph (Balaban, Fărcaşiu & Bănică 1966). A ligand hops axial → equatorial at
   rate 3k and equatorial → axial at 2k; the ¹⁹F NMR lines of the two sites coalesce when the exchange is fast
   compared with their frequency separation (Gutowsky & Holm 1956; Bloch–McConnell line shapes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ..errors import FlatminimaError, require_nonnegative, require_positive, require_positive_int

U1 = Callable[[np.ndarray], np.ndarray]


def _deriv(U: U1, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    return (U(x + h) - U(x - h)) / (2 * h)


def _deriv2(U: U1, x: float, h: float = 1e-4) -> float:
    return float((U(np.array(x + h)) - 2 * U(np.array(x)) + U(np.array(x - h))) / h**2)


def gibbs_density(U: U1, T: float, grid: np.ndarray) -> np.ndarray:
    """Normalised Gibbs density exp(−U/T)/Z on ``grid`` (trapezoid normalisation)."""
    require_positive("temperature", T)
    u = U(grid)
    w = np.exp(-(u - u.min()) / T)
    return w / np.trapezoid(w, grid)


def gibbs_cdf(U: U1, T: float, lo: float = -3.0, hi: float = 3.0, n: int = 20001) -> Callable:
    """Exact Gibbs CDF by cumulative quadrature, as a callable for a KS test."""
    grid = np.linspace(lo, hi, n)
    p = gibbs_density(U, T, grid)
    cdf = np.concatenate([[0.0], np.cumsum((p[1:] + p[:-1]) / 2 * np.diff(grid))])
    cdf /= cdf[-1]
    return lambda x: np.interp(x, grid, cdf)


def langevin_1d(U: U1, x0: np.ndarray, T: float, dt: float, steps: int, seed: int = 0) -> np.ndarray:
    """Euler–Maruyama for dx = −U′dt + √(2T)dW, all walkers at once; returns the final positions."""
    require_positive("temperature", T)
    require_positive("dt", dt)
    require_positive_int("steps", steps)
    rng = np.random.default_rng(seed)
    x = np.array(x0, dtype=float)
    amp = math.sqrt(2 * T * dt)
    for _ in range(steps):
        x = x - _deriv(U, x) * dt + amp * rng.standard_normal(x.shape)
    return x


def first_passage_times(
    U: U1,
    start: float,
    target: float,
    T: float,
    *,
    walkers: int = 2000,
    dt: float = 0.005,
    max_time: float = 1e4,
    seed: int = 0,
) -> np.ndarray:
    """Times for walkers started at ``start`` to first reach ``target`` (NaN if not within max_time)."""
    require_positive("temperature", T)
    require_positive_int("walkers", walkers)
    rng = np.random.default_rng(seed)
    x = np.full(walkers, float(start))
    times = np.full(walkers, np.nan)
    alive = np.ones(walkers, bool)
    sign = 1.0 if target > start else -1.0
    amp, t, n_max = math.sqrt(2 * T * dt), 0.0, int(max_time / dt)
    for _ in range(n_max):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        xa = x[idx]
        xa = xa - _deriv(U, xa) * dt + amp * rng.standard_normal(idx.size)
        x[idx] = xa
        t += dt
        hit = sign * (xa - target) >= 0
        times[idx[hit]] = t
        alive[idx[hit]] = False
    return times


def mfpt_exact(U: U1, a: float, b: float, T: float, *, lo: float | None = None, n: int = 20001) -> float:
    """Exact mean first-passage time a → b (b > a, reflecting far to the left) by double quadrature."""
    require_positive("temperature", T)
    lo = a - 2.0 if lo is None else lo
    z = np.linspace(lo, b, n)
    u = U(z)
    umin = u.min()
    # work with e^{−(U−Umin)/T} ≤ 1 inside and e^{(U−Umin)/T} only on [a, b] so nothing overflows
    w = np.exp(-(u - umin) / T)
    inner = np.concatenate([[0.0], np.cumsum((w[1:] + w[:-1]) / 2 * np.diff(z))])
    mask = z >= a
    outer = np.exp((u[mask] - umin) / T) * inner[mask]
    return float(np.trapezoid(outer, z[mask]) / T)


def kramers_rate(U: U1, minimum: float, barrier: float, T: float) -> float:
    """Kramers' overdamped rate k = √(U″(a)|U″(s)|)/(2π)·exp(−(U(s) − U(a))/T)."""
    require_positive("temperature", T)
    ka, ks = _deriv2(U, minimum), _deriv2(U, barrier)
    dU = float(U(np.array(barrier)) - U(np.array(minimum)))
    return math.sqrt(ka * abs(ks)) / (2 * math.pi) * math.exp(-dU / T)


@dataclass
class TwoBasinModel:
    """U(x) = h·(x² − 1)²·(1 + c·tanh(x)) − ε·(1 + tanh(x/0.3))/2 − s·exp(−x²/(2·0.3²)).

    x < 0: the disordered ensemble (broad basin, curvature 8h(1 − c·tanh 1)); x > 0: the fibril (narrow,
    curvature 8h(1 + c·tanh 1), lower by ε in energy). ``seed`` = s lowers the barrier at x = 0.
    """

    h: float = 1.0
    c: float = 0.9
    eps: float = 0.3
    seed: float = 0.0

    def __post_init__(self) -> None:
        require_positive("h", self.h)
        require_nonnegative("eps", self.eps)
        require_nonnegative("seed", self.seed)
        if not 0 <= self.c < 1:
            raise FlatminimaError(f"c must be in [0, 1), got {self.c!r}.")

    def U(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return (
            self.h * (x**2 - 1) ** 2 * (1 + self.c * np.tanh(x))
            - self.eps * (1 + np.tanh(x / 0.3)) / 2
            - self.seed * np.exp(-(x**2) / (2 * 0.09))
        )

    def extrema(self) -> tuple[float, float, float]:
        """(disordered minimum, barrier top, fibril minimum), located on a fine grid."""
        g = np.linspace(-2, 2, 40001)
        u = self.U(g)
        left, right = g < 0, g > 0
        a, b = g[left][np.argmin(u[left])], g[right][np.argmin(u[right])]
        mid = (g > a) & (g < b)
        return float(a), float(g[mid][np.argmax(u[mid])]), float(b)

    def fibril_fraction(self, T: float) -> float:
        """Exact equilibrium population of the fibril basin (x > barrier) by quadrature of e^{−U/T}."""
        require_positive("temperature", T)
        _, s, _ = self.extrema()
        g = np.linspace(-3, 3, 60001)
        p = gibbs_density(self.U, T, g)
        return float(np.trapezoid(p[g > s], g[g > s]) / np.trapezoid(p, g))

    def harmonic_fibril_fraction(self, T: float) -> float:
        """Harmonic estimate: Z_i = e^{−U_i/T}·√(2πT/U″_i), i.e. ΔG = ΔU − T·½ln(κ_D/κ_F) (width entropy)."""
        a, _, b = self.extrema()
        za = math.exp(-float(self.U(a)) / T) * math.sqrt(2 * math.pi * T / _deriv2(self.U, a))
        zb = math.exp(-float(self.U(b)) / T) * math.sqrt(2 * math.pi * T / _deriv2(self.U, b))
        return zb / (za + zb)

    def crossover_temperature(self) -> float:
        """T* where both basins are equally populated (harmonic: T* = 2ΔU/ln(κ_F/κ_D))."""
        from scipy.optimize import brentq

        return float(brentq(lambda T: self.fibril_fraction(T) - 0.5, 0.02, 20.0))

    def conversion_rate(self, T: float) -> float:
        """Kramers rate disordered → fibril."""
        a, s, _ = self.extrema()
        return kramers_rate(self.U, a, s, T)


# --- PF5 Berry pseudorotation -------------------------------------------------------------------------------


def berry_graph() -> tuple[list[tuple[frozenset, int]], np.ndarray]:
    """The 20 permutational isomers of PF₅ and their pseudorotation adjacency matrix (the Desargues graph).

    An isomer is (axial pair, chirality ±1). A Berry pseudorotation about an equatorial pivot makes the two
    other
    equatorial ligands axial and flips chirality, so (A, σ) ↔ (B, −σ) whenever the axial pairs A, B are
    disjoint.
    """
    pairs = [frozenset(p) for p in combinations(range(5), 2)]
    nodes = [(p, s) for s in (1, -1) for p in pairs]
    n = len(nodes)
    adj = np.zeros((n, n), int)
    for i, (a, sa) in enumerate(nodes):
        for j, (b, sb) in enumerate(nodes):
            if sa != sb and not (a & b):
                adj[i, j] = 1
    return nodes, adj


def site_exchange_rates(k: float) -> tuple[float, float]:
    """Per-ligand rates from a pseudorotation rate k per isomer: axial→equatorial 3k, equatorial→axial 2k."""
    require_nonnegative("k", k)
    return 3 * k, 2 * k


def hop_rate(T: float, barrier: float = 3.6, prefactor: float = 1e12) -> float:
    """Arrhenius pseudorotation rate k = ν·exp(−E_a/RT), E_a in kcal/mol (≈ 3.6 for PF₅), T in kelvin."""
    require_positive("temperature", T)
    return prefactor * math.exp(-barrier / (1.987204e-3 * T))


def nmr_spectrum(k: float, delta_hz: float, freqs: np.ndarray, *, t2: float = 0.05) -> np.ndarray:
    """Bloch–McConnell two-site line shape for a ligand exchanging axial (pop 2/5) ↔ equatorial (pop 3/5).

    I(ν) = Re[1ᵀ(−i2πΔ + K − R)⁻¹ p] with K the exchange generator; sites at ±Δ/2 (Hz), natural width 1/(πT₂).
    """
    require_positive("delta_hz", delta_hz)
    k_ae, k_ea = site_exchange_rates(k)
    p = np.array([0.4, 0.6])
    K = np.array([[-k_ae, k_ea], [k_ae, -k_ea]])
    omega = 2 * np.pi * np.array([delta_hz / 2, -delta_hz / 2])
    out = np.empty(len(freqs))
    for i, nu in enumerate(freqs):
        A = np.diag(1j * (omega - 2 * np.pi * nu) - 1 / t2) + K
        out[i] = -np.real(np.ones(2) @ np.linalg.solve(A, p))
    return out


def count_peaks(y: np.ndarray, rel: float = 0.05) -> int:
    """Local maxima above ``rel``·max: 2 = sites resolved, 1 = averaged."""
    y = np.asarray(y)
    inner = (y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]) & (y[1:-1] > rel * y.max())
    return int(inner.sum())


def simulate_ligand(k: float, t_end: float, *, walkers: int = 1000, seed: int = 0) -> float:
    """Gillespie walk on the Desargues graph; the fraction of time ligand 0 spends axial (exact: 2/5)."""
    require_positive("k", k)
    require_positive("t_end", t_end)
    require_positive_int("walkers", walkers)
    nodes, adj = berry_graph()
    nbrs = [np.flatnonzero(r) for r in adj]
    rng = np.random.default_rng(seed)
    state = rng.integers(0, len(nodes), walkers)
    t = np.zeros(walkers)
    axial_time = np.zeros(walkers)
    alive = np.ones(walkers, bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        dwell = rng.exponential(1 / (3 * k), idx.size)
        dwell = np.minimum(dwell, t_end - t[idx])
        is_ax = np.array([0 in nodes[s][0] for s in state[idx]])
        axial_time[idx] += dwell * is_ax
        t[idx] += dwell
        state[idx] = [nbrs[s][rng.integers(3)] for s in state[idx]]
        alive[idx] = t[idx] < t_end - 1e-12
    return float(axial_time.mean() / t_end)
