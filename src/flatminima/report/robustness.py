"""The report's robustness section: effective robustness, robust sign-error and partial associations.

:func:`robustness_section` turns a study's rows into one dict (numbers, tables, figure paths);
:func:`robustness_html` renders it as an HTML fragment in the look of the study report. Three views of
"does flatness predict robustness (and the other targets) beyond what is already known":

* **Effective robustness** (STATISTICS.md §10; Taori et al. 2020; Miller et al. 2021): per shift, a line
  through clean vs shifted accuracy on probit axes, fitted without the run's own configuration; a run's ER
  is its shifted accuracy above that line, averaged over shifts. It is the primary robustness target,
  because the plain accuracy drop is confounded by clean accuracy (a more accurate model has more to lose).
  The relative drop (drop / clean accuracy) and the mean shifted accuracy are shown beside it.
* **Robust sign-error** (§11; Dziugaite et al. 2020): per measure × target, how often the measure gets the
  direction wrong when one hyperparameter changes, per hyperparameter (mean, 90th percentile, max over
  environments) and in the worst environment.
* **Partial association** (§12): Spearman ρ of rank residuals of each measure and target after the
  controls — clean accuracy for the robustness and calibration targets, the non-flatness baselines for the
  generalisation gap — with cluster-bootstrap intervals under one Holm family.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import statistics as st
from ..errors import FlatminimaError
from . import figures

BASELINE_MEASURES = ("param_norm", "distance_from_init", "path_norm", "output_margin")
# target -> (sign for the sign-error: +1 when a larger (sharper) measure should go with a larger target,
# i.e. the classic reading "larger measure = worse"; −1 when the target is better when larger), title
SIGN_TARGETS: dict[str, tuple[int, str]] = {
    "gap": (1, "generalisation gap"),
    "test_acc": (-1, "test accuracy"),
    "ece": (1, "calibration error (ECE)"),
    "effective_robustness": (-1, "effective robustness"),
}
ROBUSTNESS_TARGETS = ("effective_robustness", "relative_drop", "shifted_acc", "ece")  # controlled for test_acc
TITLES = {
    "effective_robustness": "effective robustness (shifted accuracy above the line)",
    "relative_drop": "relative drop under shift ((clean − shifted) / clean)",
    "shifted_acc": "mean shifted accuracy",
    "ece": "calibration error (ECE)",
    "gap": "generalisation gap (train − test accuracy)",
    "test_acc": "test accuracy",
}
WHY_ER = (
    "Effective robustness (shifted accuracy above the line that clean accuracy predicts on probit axes) is the "
    "primary robustness target here, because the plain accuracy drop is confounded by clean accuracy: more "
    "accurate models have more to lose (Miller et al. 2021, “Accuracy on the line”; Taori et al. 2020)."
)


def _num(v: Any) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def _clean(v: Any) -> Any:
    """JSON-friendly: NaN -> None, numpy scalars -> Python."""
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _shift_names(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(shifts every run has, shifts only some runs have)."""
    sets = [set((r.get("shift_accs") or {}).keys()) for r in rows]
    if not any(sets):
        return [], []
    every = set.intersection(*sets)
    some = set.union(*sets)
    return sorted(every), sorted(some - every)


