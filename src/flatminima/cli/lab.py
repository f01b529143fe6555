"""``flatminima lab list`` / ``flatminima lab run NAME``: the landscape lab's experiments, one per claim."""

from __future__ import annotations

import typer

from .common import (
    check_cpu_device,
    checked_seed,
    console,
    esc,
    opt_device,
    opt_json,
    opt_out,
    out_folder,
    print_json,
    print_names,
)


def register(app: typer.Typer) -> None:
    lab_app = typer.Typer(no_args_is_help=True, help="analytic landscapes and claim experiments")
    lab_app.command("list")(list_experiments)
    lab_app.command("run")(run_experiment)
    app.add_typer(lab_app, name="lab")


def list_experiments(json_out: bool = opt_json()) -> None:
    """List the lab's experiments and the claim each one tests."""
    from ..lab import available

    print_names(available(), "flatminima lab experiments", "claim: what it measures", json_out)


def run_experiment(
    name: str = typer.Argument(..., help="experiment name (see `flatminima lab list`)"),
    out: str | None = opt_out("lab", "the figure (PNG + SVG), CSV data and result.json"),
    full: bool = typer.Option(False, "--full", help="the powered number of seeds (quick: fewer)"),
    seed: int = typer.Option(0, help="seed set k: seeds k·n … k·n+n−1, disjoint for distinct k",
                             callback=checked_seed),
    device: str = opt_device("the experiment (the lab runs on the CPU only: cpu or auto)"),
    json_out: bool = opt_json(),
) -> None:
    """Run one experiment: prints its sub-tests (intervals, rules), its verdict, and saves its figure and CSV."""
    from ..lab import get, run

    check_cpu_device(device, "flatminima lab run")
    folder = out_folder("lab", out)
    get(name)  # an unknown name is refused before any work
    res = run(name, out=folder, quick=not full, seed=seed)  # it adds <name>/seed<k>/
    if json_out:
        print_json(res.to_dict())
        return
    console.print(f"[bold]{res.name}[/bold] ({res.claim}: {res.title})")
    for sub in res.subtests:
        console.print(f"  {sub['name']}: {sub['verdict']} — {sub['rule']}")
    console.print(res.summary)
    console.print(f"verdict: [bold]{res.verdict}[/bold] (n={res.n}, seeds {res.seeds[0]}–{res.seeds[-1]})")
    console.print(f"{res.seconds:.1f} s; files: " + esc(", ".join(res.files)))
