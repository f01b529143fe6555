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

from .. import statistics as st
from .verdict import CLASSIC, FUNCTION_CENTRIC, RULE, TARGETS

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}.flatter-better{background:#e3efff}.sharper-better{background:#fff0dc}
.simpler-better{background:#e6f5e6}.complex-better{background:#f1e6f5}
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


def _g(v: Any, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


def _rng(d: dict, digits: int = 3) -> str:
    if math.isnan(d["mean"]):
        return "–"
    return f"{_g(d['mean'], digits)} [{_g(d['min'], digits)}, {_g(d['max'], digits)}]"


def _reached(q: dict) -> str:
    return "–" if q["reached"] is None else f"{q['reached']}/{q['seeds']}"


def _quality_table(quality: list[dict], excluded: list[dict]) -> str:
    e = html.escape
    body = "".join(
        f'<tr><td>{e(q["config"])}</td><td>{q["seeds"]}</td>'
        f"<td>{_reached(q)}</td>"
        f'<td>{_g(q["target"])}</td><td>{_rng(q["train_loss"])}</td><td>{_rng(q["epochs"])}</td>'
        f'<td>{_rng(q["train_acc"])}</td><td>{_rng(q["test_acc"])}</td></tr>'
        for q in quality
    )
    table = (
        "<table><tr><th>configuration</th><th>seeds</th><th>reached target</th><th>target train loss</th>"
        "<th>final train loss, mean [min, max]</th><th>epochs run</th><th>train accuracy</th>"
        f"<th>test accuracy</th></tr>{body}</table>"
    )
    if excluded:
        items = "".join(
            f"<li>{e(r['label'])} seed {r['seed']}: final train loss {_g(r['final_train_loss'])} "
            f"(target {_g(r['target_train_loss'])}) after {r['epochs_run']} epochs</li>"
            for r in excluded
        )
        table += f"<p>Runs that missed the target and are left out of the correlations:</p><ul>{items}</ul>"
    else:
        table += "<p>No run missed the target train loss.</p>"
    return table


def render(
    meta: dict,
    rows: list[dict],
    table: list[dict],
    notes: list[str],
    figs: list[str],
    *,
    quality: list[dict],
    excluded: list[dict],
    summary: list[str],
    method: dict,
    axes: list[str],
    concluded: bool,
    extra_html: str = "",
) -> str:
    spec, counts, info = meta["spec"], meta["counts"], meta["data_info"]
    e = html.escape
    pngs = {Path(p).stem: p for p in figs if p.endswith(".png")}

    def mc(lo: float, hi: float) -> str:
        return f"±{_g(max(lo, hi), 1)}" if not (math.isnan(lo) or math.isnan(hi)) else ""

    verdict_rows = "".join(
        f'<tr class="{r["kind"]}"><td>{e(r["measure"])}{" <i>(baseline)</i>" if r["baseline"] else ""}</td>'
        f"<td>{e(r.get('target_title') or TARGETS[r['target']].title)}</td><td><b>{e(r['verdict'])}</b></td>"
        f"<td>{_f(r['tau'])} [{_f(r['tau_low'])}, {_f(r['tau_high'])}] "
        f"<small>MC {mc(r['tau_low_mc'], r['tau_high_mc'])}</small></td>"
        f"<td>[{_f(r['tau_adj_low'])}, {_f(r['tau_adj_high'])}] <small>at {r['adj_level']:.2%}, "
        f"MC {mc(r['tau_adj_low_mc'], r['tau_adj_high_mc'])}; p<sub>Holm</sub> = {_g(r['p_holm'], 2)}</small></td>"
        f"<td>{_f(r['rho'])} [{_f(r['rho_low'])}, {_f(r['rho_high'])}]</td>"
        f"<td>{_f(r['granulated_tau'])} [{_f(r['granulated_low'])}, {_f(r['granulated_high'])}]</td>"
        + "".join(f"<td>{_f(r.get(f'psi[{a}]'))}</td>" for a in axes)
        + f"<td>{_g(r['cmi'], 2)} <small>{e(r['cmi_set'])}</small></td><td>{r['n_configs']} / {r['n']}</td></tr>"
        for r in table
    )
    texts = "".join(f"<li>{e(r['text'])}</li>" for r in table)
    summary_html = "".join(f"<li>{e(s.strip())}</li>" for s in summary)
    scatters = "".join(
        f"<figure>{_img(p)}</figure>" for stem, p in sorted(pngs.items()) if stem.startswith("scatter")
    )
    grid = ", ".join(
        f"{e(a)} ∈ {e(str(spec.get('recipe', {}).get(a, list(spec.get('models', {})))))}" for a in axes
    )
    note_html = "".join(f'<p class="note">{e(n)}</p>' for n in notes)
    failed = f", {counts.failed} failed" if counts.failed else ""
    alpha, mc_k = method["alpha"], method["mc_k"]
    resamples = method.get("resamples")
    res_text = (
        f"{resamples} resamples were used (adaptive: from {method['samples_min']}, doubled until every deciding "
        f"bound lay more than {mc_k:g} Monte-Carlo errors from 0, cap {method['max_samples']}; "
        f"{method.get('seconds', 0):.1f} s)" if resamples else "no resamples were drawn"
    )
    methods = f"""<h2>Method</h2>
<p><b>Intervals.</b> Kendall τ_b and Spearman ρ across runs, with {method['level']:.0%} percentile intervals
from a <b>cluster bootstrap over configurations</b>: each resample draws the {method['n_configs']}
hyperparameter configurations with replacement, each with all its seeds (seeds of one configuration share
everything but noise, so they are not independent). {res_text}. The Monte-Carlo (MC) error of each bound is
the standard error from splitting the resamples into {st.BATCHES} batches. Granulated τ Ψ (Jiang et al. 2020:
ψ_i = mean τ over groups of runs where only hyperparameter i varies, the others and the seed fixed; Ψ = mean_i
ψ_i) has a cluster-bootstrap interval on the same resamples. CMI is the conditional-independence score of
Jiang et al. 2020 / PGDL 2020: I(V; M)/H(V) of the signs of pairwise differences of target and measure, within
cells of runs agreeing on a set S of hyperparameters, minimised over every S of at most 2 hyperparameters
(the empty set included); the set that attains the minimum is shown. A CMI near 0 means the measure tells
nothing about the target once S is known.</p>
<p><b>Multiplicity.</b> The {method.get('m_tests', 0)} measure × target τ tests form one family under
<b>Holm–Bonferroni</b> (family-wise error α = {alpha:g}; valid under any dependence between the tests, which
share runs and correlated measures, so Benjamini–Hochberg's positive-dependence condition is not assumed).
The adjusted interval of the k-th smallest bootstrap p-value is the percentile interval at level
1 − α/(m − k + 1). ρ, Ψ and CMI are descriptive and not adjusted.</p>
<p><b>Verdict rule</b> (fixed before the data): {e(RULE.format(alpha=alpha, mc_k=mc_k))}</p>
<p><b>Exclusion rule.</b> Runs whose training stopped at the epoch cap before reaching the target train loss
are listed below and left out of every correlation; runs with no recorded target are kept. With fewer than
{method['min_configs']} configurations left the report draws no correlation. Here: {method['n_runs']} runs
in {method['n_configs']} configurations are used, {len(excluded)} excluded.</p>"""
    if concluded:
        results = f"""<h2>Verdicts</h2>
<p class="note">Two views are on the table. The <b>{e(CLASSIC)}</b> predicts positive τ with the gap, shift
drop and ECE (sharper → worse) and negative τ with test accuracy. The <b>{e(FUNCTION_CENTRIC)}</b> finds that,
under regularisation, the sharper solutions are often the more accurate, robust and better calibrated ones.
A verdict names a direction only when the Holm-adjusted interval excludes 0 (beyond MC error); otherwise it
is “inconclusive”.</p>
<h3>What the adjusted intervals support</h3><ul>{summary_html}</ul>
<table><tr><th>measure</th><th>target</th><th>verdict</th><th>Kendall τ [{method['level']:.0%} CI]</th>
<th>τ, Holm-adjusted interval</th><th>Spearman ρ [CI]</th><th>granulated τ Ψ [CI]</th>
{"".join(f"<th>ψ[{e(a)}]</th>" for a in axes)}<th>CMI (min over S)</th><th>configs / runs</th></tr>
{verdict_rows}</table>
<ul>{texts}</ul>
<h2>τ with intervals</h2><div class="figs"><figure>{_img(pngs["tau_forest"])}</figure></div>
<h2>Each measure against each target (colour and marker = hyperparameters)</h2><div class="figs">{scatters}</div>"""
    else:
        results = "<h2>Verdicts</h2><p class=\"note\">This study cannot conclude; see the note above.</p>"
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
<p>Measures are computed on the training set at the final weights; measures marked <i>baseline</i> are not
about flatness (norms, distance from initialisation, margin: Jiang et al. 2020) and are tested the same way.
Targets: {e("; ".join(t.title for t in (meta.get("targets") or TARGETS).values()))}. Generalisation gap =
train accuracy − test accuracy; shift drop = test accuracy − accuracy on each shifted test set, averaged over
shifts and severities; ECE (expected calibration error, test set) with
{e(str(spec.get("evaluate", {}).get("ece_bins")))} equal-width bins of top-class confidence on [0, 1].</p>
{note_html}
{methods}
<h2>Run quality</h2>{_quality_table(quality, excluded)}
{results}
{extra_html}
<p>Data: <code>correlations.csv</code>, <code>runs.csv</code> and <code>run_quality.csv</code> beside this
page; figures in <code>figures/</code> (PNG and SVG). Reproduce with
<code>flatminima study report {e(meta["folder"])} --seed {method["seed"]}</code>.</p>
<script>{_CHECK}</script>
</body></html>
"""
