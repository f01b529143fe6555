"""``flatminima sharpness``: the literature's sharpness/flatness measures of a trained model."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from .common import (
    check_checkpoint_paths,
    check_measure_options,
    checkpoint_label,
    command_help,
    console,
    data_line,
    esc,
    fmt,
    fmt_cost,
    opt_checkpoints,
    opt_data_arg,
    opt_device,
    opt_dtype,
    opt_json,
    opt_loss,
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
    say,
)


def register(app: typer.Typer) -> None:
    app.command("sharpness", help=command_help(sharpness))(sharpness)


def sharpness(
    measures: str | None = typer.Option(None, help="comma-separated measure names (default all that apply; --list)"),
    model: str = typer.Option("mlp", help="built-in model (mlp, cnn1d, ...) or 'module:factory' (the current "
                              "folder is importable)"),
    model_arg: list[str] | None = opt_model_arg(),
    data: str = typer.Option("mnist1d", help="built-in data set, a data file (.npz, .csv, .pt) or 'module:factory'; "
                             "integer targets are class labels, float targets regression (--data-arg task=... "
                             "overrides)"),
    data_arg: list[str] | None = opt_data_arg(),
    checkpoint: list[str] | None = opt_checkpoints(),
    init_checkpoint: str | None = typer.Option(None, "--init-checkpoint", help="state dict of the initial weights "
                                               "of the --checkpoint model(s), for measures that need them "
                                               "(distance_from_init)"),
    loss: str | None = opt_loss(),
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
    """Train (or load) a model and print its sharpness measures with error bars and costs.

    Works on classification and regression data with the loss of --loss (default by the data's task); a model
    trained here trains with that loss too. Several --checkpoint give one table with one row per checkpoint
    (--json: a list). The default set is every measure the run can compute: with --checkpoint, measures that
    need the initial weights are left out (and said so) unless --init-checkpoint gives them; a model trained
    here passes its own. A measure that fails does not lose the others: the table shows what was measured and
    the failure is printed after it (exit code 1)."""
    from ..errors import FlatminimaError
    from ..progress import progress_bar
    from ..sharpness import available, settings_per_measure
    from ..sharpness.registry import accepted_settings
    from ..validate import check_measure_settings
    from ..workflows.common import (
        default_loss,
        describe_data,
        get_data,
        get_model,
        initial_params,
        load_models,
        objective_for,
        resolve_loss,
    )
    from ..workflows.pipeline import measure

    if list_:
        _list(available(), json_out)
        return
    names = [m.strip() for m in measures.split(",") if m.strip()] if measures else None
    settings = parse_kv(set_ or [])
    checkpoints = check_checkpoint_paths(checkpoint)
    init_path = check_checkpoint_paths([init_checkpoint] if init_checkpoint else [], "--init-checkpoint")
    if init_path and not checkpoints:
        raise FlatminimaError("--init-checkpoint goes with --checkpoint: a model trained here passes its own "
                              "initial weights to the measures that need them.")
    check_measure_options(split=split, dtype=dtype, device=device, epochs=None if checkpoints else epochs)
    model_kw, data_kw = parse_kv(model_arg), parse_kv(data_arg)
    chosen = names or list(available())
    per = settings_per_measure(chosen, settings, seed)  # unknown names and settings fail before training
    for n in chosen:  # a setting one chosen measure does not take: refused now, not after the others ran
        unknown = sorted(set(per[n]) - set(accepted_settings(n)) - {"seed"})
        if unknown:
            raise FlatminimaError(f"{n} does not take {unknown}; its settings are "
                                  f"{sorted(set(accepted_settings(n)) | {'seed'})}.")
        check_measure_settings(n, per[n])  # inf, nan, a tolerance ≥ 1, 1e8 samples: refused before training
    resolve_loss(loss)  # a module:function that cannot be imported is refused before any data or training
    dev = resolve_device(device)
    folder = out_folder("sharpness", out, run_name(model, data, model=model, data=data, model_kw=model_kw,
                                                   data_kw=data_kw, epochs=epochs, seed=seed,
                                                   **({"loss": loss} if loss else {}),
                                                   **({"checkpoint": checkpoints} if checkpoints else {})))
    show = progress and not json_out
    dataset = get_data(data, **data_kw)
    loss_name = loss or default_loss(dataset)
    has_init = not checkpoints or bool(init_path)
    skipped = unavailable(chosen, per, has_init=has_init, task=dataset.task, loss=loss_name)
    if skipped and names:  # asked for by name: refused before any work
        raise FlatminimaError("cannot compute " + "; ".join(f"{n}: {why}" for n, why in skipped.items()) + ".")
    chosen = [n for n in chosen if n not in skipped]
    if checkpoints:
        models = load_models(model, dataset, checkpoints, loss=loss_name, seed=seed, **model_kw)
        init = initial_params(model, dataset, init_path[0], **model_kw) if init_path else None
    else:
        net, info = get_model(model, dataset, recipe={"epochs": epochs, "seed": seed}, out_dir=folder,
                              progress=show, device=dev, say=None if json_out else say, loss=loss_name,
                              keep_init=True, **model_kw)
        init = info.pop("init")
        models = [(net, info)]
    about = {"data": describe_data(dataset), "loss_function": loss_name, "left_out": skipped}
    if not json_out:
        console.print(data_line(about["data"], loss_name))
        if skipped:
            console.print("left out: " + esc("; ".join(f"{n} ({why})" for n, why in skipped.items())))
    runs = []
    stopped = False
    with progress_bar(len(chosen) * len(models), "sharpness measures", enabled=show) as advance:
        for net, info in models:
            obj = objective_for(net, dataset, split=split, dtype=dtype, device=dev, loss=loss_name)
            # the shared pipeline's measuring step: a measure that fails does not lose the others, an
            # interrupt keeps what was measured (printed, then the command stops)
            failed: dict[str, str] = {}
            results = measure(obj, {n: per[n] for n in chosen}, init=init, failed=failed, advance=advance)
            stopped = "interrupted" in failed.values()
            runs.append((obj.describe(), info, results, failed))
            if stopped:
                break
    _report(runs, about, checkpoints, model=model, data=dataset.name, split=split, folder=folder, json_out=json_out)
    if stopped:
        raise typer.Exit(130)
    if any(failed for *_, failed in runs):
        raise typer.Exit(1)


def needs_init(name: str, config: dict[str, Any]) -> bool:
    """Whether the registered measure ``name`` needs the initial weights: it takes an ``init`` keyword whose
    default is None (nothing to compute without it) and ``config`` does not set it. The study's rule too."""
    from ..sharpness import entry

    defaults = entry(name).defaults()
    return "init" in defaults and defaults["init"] is None and config.get("init") is None


def unavailable(names: list[str], per: dict[str, dict[str, Any]], *, has_init: bool, task: str,
                loss: str) -> dict[str, str]:
    """The measures among ``names`` this run cannot compute, each with the reason: the initial weights when
    the run has none (a checkpoint without --init-checkpoint), class labels on regression data, the softmax
    cross-entropy for the model Fisher."""
    from ..sharpness import entry

    out = {}
    for n in names:
        if not has_init and needs_init(n, per[n]):
            out[n] = ("needs the initial weights, which a checkpoint does not hold: give their state dict with "
                      "--init-checkpoint PATH")
        elif n in ("output_margin", "pac_bayes_mag") and task != "classification":
            out[n] = ("needs class labels (margins of the logits)" if n == "output_margin" else
                      "needs class labels (it perturbs the training accuracy)") + "; this data is a regression"
        elif n == "pac_bayes" and per[n].get("metric") == "error" and task != "classification":
            out[n] = "metric='error' needs class labels; this data is a regression (the default metric='loss' works)"
        elif n == "fisher_rao" and per[n].get("labels", entry(n).defaults().get("labels")) == "model" and (
                task != "classification" or loss != "cross_entropy"):
            out[n] = ("labels='model' needs class logits and the cross-entropy loss; --set fisher_rao.labels=data "
                      "for the empirical Fisher")
    return out


def _report(runs: list, about: dict, checkpoints: list[str], *, model: str, data: str, split: str, folder: str,
            json_out: bool) -> None:
    """Print what was measured (one report, or one row per checkpoint) and every failure after it."""
    if json_out:
        docs = [{"objective": o, "split": split, "model": info, "out": folder,
                 "measures": {n: r.to_dict() for n, r in results.items()}, "failed": failed} | about
                for o, info, results, failed in runs]
        print_json(docs[0] if len(docs) == 1 and len(checkpoints) <= 1 else docs)
        return
    if len(runs) == 1 and len(checkpoints) <= 1:
        o, _, results, failed = runs[0]
        _print(results, o, model, data, split)
    else:
        _print_rows(runs, checkpoints, model, data, split)
    for _, info, _, failed in runs:
        where = f" ({esc(checkpoint_label(info['checkpoint'], checkpoints))})" if len(checkpoints) > 1 else ""
        for n, why in failed.items():
            console.print(f"[red]failed[/red]{where} {esc(n)}: {esc(why)}", markup=True, highlight=False)


def _print_rows(runs: list, checkpoints: list[str], model: str, data: str, split: str) -> None:
    """One row per checkpoint, one column per measure (value ± s.e.; "failed" where it failed)."""
    o = runs[0][0]
    console.print(f"[bold]{esc(model)}[/bold] on [bold]{esc(data)}[/bold] ({split} split): {len(checkpoints)} "
                  "checkpoints, "
                  f"{o['dim']} parameters, {_samples(o)}{o['mode']} mode, {o['dtype']}")
    names = list(dict.fromkeys(n for _, _, results, failed in runs for n in [*results, *failed]))
    table = Table(title="Sharpness and flatness (full-data mean loss), one row per checkpoint")
    for col in ("checkpoint", *names):
        table.add_column(col, overflow="fold")  # many measures: names wrap instead of being cut off
    for _, info, results, failed in runs:
        cells = [_short(results[n].value, results[n].stderr) if n in results else "failed" if n in failed else "-"
                 for n in names]
        table.add_row(esc(checkpoint_label(info["checkpoint"], checkpoints)), *cells)
    console.print(table)


def _samples(o: dict) -> str:
    """"N samples, " from an objective's description; empty where no measure passed over the data (param_norm,
    distance_from_init and path_norm need none, so the objective never counted them)."""
    return "" if o.get("samples") is None else f"{o['samples']:.0f} samples, "


def _short(value: float, err: float | None) -> str:
    """A value (± s.e.) in 4 significant digits: one table cell among many."""
    return f"{value:.4g}" if err is None or err != err else f"{value:.4g} ± {err:.2g}"


def _list(names: dict[str, str], json_out: bool) -> None:
    print_names(names, "Sharpness measures (flatminima.sharpness.measure(obj, name, **config))", "description",
                json_out)


def _print(results: dict, o: dict, model: str, data: str, split: str) -> None:
    console.print(f"[bold]{esc(model)}[/bold] on [bold]{esc(data)}[/bold] ({split} split): {o['dim']} parameters, "
                  f"{_samples(o)}{o['mode']} mode, {o['dtype']}")
    table = Table(title="Sharpness and flatness (full-data mean loss)")
    for col in ("measure", "value ± s.e.", "details", "cost"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(esc(name), fmt(r.value, r.stderr), esc(_details(r)), fmt_cost(r.cost))
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
