"""Run one lab experiment per claim and write the claims report (Markdown, HTML, JSON)."""

from __future__ import annotations

import html
import json
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import FlatminimaError

# claim id -> (short statement, lab experiment)
CLAIMS: dict[str, tuple[str, str]] = {
    "C1": (
        "Flatness is measured by the Hessian's eigenvalues: top eigenvalue, trace, spectrum.",
        "flatness_measures",
    ),
    "C2": ("Gaussian weight noise of variance σ² raises the expected loss by about ½σ²·tr(H).", "noise_rise"),
    "C3": ("Small batches end in flatter minima than full-batch GD, and generalise better.", "batch_size"),
    "C4": ("Training with injected weight noise ends flatter.", "weight_noise"),
    "C5": ("SWA finds the centre of a wide basin (flatter than the SGD iterates).", "swa"),
    "C6": ("A statistical test using noise can tell a flat minimum from a flat saddle.", "saddle_test"),
    "C7": (
        "Few samples: many sharp spurious minima; more data: they merge and the landscape smooths.",
        "data_sculpting",
    ),
    "C8": (
        "Flat regions: AdaGrad stalls, RMSProp moves; warm restarts reach deeper basins; a function-value "
        "stopping rule is cheaper; Newton is linear at a degenerate minimum.",
        "flat_regions",
    ),
    "C9": (
        "Physical landscapes: entropy vs enthalpy basins, seeding, fluxional hopping, annealing, tempering "
        "stalls on a golf course.",
        "physical_landscapes",
    ),
    "C10": ("Flatter minima go with smaller accuracy drops under distribution shift.", "ood_flatness"),
    "C11": (
        "Schedules, adaptive optimisers, dropout, weight decay, BN, label smoothing, depth each move both "
        "flatness and OOD robustness.",
        "interventions",
    ),
    "C12": ("Fine-tuning from a flatter starting point loses less under shift.", "finetune_flatness"),
    "C13": (
        "On analytic functions the sharpness found reflects the function, not the optimiser.",
        "sphere_vs_rosenbrock",
    ),
    "C14": ("Close classes give a sharper 100%-accuracy solution than far classes.", "class_separation"),
    "C15": (
        "With regularisation the best models are often the sharpest; sharpness is not a reliable signal.",
        "regularised_sharpness",
    ),
    "C16": (
        "Most critical points in high dimensions are saddles; the negative-eigenvalue fraction falls "
        "with the "
        "loss.",
        "critical_points",
    ),
    "C17": (
        "On plateaus the gradient vanishes into noise; momentum/Adam cross plateaus GD stalls on.",
        "plateaus",
    ),
}


@dataclass
class ClaimRow:
    claim: str
    statement: str
    experiment: str
    summary: str
    verdict: str
    reason: str
    seconds: float
    files: list[str]


def run(
    *,
    quick: bool = True,
    out: str | Path = "claims_report",
    seed: int = 0,
    only: list[str] | None = None,
    progress: bool = True,
) -> list[ClaimRow]:
    """Run the experiment of every claim (or ``only`` those ids) and write the reports under ``out``."""
    from .. import lab
    from ..progress import progress_bar

    ids = only or list(CLAIMS)
    bad = [c for c in ids if c not in CLAIMS]
    if bad:
        raise FlatminimaError(f"unknown claims {bad}; known: {', '.join(CLAIMS)}.")
    out = Path(out)
    rows: list[ClaimRow] = []
    with progress_bar(len(ids), "claims", enabled=progress) as advance:
        for cid in ids:
            statement, name = CLAIMS[cid]
            t0 = time.perf_counter()
            try:
                r = lab.run(name, out=out / "experiments", quick=quick, seed=seed)
                rows.append(
                    ClaimRow(cid, statement, name, r.summary, r.verdict, r.reason, r.seconds, r.files)
                )
            except Exception as err:  # noqa: BLE001 - one failing experiment must not sink the report
                rows.append(
                    ClaimRow(
                        cid,
                        statement,
                        name,
                        "",
                        "not testable here",
                        f"the experiment failed: {type(err).__name__}: {err}",
                        time.perf_counter() - t0,
                        [],
                    )
                )
                (out / "errors").mkdir(parents=True, exist_ok=True)
                (out / "errors" / f"{cid}.txt").write_text(traceback.format_exc())
            advance()
    write_reports(rows, out, quick=quick, seed=seed)
    return rows


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_reports(rows: list[ClaimRow], out: str | Path, *, quick: bool, seed: int) -> dict[str, str]:
    """Write ``claims.md``, ``claims.html`` and ``claims.json`` under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if quick else "full"
    counts = {
        v: sum(r.verdict == v for r in rows)
        for v in ("supported", "not supported", "mixed", "not testable here")
    }
    head = (
        f"# flatminima claims report ({mode} run, seed {seed})\n\n"
        f"{len(rows)} claims: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ". Intervals are 95% "
        "(Student-t across seeds, bootstrap over models, or Wilson for rates). "
        "Verdicts are computed from the "
        "measured numbers; see each experiment's folder for its figure and data.\n\n"
    )
    lines = [
        "| claim | statement | experiment | measured | verdict | why | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.claim} | {_md_cell(r.statement)} | `{r.experiment}` | {_md_cell(r.summary)} | "
            f"**{r.verdict}** | {_md_cell(r.reason)} | {r.seconds:.0f} |"
        )
    md = out / "claims.md"
    md.write_text(head + "\n".join(lines) + "\n")
    colour = {
        "supported": "#d4f4dd",
        "not supported": "#f8d7da",
        "mixed": "#fff3cd",
        "not testable here": "#e2e3e5",
    }
    body = "".join(
        f"<tr style='background:{colour.get(r.verdict, '#fff')}'><td>{r.claim}</td>"
        f"<td>{html.escape(r.statement)}"
        f"</td><td><code>{r.experiment}</code></td><td>{html.escape(r.summary)}</td><td><b>{r.verdict}</b></td>"
        f"<td>{html.escape(r.reason)}</td><td>{r.seconds:.0f}</td></tr>"
        for r in rows
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>flatminima claims</title><style>"
        "body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px;vertical-align:top;"
        "font-size:13px}table{border-collapse:collapse}</style></head><body>"
        f"<h1>flatminima claims report ({mode} run, seed {seed})</h1><p>"
        + html.escape(", ".join(f"{n} {v}" for v, n in counts.items()))
        + "</p><table><tr><th>claim</th><th>statement</th><th>experiment</th>"
        + "<th>measured (95% intervals)</th>"
        f"<th>verdict</th><th>why</th><th>s</th></tr>{body}</table></body></html>"
    )
    htm = out / "claims.html"
    htm.write_text(page)
    js = out / "claims.json"
    js.write_text(json.dumps([asdict(r) for r in rows], indent=2, default=str))
    return {"markdown": str(md), "html": str(htm), "json": str(js)}
