"""``flatminima study run | status | report``: a spec (or preset) → runs → SQLite store → HTML report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..errors import FlatminimaError
from .common import OUT_ROOT, console, esc, opt_json, opt_progress, opt_seed, opt_workers, print_json

study_app = typer.Typer(
    no_args_is_help=True,
    help="Studies: does flatness predict generalisation, shift robustness and calibration on this task?",
)


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")


def _boot_samples(samples: int) -> int:
    """--samples (the cluster-bootstrap resamples), checked."""
    from .common import MIN_BOOT

    if samples < MIN_BOOT:
        raise FlatminimaError(f"--samples must be at least {MIN_BOOT} cluster-bootstrap resamples (4000 is the "
                              f"default), got {samples}.")
    return samples


def _max_samples(max_samples: int, samples: int) -> int:
    """--max-samples (the cap on the resamples), at least ``samples``."""
    if max_samples < samples:
        raise FlatminimaError(f"--max-samples ({max_samples}) must be at least --samples ({samples}).")
    return max_samples


@study_app.command("run")
def run_cmd(
    spec: str | None = typer.Argument(None, help="study spec (TOML); or use --preset"),
    preset: str | None = typer.Option(None, help="a shipped spec: quick, function_centric"),
    workers: int | None = opt_workers(None, "parallel runs (default: the spec's executor.workers)"),
    executor: str | None = typer.Option(None, help="local (process pool), ray or submitit (SLURM job arrays)"),
    address: str | None = typer.Option(None, help="Ray cluster address (with --executor ray)"),
    out: str | None = typer.Option(
        None, "--out", help=f"study folder (default {OUT_ROOT}/<spec name>, e.g. {OUT_ROOT}/quick); an existing one "
        "resumes: finished runs are kept, only the rest run"
    ),
    seed: int | None = opt_seed(None, "the runs: seeds seed, seed+1, ... (default: the spec's seeds)"),
    retry_failed: bool = typer.Option(False, help="also redo runs that failed before"),
    samples: int = typer.Option(4000, help="cluster-bootstrap resamples the report starts with"),
    report_: bool = typer.Option(True, "--report/--no-report",
                                 help="write the report after the runs (or later with `study report`)"),
    sets: list[str] | None = typer.Option(
        None, "--set", help="override a spec value, key=value with a TOML value (repeatable): "
        "--set recipe.lr=[0.01,0.1] --set executor.workers=2 --set models.mlp.width=32 "
        "--set seeds=3; checked as in the file"),
    progress: bool = opt_progress(),
    json_out: bool = opt_json(),
) -> None:
    """Run (or resume) a study, then write its report and print the verdict table."""
    from ..study import report, run
    from ..study.runner import resolve_spec
    from .common import check_out_folder, check_positive

    if spec is None and preset is None:
        raise FlatminimaError("give a spec file or --preset (e.g. --preset quick).")
    if workers is not None:
        check_positive("--workers", workers)  # and against this machine's cores and memory in study.run
    if executor is not None and executor not in ("local", "ray", "submitit"):
        raise FlatminimaError(f"--executor must be local, ray or submitit, got {executor!r}.")
    samples = _boot_samples(samples)
    check_out_folder("--out", out)
    if sets:
        from ..study.overrides import resolve_with_overrides

        study = resolve_with_overrides(spec, preset, sets)
    else:
        study = resolve_spec(spec, preset)
    if seed is not None:
        n = study.seeds if isinstance(study.seeds, int) else len(study.seeds)
        study = resolve_spec(study.model_dump(mode="json") | {"seeds": list(range(seed, seed + n))})
    if (executor or study.executor.kind) == "submitit":  # no sbatch, no submitit: said before anything starts
        from ..study.slurm import check_cluster

        check_cluster(study.executor.cluster if study.executor.kind == "submitit" else "slurm")
    from ..study.executors import check_executor

    ex = study.executor  # Ray or submitit missing, more workers than this machine holds: before any folder is made
    check_executor(executor or ex.kind, workers if workers is not None else ex.workers,
                   address if address is not None else ex.address,
                   option="--workers" if workers is not None else "executor.workers")
    from ..study.overrides import write_spec
    from ..study.runner import default_folder

    folder = Path(out) if out else default_folder(study, OUT_ROOT)
    if not (folder / "study.sqlite").exists():  # a new study: its spec.toml from the start (a resume: below)
        write_spec(folder, study)
    result = run(study, out=out, executor=executor, workers=workers, address=address, retry_failed=retry_failed,
                 root=OUT_ROOT, progress=progress and not json_out)
    write_spec(result.folder, study)  # the effective spec (file or preset with every --set) beside the store
    c = result.counts
    reused = result.executed == 0 and c.done > 0
    if json_out:
        payload = {"folder": str(result.folder), "executed": result.executed, "seconds": result.seconds,
                   "done": c.done, "failed": c.failed, "left": c.pending + c.running, "reused": reused}
    else:
        console.print(
            f"[bold]{esc(result.folder)}[/bold]: {result.resumed_message}; ran {result.executed} run(s) in "
            f"{result.seconds:.0f}s; now {c.done} done, {c.failed} failed, {c.pending + c.running} left."
        )
        if reused:
            console.print(f"every run was already done in {esc(result.folder)}: its results are reused (give another "
                          "--out, or --retry-failed, to run again).")
    if report_:
        rep = report(result.folder, samples=samples, progress=progress and not json_out)
        if json_out:
            payload["report"] = str(rep.html)
        else:
            _print_report(rep)
    if json_out:
        print_json(payload)


@study_app.command("status")
def status_cmd(folder: str = typer.Argument(..., help=f"study folder, e.g. {OUT_ROOT}/quick"),
               json_out: bool = opt_json()) -> None:
    """Done, running, failed and left, with the failures' messages."""
    from ..study import Store
    from ..study.slurm import job_states
    from ..study.store import lock_holder

    with Store(folder, create=False, readonly=True) as store:  # writes nothing: works on read-only copies
        c, failed, running = store.counts(), store.rows("failed"), store.rows("running")
        store.rows("done")
        unreadable = store.unreadable
        jobs = job_states(store)
        every = store.rows() if jobs else []
    holder = lock_holder(folder)
    per_run = [_job_row(r, jobs.get(r["id"])) for r in every]
    if json_out:
        print_json({"folder": folder, "total": c.total, "done": c.done, "running": c.running, "failed": c.failed,
                    "left": c.pending, "in_use_by": holder,
                    "failures": [{"label": r["label"], "seed": r["seed"], "error": r["error"]} for r in failed]}
                   | ({"jobs": per_run} if jobs else {}))
        return
    console.print(
        f"[bold]{esc(folder)}[/bold]: {c.total} runs: [green]{c.done} done[/green], {c.running} running, "
        f"[red]{c.failed} failed[/red], {c.pending} left."
    )
    if holder is not None:
        console.print(esc(f"  in use by process {holder.get('pid')} on {holder.get('host')!r} "
                          f"({holder.get('command', 'a study run')})"))
    if jobs:  # submitit: every run with its job, as the coordinator last saw it
        table = Table(title="runs and their submitit jobs (state as last seen by the coordinator)")
        for col in ("run", "seed", "state", "job id", "lost jobs"):
            table.add_column(col)
        for j in per_run:
            table.add_row(esc(j["label"]), str(j["seed"]), j["state"], esc(j["job_id"] or "-"),
                          esc("; ".join(j["lost"]) or "-"))
        console.print(table)
        if holder is None and any(j["state"] in ("queued", "running") for j in per_run):
            console.print("  no coordinator is running: the next `study run` reattaches to the jobs still queued "
                          "or running and collects what finished meanwhile.")
    for r in running:
        if jobs:
            break  # shown in the table above
        gone = "" if holder is not None else "; that process is gone: the next `study run` redoes it"
        console.print(esc(f"  running: {r['label']} seed={r['seed']} (claimed by {r['claimed_by']}{gone})"))
    for u in unreadable:
        console.print(f"  [red]unreadable[/red]: {esc(u['label'])} seed={u['seed']}: {esc(u['reason'])} "
                      "(the next `study run` redoes it)")
    for r in failed:
        console.print(f"  [red]failed[/red]: {esc(r['label'])} seed={r['seed']}: "
                      f"{esc((r['error'] or '?').splitlines()[0])}")


