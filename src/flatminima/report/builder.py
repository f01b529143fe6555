"""``build_report(folder)``: the study store → run quality, correlations, verdicts, figures, CSV, one HTML page.

Unconverged values: a stored measure whose ``converged`` flag is False (e.g. Lanczos stopped at ``max_iter``)
is listed in a note and marked in ``runs.csv`` (column ``unconverged``); it is kept in the correlations.

Exclusion rule (stated in the report): a run whose ``training.reached_target`` is False (it hit the
epoch cap before the target train loss) is listed and left out of every correlation; a run without a
target (older stores, or a spec without one: ``reached_target`` None) is kept. A configuration takes
part with the seeds that reached the target. With fewer than 3 configurations left, the report draws no
correlation and no verdict and says why; it still shows the run-quality table.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import statistics as st
from ..errors import FlatminimaError
from ..plotting import save_table
from ..progress import progress_bar
from ..store import Store, measure_record, recipe_label
from . import figures
from .html import render
from .verdict import TARGETS, Target, verdict

try:  # the non-flatness baselines (Jiang et al. 2020); the module may not exist yet
    from ..sharpness.baselines import BASELINES
except ImportError:  # pragma: no cover - depends on the installed sharpness package
    BASELINES = ("param_norm", "distance_from_init", "output_margin", "path_norm")

MIN_CONFIGS = 3
TRAINING_KEYS = ("epochs_run", "final_train_loss", "reached_target", "target_train_loss")


@dataclass
class Report:
    """Paths of what was written and the verdict table (one row per measure × target)."""

    html: Path
    csv: Path
    figures: list[str]
    table: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    quality: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    method: dict[str, Any] = field(default_factory=dict)
    concluded: bool = True


def target_definitions(stored: dict[str, Any] | None) -> dict[str, Target]:
    """The study's targets with their directions, from its meta (written by the study from its target
    registry); a store written before targets were registered has the four classic ones."""
    if not stored:
        return dict(TARGETS)
    out = {}
    for name, d in stored.items():
        known = TARGETS.get(name)
        out[name] = known if known is not None else Target(name, d.get("title", name), bool(d["lower_is_better"]),
                                                            d.get("good", f"better {name}"),
                                                            d.get("bad", f"worse {name}"))
    return out


def study_rows(store: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Flat rows of the finished runs (axes, seed, label, measures, targets, training) and the study meta.

    Each row also holds ``shift_accs`` (``"shift@severity"`` → accuracy under that shift), what the table
    targets (effective robustness) are computed from, and ``target_errors`` (a user target that failed)."""
    meta = {
        "spec": store.get_meta("spec", {}),
        "axes": store.get_meta("axes", {}),
        "data_info": store.get_meta("data_info", {}),
        "counts": store.counts(),
        "folder": str(store.folder),
        "design": store.get_meta("design", []),
    }
    meta["targets"] = target_definitions(store.get_meta("targets"))
    table_keys = {k for k, d in (store.get_meta("targets") or {}).items() if d.get("table")}
    meta["table_targets"] = sorted(table_keys)
    axes = list(meta["axes"])
    rows = []
    for r in store.rows("done"):
        cfg, res = r["config"], r["results"]
        metrics, training = res.get("metrics", {}), res.get("training") or {}
        row = {
            "id": r["id"],
            "seed": cfg["seed"],
            "model": cfg["model"],
            **cfg["recipe"],
            "label": recipe_label(cfg["model"], cfg["recipe"], axes),
        }
        records = {k: measure_record(v) for k, v in res["measures"].items()}
        row.update({f"m:{k}": v["value"] for k, v in records.items()})
        # the measures whose iteration stopped before its tolerance (False), not those with no flag (None)
        row["unconverged"] = ";".join(sorted(k for k, v in records.items() if v["converged"] is False))
        stored_targets = res.get("targets")
        for k in meta["targets"]:
            if k in table_keys:
                continue
            row[k] = stored_targets.get(k) if stored_targets is not None else metrics.get(k)
        row["target_errors"] = ";".join(f"{k}: {v}" for k, v in sorted((res.get("target_errors") or {}).items()))
        row["shift_accs"] = {k: v["acc"] for k, v in (metrics.get("shifts") or {}).items() if "acc" in v}
        row["test_acc"] = metrics.get("test_acc", row.get("test_acc"))
        row["loss"] = res.get("loss", "cross_entropy")
        row["train_acc"] = metrics.get("train_acc")
        row.update({k: training.get(k) for k in TRAINING_KEYS})
        if row["final_train_loss"] is None:
            row["final_train_loss"] = metrics.get("train_loss")
        rows.append(row)
    return rows, meta


