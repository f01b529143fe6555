"""``flatminima claims``: run each claim's pre-registered experiment and write the claims report."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import (
    check_cpu_device,
    check_positive,
    check_workers,
    console,
    esc,
    opt_device,
    opt_json,
    opt_out,
    opt_progress,
    opt_workers,
    out_folder,
    print_json,
)


def register(app: typer.Typer) -> None:
    app.command("claims")(claims)


def claims(
    quick: bool = typer.Option(
        True, "--quick/--full", help="quick: few seeds, one seed set; full: powered n, 3 disjoint seed sets"
    ),
    out: str | None = opt_out("claims", "claims.md / claims.html / claims.json and figures"),
    only: str | None = typer.Option(None, help="comma-separated claim ids, e.g. C2,C6"),
    seed: int = typer.Option(0, help="quick: seed set k (seeds k·n … k·n+n−1); full: the disjoint sets 3k, 3k+1, 3k+2"),
    workers: int | None = opt_workers(None, "processes for full mode (default: up to 2)"),
    device: str = opt_device("the experiments (they run on the CPU only: cpu or auto)"),
    progress: bool = opt_progress(),
    json_out: bool = opt_json(),
) -> None:
    """Test every claim: supported / contradicted / mixed / inconclusive, or demonstration, with rule and n."""
    from dataclasses import asdict

    from ..claims import run

    check_cpu_device(device, "flatminima claims")
    ids = [c.strip().upper() for c in only.split(",") if c.strip()] if only else None
    out = out_folder("claims", out, "quick" if quick else "full")
    if workers is not None:
        check_positive("--workers", workers)
        check_workers("--workers", workers)
    rows = run(quick=quick, out=out, seed=seed, only=ids, progress=progress and not json_out, workers=workers)
    if json_out:
        print_json([asdict(r) for r in rows])
        return
    table = Table(title=f"claims ({'quick' if quick else 'full'})")
    for col in ("claim", "n", "verdict", "per seed set", "rule"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.claim, str(r.n), r.verdict, ", ".join(r.per_seed_set), r.rule)
    console.print(table)
    console.print(esc(f"report: {out}/claims.md, {out}/claims.html"))
