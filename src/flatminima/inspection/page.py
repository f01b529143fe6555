"""The inspection page: one self-contained HTML file (inline CSS, figures embedded as base64 PNG data URIs,
no script, no external request), with the CSVs, PNG/SVG figures and the data behind them beside it."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..plotting import new_figure, save_figure, save_table
from . import rules

__all__ = ["write"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.8em 0}td,th{border:1px solid #ccc;padding:.25em .55em;
text-align:left}th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff3e0;border-left:4px solid #e65100;padding:.5em 1em;margin:.5em 0}
.ok{background:#e8f5e9;border-left:4px solid #2e7d32;padding:.5em 1em}
.note{background:#fafafa;border-left:4px solid #999;padding:.5em 1em;margin:.5em 0}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0;flex:1 1 460px}.figs img{width:100%;height:auto}
code{background:#f3f3f3;padding:0 .2em}.rule{color:#555;font-size:.85em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _g(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}g}" if isinstance(v, (int, float)) else _e(v)


def _cost(c: Any) -> str:
    d = c.to_dict() if hasattr(c, "to_dict") else dict(c or {})
    parts = [f"{int(d[k])} {name}" for k, name in (("hvps", "HVP"), ("grads", "grad"), ("losses", "loss"),
                                                     ("batched_points", "points")) if d.get(k)]
    parts.append(f"{d.get('data_passes', 0):.0f} passes, {d.get('seconds', 0):.2f} s")
    return ", ".join(parts)


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" if isinstance(c, str) else f"<td class='num'>{c}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: str, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    name = _e(Path(path).stem)
    return (f"<figure><img alt='{name}' data-name='{name}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(caption)} (<code>{name}.png</code>, <code>{name}.svg</code>)</figcaption></figure>")


def _png(files: list[str]) -> str:
    return next(f for f in files if f.endswith(".png"))


# ---------------------------------------------------------------------------------------------- figures
def _slice_1d_figure(ins: Any, stem: Path) -> list[str]:
    s = ins.slice_1d
    a, z = s.axes[0], s.loss
    fig = new_figure(figsize=(5.6, 3.8))
    ax = fig.add_subplot()
    ax.plot(a, z, "-o", ms=2.5, label="L(θ₀ + α·v₁)")
    ax.plot(a, ins.loss + 0.5 * ins.lambda_max * a ** 2, "--", color="grey",
            label=f"quadratic L(θ₀) + ½·λ₁·α² (λ₁ = {ins.lambda_max:.4g})")
    ax.set_xlabel("α (distance along the unit top eigenvector v₁)")
    ax.set_ylabel("train loss")
    ax.set_title(f"{ins.name}: 1-D slice along the top Hessian eigenvector", fontsize=8)
    ax.legend(fontsize=7)
    return save_figure(fig, stem)


def _eigen_figure(ins: Any, stem: Path) -> list[str]:
    top = ins.top
    fig = new_figure(figsize=(5.6, 3.4))
    ax = fig.add_subplot()
    k = len(top.values)
    ax.errorbar(np.arange(1, k + 1), top.values.numpy(), yerr=top.error_bounds.numpy(), fmt="o", capsize=3,
                label="top eigenvalues ± error bound")
    if ins.bottom is not None:
        ax.errorbar([k + 1.5], [float(ins.bottom.values[0])], yerr=[float(ins.bottom.residuals[0])], fmt="s",
                    color="tab:red", capsize=3, label="λmin ± residual")
    ax.axhline(0, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue of the Hessian")
    ax.set_title(f"{ins.name}: extreme eigenvalues (Lanczos, certified)", fontsize=8)
    ax.legend(fontsize=7)
    return save_figure(fig, stem)


def _interpolation_figure(ins: Any, stem: Path) -> list[str]:
    from ..landscape import plot_curves

    c = ins.compare
    surfs = list(c["surfaces"].values())
    return plot_curves(surfs, stem, labels=[s.label for s in surfs])


# ---------------------------------------------------------------------------------------------- sections
def _plan_section(ins: Any) -> str:
    p = ins.plan
    s = p.settings
    rows = []
    what = {"eigenvalues": f"top {s['k']} eigenvalues, Lanczos ≤ {s['top_iter']} steps",
            "smallest": f"λmin, Lanczos ≤ {s['bottom_iter']} steps",
            "trace": f"trace, Hutch++ {s['trace']} samples",
            "density": f"SLQ density, {s['slq'][0]} probes × {s['slq'][1]} steps",
            "per_layer": (f"per-module λmax (≤ {p.per_layer.get('max_iter')} steps) and trace "
                          f"({p.per_layer.get('samples')} samples) × {p.per_layer.get('blocks')} blocks"),
            "sharpness": f"{len(p.measures)} sharpness measures at their defaults",
            "stability": "λmax(P⁻¹H), Lanczos",
            "compare": f"per compared model: top {s['k']} (≤ {s['compare_iter']} steps) + trace "
                       f"({s['compare_trace']} samples)"}
    spent = _spent(ins)
    for part, cap in p.caps.items():
        rows.append([_e(part), _e(what.get(part, "")), cap, spent.get(part, 0)])
    for part, why in p.skipped.items():
        rows.append([_e(part), "skipped: " + _e(why), "–", "–"])
    grids = (f"Loss evaluations (no products): 1-D slice {s['slice_1d']} points, 2-D slice {s['slice_2d']}×"
             f"{s['slice_2d']}, interpolation {s['interpolation']} points per pair.")
    return (f"<h2>Budget</h2><p>Budget <b>{_e(p.budget)}</b>: at most <b>{p.cap}</b> Hessian-vector products (HVPs); "
            f"one HVP took {p.seconds_per_hvp * 1e3:.3g} ms and one full-data loss {p.seconds_per_loss * 1e3:.3g} ms "
            f"here, so the estimate up front was at most ~{ins.estimated_seconds:.0f} s; the run took "
            f"<b>{ins.seconds:.1f} s</b> and spent <b>{int(ins.cost.hvps)}</b> HVPs in all "
            f"({_cost(ins.cost)}).</p>"
            + _table(["part", "settings", "HVP cap", "HVPs spent"], rows) + f"<p class='rule'>{_e(grids)} Caps: "
            "Lanczos m steps for k pairs ≤ m + k·(2 + ⌈log₁.₂₅ m⌉) (the true-residual checks); a trace or SLQ probe "
            "is one HVP per sample/step.</p>")


def _spent(ins: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    if ins.top is not None:
        out["eigenvalues"] = int(ins.top.cost.hvps)
    for key, res in (("smallest", ins.bottom), ("trace", ins.trace), ("density", ins.density),
                     ("per_layer", ins.per_layer)):
        if res is not None:
            out[key] = int(res.cost.hvps)
    out["sharpness"] = int(sum(m.cost.hvps for m in ins.sharpness.values()))
    if ins.stability and ins.stability.get("preconditioned") and ins.stability.get("cost"):
        out["stability"] = int(ins.stability["cost"]["hvps"])
    if ins.compare:
        out["compare"] = int(sum(r["hvps"] for r in ins.compare["rows"][1:]))
    return out


def _warnings_section(ins: Any) -> str:
    if not ins.warnings:
        return ("<h2>Warnings</h2><p class='ok'>None: no rule below fired on these numbers.</p>"
                + _rules_list())
    items = "".join(f"<div class='warn' data-kind='{_e(w['kind'])}'>{_e(w['text'])}<br><span class='rule'>rule: "
                    f"{_e(w['rule'])}</span></div>" for w in ins.warnings)
    return f"<h2>Warnings</h2>{items}" + _rules_list()


def _rules_list() -> str:
    items = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in rules.RULES.items())
    return f"<details><summary>The rules behind the warnings</summary><ul class='rule'>{items}</ul></details>"


def _curvature_section(ins: Any, figs: dict[str, str]) -> str:
    top, bot = ins.top, ins.bottom
    rows = []
    for i in range(len(top.values)):
        rows.append([f"λ{i + 1}", _g(float(top.values[i]), 6), _g(float(top.error_bounds[i]), 2),
                     _g(float(top.residuals[i]), 2), "yes" if bool(top.converged[i]) else "NO",
                     _cost(top.cost) if i == 0 else ""])
    if bot is not None:
        rows.append(["λmin", _g(float(bot.values[0]), 6), _g(float(bot.error_bounds[0]), 2),
                     _g(float(bot.residuals[0]), 2), "yes" if bool(bot.converged[0]) else "NO", _cost(bot.cost)])
    out = ("<h2>Curvature</h2><p>Eigenvalues of the Hessian of the full-data loss by Lanczos (tol "
           f"{top.tol:g} on the relative residual). Each λ lies within its true residual ‖Hv − λv‖ of an eigenvalue "
           f"(Bauer-Fike); the error bound is min(r, r²/gap), floored at the {ins.objective.get('dtype')} rounding "
           f"floor {top.floor:.2g}.</p>"
           + _table(["quantity", "value", "error bound", "true residual", "converged", "cost"], rows, "eig"))
    rows = []
    if ins.trace is not None:
        t = ins.trace
        rows.append(["trace (Hutch++)", _g(t.value, 6), f"± {_g(t.stderr, 2)} (s.e.)", _cost(t.cost)])
    if ins.density is not None:
        d = ins.density
        rows.append(["negative spectral mass (SLQ)", _g(d.negative_mass, 4), f"± {_g(d.negative_mass_stderr, 2)} "
                     "(s.e. over probes)", _cost(d.cost)])
        rows.append(["bulk edge / outliers (SLQ)", f"{_g(d.bulk_edge, 4)} / "
                     + (", ".join(_g(x, 4) for x in d.outliers[:6]) or "none"), "–", ""])
    if rows:
        out += _table(["quantity", "value", "error", "cost"], rows, "trace")
    figs_html = [_img(figs["eigenvalues"], "top eigenvalues and λmin with their error bounds")]
    if "density" in figs:
        d = ins.density
        figs_html.append(_img(figs["density"], f"SLQ spectral density, log scale ({d.samples} probes × {d.steps} "
                                               f"steps, broadening σ = {d.sigma:.2g})"))
    return out + "<div class='figs'>" + "".join(figs_html) + "</div>"


def _per_layer_section(ins: Any, figs: dict[str, str]) -> str:
    r = ins.per_layer
    if r is None:
        return f"<h2>Per-layer curvature</h2><p class='note'>Skipped: {_e(ins.skipped.get('per_layer', ''))}</p>"
    rows = [[_e(x.name), x.size, _g(x.lambda_max, 5), _g(x.residual, 2) + ("" if x.converged else " (NO)"),
             f"{_g(x.trace, 5)} ± {_g(x.trace_stderr, 2)}", f"{_g(x.share, 3)} ± {_g(x.share_stderr, 2)}",
             _cost(x.cost)] for x in r.layers]
    rows.append(["total", sum(x.size for x in r.layers), "–", "–",
                 f"{_g(r.total_trace, 5)} ± {_g(r.total_trace_stderr, 2)}", "1" if r.complete else "–", _cost(r.cost)])
    return ("<h2>Per-layer curvature</h2><p>Diagonal blocks of the Hessian, one per module: λmax of the block "
            f"(Lanczos, true residual; ≤ λmax of H by interlacing) and its trace ({r.method}, {r.samples} probes) "
            "with its share of the total.</p>"
            + _table(["block", "size", "λmax", "residual", "trace ± s.e.", "share ± s.e.", "cost"], rows, "layers")
            + "<div class='figs'>" + _img(figs["per_layer"], "per-module λmax and trace share") + "</div>")


def _measure_error(m: Any) -> str:
    e = m.estimate
    if e.interval is not None:
        lvl = f"{100 * e.level:.0f}% " if e.level else ""
        return f"[{_g(e.low, 4)}, {_g(e.high, 4)}] ({lvl}{_e(e.method)})" + (
            f", s.e. {_g(m.stderr, 2)}" if m.stderr is not None else "")
    if m.stderr is not None and not math.isnan(m.stderr):
        return f"± {_g(m.stderr, 2)} (s.e.)"
    spread = m.extra.get("restart_values") or m.extra.get("restarts")
    if isinstance(spread, list) and spread and all(isinstance(v, (int, float)) for v in spread):
        return f"max over restarts {', '.join(_g(float(v), 3) for v in spread)}"
    if "bound" in m.extra or "error_bound" in m.extra:
        return f"bound {_g(float(m.extra.get('bound', m.extra.get('error_bound'))), 2)}"
    return "exact (deterministic)"


def _sharpness_section(ins: Any) -> str:
    from ..sharpness import available

    desc = available()
    rows = [[f"<code>{_e(n)}</code>", _g(m.value, 6), _e(_measure_error(m)), _e(desc.get(n, "")), _cost(m.cost)]
            for n, m in ins.sharpness.items()]
    out = ("<h2>Sharpness measures</h2><p>Every registered measure at its defaults "
           "(<code>flatminima.sharpness.measure(obj, name, seed=seed)</code>), with its error (a confidence "
           "interval, a standard error, or exact) and its cost.</p>"
           + _table(["measure", "value", "error", "what", "cost"], rows, "sharpness"))
    if ins.sharpness_omitted:
        items = "".join(f"<li><code>{_e(n)}</code>: {_e(why)}</li>" for n, why in ins.sharpness_omitted.items())
        out += f"<p class='note'>Left out:</p><ul class='omitted'>{items}</ul>"
    return out


def _slices_section(ins: Any, figs: dict[str, str]) -> str:
    s1 = ins.slice_1d
    out = ("<h2>Landscape slices</h2><p>1-D: L(θ₀ + α·v₁) along the unit top eigenvector v₁, beside the quadratic "
           f"model L(θ₀) + ½λ₁α² ({len(s1.axes[0])} grid points; cost {_cost(s1.cost)}). ")
    if ins.slice_2d is not None:
        s2 = ins.slice_2d
        out += (f"2-D: L(θ₀ + α·d₁ + β·d₂) on {len(s2.axes[0])}×{len(s2.axes[1])} points, d₁ and d₂ random "
                "filter-normalised directions (Li et al. 2018; biases and 1-D parameters zero; cost "
                f"{_cost(s2.cost)}).")
    out += "</p>"
    imgs = [_img(figs["slice_1d"], "1-D slice along v₁ with the quadratic model")]
    if "slice_2d" in figs:
        imgs.append(_img(figs["slice_2d"], "2-D filter-normalised slice (contour)"))
    out += "<div class='figs'>" + "".join(imgs) + "</div>"
    if "slice_2d" in ins.skipped:
        out += f"<p class='note'>2-D slice skipped: {_e(ins.skipped['slice_2d'])}</p>"
    return out


def _stability_section(ins: Any) -> str:
    st = ins.stability
    if st is None:
        return ("<h2>Stability threshold</h2><p class='note'>Not computed: "
                f"{_e(ins.skipped.get('stability', 'no learning rate and optimiser given'))}.</p>")
    rows = [["optimiser", _e(st["kind"])], ["learning rate η", _g(st["lr"])],
            ["threshold", f"{_e(st['formula'])} = {_g(st['threshold'], 5)}"]]
    if st.get("sharpness") is not None:
        rows += [[_e(st["what"]), f"{_g(st['sharpness'], 6)} ± {_g(st['bound'], 2)}"],
                 ["sharpness / threshold", _g(st["ratio"], 4)], ["cost", _cost(st["cost"])]]
    out = ("<h2>Stability threshold</h2><p>A step of size η on a quadratic of curvature λ is stable only while λ "
           "stays below the optimiser's threshold (Cohen et al. 2021; for Adam the preconditioned λmax(P⁻¹H), "
           "Cohen et al. 2022).</p>" + _table(["", ""], rows, "stability"))
    if st.get("note"):
        out += f"<p class='note'>{_e(st['note'])}</p>"
    return out


def _matrix(names: list[str], m: list[list[float]], digits: int = 3) -> str:
    return _table([""] + names, [[_e(n)] + [_g(v, digits) for v in row] for n, row in zip(names, m, strict=True)],
                  "matrix")


def _compare_section(ins: Any, figs: dict[str, str]) -> str:
    c = ins.compare
    if c is None:
        return ""
    names = c["names"]
    out = ("<h2>Compared solutions</h2><p>Barrier heights B = max_t [L(t) − ((1−t)L(0) + tL(1))] on the straight "
           f"line between each pair (Frankle et al. 2020; {c['interpolation_points']} points"
           + (", BatchNorm statistics recomputed" if c["recompute_bn"] else "")
           + f"; {_cost(c['interpolation_cost'])} in all). Numerical noise of each barrier: the rounding of a "
           "full-data loss (see the rules).</p>"
           + "<h3>Barrier matrix (train loss)</h3>" + _matrix(names, c["barrier"], 4)
           + "<h3>Barrier noise</h3>" + _matrix(names, c["noise"], 2))
    if c["overlap"] is not None:
        k = c["k"]
        out += (f"<h3>Top-{k} eigenspace overlap ‖UᵢᵀUⱼ‖²_F / k</h3><p>1 = the same top-{k} subspace; random "
                f"subspaces give about k/dim = {k / max(ins.objective.get('dim', 1), 1):.2g}.</p>"
                + _matrix(names, c["overlap"], 3))
    else:
        out += f"<p class='note'>Eigenspace overlap skipped: {_e(ins.skipped.get('compare', ''))}</p>"
    rows = [[_e(r["model"]), _g(r["loss"], 5), _g(r["accuracy"], 4),
             "–" if r["lambda_max"] is None else f"{_g(r['lambda_max'], 5)} ± {_g(r['lambda_max_bound'], 2)}",
             _g(r["lambda_k"], 5), "–" if r["trace"] is None else f"{_g(r['trace'], 5)} ± {_g(r['trace_stderr'], 2)}",
             "–" if r["converged"] is None else ("yes" if r["converged"] else "NO"), r["hvps"]] for r in c["rows"]]
    out += ("<h3>Side by side</h3>" + _table(["model", "loss", "accuracy", "λmax ± bound", f"λ{c['k']}",
                                               "trace ± s.e.", "converged", "HVPs"], rows, "side"))
    if "interpolation" in figs:
        out += "<div class='figs'>" + _img(figs["interpolation"], "loss along each straight line") + "</div>"
    return out


def _reproduce_section(ins: Any) -> str:
    s = ins.settings
    code = (f"import flatminima\nins = flatminima.inspect(model, data, loss={s['loss']!r}, budget={s['budget']!r}, "
            f"seed={s['seed']}" + (f", lr={s['lr']}, optimizer={s['optimizer']!r}" if s.get("lr") else "")
            + (", others=[...]" if s.get("others") else "") + ")\n"
            "# any number: obj = flatminima.inspection.objective(model, data, loss); then e.g.\n"
            f"# flatminima.curvature.eigenvalues(obj, {ins.plan.settings['k']}, 'largest', tol={s['tol']}, "
            f"max_iter={ins.plan.settings['top_iter']}, seed={s['seed']})")
    return f"<h2>Reproduce</h2><pre><code>{_e(code)}</code></pre>"


# ---------------------------------------------------------------------------------------------- writing
def write(ins: Any, folder: str | Path) -> Path:
    """Write the figures, CSVs and ``page.html`` of ``ins`` into ``folder``; sets ``ins.html``/``ins.files``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    figs: dict[str, str] = {}

    def keep(key: str, paths: list[str]) -> None:
        files.extend(paths)
        figs[key] = _png(paths)

    keep("eigenvalues", _eigen_figure(ins, folder / "eigenvalues"))
    top = ins.top
    rows = {"quantity": [f"lambda_{i + 1}" for i in range(len(top.values))], "value": top.values.tolist(),
            "error_bound": top.error_bounds.tolist(), "residual": top.residuals.tolist(),
            "converged": [bool(c) for c in top.converged], "hvps": [top.cost.hvps] * len(top.values)}
    if ins.bottom is not None:
        b = ins.bottom
        for key, val in (("quantity", "lambda_min"), ("value", float(b.values[0])),
                         ("error_bound", float(b.error_bounds[0])), ("residual", float(b.residuals[0])),
                         ("converged", bool(b.converged[0])), ("hvps", b.cost.hvps)):
            rows[key].append(val)
    if ins.trace is not None:
        t = ins.trace
        for key, val in (("quantity", "trace"), ("value", t.value), ("error_bound", t.stderr),
                         ("residual", float("nan")), ("converged", ""), ("hvps", t.cost.hvps)):
            rows[key].append(val)
    files.append(save_table(folder / "curvature.csv", rows))
    if ins.density is not None:
        keep("density", ins.density.plot(str(folder / "spectral_density"), log=True))
    if ins.per_layer is not None:
        keep("per_layer", ins.per_layer.plot(folder / "per_layer", title=f"{ins.name}: per-module curvature"))
    if ins.sharpness:
        ms = ins.sharpness
        files.append(save_table(folder / "sharpness.csv", {
            "measure": list(ms), "value": [m.value for m in ms.values()],
            "stderr": [m.stderr if m.stderr is not None else "" for m in ms.values()],
            "low": [m.estimate.low if m.estimate.low is not None else "" for m in ms.values()],
            "high": [m.estimate.high if m.estimate.high is not None else "" for m in ms.values()],
            "hvps": [m.cost.hvps for m in ms.values()], "grads": [m.cost.grads for m in ms.values()],
            "data_passes": [m.cost.data_passes for m in ms.values()],
            "seconds": [m.cost.seconds for m in ms.values()]}))
    keep("slice_1d", _slice_1d_figure(ins, folder / "slice_1d"))
    files.extend(ins.slice_1d.save(folder / "slice_1d"))
    if ins.slice_2d is not None:
        keep("slice_2d", ins.slice_2d.plot(folder / "slice_2d", kind="contour"))
    c = ins.compare
    if c is not None:
        names = c["names"]
        for key in ("barrier", "noise", "overlap"):
            if c[key] is not None:
                cols = {n: [row[j] for row in c[key]] for j, n in enumerate(names)}
                files.append(save_table(folder / f"{key}_matrix.csv", {"model": names} | cols))
        files.append(save_table(folder / "compare.csv", {k: [r[k] if r[k] is not None else "" for r in c["rows"]]
                                                         for k in c["rows"][0]}))
        if c["surfaces"]:
            keep("interpolation", _interpolation_figure(ins, folder / "interpolation"))
    o = ins.objective
    acc = f", accuracy {ins.accuracy:.4g}" if ins.accuracy is not None else ""
    body = (f"<h1>{_e(ins.name)}: the geometry of one trained model</h1>"
            f"<p class='summary'>{o.get('dim')} parameters, {_g(o.get('samples'))} samples, {_e(o.get('mode'))} mode, "
            f"{_e(o.get('dtype'))}; loss {_g(ins.loss, 6)}{acc}; λmax {_g(ins.lambda_max, 5)} ± "
            f"{_g(float(ins.top.error_bounds[0]), 2)}"
            + (f"; trace {_g(ins.trace.value, 5)} ± {_g(ins.trace.stderr, 2)}" if ins.trace is not None else "")
            + (f"; λmin {_g(float(ins.bottom.values[0]), 4)}" if ins.bottom is not None else "") + ".</p>"
            + _plan_section(ins) + _warnings_section(ins) + _curvature_section(ins, figs)
            + _per_layer_section(ins, figs) + _sharpness_section(ins) + _slices_section(ins, figs)
            + _stability_section(ins) + _compare_section(ins, figs) + _reproduce_section(ins)
            + "".join(f"<p class='note'>{_e(n)}</p>" for n in ins.notes))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(ins.name)}: inspection</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")
    path = folder / "page.html"
    path.write_text(page, encoding="utf-8")
    ins.html, ins.folder = path, folder
    ins.files = files + [str(path), str(folder / "inspection.json")]
    return path