def _summ(values: list[Any]) -> dict[str, float]:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return {"mean": math.nan, "min": math.nan, "max": math.nan}
    return {"mean": float(np.mean(v)), "min": min(v), "max": max(v)}


def run_quality(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration: seeds, how many reached the target, and mean/range of train loss, epochs run,
    train and test accuracy over its seeds."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    out = []
    for label, rs in by.items():
        known = [r["reached_target"] for r in rs if r["reached_target"] is not None]
        out.append(
            {
                "config": label,
                "seeds": len(rs),
                "reached": sum(bool(k) for k in known) if known else None,
                "target": next((r["target_train_loss"] for r in rs if r["target_train_loss"] is not None), None),
                "train_loss": _summ([r["final_train_loss"] for r in rs]),
                "epochs": _summ([r["epochs_run"] for r in rs]),
                "train_acc": _summ([r["train_acc"] for r in rs]),
                "test_acc": _summ([r["test_acc"] for r in rs]),
            }
        )
    return out


def build_report(
    store: Any,
    *,
    out: str | Path | None = None,
    samples: int = 4000,
    level: float = 0.95,
    seed: int = 0,
    max_samples: int = 64000,
    alpha: float = 0.05,
    progress: bool = False,
    table_targets: dict[str, Any] | None = None,
) -> Report:
    """Write ``report.html`` (self-contained), ``correlations.csv``, ``runs.csv``, ``run_quality.csv`` and
    ``figures/*.png|svg``.

    ``store`` is a :class:`flatminima.study.Store` or the study folder. ``samples`` is the *starting*
    number of cluster-bootstrap resamples; they double until no verdict is within Monte-Carlo error of
    changing, up to ``max_samples`` (see :func:`flatminima.statistics.correlation_table`). ``level`` is the
    level of the unadjusted intervals; ``alpha`` the family-wise error rate of the Holm-adjusted verdicts;
    ``progress`` shows one step per measure × target (its statistics and scatter plot). ``table_targets``
    (``name -> fn(rows) -> values``) computes the targets that need the whole table (effective robustness);
    :func:`flatminima.study.report` passes the study's target registry's.
    """
    own = not isinstance(store, Store)
    store = Store(store, create=False, readonly=True) if own else store
    try:
        rows, meta = study_rows(store)
        unreadable = list(getattr(store, "unreadable", []))
    finally:
        if own:
            store.close()
    if len(rows) < 3:
        raise FlatminimaError(
            f"the study in {meta['folder']!r} has {len(rows)} finished run(s); a report needs "
            "at least 3 (run or resume it with `flatminima study run`)."
        )
    final = Path(out) if out else Path(meta["folder"]) / "report"
    out = _staging(final)  # everything is written here, then moved into place at once (see _publish)
    axes = list(meta["axes"])
    notes: list[str] = []
    if unreadable:
        notes.append(
            f"{len(unreadable)} finished run(s) have results that cannot be read (a damaged row) and are left out: "
            + ", ".join(f"{u['label']} seed={u['seed']} ({u['reason']})" for u in unreadable[:5])
            + ". The next `flatminima study run` on the folder redoes them."
        )
    unconverged = [(r, m) for r in rows for m in r["unconverged"].split(";") if m]
    if unconverged:
        notes.append(
            f"{len(unconverged)} measured value(s) did not converge (the measure's iteration stopped before its "
            "tolerance; for lambda_max the value is a Lanczos lower bound, its error bound in the store): "
            + ", ".join(f"{r['label']} seed={r['seed']}: {m}" for r, m in unconverged[:10])
            + (f" and {len(unconverged) - 10} more" if len(unconverged) > 10 else "")
            + ". They are kept in the correlations (marked in runs.csv, column `unconverged`); raise the "
            "measure's iteration budget (e.g. max_iter) and rerun the study to replace them."
        )
    quality = run_quality(rows)
    excluded = [r for r in rows if r["reached_target"] is False]
    used = [r for r in rows if r["reached_target"] is not False]
    for name in meta["table_targets"]:
        fn = (table_targets or {}).get(name)
        values = fn(used) if fn is not None else [None] * len(used)
        for r, v in zip(used, values, strict=True):
            r[name] = v
        for r in excluded:
            r[name] = None
        if fn is None:
            notes.append(f"The table target {name} has no function here (run the report through "
                         "flatminima.study.report or `flatminima study report`); it is left out.")
    notes += _study_notes(rows, meta)
    n_configs = len({r["label"] for r in used})
    unknown = sum(r["reached_target"] is None for r in rows)
    if excluded:
        notes.append(
            f"{len(excluded)} of {len(rows)} runs missed the target train loss (stopped at the epoch cap) and are "
            f"left out of every correlation; {len(used)} runs in {n_configs} configurations remain."
        )
    if unknown:
        notes.append(
            f"{unknown} run(s) carry no target train loss (trained for a fixed number of epochs, or an older "
            "store): they are kept, but their flatness may partly reflect how far each converged."
        )
    method = {
        "samples_min": samples, "max_samples": max_samples, "alpha": alpha, "level": level, "seed": seed,
        "mc_k": st.MC_K, "min_configs": MIN_CONFIGS, "n_configs": n_configs, "n_runs": len(used),
    }
    figs: list[str] = []
    table: list[dict[str, Any]] = []
    summary: list[str] = []
    concluded = n_configs >= MIN_CONFIGS
    if not concluded:
        notes.insert(
            0,
            f"No correlations and no verdicts: only {n_configs} configuration(s) have runs that reached the "
            f"target train loss, and the intervals resample configurations, which needs at least {MIN_CONFIGS}. "
            "Lower the target or raise the epoch cap, then rerun the missing configurations.",
        )
    else:
        table, summary, figs = _correlations(used, axes, notes, method, out, samples, max_samples, level, alpha, seed,
                                             progress, meta["targets"])
    robustness = _robustness(used, axes, meta, out, level, alpha, seed) if concluded else None
    if robustness is not None:
        figs += robustness.get("figures", [])
    out.mkdir(parents=True, exist_ok=True)
    csv_cols = list(table[0]) if table else ["measure", "target", "verdict"]
    csv = Path(save_table(out / "correlations.csv", {k: [r.get(k, math.nan) for r in table] for k in csv_cols}))
    run_cols = [k for k in rows[0] if k != "shift_accs"]
    save_table(out / "runs.csv", {k: [r.get(k) for r in rows] for k in run_cols})
    save_table(
        out / "run_quality.csv",
        {
            "config": [q["config"] for q in quality],
            "seeds": [q["seeds"] for q in quality],
            "reached": [q["reached"] for q in quality],
            **{f"{k}_{s}": [q[k][s] for q in quality] for k in ("train_loss", "epochs", "test_acc")
               for s in ("mean", "min", "max")},
        },
    )
    (out / "report.html").write_text(render(meta, rows, table, notes, figs, quality=quality, excluded=excluded,
                                            summary=summary, method=method, axes=axes, concluded=concluded,
                                            extra_html=_robustness_html(robustness, out)))
    if robustness is not None:
        (out / "robustness.json").write_text(json.dumps(robustness, indent=1, default=str))
    _publish(out, final)
    moved = lambda f: str(final / Path(f).relative_to(out))  # noqa: E731
    return Report(final / "report.html", final / Path(csv).name, [moved(f) for f in figs], table, notes, quality,
                  excluded, summary, method, concluded)


def _staging(final: Path) -> Path:
    """A fresh temporary folder beside ``final`` (same file system, so the move is a rename); staging folders
    left by a report process that was killed are removed."""
    if final.exists() and not final.is_dir():
        raise FlatminimaError(f"the report folder {str(final)!r} is a file; give a folder with --out.")
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.glob(f".{final.name}.writing-*"):
            pid = stale.name.rpartition("-")[2]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.writing-", suffix=f"-{os.getpid()}", dir=parent))
        umask = os.umask(0o022)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the published report gets the usual mode
        return tmp
    except PermissionError:
        raise FlatminimaError(f"cannot write the report into {str(parent)!r} (read-only or not yours); give a "
                              "writable folder with --out.") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _publish(tmp: Path, final: Path) -> None:
    """Move the finished report into place: a reader sees the old complete report or the new one, never a
    mix (an atomic exchange of the two folders where the OS offers one, else two renames)."""
    if not final.exists():
        os.rename(tmp, final)
        return
    if _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old report
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _robustness(used: list[dict[str, Any]], axes: list[str], meta: dict[str, Any], out: Path, level: float,
                alpha: float, seed: int) -> dict[str, Any] | None:
    """Effective robustness, the accuracy-on-the-line plot, sign-errors and partial associations
    (:mod:`flatminima.report.robustness`) for a classification study; None for regression."""
    if meta["data_info"].get("task", "classification") != "classification" or not any(
            r.get("test_acc") is not None for r in used):
        return None
    from .robustness import robustness_section

    measures = sorted({k[2:] for r in used for k in r if k.startswith("m:")})
    return robustness_section(used, axes, measures, test_size=meta["data_info"].get("test_size"), level=level,
                              alpha=alpha, seed=seed, out=out / "figures")


def _robustness_html(section: dict[str, Any] | None, out: Path) -> str:
    if section is None:
        return ""
    from .robustness import robustness_html

    return robustness_html(section, report_folder=out, embed=True)  # the page stays one self-contained file


def _study_notes(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """What the reader must know to read the numbers: the loss every measure used, the design's limits,
    targets that failed, label smoothing measured on the plain loss."""
    notes = [f"Design: {line}" for line in meta.get("design") or []]
    losses = sorted({r.get("loss") or "cross_entropy" for r in rows})
    notes.append(f"Every measure is computed on the {', '.join(losses)} loss over the training set (the runs' own "
                 "data loss, without label smoothing or regularisers, the same for every run so runs stay "
                 "comparable; a spec's top-level `loss` chooses another).")
    smoothed = [r for r in rows if (r.get("label_smoothing") or 0) > 0]
    if smoothed and losses == ["cross_entropy"]:
        notes.append(f"{len(smoothed)} run(s) were trained with label smoothing and are measured on plain "
                     "cross-entropy, where they are not at a minimum (the plain loss still has a gradient there), "
                     "which raises worst-case sharpness; set the spec's `loss` to compare them on another loss.")
    failed = [r for r in rows if r.get("target_errors")]
    if failed:
        notes.append(f"{len(failed)} run(s) have a target that failed (left out of that target's correlations): "
                     + "; ".join(f"{r['label']} seed={r['seed']}: {r['target_errors']}" for r in failed[:5]) + ".")
    return notes


def _correlations(used, axes, notes, method, out, samples, max_samples, level, alpha, seed, progress=False,
                  defs=None):
    defs = defs or TARGETS  # the study's targets (the classic four for a store written before the registry)
    measures = sorted({k[2:] for r in used for k in r if k.startswith("m:")})
    targets = {}
    for key in defs:
        vals = [r[key] for r in used]
        if all(v is None for v in vals):
            if key == "shift_drop":
                notes.append(
                    "No shift targets: the data set offered no distribution shifts (Dataset.shifts is "
                    'empty), or the spec set data.shifts = "none".'
                )
            continue
        targets[key] = vals
    xs = {m: [r.get(f"m:{m}") for r in used] for m in measures}
    clusters = [r["label"] for r in used]
    res = st.correlation_table(xs, targets, clusters, level=level, alpha=alpha, samples=samples,
                               max_samples=max_samples, seed=seed)
    rhos = st.rho_intervals(xs, targets, res, level=level)
    method.update(resamples=res.resamples, rounds=res.rounds, seconds=res.seconds, capped=res.capped,
                  m_tests=sum(not math.isnan(c["p"]) for c in res.cells.values()))
    if res.capped:
        notes.append(
            f"The resample cap ({max_samples}) was reached with some deciding bound within {st.MC_K:g} Monte-Carlo "
            "errors of 0; those tests are reported as inconclusive."
        )
    colour_axis, marker_axis = figures.pick_axes(used, axes)
    table, figs = [], []
    with progress_bar(len(targets) * len(measures), "report (statistics and figures)", enabled=progress) as advance:
        for key in targets:
            for m in measures:
                c = res.cells[m, key]
                ok = [i for i, r in enumerate(used) if r[key] is not None and r.get(f"m:{m}") is not None]
                sub = [used[i] for i in ok]
                if axes:
                    g = st.granulated_tau(sub, axes, f"m:{m}", key)
                    gd = st.granulated_tau_draws(sub, axes, f"m:{m}", key, res.weights, res.units[ok])
                    g_iv = st.percentile_interval(g["Psi"], gd, level, "cluster bootstrap (percentile)")
                    cmi = st.conditional_mi(sub, axes, f"m:{m}", key)
                else:
                    g = {"Psi": math.nan, "psi": {}}
                    g_iv = st.Interval(math.nan, math.nan, math.nan, level)
                    cmi = {"score": math.nan, "set": None}
                n_cfg = len({r["label"] for r in sub})
                v = verdict(m, defs[key], c["tau_adj"], n_cfg, g["Psi"], mc_k=st.MC_K,
                            holm_stopped=c["holm_stopped"], what=f"configurations, {len(sub)} runs",
                            baseline=m in BASELINES)
                tau, adj, rho = c["tau"], c["tau_adj"], rhos[m, key]
                table.append(
                    {
                        "measure": m,
                        "baseline": m in BASELINES,
                        "target": key,
                        "target_title": defs[key].title,
                        "n": len(sub),
                        "n_configs": n_cfg,
                        "tau": tau.estimate,
                        "tau_low": tau.low,
                        "tau_high": tau.high,
                        "tau_low_mc": tau.mc_low,
                        "tau_high_mc": tau.mc_high,
                        "adj_level": adj.level,
                        "tau_adj_low": adj.low,
                        "tau_adj_high": adj.high,
                        "tau_adj_low_mc": adj.mc_low,
                        "tau_adj_high_mc": adj.mc_high,
                        "p": c["p"],
                        "p_holm": c["p_holm"],
                        "holm_step": c["step"],
                        "rho": rho.estimate,
                        "rho_low": rho.low,
                        "rho_high": rho.high,
                        "granulated_tau": g["Psi"],
                        "granulated_low": g_iv.low,
                        "granulated_high": g_iv.high,
                        **{f"psi[{a}]": g["psi"].get(a, math.nan) for a in axes},
                        "cmi": cmi["score"],
                        "cmi_set": "{" + ", ".join(cmi["set"]) + "}" if cmi["set"] is not None else "",
                        "resamples": res.resamples,
                        "kind": v.kind,
                        "verdict": v.headline,
                        "text": v.text,
                    }
                )
                figs += figures.scatter(
                    sub,
                    f"m:{m}",
                    key,
                    colour_axis=colour_axis,
                    marker_axis=marker_axis,
                    xlabel=figures.measure_name(m),
                    ylabel=defs[key].title,
                    title=f"{m} vs {key}: τ = {tau.estimate:+.2f} [{tau.low:+.2f}, {tau.high:+.2f}] "
                    f"({tau.level:.0%}, cluster bootstrap)",
                    stem=out / "figures" / f"scatter_{m}_{key}",
                )
                advance()
    figs += figures.forest(table, stem=out / "figures" / "tau_forest")
    return table, _summary(table, res, targets, measures, level, defs), figs


def _summary(table, res, targets, measures, level, defs=None) -> list[str]:
    """What the adjusted intervals support, per target, and how flatness fares against the baselines."""
    defs = defs or TARGETS
    lines = []
    for key in targets:
        rows = [r for r in table if r["target"] == key]
        sup = [r for r in rows if r["kind"] != "inconclusive"]
        title = defs[key].title
        if sup:
            lines.append(f"{title}: " + "; ".join(f"{r['measure']}{' (baseline)' if r['baseline'] else ''}: "
                                                   f"{r['verdict']}" for r in sup) + ".")
        else:
            lines.append(f"{title}: no measure's adjusted interval excludes 0 — inconclusive for every measure.")
        flat = [r for r in rows if not r["baseline"] and not math.isnan(r["tau"])]
        base = [r for r in rows if r["baseline"] and not math.isnan(r["tau"])]
        kinds = [r["kind"] for r in rows if not r["baseline"]]
        if kinds:
            lines.append(
                f"  The two readings for {key}, over {len(kinds)} flatness measures: "
                f"{kinds.count('flatter-better')} support the classic view (flatter went with "
                f"{defs[key].good}), {kinds.count('sharper-better')} the function-centric view (sharper went "
                f"with {defs[key].good}), {kinds.count('inconclusive')} are inconclusive."
            )
        if flat and base:
            bf = max(flat, key=lambda r: abs(r["tau"]))
            bb = max(base, key=lambda r: abs(r["tau"]))
            d = np.abs(res.draws[bf["measure"], key]) - np.abs(res.draws[bb["measure"], key])
            iv = st.percentile_interval(abs(bf["tau"]) - abs(bb["tau"]), d, level)
            resolved = iv.direction(st.MC_K)
            word = ("flatness ahead" if resolved > 0 else "the baseline ahead" if resolved < 0
                    else "not resolved: neither is shown to rank better")
            lines.append(
                f"  Flatness vs baselines for {key}: best flatness measure {bf['measure']} |τ| = {abs(bf['tau']):.2f}, "
                f"best baseline {bb['measure']} |τ| = {abs(bb['tau']):.2f}; difference {iv.estimate:+.2f}, "
                f"{level:.0%} CI [{iv.low:+.2f}, {iv.high:+.2f}] (same cluster resamples; 'best' chosen after "
                f"looking, not multiplicity-adjusted): {word}."
            )
        elif flat and not base:
            lines.append(f"  No baseline measures in this study for {key}: flatness cannot be compared with them.")
    return lines
