"""Report figures: measure-vs-target scatter plots (colour = one hyperparameter, marker = another, legends
sorted numerically, axes named in words) and a τ forest plot with unadjusted and Holm-adjusted intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..plotting import plt, save_figure

MEASURE_NAMES = {
    "lambda_max": "λmax (top Hessian eigenvalue)",
    "trace": "tr H (Hessian trace)",
    "frobenius": "‖H‖_F (Hessian Frobenius norm)",
    "average_case": "average-case sharpness (mean loss rise under Gaussian weight noise)",
    "worst_case": "worst-case sharpness (largest loss rise in a ρ-ball)",
    "keskar": "Keskar ε-sharpness (% loss rise in a box)",
    "fisher_rao": "Fisher–Rao norm",
    "relative_flatness": "relative flatness",
    "pac_bayes": "PAC-Bayes flatness",
    "param_norm": "parameter norm ‖θ‖₂ (baseline)",
    "distance_from_init": "distance from initialisation ‖θ − θ₀‖₂ (baseline)",
    "output_margin": "output margin (baseline)",
    "path_norm": "path norm (baseline)",
}
AXIS_NAMES = {"lr": "learning rate", "batch_size": "batch size", "weight_decay": "weight decay", "model": "model"}
MARKERS = "osD^vP*Xph"


def measure_name(m: str) -> str:
    return MEASURE_NAMES.get(m, m.replace("_", " "))


def axis_name(a: str) -> str:
    return AXIS_NAMES.get(a, a.replace("_", " "))


def sort_values(values: Sequence[Any]) -> list[Any]:
    """Distinct values sorted numerically where they are numbers (16 < 64 < 256), as text otherwise."""

    def key(v: Any) -> tuple:
        try:
            return (0, float(v), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(v))

    uniq = {repr(v): v for v in values}
    return sorted(uniq.values(), key=key)


def pick_axes(rows: Sequence[dict], axes: Sequence[str]) -> tuple[str | None, str | None]:
    """(colour axis, marker axis): the swept axes with the most distinct values, colour first."""
    counts = [(len({repr(r.get(a)) for r in rows}), i, a) for i, a in enumerate(axes)]
    ranked = [a for c, _, a in sorted(counts, key=lambda t: (-t[0], t[1])) if c >= 2]
    return (ranked[0] if ranked else None), (ranked[1] if len(ranked) > 1 else None)


def scatter(
    rows: Sequence[dict],
    xkey: str,
    ykey: str,
    *,
    colour_axis: str | None,
    marker_axis: str | None,
    xlabel: str,
    ylabel: str,
    title: str,
    stem: str | Path,
) -> list[str]:
    """One point per run; colour = ``colour_axis``, marker = ``marker_axis`` (seeds of a configuration
    share both); two legends, values in numeric order."""
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    x = np.array([r[xkey] for r in rows], float)
    y = np.array([r[ykey] for r in rows], float)
    cvals = sort_values([r.get(colour_axis) for r in rows]) if colour_axis else [None]
    mvals = sort_values([r.get(marker_axis) for r in rows]) if marker_axis else [None]
    cmap = plt.get_cmap("viridis")
    colours = {repr(v): cmap(i / max(1, len(cvals) - 1)) for i, v in enumerate(cvals)}
    marks = {repr(v): MARKERS[i % len(MARKERS)] for i, v in enumerate(mvals)}
    for r, xi, yi in zip(rows, x, y, strict=True):
        ax.scatter([xi], [yi], s=30, color=colours[repr(r.get(colour_axis) if colour_axis else None)],
                   marker=marks[repr(r.get(marker_axis) if marker_axis else None)], edgecolor="black", linewidth=0.4)
    if np.all(x > 0) and x.max() / x.min() > 20:
        ax.set_xscale("log")  # measures often span decades; ranks (τ, ρ) do not depend on the scale
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if colour_axis:
        handles = [plt.Line2D([], [], ls="", marker="o", color=colours[repr(v)], markeredgecolor="black",
                              label=f"{v:g}" if isinstance(v, float) else str(v)) for v in cvals]
        leg = ax.legend(handles=handles, title=axis_name(colour_axis), fontsize=7, title_fontsize=7,
                        loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.add_artist(leg)
    if marker_axis:
        handles = [plt.Line2D([], [], ls="", marker=marks[repr(v)], color="lightgrey", markeredgecolor="black",
                              label=f"{v:g}" if isinstance(v, float) else str(v)) for v in mvals]
        ax.legend(handles=handles, title=axis_name(marker_axis), fontsize=7, title_fontsize=7,
                  loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False)
    return save_figure(fig, stem)


def forest(rows: Sequence[dict], *, stem: str | Path) -> list[str]:
    """Kendall τ per measure × target: thin line = Holm-adjusted interval (decides the verdict), thick line
    = unadjusted interval; the dashed line is τ = 0."""
    fig, ax = plt.subplots(figsize=(6.8, 0.35 * len(rows) + 1.4))
    for i, r in enumerate(rows):
        colour = {"flatter-better": "tab:blue", "sharper-better": "tab:orange", "simpler-better": "tab:green",
                  "complex-better": "tab:purple"}.get(r["kind"], "tab:gray")
        if not math.isnan(r["tau_adj_low"]):
            ax.plot([r["tau_adj_low"], r["tau_adj_high"]], [i, i], color=colour, lw=0.9)
        if not math.isnan(r["tau_low"]):
            ax.plot([r["tau_low"], r["tau_high"]], [i, i], color=colour, lw=3)
        ax.plot([r["tau"]], [i], "o", color=colour, markeredgecolor="black", markeredgewidth=0.4)
    ax.axvline(0, color="black", ls="--", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{r['measure']}{' (baseline)' if r.get('baseline') else ''} vs {r['target']}"
                                     for r in rows], fontsize=8)
    ax.set_xlim(-1.05, 1.05)
    ax.invert_yaxis()
    ax.set_xlabel(
        "Kendall τ_b; thick: 95% cluster-bootstrap interval, thin: Holm-adjusted interval\n"
        "blue: flatter better, orange: sharper better, green/purple: lower/higher baseline better, grey: inconclusive",
        fontsize=7,
    )
    return save_figure(fig, stem)
