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


def accuracy_on_the_line(
    clean: Sequence[float],
    shifted: dict[str, Sequence[float]],
    fits: dict[str, tuple[float, float]],
    *,
    stem: str | Path,
    link: str = "probit",
    clip: float = 5e-5,
    labels: Sequence[str] | None = None,
) -> list[str]:
    """"Accuracy on the line" (Miller et al. 2021; Taori et al. 2020): one panel per shift, clean accuracy
    against shifted accuracy of every run on ``link`` axes (probit: Φ⁻¹, or logit; ticks in accuracy), with
    the fitted line link(shifted) = slope·link(clean) + intercept (``fits[shift]``) and the dashed line of no
    drop (shifted = clean). Accuracies are clipped to [``clip``, 1 − ``clip``] as in the fit. Writes
    ``stem.png``, ``stem.svg`` and the data as ``stem.csv`` (long format: shift, run label, clean and shifted
    accuracy, the line's accuracy at that clean accuracy); returns the three paths."""
    from scipy import special, stats

    from ..plotting import save_table

    fwd, inv = (stats.norm.ppf, stats.norm.cdf) if link == "probit" else (special.logit, special.expit)
    c = np.clip(np.asarray(clean, float), clip, 1 - clip)
    names = list(shifted)
    cols = min(4, max(1, len(names)))
    nrows = math.ceil(len(names) / cols) if names else 1
    fig, axs = plt.subplots(nrows, cols, figsize=(3.2 * cols + 0.4, 3.0 * nrows + 0.4), squeeze=False)
    table: dict[str, list] = {"shift": [], "run": [], "clean_acc": [], "shifted_acc": [], "line_acc": []}
    lab = list(labels) if labels is not None else [str(i) for i in range(len(c))]
    for k, name in enumerate(names):
        ax = axs[k // cols][k % cols]
        s = np.clip(np.asarray(shifted[name], float), clip, 1 - clip)
        a, b = fits[name]
        tx, ty = fwd(c), fwd(s)
        ax.scatter(tx, ty, s=18, color="tab:blue", edgecolor="black", linewidth=0.4, zorder=3)
        lo = min(tx.min(), ty.min())
        hi = max(tx.max(), ty.max())
        pad = 0.08 * (hi - lo) + 0.05
        grid = np.linspace(lo - pad, hi + pad, 50)
        ax.plot(grid, a * grid + b, color="tab:red", lw=1.2, label=f"fit: slope {a:.2f}, intercept {b:+.2f}")
        ax.plot(grid, grid, color="grey", ls="--", lw=0.8, label="no drop (shifted = clean)")
        ticks = [t for t in (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99,
                             0.999) if lo - pad <= fwd(t) <= hi + pad]
        for setter in (ax.set_xticks, ax.set_yticks):
            setter([fwd(t) for t in ticks], [f"{t:g}" for t in ticks])
        ax.tick_params(labelsize=7)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(f"clean test accuracy ({link} scale)", fontsize=7)
        ax.set_ylabel(f"shifted accuracy ({link} scale)", fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", frameon=False)
        table["shift"] += [name] * len(c)
        table["run"] += lab
        table["clean_acc"] += [float(v) for v in np.asarray(clean, float)]
        table["shifted_acc"] += [float(v) for v in np.asarray(shifted[name], float)]
        table["line_acc"] += [float(v) for v in inv(a * tx + b)]
    for k in range(len(names), nrows * cols):
        axs[k // cols][k % cols].set_visible(False)
    paths = save_figure(fig, stem)
    stem_path = Path(paths[0]).with_suffix("")
    return paths + [save_table(stem_path.with_suffix(".csv"), table)]
