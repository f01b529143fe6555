"""Run each claim's pre-registered experiment and write the claims report (Markdown, HTML, JSON).

The list of claims, their statements, experiments and rules come from the lab's registry
(:func:`flatminima.lab.specs`); nothing here is per-claim. In full mode ``--seed k`` runs every experiment on
the 3 disjoint seed sets 3k, 3k + 1, 3k + 2 (set j holds seeds j·n … j·n + n − 1), so distinct k never share a
seed, and the verdict stands only if it is the same on all three (:func:`flatminima.lab.rules.stable`).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import FlatminimaError
from ..lab import rules

FULL_REPEATS = 3


@dataclass
class ClaimRow:
    """One claim in the report: the registry's text and rule, and the measured outcome on each seed set."""

    claim: str
    statement: str
    experiment: str
    kind: str
    hypothesis: str
    quantity: str
    rule: str
    power: str
    n: int
    verdict: str
    per_seed_set: list[str] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    subtests: list[list[dict]] = field(default_factory=list)
    seeds: list[list[int]] = field(default_factory=list)
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0

    @property
    def summary(self) -> str:
        return self.summaries[0] if self.summaries else ""


def _spec_map() -> dict:
    from .. import lab

    return {s.claim: s for s in lab.specs()}


def claim_ids() -> list[str]:
    """The claim ids in the registry, in order."""
    return list(_spec_map())


def run(
    *,
    quick: bool = True,
    out: str | Path = "claims_report",
    seed: int = 0,
    only: list[str] | None = None,
    progress: bool = True,
    repeats: int | None = None,
    workers: int | None = None,
) -> list[ClaimRow]:
    """Run the experiment of every claim (or ``only`` those ids) and write the reports under ``out``.

    Quick mode runs seed set ``seed``; full mode runs ``repeats`` (default 3) disjoint sets
    ``repeats·seed`` … ``repeats·seed + repeats − 1``. ``workers`` processes (default: 1 in quick mode,
    ``min(2, cpu count)`` in full mode) run groups of claims side by side; claims that share trained models
    (the same ``ClaimSpec.bench_group``) stay in one process, so each model is still trained once."""
    from ..progress import progress_bar

    specs = _spec_map()
    ids = only or list(specs)
    bad = [c for c in ids if c not in specs]
    if bad:
        raise FlatminimaError(f"unknown claims {bad}; known: {', '.join(specs)}.")
    reps = repeats or (1 if quick else FULL_REPEATS)
    out = Path(out)
    if workers is None:
        workers = 1 if quick else max(1, min(2, os.cpu_count() or 1))
    groups = _groups([specs[c] for c in ids], workers)
    done: dict[str, ClaimRow] = {}
    with progress_bar(len(ids) * reps, "claims", enabled=progress) as advance:
        if len(groups) == 1:
            from .. import lab

            bench = lab.Bench()  # one bench per claims run: claims share their trained models
            for cid in groups[0]:
                done.update(_run_group([cid], quick, str(out), seed, reps, bench, tick=advance))
        else:
            done.update(_run_parallel(groups, quick, str(out), seed, reps, advance))
    rows = [done[c] for c in ids]
    write_reports(rows, out, quick=quick, seed=seed)
    return rows


def _groups(specs: list, workers: int) -> list[list[str]]:
    """Split the claims into ≤ ``workers`` lists, keeping each bench group together, balanced by the
    registry's cost estimate (longest first onto the least loaded list), each list in claim order."""
    if workers <= 1:
        return [[s.claim for s in specs]]
    by_group: dict[str, list] = {}
    for s in specs:
        by_group.setdefault(s.bench_group or s.claim, []).append(s)
    cost = {g: sum(s.cost_s or 1.0 for s in v) for g, v in by_group.items()}
    loads: list[list] = [[0.0, []] for _ in range(min(workers, len(by_group)))]
    for g in sorted(by_group, key=lambda g: -cost[g]):
        slot = min(loads, key=lambda x: x[0])
        slot[0] += cost[g]
        slot[1] += by_group[g]
    return [[s.claim for s in sorted(v, key=lambda s: s.number)] for _, v in loads if v]


