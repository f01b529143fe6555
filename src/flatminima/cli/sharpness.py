"""``flatminima sharpness``: the literature's sharpness/flatness measures of a trained model."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import (
    check_measure_options,
    console,
    fmt,
    fmt_cost,
    opt_data_arg,
    opt_device,
    opt_dtype,
    opt_json,
    opt_model_arg,
    opt_out,
    opt_progress,
    opt_seed,
    out_folder,
    parse_kv,
    print_json,
    print_names,
    resolve_device,
    run_name,
)


def register(app: typer.Typer) -> None:
    app.command("sharpness")(sharpness)


def sharpness(
    measures: str | None = typer.Option(None, help="comma-separated measure names (default all; --list)"),
    model: str = typer.Option("mlp", help="built-in model (mlp, cnn1d, ...) or 'module:factory' (the current "
                              "folder is importable)"),
    model_arg: list[str] | None = opt_model_arg(),
    data: str = typer.Option("mnist1d", help="built-in data set, a data file (.npz, .csv, .pt) or 'module:factory'"),
    data_arg: list[str] | None = opt_data_arg(),
    checkpoint: str | None = typer.Option(None, help="state-dict checkpoint; else the model is trained"),
    epochs: int = typer.Option(20, help="training epochs when no checkpoint is given"),
    split: str = typer.Option("train", help="measure on the train or the held-out test split"),
    dtype: str = opt_dtype(),
    device: str = opt_device(),
    seed: int = opt_seed(0, "training and every random measure"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="a measure setting, 'name.key=value' or 'key=value' for every measure taking it "
                            "(e.g. --set rho=0.1 --set worst_case.adaptive=true); repeatable"),
    out: str | None = opt_out("sharpness", "the checkpoint of the trained model"),
    list_: bool = typer.Option(False, "--list", help="list the measures and exit"),
    progress: bool = opt_progress(),
    json_out: bool = opt_json(),
) -> None:
    """Train (or load) a model and print its sharpness measures with error bars and costs."""
    from ..progress import progress_bar
    from ..sharpness import available, measure, settings_per_measure
    from ..workflows.common import get_data, get_model, objective_for

    if list_:
        _list(available(), json_out)
        return
    names = [m.strip() for m in measures.split(",") if m.strip()] if measures else None
    settings = parse_kv(set_ or [])
    check_measure_options(split=split, dtype=dtype, device=device, epochs=None if checkpoint else epochs)
    model_kw, data_kw = parse_kv(model_arg), parse_kv(data_arg)
    chosen = names or list(available())
    per = settings_per_measure(chosen, settings, seed)  # unknown names and settings fail before training
    dev = resolve_device(device)
    folder = out_folder("sharpness", out, run_name(model, data, model=model, data=data, model_kw=model_kw,
                                                   data_kw=data_kw, epochs=epochs, seed=seed))
    show = progress and not json_out
    dataset = get_data(data, **data_kw)
    net, info = get_model(model, dataset, checkpoint=checkpoint, recipe={"epochs": epochs, "seed": seed},
                          out_dir=None if checkpoint else folder, progress=show, device=dev,
                          say=None if json_out else console.print, **model_kw)
    obj = objective_for(net, dataset, split=split, dtype=dtype, device=dev)
    results = {}
    with progress_bar(len(chosen), "sharpness measures", enabled=show) as advance:
        for n in chosen:
            results[n] = measure(obj, n, **per[n])
            advance()
    if json_out:
        print_json({"objective": obj.describe(), "split": split, "model": info, "out": folder,
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
    est = getattr(r, "estimate", None)
    if est is not None and est.method == "t" and est.interval is not None:
        parts.append(f"{est.level:.0%} CI [{est.low:.3g}, {est.high:.3g}]")
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
