"""One self-contained HTML page: inline CSS, figures as base64 PNG, no external request of any kind.

A small inline script writes each image's natural size into ``<pre id="image-check">`` on load, so a
headless browser's DOM dump shows whether every figure decoded (the test reads it).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from .verdict import CLASSIC, FUNCTION_CENTRIC, TARGETS

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}.flatter-better{background:#e3efff}.sharper-better{background:#fff0dc}
.none,.undefined{color:#666}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0;flex:1 1 480px}
.figs img{width:100%;height:auto}
.note{background:#fafafa;border-left:4px solid #999;padding:.5em 1em}code{background:#f3f3f3;padding:0 .2em}
"""

_CHECK = (
    "window.addEventListener('load',function(){var s=[];for(var i=0;i<document.images.length;i++){"
    "var m=document.images[i];s.push(m.getAttribute('data-name')+' '+m.naturalWidth+'x'+m.naturalHeight);}"
    "var p=document.createElement('pre');p.id='image-check';p.style.display='none';"
    "p.textContent=s.join('\\n');document.body.appendChild(p);});"
)


def _f(v: Any, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.{digits}f}"


def _img(path: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    name = html.escape(Path(path).stem)
    return f'<img alt="{name}" data-name="{name}" src="data:image/png;base64,{data}">'


def render(
    meta: dict,
    rows: list[dict],
    table: list[dict],
    notes: list[str],
    figs: list[str],
    *,
    n_boot: int,
    level: float,
    axes: list[str],
) -> str:
    spec, counts, info = meta["spec"], meta["counts"], meta["data_info"]
    e = html.escape
    pngs = {Path(p).stem: p for p in figs if p.endswith(".png")}
    verdict_rows = "".join(
        f'<tr class="{r["kind"]}"><td>{e(r["measure"])}</td><td>{e(TARGETS[r["target"]].title)}</td>'
        f"<td><b>{e(r['verdict'])}</b></td><td>{_f(r['tau'])} [{_f(r['tau_low'])}, {_f(r['tau_high'])}]</td>"
        f"<td>{_f(r['rho'])} [{_f(r['rho_low'])}, {_f(r['rho_high'])}]</td><td>{_f(r['granulated_tau'])}</td>"
        + "".join(f"<td>{_f(r.get(f'psi[{a}]'))}</td>" for a in axes)
        + f"<td>{r['n']}</td></tr>"
        for r in table
    )
    texts = "".join(f"<li>{e(r['text'])}</li>" for r in table)
    scatters = "".join(
        f"<figure>{_img(p)}</figure>" for stem, p in sorted(pngs.items()) if stem.startswith("scatter")
    )
    grid = ", ".join(
        f"{e(a)} ∈ {e(str(spec.get('recipe', {}).get(a, list(spec.get('models', {})))))}" for a in axes
    )
    note_html = "".join(f'<p class="note">{e(n)}</p>' for n in notes)
    failed = f", {counts.failed} failed" if counts.failed else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>flatminima study: {e(spec.get("name", ""))}</title>
<style>{_CSS}</style></head><body>
<h1>Does flatness predict generalisation, shift robustness and calibration here?</h1>
<p>Study <code>{e(spec.get("name", ""))}</code>: {len(rows)} finished runs ({counts.done} done{failed},
{counts.running + counts.pending} not finished) on
<code>{e(str(spec.get("data", {}).get("name")))}</code>
({info.get("train_size")} train / {info.get("test_size")} test samples),
models {e(str(list(spec.get("models", {}))))};
swept: {grid or "nothing"}; seeds {e(str(spec.get("seeds")))}.</p>
<p>Measures are computed on the training set at the final weights. Targets:
generalisation gap = train accuracy − test accuracy; shift drop = test accuracy −
accuracy on each shifted test set, averaged over shifts and severities;
ECE (expected calibration error, test set) with {e(str(spec.get("evaluate", {}).get("ece_bins")))}
equal-width bins of top-class confidence on [0, 1]; test accuracy.
Intervals: {level:.0%} percentile bootstrap over runs, {n_boot} resamples.
Granulated τ: Jiang et al. (2020), each hyperparameter moved alone with the others and the seed fixed.</p>
<h2>Verdicts</h2>
<p class="note">Two views are on the table. The <b>{e(CLASSIC)}</b> predicts positive τ with the gap, shift
drop and ECE (sharper → worse) and negative τ with test accuracy. The <b>{e(FUNCTION_CENTRIC)}</b> finds that,
under regularisation, the sharper solutions are often the more accurate, robust and better calibrated ones.
A verdict names a direction only when the interval excludes 0; otherwise it says “no reliable relation”.</p>
<table><tr><th>measure</th><th>target</th><th>verdict</th><th>Kendall τ [CI]</th><th>Spearman ρ [CI]</th>
<th>granulated τ Ψ</th>{"".join(f"<th>ψ[{e(a)}]</th>" for a in axes)}<th>n</th></tr>{verdict_rows}</table>
<ul>{texts}</ul>{note_html}
<h2>τ with intervals</h2><div class="figs"><figure>{_img(pngs["tau_forest"])}</figure></div>
<h2>Each measure against each target (colour = recipe)</h2><div class="figs">{scatters}</div>
<p>Data: <code>correlations.csv</code> and <code>runs.csv</code> beside this page; figures in
<code>figures/</code> (PNG and SVG). Reproduce with
<code>flatminima study report {e(meta["folder"])}</code>.</p>
<script>{_CHECK}</script>
</body></html>
"""
