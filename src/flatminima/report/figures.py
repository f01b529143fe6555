"""Report figures: measure-vs-target scatter plots coloured by recipe, and a τ forest plot with intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..plotting import plt, save_figure


def scatter(
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[str],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    stem: str | Path,
) -> list[str]:
    """One point per run; colour = recipe (runs differing only in seed share a colour)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    uniq = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(uniq) > 10 else "tab10")
    x, y = np.asarray(x, float), np.asarray(y, float)
    for i, lab in enumerate(uniq):
        m = np.array([lbl == lab for lbl in labels])
        ax.scatter(x[m], y[m], s=28, color=cmap(i % cmap.N), label=lab, edgecolor="black", linewidth=0.4)
    if np.all(x > 0) and x.max() / x.min() > 20:
        ax.set_xscale("log")  # measures often span decades; ranks (τ, ρ) do not depend on the scale
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(uniq) <= 24:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save_figure(fig, stem)


def forest(rows: Sequence[dict], *, stem: str | Path) -> list[str]:
    """Kendall τ per measure × target with its bootstrap interval; the dashed line is τ = 0."""
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(rows) + 1.2))
    for i, r in enumerate(rows):
        lo, hi = r["tau_low"], r["tau_high"]
        colour = (
            "tab:gray"
            if math.isnan(lo) or lo <= 0 <= hi
            else ("tab:blue" if r["kind"] == "flatter-better" else "tab:orange")
        )
        if not math.isnan(lo):
            ax.plot([lo, hi], [i, i], color=colour, lw=2)
        ax.plot([r["tau"]], [i], "o", color=colour)
    ax.axvline(0, color="black", ls="--", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{r['measure']} vs {r['target']}" for r in rows], fontsize=8)
    ax.set_xlim(-1.05, 1.05)
    ax.invert_yaxis()
    ax.set_xlabel(
        "Kendall τ (95% bootstrap CI)\nblue: flatter better, orange: sharper better, "
        "grey: no reliable relation",
        fontsize=7,
    )
    return save_figure(fig, stem)
