"""``flatminima claims``: run one experiment per claim C1–C17 and write the claims report."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import console, print_json


def register(app: typer.Typer) -> None:
    app.command("claims")(claims)


def claims(
    quick: bool = typer.Option(
        True, "--quick/--full", help="quick: a few minutes on a CPU; full: more seeds"
    ),
    out: str = typer.Option(
        "claims_report", help="folder for claims.md / claims.html / claims.json and figures"
    ),
    only: str | None = typer.Option(None, help="comma-separated claim ids, e.g. C2,C6"),
    seed: int = typer.Option(0, help="random seed"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Test every claim of the seed documents: a measured verdict (supported / not / mixed / not testable)."""
    from ..claims import run

    ids = [c.strip().upper() for c in only.split(",")] if only else None
    rows = run(quick=quick, out=out, seed=seed, only=ids, progress=not json_out)
    if json_out:
        print_json([r.__dict__ for r in rows])
        return
    table = Table(title=f"claims ({'quick' if quick else 'full'})")
    for col in ("claim", "experiment", "verdict", "why"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.claim, r.experiment, r.verdict, r.reason)
    console.print(table)
    console.print(f"report: {out}/claims.md, {out}/claims.html")