def _run_parallel(groups: list[list[str]], quick: bool, out: str, seed: int, reps: int,
                  advance: Callable[..., None]) -> dict[str, ClaimRow]:
    """One process per group; each finished seed set is reported through a queue, so the progress moves
    while the groups run, not only when one ends (its plain lines keep coming by their own heartbeat)."""
    import functools
    import multiprocessing as mp
    import queue
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    done: dict[str, ClaimRow] = {}
    with ctx.Manager() as manager, ProcessPoolExecutor(len(groups), mp_context=ctx) as pool:
        sets = manager.Queue()
        tick = functools.partial(sets.put, None)  # picklable: runs in the worker, lands in this process
        pending = {pool.submit(_run_group, g, quick, out, seed, reps, tick=tick) for g in groups}
        while pending:
            finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for f in finished:
                done.update(f.result())
            with contextlib.suppress(queue.Empty):
                while True:
                    sets.get_nowait()
                    advance()
    return done


def _run_group(ids: list[str], quick: bool, out: str, seed: int, reps: int, bench=None, *,
               tick: Callable[[], None] | None = None) -> dict[str, ClaimRow]:
    """Run claims ``ids`` one after the other on one bench (a worker process gets its own); ``tick()``
    reports each finished seed set."""
    from .. import lab

    specs = _spec_map()
    bench = bench if bench is not None else lab.Bench()
    rows = {}
    for cid in ids:
        s = specs[cid]
        row = ClaimRow(cid, s.statement, s.experiment, s.kind, s.hypothesis, s.quantity, s.rule, s.power,
                       s.n_quick if quick else s.n_full, "")
        t0 = time.perf_counter()
        for k in range(reps * seed, reps * seed + reps):
            try:
                r = lab.run(s.experiment, out=Path(out) / "experiments", quick=quick, seed=k, bench=bench)
                row.per_seed_set.append(r.verdict)
                row.summaries.append(r.summary)
                row.subtests.append(r.subtests)
                row.seeds.append(r.seeds)
                row.files += r.files
                row.cpu_seconds += r.cpu_seconds
            except Exception as err:  # noqa: BLE001 - one failing experiment must not sink the report
                row.per_seed_set.append(rules.FAILED)
                row.summaries.append(f"the experiment failed: {type(err).__name__}: {err}")
                (Path(out) / "errors").mkdir(parents=True, exist_ok=True)
                (Path(out) / "errors" / f"{cid}_seed{k}.txt").write_text(traceback.format_exc())
            if tick is not None:
                tick()
        row.seconds = time.perf_counter() - t0
        row.verdict = _final(row.per_seed_set)
        rows[cid] = row
    return rows


