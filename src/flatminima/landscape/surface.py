"""The result of a slice or an interpolation: coefficients, values, metadata; it plots and saves itself."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FlatminimaError, require_choice
from ..jsonable import json_default
from ..objective import Cost
from ..plotting import new_figure, save_figure, save_table

__all__ = ["Surface", "plot_curves"]

_NAMES = {"loss": "loss", "accuracy": "accuracy", "error": "error"}


@dataclass
class Surface:
    """Values of L (and accuracy) on a grid of direction coefficients.

    ``axes``: one coefficient array per direction (``[alpha]`` or ``[alpha, beta]``; ``[t]`` for an
    interpolation). ``values``: ``"train_loss"``, ``"train_accuracy"``, ``"test_loss"``, ... each of shape
    ``(len(alpha),)`` or ``(len(alpha), len(beta))`` (index ``[i, j]`` ↔ ``alpha[i], beta[j]``).
    ``trajectory``: optional path coordinates (points × 2) drawn on 2-D plots.
    """

    axes: list[np.ndarray]
    values: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    trajectory: np.ndarray | None = None
    cost: Cost = field(default_factory=Cost)
    label: str = ""

    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def loss(self) -> np.ndarray:
        """The training-data loss (the first split evaluated)."""
        return self.values[self._splits()[0] + "_loss"]

    def _splits(self) -> list[str]:
        return [k[: -len("_loss")] for k in self.values if k.endswith("_loss")]

    def axis_names(self) -> list[str]:
        return list(self.meta.get("axis_names", ["alpha", "beta"][: self.ndim]))

    # ------------------------------------------------------------------ saving
    def save(self, stem: str | Path) -> list[str]:
        """Write ``stem.csv`` (one row per grid point), ``stem.npz`` (arrays) and ``stem.json`` (metadata)."""
        stem = Path(stem).with_suffix("") if Path(stem).suffix in {".csv", ".npz", ".json"} else Path(stem)
        names = self.axis_names()
        grids = np.meshgrid(*self.axes, indexing="ij")
        cols: dict[str, Any] = {n: g.ravel() for n, g in zip(names, grids, strict=True)}
        cols |= {k: np.asarray(v).ravel() for k, v in self.values.items()}
        files = [save_table(stem.with_suffix(".csv"), cols)]
        arrays = {n: a for n, a in zip(names, self.axes, strict=True)} | dict(self.values)
        if self.trajectory is not None:
            arrays["trajectory"] = self.trajectory
        np.savez(stem.with_suffix(".npz"), **arrays)
        files.append(str(stem.with_suffix(".npz")))
        meta = {"label": self.label, "shape": [len(a) for a in self.axes], "cost": self.cost.to_dict()}
        meta |= self.meta
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=json_default))
        return files + [str(stem.with_suffix(".json"))]

    # ------------------------------------------------------------------ plotting
    def plot(
        self,
        stem: str | Path,
        *,
        metric: str = "loss",
        kind: str = "auto",
        log: bool = False,
        levels: int = 30,
        save_data: bool = True,
    ) -> list[str]:
        """Draw the surface: 1-D curves (train and test), or for 2-D a ``"contour"`` map (with the
        trajectory when there is one) and/or a ``"surface"`` 3-D view (``kind="auto"`` draws both, the 3-D one
        as ``stem_3d``). ``log``: logarithmic loss axis / colour scale. Writes PNG + SVG, and the data
        (CSV/NPZ/JSON) next to them unless ``save_data=False``. Returns the paths written."""
        require_choice("metric", metric, list(_NAMES))
        require_choice("kind", kind, ["auto", "line", "contour", "surface"])
        stem = Path(stem)
        if self.ndim == 1:
            files = plot_curves([self], stem, metric=metric, log=log)
        else:
            files = []
            if kind in ("auto", "contour"):
                files += self._contour(stem, metric, log, levels)
            if kind in ("auto", "surface"):
                files += self._surface3d(stem if kind == "surface" else Path(f"{stem}_3d"), metric, log)
        return files + (self.save(stem) if save_data else [])

    def _field(self, metric: str, split: str | None = None) -> tuple[np.ndarray, str]:
        split = split or self._splits()[0]
        key = f"{split}_{'accuracy' if metric == 'error' else metric}"
        if key not in self.values:
            raise FlatminimaError(f"this surface has no {key!r}; it holds {sorted(self.values)}.")
        z = np.asarray(self.values[key], dtype=float)
        return (1.0 - z if metric == "error" else z), f"{split} {metric}"

    def _caption(self, with_label: bool = True) -> str:
        """The figure title: which model (``label``, first line), data, directions, and ``meta["note"]``."""
        m = self.meta
        d = m.get("directions", {})
        parts = [
            m.get("model", ""),
            f"on {m['data']}" if m.get("data") else "",
            f"{m['mode']} mode" if m.get("mode") else "",
            _direction_text(d),
        ]
        # wrapped so long direction descriptions stay inside narrow contour figures
        lines = textwrap.wrap(", ".join(p for p in parts if p), 75)
        if with_label and self.label:
            lines = textwrap.wrap(self.label, 75) + lines
        if m.get("note"):
            lines += textwrap.wrap(str(m["note"]), 75)
        return "\n".join(lines)

    def _labels(self) -> list[str]:
        d = self.meta.get("directions", {})
        kind = d.get("kind", "")
        names = self.axis_names()
        if kind == "pca" and d.get("explained_variance_ratio"):
            evr = d["explained_variance_ratio"]
            return [f"PC{i + 1} ({100 * evr[i]:.1f}% of variance)" for i in range(self.ndim)]
        if kind == "hessian" and d.get("eigenvalues"):
            lam = d["eigenvalues"]
            return [f"{names[i]}: eigenvector {i + 1} (λ={lam[i]:.3g})" for i in range(self.ndim)]
        units = {"filter": " (filter-normalised)", "layer": " (layer-normalised)", "random": " (Gaussian)"}
        unit = units.get(kind, "")
        return [f"{names[i]} · d{i + 1}{unit}" for i in range(self.ndim)]

    def _contour(self, stem: Path, metric: str, log: bool, levels: int) -> list[str]:
        z, name = self._field(metric)
        a, b = self.axes
        fig = new_figure(figsize=(5.6, 4.6))
        ax = fig.add_subplot()
        zz = np.log10(np.maximum(z, 1e-12)) if log else z
        filled = ax.contourf(a, b, zz.T, levels=levels, cmap="viridis")
        ax.contour(a, b, zz.T, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
        fig.colorbar(filled, ax=ax, label=f"log10 {name}" if log else name)
        if self.trajectory is not None:
            t = np.asarray(self.trajectory)
            ax.plot(
                t[:, 0],
                t[:, 1],
                "-o",
                color="white",
                markersize=3,
                linewidth=1.2,
                markeredgecolor="k",
                label="training trajectory",
            )
            # the plane is centred on the trained weights: the path runs from "start" to "end" (= the origin)
            ax.plot(t[0, 0], t[0, 1], marker="o", color="orange", markersize=9, markeredgecolor="k",
                    linestyle="none", label="start (first snapshot)")
            ax.plot(t[-1, 0], t[-1, 1], marker="*", color="red", markersize=12, linestyle="none",
                    label="end (trained weights)")
        else:
            ax.plot([0], [0], marker="*", color="red", markersize=12, linestyle="none", label="origin θ₀ (the model)")
        xl, yl = self._labels()
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(self._caption(), fontsize=8)
        ax.legend(loc="upper right", fontsize=7)
        return save_figure(fig, stem)

    def _surface3d(self, stem: Path, metric: str, log: bool) -> list[str]:
        z, name = self._field(metric)
        A, B = np.meshgrid(*self.axes, indexing="ij")
        zz = np.log10(np.maximum(z, 1e-12)) if log else z
        fig = new_figure(figsize=(6, 4.8))
        ax = fig.add_subplot(projection="3d")
        ax.plot_surface(A, B, zz, cmap="viridis", linewidth=0, antialiased=True)
        xl, yl = self._labels()
        ax.set_xlabel(xl, fontsize=7)
        ax.set_ylabel(yl, fontsize=7)
        ax.set_zlabel(f"log10 {name}" if log else name)
        ax.set_title(self._caption(), fontsize=8)
        return save_figure(fig, stem)


def _direction_text(d: dict) -> str:
    kind = d.get("kind", "")
    if kind in ("filter", "layer"):
        return (
            f"{kind}-normalised random directions (seed {d.get('seed')}; biases/BN {d.get('biases_and_bn')})"
        )
    return {
        "random": f"Gaussian directions (seed {d.get('seed')})",
        "pca": "trajectory-PCA directions",
        "hessian": "top Hessian eigenvectors",
        "line": "linear interpolation",
    }.get(kind, kind)


def plot_curves(
    surfaces: Sequence[Surface],
    stem: str | Path,
    *,
    labels: Sequence[str] | None = None,
    metric: str = "loss",
    log: bool = False,
    accuracy: bool = True,
) -> list[str]:
    """Overlay 1-D surfaces (e.g. a flat and a sharp solution): solid = train, dashed = test; accuracy on a
    right-hand axis when present. Writes ``stem.png`` and ``stem.svg``."""
    if not surfaces:
        raise FlatminimaError("plot_curves needs at least one Surface.")
    if any(s.ndim != 1 for s in surfaces):
        raise FlatminimaError("plot_curves overlays 1-D surfaces only (slice_1d or interpolate results).")
    if labels is None:
        labels = [s.label or f"curve {i + 1}" for i, s in enumerate(surfaces)]
    if len(labels) != len(surfaces):
        raise FlatminimaError(f"got {len(labels)} labels for {len(surfaces)} surfaces; give one per surface.")
    fig = new_figure(figsize=(6.2, 4.2))
    ax = fig.add_subplot()
    acc_ax = None
    many = len(surfaces) > 1
    for i, (s, lab) in enumerate(zip(surfaces, labels, strict=True)):
        color = f"C{i}"
        x = s.axes[0]
        for split, style in zip(s._splits(), ("-", "--", ":"), strict=False):
            z, _ = s._field(metric, split)
            # one surface: the title names it; several: each legend entry does
            ax.plot(x, z, style, color=color, label=f"{lab}: {split} {metric}" if many else f"{split} {metric}")
            if accuracy and metric == "loss" and f"{split}_accuracy" in s.values:
                acc_ax = acc_ax or ax.twinx()
                acc_ax.plot(x, s.values[f"{split}_accuracy"], style, color=color, alpha=0.35, linewidth=1)
    if log:
        ax.set_yscale("log")
    if surfaces[0].meta.get("axis_names") == ["t"]:
        for end in (0.0, 1.0):  # the two solutions
            ax.axvline(end, color="grey", linewidth=0.6, linestyle=":")
        for s in surfaces:
            b = s.meta.get("barrier", {}).get("train_loss")
            if b is not None:
                ax.plot(
                    [], [], " ",
                    label=(f"{s.label}: " if many else "") + f"train-loss barrier {b['height']:.3g} (t={b['t']:.2f})",
                )
    ax.set_xlabel(
        surfaces[0]._labels()[0]
        if surfaces[0].meta.get("axis_names") != ["t"]
        else "t   (θ = (1 − t)·θ_a + t·θ_b)"
    )
    ax.set_ylabel(metric + (" (log scale)" if log else ""))
    if acc_ax is not None:
        acc_ax.set_ylabel("accuracy (faint lines)")
        acc_ax.set_ylim(0, 1.02)
    # the curves' labels name the models (legend); the title holds what they share, and any note
    ax.set_title(surfaces[0]._caption(with_label=not many), fontsize=8)
    # Below the axes: inside, the legend hides the curves' ends or the faint accuracy lines.
    ncol = 1 if many and max(len(str(lab)) for lab in labels) > 30 else 2  # long labels: one column
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol, frameon=False)
    return save_figure(fig, stem)