def _job_row(row: dict, job: dict | None) -> dict:
    """One run's line of the submitit table: queued / running / done / failed / pending, with its job id."""
    job = job or {}
    state = row["status"]
    if state == "running":
        state = job.get("state") if job.get("state") in ("queued", "running", "resubmitting") else "running"
    return {"id": row["id"], "label": row["label"], "seed": row["seed"], "state": state,
            "job_id": job.get("job_id"), "lost": list(job.get("lost") or [])}


@study_app.command("report")
def report_cmd(
    folder: str = typer.Argument(..., help="study folder"),
    out: str | None = typer.Option(None, help="report folder (default <study>/report)"),
    samples: int = typer.Option(
        4000, help="cluster-bootstrap resamples to start with (doubled until no verdict is within Monte-Carlo error)"
    ),
    max_samples: int = typer.Option(64000, help="cap on the cluster-bootstrap resamples"),
    alpha: float = typer.Option(0.05, help="family-wise error rate of the Holm-adjusted verdicts"),
    seed: int = typer.Option(0, help="bootstrap seed"),
    progress: bool = opt_progress(),
) -> None:
    """Write the HTML report, figures and CSV from the study store, and print the verdicts."""
    from ..study import report
    from .common import check_out_folder

    samples = _boot_samples(samples)
    max_samples = _max_samples(max_samples, samples)
    check_out_folder("--out", out)
    if not 0 < alpha < 1:
        raise FlatminimaError(f"--alpha must be in (0, 1), got {alpha!r}.")
    _print_report(report(folder, out=out, samples=samples, max_samples=max_samples, alpha=alpha, seed=seed,
                         progress=progress))


