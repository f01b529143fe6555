"""What the lab's analytic experiments share: a demonstration's outcome, table columns from typed rows
and the labels of a figure's panel.

Every experiment decides its verdict from its own measured numbers and intervals; nothing is hard-coded.
Each experiment runs its parts (one helper per part, each returning a typed finding), turns the findings into
sub-tests or construction checks, writes its table and figure, and returns an :class:`Outcome`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt

from .rules import Outcome


def demonstration_outcome(numbers: dict, parts: dict[str, bool], summary: str, files: list) -> Outcome:
    """A demonstration's outcome: its construction checks are reported as numbers, never as a verdict."""
    checks = "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in parts.items())
    return Outcome(f"{summary}; construction checks: {checks}", [], numbers | {"checks": parts}, files)


def table_columns(rows: Sequence[Any], **fields: str) -> dict[str, list]:
    """Table columns from typed rows: column name → the attribute each row gives for it."""
    return {col: [getattr(r, attr) for r in rows] for col, attr in fields.items()}


def label_axes(ax: plt.Axes, xlabel: str, ylabel: str = "", *, title: str = "", legend: bool = False,
               xscale: str = "", yscale: str = "", **legend_kw: Any) -> None:
    """Axis scales, labels, title and legend of one panel (every figure here labels its panels this way)."""
    if xscale:
        ax.set_xscale(xscale)
    if yscale:
        ax.set_yscale(yscale)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(**legend_kw)
