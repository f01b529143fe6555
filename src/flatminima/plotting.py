"""Shared figure output: every plot is saved as PNG and SVG, with the data behind it as CSV."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

# No ``matplotlib.use`` here: importing flatminima must not change the caller's backend (a notebook keeps
# its inline plots). Without a display, matplotlib's own automatic choice already falls back to Agg.
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["Figure", "new_figure", "plt", "save_figure", "save_table"]


def new_figure(**kwargs) -> Figure:
    """A figure outside pyplot (no window, no backend switch, nothing left open): for figures only saved."""
    return Figure(**kwargs)


def save_figure(fig: Figure, stem: str | Path, *, dpi: int = 160) -> list[str]:
    """Write ``stem.png`` and ``stem.svg`` (a suffix on ``stem`` is dropped) and close the figure."""
    stem = Path(stem)
    if stem.suffix.lower() in {".png", ".svg", ".pdf"}:
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")  # keeps legends placed outside the axes
        paths.append(str(path))
    plt.close(fig)  # a no-op for figures made with new_figure
    return paths


def save_table(path: str | Path, columns: Mapping[str, Sequence]) -> str:
    """Write equal-length columns as a CSV file with a header row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(columns)
    lengths = {len(columns[n]) for n in names}
    if len(lengths) > 1:
        raise ValueError(f"columns have different lengths: { {n: len(columns[n]) for n in names} }")
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for row in zip(*(columns[n] for n in names), strict=False):
            writer.writerow([float(v) if hasattr(v, "__float__") else v for v in row])
    return str(path)
