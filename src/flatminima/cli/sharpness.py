"""``flatminima sharpness``: the literature's sharpness/flatness measures of a trained model."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import (
    check_measure_options,
    check_out_folder,
    console,
    fmt,
    fmt_cost,
    parse_kv,
    print_json,
    print_names,
)


def register(app: typer.Typer) -> None:
    app.command("sharpness")(sharpness)


def sharpness(
    measures: str | None = typer.Option(None, help="comma-separated measure names (default all; --list)"),
    model: str = typer.Option("mlp", help="built-in model (mlp, cnn1d, ...) or 'package.module:factory'"),
    data: str = typer.Option("mnist1d", help="built-in data set or a data file (.npz, .csv, .pt)"),
    checkpoint: str | None = typer.Option(None, help="state-dict checkpoint; else the model is trained"),
    epochs: int = typer.Option(20, help="training epochs when no checkpoint is given"),
    split: str = typer.Option("train", help="measure on the train or the held-out test split"),
    dtype: str = typer.Option("float32", help="float32 or float64"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ..."),
    seed: int = typer.Option(0, help="seed for training and for every random measure"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="a measure setting, 'name.key=value' or 'key=value' for every measure taking it "
                            "(e.g. --set rho=0.1 --set worst_case.adaptive=true); repeatable"),
    out: str | None = typer.Option(None, help="folder for the checkpoint of the trained model"),
    list_: bool = typer.Option(False, "--list", help="list the measures and exit"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Train (or load) a model and print its sharpness measures with error bars and costs."""
    from ..sharpness import available, measure_all
    from ..workflow import get_data, get_model, objective_for

    if list_:
        _list(available(), json_out)
        return
    names = [m.strip() for m in measures.split(",") if m.strip()] if measures else None
    settings = parse_kv(set_ or [])
    from ..sharpness import entry

    check_measure_options(split=split, dtype=dtype, device=device, epochs=None if checkpoint else epochs)
    check_out_folder("--out", out)
    for n in names or []:
        entry(n)  # an unknown name fails before training
    dataset = get_data(data)
    net, info = get_model(model, dataset, checkpoint=checkpoint, recipe={"epochs": epochs, "seed": seed},
                          out_dir=out, progress=not json_out)
    obj = objective_for(net, dataset, split=split, dtype=dtype, device=device)
    results = measure_all(obj, names, settings=settings, seed=seed)
    if json_out:
        print_json({"objective": obj.describe(), "split": split, "model": info,
                    "measures": {n: r.to_dict() for n, r in results.items()}})
        return
    _print(results, obj.describe(), model, dataset.name, split)


def _list(names: dict[str, str], json_out: bool) -> None:
    print_names(names, "Sharpness measures (flatminima.sharpness.measure(obj, name, **config))", "description",
                json_out)


def _print(results: dict, o: dict, model: str, data: str, split: str) -> None:
    console.print(f"[bold]{model}[/bold] on [bold]{data}[/bold] ({split} split): {o['dim']} parameters, "
                  f"{o['samples']:.0f} samples, {o['mode']} mode, {o['dtype']}")
    table = Table(title="Sharpness and flatness (full-data mean loss)")
    for col in ("measure", "value ± s.e.", "details", "cost"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, fmt(r.value, r.stderr), _details(r), fmt_cost(r.cost))
    console.print(table)


def _details(r) -> str:
    e, parts = r.extra, []
    if "sigma" in e:
        parts.append(f"σ={e['sigma']:.4g}")
    if "second_order" in e:
        parts.append(f"½σ²tr(H)={e['second_order']:.4g}")
    if "ci95" in e:
        parts.append(f"95% CI [{e['ci95'][0]:.3g}, {e['ci95'][1]:.3g}]")
    if "spread" in e:
        parts.append(f"restart spread {e['spread']:.2g}")
    if "error_bound" in e:
        parts.append(f"bound {e['error_bound']:.1e}" + ("" if e.get("converged", True) else " NOT converged"))
    if "unit" in e:
        parts.append(e["unit"])
    keys = [k for k in ("rho", "norm", "adaptive", "m", "sigma", "epsilon", "target", "magnitude_aware",
                        "operator") if k in r.config and r.config[k] not in (None, False)]
    parts.append(", ".join(f"{k}={r.config[k]}" for k in keys))
    return "; ".join(p for p in parts if p)