@study_app.command("repair")
def repair_cmd(folder: str = typer.Argument(..., help="study folder whose store is damaged")) -> None:
    """Copy every intact row of a damaged store into a fresh one (the damaged file is kept beside it)."""
    from ..study.store import repair

    res = repair(folder)
    console.print(
        f"[bold]{esc(folder)}[/bold]: read {res['rows_read']} row(s); {res['kept']} finished run(s) kept, "
        f"{res['redo']} to redo; the damaged file is kept as {esc(res['damaged_copy'])}."
    )
    for problem in res["problems"][:10]:
        console.print(f"  lost: {esc(problem)}")
    console.print("next: `flatminima study run <spec> --out " + f"{esc(folder)}` redoes what was lost.")


def _print_report(rep) -> None:
    m = rep.method
    table = Table(
        title="Does flatness predict it? (Kendall τ; 95% and Holm-adjusted cluster-bootstrap intervals, "
        f"{m.get('resamples', 0)} resamples)"
    )
    for col in ("measure", "target", "τ [95% CI]", "τ [Holm-adjusted]", "granulated τ", "CMI", "verdict"):
        table.add_column(col)
    style = {"flatter-better": "blue", "sharper-better": "dark_orange"}
    for r in rep.table:
        table.add_row(
            esc(r["measure"] + (" (baseline)" if r["baseline"] else "")),
            esc(r["target"]),
            f"{r['tau']:+.2f} [{r['tau_low']:+.2f}, {r['tau_high']:+.2f}]",
            f"[{r['tau_adj_low']:+.2f}, {r['tau_adj_high']:+.2f}] at {r['adj_level']:.2%}",
            f"{r['granulated_tau']:+.2f}",
            f"{r['cmi']:.2f}",
            f"[{style.get(r['kind'], 'dim')}]{r['verdict']}[/]",
        )
    if rep.table:
        console.print(table)
    for line in rep.summary:
        console.print(esc(line))
    for note in rep.notes:
        console.print(f"note: {esc(note)}")
    console.print(f"report: [bold]{esc(rep.html)}[/bold]")
