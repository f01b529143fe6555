"""``build_report(folder)``: the study store → correlations, verdicts, figures, CSV and one HTML page."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FlatminimaError
from ..plotting import save_table
from . import figures
from .html import render
from .statistics import correlate, granulated_tau
from .verdict import TARGETS, verdict


@dataclass
class Report:
    """Paths of what was written and the verdict table (one row per measure × target)."""

    html: Path
    csv: Path
    figures: list[str]
    table: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def study_rows(store: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Flat rows of the finished runs (axes, seed, label, measures, targets) and the study meta."""
    from ..study.spec import recipe_label

    meta = {
        "spec": store.get_meta("spec", {}),
        "axes": store.get_meta("axes", {}),
        "data_info": store.get_meta("data_info", {}),
        "counts": store.counts(),
        "folder": str(store.folder),
    }
    axes = list(meta["axes"])
    rows = []
    for r in store.rows("done"):
        cfg, res = r["config"], r["results"]
        row = {
            "id": r["id"],
            "seed": cfg["seed"],
            "model": cfg["model"],
            **cfg["recipe"],
            "label": recipe_label(cfg["model"], cfg["recipe"], axes),
        }
        row.update({f"m:{k}": v["value"] for k, v in res["measures"].items()})
        row.update({k: res["metrics"].get(k) for k in TARGETS})
        rows.append(row)
    return rows, meta


def build_report(
    store: Any, *, out: str | Path | None = None, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> Report:
    """Write ``report.html`` (self-contained), ``correlations.csv`` and ``figures/*.png|svg``.

    ``store`` is a :class:`flatminima.study.Store` or the study folder.
    """
    from ..study.store import Store

    own = not isinstance(store, Store)
    store = Store(store, create=False) if own else store
    try:
        rows, meta = study_rows(store)
    finally:
        if own:
            store.close()
    if len(rows) < 3:
        raise FlatminimaError(
            f"the study in {meta['folder']!r} has {len(rows)} finished run(s); a report needs "
            "at least 3 (run or resume it with `flatminima study run`)."
        )
    out = Path(out) if out else Path(meta["folder"]) / "report"
    measures = sorted(k[2:] for k in rows[0] if k.startswith("m:"))
    axes = list(meta["axes"])
    table, notes, figs = [], [], []
    for key, target in TARGETS.items():
        usable = [r for r in rows if r[key] is not None and all(r[f"m:{m}"] is not None for m in measures)]
        if not usable:
            if key == "shift_drop":
                notes.append(
                    "No shift targets: the data set offered no distribution shifts (Dataset.shifts is "
                    'empty), or the spec set data.shifts = "none".'
                )
            continue
        for m in measures:
            x, y = [r[f"m:{m}"] for r in usable], [r[key] for r in usable]
            c = correlate(x, y, n_boot=n_boot, level=level, seed=seed)
            g = granulated_tau(usable, axes, f"m:{m}", key) if axes else {"Psi": math.nan, "psi": {}}
            v = verdict(m, target, c["tau"], len(usable), g["Psi"])
            table.append(
                {
                    "measure": m,
                    "target": key,
                    "n": len(usable),
                    "tau": c["tau"].estimate,
                    "tau_low": c["tau"].low,
                    "tau_high": c["tau"].high,
                    "rho": c["rho"].estimate,
                    "rho_low": c["rho"].low,
                    "rho_high": c["rho"].high,
                    "granulated_tau": g["Psi"],
                    **{f"psi[{a}]": g["psi"].get(a, math.nan) for a in axes},
                    "kind": v.kind,
                    "verdict": v.headline,
                    "text": v.text,
                }
            )
            stem = out / "figures" / f"scatter_{m}_{key}"
            figs += figures.scatter(
                x,
                y,
                [r["label"] for r in usable],
                xlabel=m,
                ylabel=target.title,
                title=f"{m} vs {key}: τ = {c['tau'].estimate:+.2f} "
                f"[{c['tau'].low:+.2f}, {c['tau'].high:+.2f}]",
                stem=stem,
            )
    figs += figures.forest(table, stem=out / "figures" / "tau_forest")
    csv = Path(
        save_table(out / "correlations.csv", {k: [r.get(k, math.nan) for r in table] for k in table[0]})
    )
    save_table(out / "runs.csv", {k: [r.get(k) for r in rows] for k in rows[0]})
    html = out / "report.html"
    html.write_text(render(meta, rows, table, notes, figs, n_boot=n_boot, level=level, axes=axes))
    return Report(html, csv, figs, table, notes)
