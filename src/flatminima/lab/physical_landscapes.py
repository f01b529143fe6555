"""Claim C9: physical landscapes (lab experiment ``physical_landscapes``, a demonstration): entropy vs
enthalpy basins and seeding, a fluxional molecule, simulated annealing, replica exchange.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import statistics as _st
from ..plotting import save_figure, save_table
from ..statistics import Interval, fmt_interval
from ..toy import get, replica_exchange, simulated_annealing
from ..toy import physics as ph
from .outcome_helpers import demonstration_outcome, label_axes
from .registry import ClaimSpec, Context, experiment
from .rules import Outcome


@dataclass(frozen=True)
class Populations:
    """Equilibrium fibril population of the entropy-vs-enthalpy two-basin model against temperature, and the
    crossover temperature T* where the two basins are equally populated."""

    temps: np.ndarray
    fibril: list[float]
    t_star: float


@dataclass(frozen=True)
class Seeding:
    """Conversion speed-up from seeding (a lowered barrier) at temperature T: simulated (ratio of mean first
    passage times, bootstrap 95 %), exact (ratio of MFPT integrals) and Kramers' rate ratio; the unseeded
    mean first-passage time (t 95 %)."""

    speed_sim: Interval
    speed_exact: float
    speed_kramers: float
    tau_unseeded: Interval


@dataclass(frozen=True)
class Fluxional:
    """PF₅'s ¹⁹F line shape: peaks per temperature (two sites resolved cold, one averaged line hot), the
    first temperature with one peak, and the time fraction a hopping ligand spends axial (exact 0.4)."""

    freqs: np.ndarray
    kelvin: np.ndarray
    peaks: list[int]
    coalescence_K: int | None
    axial: float


@dataclass(frozen=True)
class Annealing:
    """Simulated annealing on a rugged 1-D well: the fraction of walkers ending in the global basin
    (|x| < 0.5, Wilson 95 %) under fast and slow cooling, and the mean f along each run."""

    fast: Interval
    slow: Interval
    fast_trace: np.ndarray
    slow_trace: np.ndarray


@dataclass(frozen=True)
class Tempering:
    """Replica exchange vs a single cold chain on one landscape: success rates (Wilson 95 %), the mean
    exchange rate between neighbouring temperatures and the mean number of round trips."""

    pt: Interval
    single: Interval
    exchange_rates: np.ndarray
    round_trips: float

    @property
    def beats_single(self) -> bool:
        return self.pt.low > self.single.high

    def to_numbers(self) -> dict[str, Any]:
        return {"pt": self.pt.triple(), "single": self.single.triple(), "exchange_rates": self.exchange_rates,
                "round_trips": self.round_trips}


def _populations() -> Populations:
    m0 = ph.TwoBasinModel()
    temps = np.linspace(0.05, 2.0, 40)
    return Populations(temps, [m0.fibril_fraction(T) for T in temps], m0.crossover_temperature())


def _seeding(walkers: int, seed: int, T: float = 0.3) -> Seeding:
    """First passage from the disordered to the fibril minimum without and with a seed (s = 0.3)."""
    m0, m1 = ph.TwoBasinModel(), ph.TwoBasinModel(seed=0.3)
    a0, _, b0 = m0.extrema()
    a1, _, b1 = m1.extrema()
    fp0 = ph.first_passage_times(m0.U, a0, b0, T, walkers=walkers, dt=0.01, seed=seed)
    fp1 = ph.first_passage_times(m1.U, a1, b1, T, walkers=walkers, dt=0.01, seed=seed + 1)
    fp0, fp1 = fp0[~np.isnan(fp0)], fp1[~np.isnan(fp1)]
    speed_sim = _st.bootstrap(np.arange(len(fp0)), lambda i: float(fp0[i].mean() / fp1.mean()), seed=seed)
    return Seeding(
        speed_sim,
        ph.mfpt_exact(m0.U, a0, b0, T) / ph.mfpt_exact(m1.U, a1, b1, T),
        m1.conversion_rate(T) / m0.conversion_rate(T),
        _st.t_interval(fp0),
    )


def _fluxional(seed: int) -> Fluxional:
    """PF₅ line shapes from 40 K to 160 K (site splitting 1000 Hz) and the Berry-pseudorotation ligand walk."""
    freqs = np.linspace(-1500, 1500, 1201)
    kelvin = np.arange(40, 161, 10)
    peaks = [ph.count_peaks(ph.nmr_spectrum(ph.hop_rate(float(K)), 1000.0, freqs)) for K in kelvin]
    t_coal = next((int(K) for K, p in zip(kelvin, peaks, strict=True) if p == 1), None)
    return Fluxional(freqs, kelvin, peaks, t_coal, ph.simulate_ligand(1.0, 30.0, walkers=200, seed=seed))


def _rugged(x: torch.Tensor) -> torch.Tensor:
    """A rugged 1-D well: x²/10 + 1 − cos 2πx (shallow minima near every integer, the global one at 0)."""
    return x[..., 0] ** 2 / 10 + 1 - torch.cos(2 * math.pi * x[..., 0])


def _annealing(walkers: int, seed: int) -> Annealing:
    """Quench (T ← 0.95 T per step) vs slow cooling (T ← 0.999 T) from x = 3, T₀ = 3."""
    sa_kw = dict(t0=3.0, steps=3000, step_size=0.1, walkers=walkers, seed=seed)
    fast = simulated_annealing(_rugged, [3.0], rate=0.95, **sa_kw)
    slow = simulated_annealing(_rugged, [3.0], rate=0.999, **sa_kw)
    return Annealing(_st.wilson(int((fast.final[:, 0].abs() < 0.5).sum()), walkers),
                     _st.wilson(int((slow.final[:, 0].abs() < 0.5).sum()), walkers),
                     fast.trace.mean(1), slow.trace.mean(1))


def _tilted(x: torch.Tensor) -> torch.Tensor:
    """A tilted double well 3(x² − 1)² + x/2: an energy barrier between the minima near ±1."""
    return 3 * (x[..., 0] ** 2 - 1) ** 2 + 0.5 * x[..., 0]


def _tempering(land: Callable, start: list[float], good: float, *, runs: int, sweeps: int,
               ladder: list[float], seed: int) -> Tempering:
    """``runs`` replica-exchange runs on ``ladder`` and as many single chains at its coldest temperature
    (annealing with rate 1 − 1e-12: a fixed temperature); success is reaching f < ``good``."""
    pt, rates, trips = 0, [], []
    for r in range(runs):
        res = replica_exchange(land, start, ladder, sweeps=sweeps, step_size=0.2, seed=seed + r)
        pt += int(res.cold_min < good)
        rates.append(res.exchange_rates)
        trips.append(res.total_round_trips)
    single = simulated_annealing(
        land, start, t0=ladder[0], rate=1 - 1e-12, steps=sweeps, step_size=0.2, walkers=runs, seed=seed
    )
    sc = int((single.best_values < good).sum())
    return Tempering(_st.wilson(pt, runs), _st.wilson(sc, runs), np.mean(rates, 0), float(np.mean(trips)))


def _physical_files(out: Path, pop: Populations, pf5: Fluxional, sa: Annealing) -> list:
    files = [
        save_table(out / "two_basin.csv", {"T": pop.temps, "fibril_fraction": pop.fibril}),
        save_table(out / "pf5.csv", {"kelvin": pf5.kelvin, "peaks": pf5.peaks}),
    ]
    fig, axs = plt.subplots(1, 3, figsize=(11, 3.2))
    axs[0].plot(pop.temps, pop.fibril)
    axs[0].axvline(pop.t_star, ls="--", c="k", lw=0.8)
    label_axes(axs[0], "temperature", "fibril population")
    for K in (pf5.kelvin[0], pf5.coalescence_K or pf5.kelvin[-1], pf5.kelvin[-1]):
        axs[1].plot(pf5.freqs, ph.nmr_spectrum(ph.hop_rate(float(K)), 1000.0, pf5.freqs), label=f"{K} K")
    label_axes(axs[1], "Hz", title="PF₅ ¹⁹F line shape", legend=True)
    axs[2].plot(sa.fast_trace, label="fast cooling")
    axs[2].plot(sa.slow_trace, label="slow cooling")
    label_axes(axs[2], "step", "mean f", legend=True)
    return files + save_figure(fig, out / "physical_landscapes")


def _physical_summary(pop: Populations, sd: Seeding, pf5: Fluxional, sa: Annealing,
                      tempering: dict[str, Tempering]) -> str:
    bar, golf = tempering["barrier"], tempering["golf"]
    return (
        f"fibril fraction {pop.fibril[0]:.2f} at T={pop.temps[0]:.2f}, {pop.fibril[-1]:.2f} at "
        f"T={pop.temps[-1]:.1f}, crossover T*={pop.t_star:.3f}; seeding speed-up sim {fmt_interval(sd.speed_sim)} "
        f"vs exact {sd.speed_exact:.3g}, Kramers {sd.speed_kramers:.3g} (τ unseeded {fmt_interval(sd.tau_unseeded)}); "
        f"PF5 peaks {dict(zip(pf5.kelvin.tolist(), pf5.peaks, strict=True))}, "
        f"coalescence ≈ {pf5.coalescence_K} K, ligand axial time {pf5.axial:.3f} (exact 0.4); SA global basin fast "
        f"{fmt_interval(sa.fast, 2)} vs slow {fmt_interval(sa.slow, 2)}; tempering success barrier PT "
        f"{fmt_interval(bar.pt, 2)} vs single {fmt_interval(bar.single, 2)}, golf PT "
        f"{fmt_interval(golf.pt, 2)} vs single {fmt_interval(golf.single, 2)} (golf exchange rates "
        f"{np.round(golf.exchange_rates, 2).tolist()}, round trips {golf.round_trips:.1f})"
    )


@experiment(ClaimSpec(
    "C9", "physical_landscapes",
    "Physical landscapes: entropy vs enthalpy basins with temperature deciding which wins and seeding lowering "
    "the barrier; fluxional molecules hop between shallow equivalent minima; simulated annealing escapes "
    "shallow minima as it cools; replica exchange stalls on a golf-course landscape.",
    hypothesis="toy physical models built to show each mechanism",
    quantity="two-basin populations and crossover temperature, seeding speed-up (simulation vs exact MFPT vs "
             "Kramers), PF₅ line-shape coalescence, annealing success rates, tempering success on a barrier "
             "vs a golf course (Wilson)",
    rule="demonstration: the models are constructed to show the mechanisms, so no verdict; the construction "
         "checks are printed (tempering on the golf course is reported as measured, with the single-chain "
         "baseline, not as 'stalls')",
    power="one seed set (300 walkers quick, 2000 full)", n_full=1, n_quick=1, kind="demonstration", cost_s=16,
    quick_powered=True))
def physical_landscapes(ctx: Context) -> Outcome:
    quick, seed = ctx.quick, ctx.seeds[0]
    pop = _populations()
    sd = _seeding(300 if quick else 2000, seed)
    pf5 = _fluxional(seed)
    sa = _annealing(200 if quick else 1000, seed)
    runs, sweeps = (8, 800) if quick else (30, 3000)
    kw = dict(runs=runs, sweeps=sweeps, ladder=[0.05, 0.15, 0.5, 1.5], seed=seed)
    golf = get("golf_course", dim=3, width=0.05, seed=seed)  # an entropic barrier
    tempering = {"barrier": _tempering(_tilted, [1.0], -0.2, **kw),
                 "golf": _tempering(golf, [-0.9, -0.9, -0.9], -0.5, **kw)}
    parts = {
        "cold → fibril, hot → disordered": pop.fibril[0] > 0.5 > pop.fibril[-1],
        "seed speeds conversion (sim)": sd.speed_sim.low > 1,
        "PF5 sites resolved cold, averaged hot": pf5.peaks[0] == 2 and pf5.peaks[-1] == 1,
        "annealing escapes shallow minima (slow > fast)": sa.slow.low > sa.fast.high,
        "tempering beats a single chain over a barrier": tempering["barrier"].beats_single,
        "tempering beats a single chain on the golf course": tempering["golf"].beats_single,
    }
    files = _physical_files(ctx.out, pop, pf5, sa)
    numbers = {
        "t_star": pop.t_star,
        "speed_sim": sd.speed_sim.triple(),
        "speed_exact": sd.speed_exact,
        "speed_kramers": sd.speed_kramers,
        "pf5_peaks": pf5.peaks,
        "coalescence_K": pf5.coalescence_K,
        "axial_fraction": pf5.axial,
        "sa_fast": sa.fast.triple(),
        "sa_slow": sa.slow.triple(),
        "tempering": {k: t.to_numbers() for k, t in tempering.items()},
        "parts": parts,
    }
    return demonstration_outcome(numbers, parts, _physical_summary(pop, sd, pf5, sa, tempering), files)