def _final(verdicts: list[str]) -> str:
    if rules.FAILED in verdicts:
        return rules.FAILED
    if verdicts and all(v in (rules.DEMONSTRATION, rules.QUICK) for v in verdicts):
        return verdicts[0]
    return rules.stable(verdicts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _pick(files: list[str], ext: str) -> list[str]:
    return [f for f in files if f.endswith(ext)]


def _rel(path: str, out: Path) -> str:
    return os.path.relpath(path, out)


COLOUR = {rules.SUPPORTED: "#d4f4dd", rules.CONTRADICTED: "#f8d7da", rules.MIXED: "#fff3cd",
          rules.INCONCLUSIVE: "#e2e3e5", rules.QUICK: "#e2e3e5", rules.DEMONSTRATION: "#dde7f6",
          rules.FAILED: "#f5c6cb"}


def write_reports(rows: list[ClaimRow], out: str | Path, *, quick: bool, seed: int) -> dict[str, str]:
    """Write ``claims.md``, ``claims.html`` and ``claims.json`` under ``out``: per claim its rule, n, numbers
    with intervals (per seed set), verdict, figure and the CSV behind it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if quick else "full"
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    tally = ", ".join(f"{n} {v}" for v, n in counts.items())
    head = (f"# flatminima claims report ({mode} run, seed set {seed})\n\n{len(rows)} claims: {tally}.\n\n"
            f"Rules were fixed before the data (see docs/claims.md). Sub-claims combine as: {rules.COMBINE_RULE}. "
            f"{rules.STABILITY_RULE}. Intervals are 95% unless a Holm or Bonferroni level is stated.\n\n")
    lines = ["| claim | statement | rule | n | verdict (per seed set) | s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.claim} | {_md_cell(r.statement)} | {_md_cell(r.rule)} | {r.n} | **{r.verdict}** "
                     f"({', '.join(r.per_seed_set)}) | {r.seconds:.0f} |")
    detail = []
    for r in rows:
        detail.append(f"\n## {r.claim}: {r.verdict}\n\n{r.statement}\n\n- hypothesis: {r.hypothesis}\n"
                      f"- measured: {r.quantity}\n- rule: {r.rule}\n- power: {r.power}\n- n per seed set: {r.n}\n")
        for k, (summ, seeds) in enumerate(zip(r.summaries, r.seeds + [[]] * len(r.summaries), strict=False)):
            span = f"seeds {seeds[0]}–{seeds[-1]}" if seeds else ""
            detail.append(f"- seed set {k + 1} of {len(r.summaries)} ({span}): **{r.per_seed_set[k]}** — "
                          f"{_md_cell(summ)}\n")
        for f in _pick(r.files, ".png")[:1]:
            detail.append(f"\n![{r.claim}]({_rel(f, out)})\n")
        csvs = _pick(r.files, ".csv")
        if csvs:
            detail.append("\ndata: " + ", ".join(f"[{Path(c).name}]({_rel(c, out)})" for c in csvs) + "\n")
    md = out / "claims.md"
    md.write_text(head + "\n".join(lines) + "\n" + "".join(detail))

    def cell(r: ClaimRow) -> str:
        parts = "".join(f"<li><b>{html.escape(v)}</b>: {html.escape(s)}</li>"
                        for v, s in zip(r.per_seed_set, r.summaries, strict=False))
        figs = "".join(f"<img src='{html.escape(_rel(f, out))}' width='360'>" for f in _pick(r.files, ".png")[:1])
        csvs = " ".join(f"<a href='{html.escape(_rel(c, out))}'>{html.escape(Path(c).name)}</a>"
                        for c in _pick(r.files, ".csv"))
        return f"<ul>{parts}</ul>{figs}<br>data: {csvs}"

    body = "".join(
        f"<tr style='background:{COLOUR.get(r.verdict, '#fff')}'><td>{r.claim}</td>"
        f"<td>{html.escape(r.statement)}</td><td>{html.escape(r.rule)}<br><i>{html.escape(r.power)}</i></td>"
        f"<td>{r.n}</td><td><b>{html.escape(r.verdict)}</b></td><td>{cell(r)}</td><td>{r.seconds:.0f}</td></tr>"
        for r in rows
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>flatminima claims</title><style>"
        "body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px;vertical-align:top;"
        "font-size:13px}table{border-collapse:collapse}</style></head><body>"
        f"<h1>flatminima claims report ({mode} run, seed set {seed})</h1><p>{html.escape(tally)}</p>"
        f"<p>{html.escape(rules.COMBINE_RULE)}. {html.escape(rules.STABILITY_RULE)}.</p>"
        "<table><tr><th>claim</th><th>statement</th><th>rule / power</th><th>n</th><th>verdict</th>"
        f"<th>measured (per seed set), figure, data</th><th>s</th></tr>{body}</table></body></html>"
    )
    htm = out / "claims.html"
    htm.write_text(page)
    js = out / "claims.json"
    js.write_text(json.dumps([asdict(r) for r in rows], indent=2, default=str))
    return {"markdown": str(md), "html": str(htm), "json": str(js)}