def robustness_section(
    rows: Sequence[Mapping[str, Any]],
    axes: Sequence[str],
    measures: Sequence[str],
    *,
    test_size: int | None = None,
    clusters_key: str = "label",
    level: float = 0.95,
    alpha: float = 0.05,
    seed: int = 0,
    samples: int = 2000,
    out: str | Path | None = None,
    delta: float = 0.05,
) -> dict[str, Any]:
    """Effective robustness, robust sign-error and partial associations of a study's runs.

    ``rows``: one dict per run with ``clusters_key`` (the configuration label; default ``"label"``), the
    ``axes`` values, ``m:<measure>`` for every name in ``measures`` (the prefix may also be given in
    ``measures``), ``test_acc`` (clean test accuracy), ``shift_accs`` (dict ``"shift@severity"`` -> shifted
    accuracy; None or empty = no shifts) and, where known, ``gap``, ``ece`` and ``seed``. ``test_size``: the
    clean test-set size n (the clip constant 1/(2n) of the probit transform and the Hoeffding noise filter
    of the sign-error; None: clip 1/(2·10000) and no noise filter). ``out``: folder for the figure
    (``accuracy_on_the_line.png|svg|csv``); None draws nothing.

    Returns a dict (JSON-friendly; NaN as None):
      ``available`` (shifts present and ER computed), ``notes`` (list of sentences),
      ``shifts`` / ``dropped_shifts`` (shifts used / present in only some runs), ``link``, ``clip``,
      ``fits`` (per shift: ``shift``, ``slope``, ``intercept``, ``n``, ``er_mean``, ``er_min``, ``er_max``),
      ``runs`` (per run, in row order: ``label``, ``seed``, ``test_acc``, ``shifted_acc``, ``relative_drop``,
      ``effective_robustness``), ``configurations`` (the same, mean over a configuration's runs),
      ``targets`` (name -> per-run values, row order: ``effective_robustness``, ``relative_drop``,
      ``shifted_acc`` and the rows' ``gap``, ``test_acc``, ``ece`` where present),
      ``sign_error`` (per measure × target: ``measure``, ``target``, ``sign``, ``threshold``, ``per_axis``,
      ``worst``, ``robust``), ``wrong_in_worst`` (the cells whose worst environment has sign-error ≥ 0.5),
      ``partial`` (per measure × target cell of :func:`flatminima.statistics.partial_association_table`),
      ``partial_tests`` (the Holm family's size), ``figures`` (paths), ``method`` (the settings).
    """
    if not rows:
        raise FlatminimaError("robustness_section needs at least one run in rows, got none.")
    missing = [k for k in (clusters_key, *axes) if any(k not in r for r in rows)]
    if missing:
        raise FlatminimaError(f"every row needs {clusters_key!r} and the axes {list(axes)}; some rows have no "
                              f"{missing[0]!r}.")
    names = [m[2:] if m.startswith("m:") else m for m in measures]
    labels = [r[clusters_key] for r in rows]
    n = len(rows)
    notes: list[str] = []
    test_acc = np.array([_num(r.get("test_acc")) for r in rows])
    shifts, dropped = _shift_names(rows)
    clip = st.clip_constant(None, test_size)
    section: dict[str, Any] = {
        "available": False, "notes": notes, "shifts": shifts, "dropped_shifts": dropped, "link": "probit",
        "clip": clip, "fits": [], "runs": [], "configurations": [], "targets": {}, "sign_error": [],
        "wrong_in_worst": [], "partial": [], "partial_tests": 0, "figures": [],
        "method": {"level": level, "alpha": alpha, "seed": seed, "samples": samples, "test_size": test_size,
                   "delta": delta, "noise_threshold": st.hoeffding_threshold(test_size, delta) if test_size else 0.0,
                   "axes": list(axes), "measures": names},
    }
    er, shifted, rel = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    if dropped:
        notes.append(f"Shifts measured on only some runs are left out of effective robustness: {', '.join(dropped)}.")
    if not shifts:
        notes.append("No distribution shifts were evaluated (the runs carry no shifted accuracies), so there is no "
                     "effective robustness, relative drop or accuracy-on-the-line figure; the sign-error and "
                     "partial-association tables below cover the other targets.")
    elif np.isnan(test_acc).any():
        notes.append("Some runs have no clean test accuracy, so effective robustness cannot be computed.")
    else:
        accs = {s: [_num(r["shift_accs"][s]) for r in rows] for s in shifts}
        try:
            res = st.effective_robustness_over_shifts(test_acc, accs, groups=labels, eval_size=test_size)
        except FlatminimaError as exc:
            notes.append(f"Effective robustness could not be computed: {exc}")
        else:
            section["available"] = True
            er = res.values
            shifted = np.mean([accs[s] for s in shifts], axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = (test_acc - shifted) / test_acc
            section["fits"] = [
                {"shift": s, "slope": f.slope, "intercept": f.intercept, "n": f.n_fit,
                 "er_mean": float(f.values.mean()), "er_min": float(f.values.min()), "er_max": float(f.values.max())}
                for s, f in res.per_shift.items()
            ]
            if out is not None:
                section["figures"] = figures.accuracy_on_the_line(
                    test_acc, accs, {s: (f.slope, f.intercept) for s, f in res.per_shift.items()},
                    stem=Path(out) / "accuracy_on_the_line", link="probit", clip=clip,
                    labels=[f"{lab} seed={r.get('seed')}" for lab, r in zip(labels, rows, strict=True)])
    section["runs"] = [
        {"label": lab, "seed": r.get("seed"), "test_acc": _clean(test_acc[i]), "shifted_acc": _clean(shifted[i]),
         "relative_drop": _clean(rel[i]), "effective_robustness": _clean(er[i])}
        for i, (lab, r) in enumerate(zip(labels, rows, strict=True))
    ]
    by: dict[Any, list[int]] = {}
    for i, lab in enumerate(labels):
        by.setdefault(lab, []).append(i)
    section["configurations"] = [
        {"label": lab, "runs": len(ix), **{k: _clean(float(np.mean(v[ix]))) for k, v in
                                           (("test_acc", test_acc), ("shifted_acc", shifted),
                                            ("relative_drop", rel), ("effective_robustness", er))}}
        for lab, ix in by.items()
    ]
    targets: dict[str, np.ndarray] = {}
    if section["available"]:
        targets.update(effective_robustness=er, relative_drop=rel, shifted_acc=shifted)
    for key in ("gap", "test_acc", "ece"):
        v = np.array([_num(r.get(key)) for r in rows])
        if np.sum(~np.isnan(v)) >= 2:
            targets[key] = v
    section["targets"] = {k: [_clean(x) for x in v] for k, v in targets.items()}
    # ---- robust sign-error
    flat = [{**{a: r[a] for a in axes}, "label": lab, **{f"m:{m}": _num(r.get(f"m:{m}")) for m in names},
             **{k: v[i] for k, v in targets.items()}} for i, (lab, r) in enumerate(zip(labels, rows, strict=True))]
    for key, (sign, _) in SIGN_TARGETS.items():
        if key not in targets or not axes:
            continue
        for m in names:
            # the Hoeffding filter of accuracy differences; ECE gets the same threshold (a lower bound on its noise)
            se = st.sign_error(flat, axes, f"m:{m}", key, eval_size=test_size, delta=delta, sign=sign)
            d = se.to_dict()
            d["measure"] = m
            d.pop("environments")
            section["sign_error"].append(_jsonable(d))
            if not math.isnan(se.robust) and se.robust >= 0.5:
                w = se.worst
                section["wrong_in_worst"].append(
                    {"measure": m, "target": key, "sign_error": se.robust, "axis": w["axis"],
                     "configurations": [str(x) for x in w["configurations"]], "pairs": w["pairs"]})
    if not axes:
        notes.append("No swept hyperparameters: there are no environments, so no sign-error table.")
    # ---- partial associations
    xs = {m: [_num(r.get(f"m:{m}")) for r in rows] for m in names}
    ptargets: dict[str, np.ndarray] = {}
    controls: dict[str, dict[str, np.ndarray]] = {}
    if "test_acc" in targets:
        for key in ROBUSTNESS_TARGETS:
            if key in targets:
                ptargets[key], controls[key] = targets[key], {"test_acc": targets["test_acc"]}
    base = {b: np.array([_num(r.get(f"m:{b}")) for r in rows]) for b in BASELINE_MEASURES}
    base = {b: v for b, v in base.items() if np.sum(~np.isnan(v)) >= 2}
    if "gap" in targets:
        if base:
            ptargets["gap"], controls["gap"] = targets["gap"], base
        else:
            notes.append("No baseline measures (param_norm, distance_from_init, path_norm, output_margin) in this "
                         "study: what flatness adds to the gap beyond them cannot be shown.")
    if ptargets and xs:
        table = st.partial_association_table(xs, ptargets, controls, labels, alpha=alpha, level=level,
                                             samples=samples, seed=seed)
        section["partial"] = [_jsonable(c) for c in table.rows()]
        section["partial_tests"] = table.m_tests
    return section


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return _clean(v)


# ----------------------------------------------------------------------------------------------------------
# HTML


def _g(v: Any, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


def _f(v: Any, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.{digits}f}"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _img(path: str, report_folder: str | Path | None, embed: bool) -> str:
    name = html.escape(Path(path).stem)
    if embed:
        data = base64.b64encode(Path(path).read_bytes()).decode()
        src = f"data:image/png;base64,{data}"
    elif report_folder is not None:
        src = html.escape(Path(os.path.relpath(path, report_folder)).as_posix())
    else:
        src = html.escape(f"{Path(path).parent.name}/{Path(path).name}")
    return f'<img alt="{name}" data-name="{name}" src="{src}">'


def robustness_html(section: Mapping[str, Any], *, report_folder: str | Path | None = None,
                    embed: bool = False) -> str:
    """The section as an HTML fragment (``<h2>`` … tables, figure), in the study report's look (its CSS
    classes ``note``, ``figs``). Figures are ``<img>`` references relative to ``report_folder`` when given,
    else to the figure folder's parent (``figures/accuracy_on_the_line.png`` for ``out=<report>/figures``);
    ``embed=True`` inlines them as base64 PNG (a self-contained page)."""
    e = html.escape
    method = section.get("method", {})
    parts = [f'<h2>Robustness beyond clean accuracy</h2>\n<p class="note">{e(WHY_ER)}</p>']
    parts += [f'<p class="note">{e(n)}</p>' for n in section.get("notes", [])]
    if section.get("available"):
        fits = "".join(
            f"<tr><td>{e(f['shift'])}</td><td>{f['slope']:.3f}</td><td>{f['intercept']:+.3f}</td><td>{f['n']}</td>"
            f"<td>{_f(f['er_mean'], 3)} [{_f(f['er_min'], 3)}, {_f(f['er_max'], 3)}]</td></tr>"
            for f in section["fits"]
        )
        parts.append(
            "<h3>Accuracy on the line</h3>"
            f"<p>Per shift, Φ⁻¹(shifted accuracy) = a·Φ⁻¹(clean accuracy) + b by least squares (probit axes, "
            f"Miller et al. 2021); accuracies clipped to [c, 1 − c] with c = {section['clip']:.2g}. A run's "
            "effective robustness is its shifted accuracy minus the accuracy this line predicts, the line "
            "fitted on the runs of the <i>other</i> configurations (a run never explains itself), averaged "
            "over shifts; the drawn line and the table use all runs.</p>"
            '<table class="robustness-fits"><tr><th>shift</th><th>slope a</th><th>intercept b</th><th>runs</th>'
            f"<th>effective robustness, mean [min, max]</th></tr>{fits}</table>"
        )
        pngs = [p for p in section.get("figures", []) if p.endswith(".png")]
        if pngs:
            parts.append('<div class="figs">' + "".join(
                f"<figure>{_img(p, report_folder, embed)}</figure>" for p in pngs) + "</div>")
        conf = "".join(
            f"<tr><td>{e(str(c['label']))}</td><td>{c['runs']}</td><td>{_pct(c['test_acc'])}</td>"
            f"<td>{_pct(c['shifted_acc'])}</td><td>{_g(c['relative_drop'])}</td>"
            f"<td>{_f(c['effective_robustness'], 4)}</td></tr>"
            for c in section["configurations"]
        )
        parts.append(
            '<table class="robustness-configs"><tr><th>configuration</th><th>runs</th><th>clean accuracy</th>'
            "<th>mean shifted accuracy</th><th>relative drop</th><th>effective robustness</th></tr>"
            f"{conf}</table>"
        )
    axes = method.get("axes", [])
    if section.get("sign_error"):
        thr = method.get("noise_threshold", 0.0)
        filt = (f"a pair counts only when its target difference exceeds {thr:.3g}, the Hoeffding threshold for "
                f"accuracies on {method.get('test_size')} test examples (a difference that large comes from "
                f"evaluation noise with probability at most 2·exp(−2n(Δ/2)²) = δ = {method.get('delta')}); the same "
                "threshold is applied to ECE, for which it is only a lower bound on the noise"
                if thr else "every pair with a nonzero target difference counts (no evaluation-set size given, so "
                "no noise filter)")
        body = "".join(
            f"<tr><td>{e(s['measure'])}</td><td>{e(SIGN_TARGETS[s['target']][1])}</td>"
            + "".join(
                f"<td>{_g(s['per_axis'][a]['mean'], 2)} / {_g(s['per_axis'][a]['p90'], 2)} / "
                f"{_g(s['per_axis'][a]['max'], 2)} <small>({s['per_axis'][a]['environments']} env."
                f"{', ' + str(s['per_axis'][a]['empty']) + ' empty' if s['per_axis'][a]['empty'] else ''})</small></td>"
                for a in axes
            )
            + f"<td><b>{_g(s['robust'], 2)}</b> <small>{_worst(s['worst'])}</small></td></tr>"
            for s in section["sign_error"]
        )
        wrong = section.get("wrong_in_worst", [])
        wrong_html = (
            "<p><b>Wrong in its worst environment</b> (sign-error ≥ 0.5): "
            + "; ".join(f"{e(w['measure'])} for {e(SIGN_TARGETS[w['target']][1])} ({w['sign_error']:.2f}, "
                        f"varying {e(w['axis'])})" for w in wrong)
            + ".</p>" if wrong else "<p>No measure reaches a sign-error of 0.5 in its worst environment.</p>"
        )
        parts.append(
            "<h3>Robust sign-error (Dziugaite et al. 2020)</h3>"
            "<p>An environment is a pair of configurations that differ in one hyperparameter. In it, every pair of "
            "runs (one from each side) asks whether the measure moves in the direction that the classic reading "
            "predicts (larger measure ↔ larger gap or ECE, lower test accuracy or effective robustness); the "
            "sign-error is the fraction of pairs where it does not (a tied measure counts ½); "
            f"{e(filt)}. Per hyperparameter: mean / 90th percentile / max over its environments; the last column "
            "is the worst environment (the robust sign-error). 0 = always the predicted direction, 1 = always the "
            "opposite, 0.5 = a coin flip.</p>"
            '<table class="sign-error"><tr><th>measure</th><th>target</th>'
            + "".join(f"<th>varying {e(a)}: mean / p90 / max</th>" for a in axes)
            + f"<th>worst environment</th></tr>{body}</table>{wrong_html}"
        )
    if section.get("partial"):
        body = "".join(
            f"<tr><td>{e(c['measure'])}</td><td>{e(TITLES.get(c['target'], c['target']))}</td>"
            f"<td>{e(', '.join(c['controls']))}</td>"
            + (f"<td colspan=\"5\"><small>not tested: {e(c['skipped'])}</small></td></tr>" if c["skipped"] else
               f"<td>{_f(c['raw_rho'])}</td><td>{_f(c['rho'])} [{_f(c['low'])}, {_f(c['high'])}]</td>"
               f"<td>[{_f(c['adj_low'])}, {_f(c['adj_high'])}] <small>at {_pct(c['adj_level'])}; "
               f"p<sub>Holm</sub> = {_g(c['p_holm'], 2)}</small></td>"
               f"<td><b>{'yes' if c['adds'] else 'not shown'}</b></td></tr>")
            for c in section["partial"]
        )
        parts.append(
            "<h3>What a measure adds beyond clean accuracy and the baselines</h3>"
            "<p>Rank partial correlation: Spearman ρ of the residuals after regressing the ranks of the measure and "
            "of the target on the ranks of the controls (clean test accuracy for the robustness and calibration "
            "targets; the non-flatness baselines for the gap), with "
            f"{method.get('level', 0.95):.0%} cluster-bootstrap intervals ({method.get('samples')} resamples of "
            f"whole configurations). The {section.get('partial_tests', 0)} tests form one Holm–Bonferroni family "
            f"(α = {method.get('alpha')}); a measure <i>adds information beyond</i> its controls only when its "
            "Holm-adjusted interval excludes 0.</p>"
            '<table class="partial"><tr><th>measure</th><th>target</th><th>controls</th><th>raw ρ</th>'
            "<th>partial ρ [CI]</th><th>Holm-adjusted interval</th><th>adds beyond the controls</th></tr>"
            f"{body}</table>"
        )
    return "\n".join(parts)


def _worst(w: Mapping[str, Any] | None) -> str:
    if not w:
        return "(no environment kept a pair)"
    a, b = w["configurations"]
    va, vb = w["values"]
    return html.escape(f"varying {w['axis']} ({va} vs {vb}): {a} vs {b}, {w['pairs']} pairs")
