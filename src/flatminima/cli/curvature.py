"""``flatminima curvature``: top eigenvalues, trace and spectral density of a trained model."""

from __future__ import annotations

import typer
from rich.table import Table

from ..progress import count_products
from .common import (
    check_checkpoint_paths,
    check_measure_options,
    check_options,
    check_positive,
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
    parse_list,
    print_json,
    resolve_device,
    run_name,
    say,
)


def register(app: typer.Typer) -> None:
    app.command("curvature", help=command_help(curvature))(curvature)


COMPUTE = ("eigenvalues", "smallest", "trace", "density")


def curvature(
    model: str = typer.Option("mlp", help="built-in model (mlp, cnn1d, ...) or 'module:factory' (the current "
                              "folder is importable)"),
    model_arg: list[str] | None = opt_model_arg(),
    data: str = typer.Option("mnist1d", help="built-in data set, a data file (.npz, .csv, .pt: x_train, y_train[, "
                             "x_test, y_test]) or 'module:factory' returning a Dataset/DataLoader; integer targets "
                             "are class labels, float targets regression (--data-arg task=... overrides)"),
    data_arg: list[str] | None = opt_data_arg(),
    checkpoint: list[str] | None = opt_checkpoints(),
    loss: str | None = opt_loss(),
    epochs: int = typer.Option(20, help="training epochs when no checkpoint is given"),
    compute: str = typer.Option(",".join(COMPUTE), help="what to compute, comma-separated: eigenvalues (top k, "
                                "Lanczos), smallest (λmin), trace (Hutch++), density (SLQ)"),
    k: int = typer.Option(5, help="how many top eigenvalues"),
    samples: int = typer.Option(60, help="random probes (Hessian-vector products) for the Hutch++ trace"),
    density_samples: int = typer.Option(4, help="SLQ random probes for the density"),
    density_steps: int = typer.Option(60, help="Lanczos steps per SLQ probe (products = samples × steps)"),
    tol: float = typer.Option(1e-4, help="Lanczos tolerance on the relative residual"),
    operator: str = typer.Option("hessian", help="hessian or ggn"),
    split: str = typer.Option("train", help="measure on the train or test split"),
    dtype: str = opt_dtype(),
    device: str = opt_device(),
    seed: int = opt_seed(),
    out: str | None = opt_out("curvature", "the checkpoint and the density plot"),
    per_layer: bool = typer.Option(False, "--per-layer", help="per parameter block: λmax, trace ± s.e. and trace "
                                   "share (instead of the whole-model report); bar chart into --out"),
    group: str = typer.Option("parameter", help="--per-layer blocks: parameter (one per tensor) or module"),
    blocks: list[str] | None = typer.Option(None, help="--per-layer: only tensors matching this pattern (repeatable)"),
    progress: bool = opt_progress(),
    json_out: bool = opt_json(),
) -> None:
    """Train (or load) a model and print its curvature report with error bars and costs.

    Works on classification and regression data with the loss of --loss (default by the data's task); a model
    trained here trains with that loss too. Several --checkpoint (the same architecture) give one table with
    one row per checkpoint (--json: a list, one report each)."""
    from ..errors import FlatminimaError, require_choice
    from ..workflows.common import (
        default_loss,
        describe_data,
        get_data,
        get_model,
        load_models,
        objective_for,
        resolve_loss,
    )

    checkpoints = check_checkpoint_paths(checkpoint)
    check_measure_options(split=split, dtype=dtype, device=device, epochs=None if checkpoints else epochs)
    parts = parse_list("--compute", compute, COMPUTE)
    for name, value in (("--k", k), ("--samples", samples), ("--density-samples", density_samples),
                        ("--density-steps", density_steps)):
        check_positive(name, value)
    check_options(tol=tol)
    if "trace" in parts and not per_layer and samples < 6:
        raise FlatminimaError(f"--samples must be at least 6 for the Hutch++ trace (a third each for sketch, "
                              f"exact part and rest), got {samples}.")
    if not tol > 0:
        raise FlatminimaError(f"--tol must be positive, got {tol!r}.")
    require_choice("--operator", operator, ("hessian", "ggn"))
    require_choice("--group", group, ("parameter", "module"))
    if per_layer and len(checkpoints) > 1:
        raise FlatminimaError(f"--per-layer takes one --checkpoint, got {len(checkpoints)}; run it once per "
                              "checkpoint.")
    resolve_loss(loss)  # a module:function that cannot be imported is refused before any data or training
    model_kw, data_kw = parse_kv(model_arg), parse_kv(data_arg)
    dev = resolve_device(device)
    folder = out_folder("curvature", out, run_name(model, data, model=model, data=data, model_kw=model_kw,
                                                   data_kw=data_kw, epochs=epochs, seed=seed,
                                                   checkpoint=_one_or_list(checkpoints),
                                                   **({"loss": loss} if loss else {})))
    show = progress and not json_out
    dataset = get_data(data, **data_kw)
    loss_name = loss or default_loss(dataset)
    if checkpoints:
        models = load_models(model, dataset, checkpoints, loss=loss_name, seed=seed, **model_kw)
    else:
        models = [get_model(model, dataset, recipe={"epochs": epochs, "seed": seed}, out_dir=folder,
                            progress=show, device=dev, say=None if json_out else say, loss=loss_name,
                            **model_kw)]
    about = {"data": describe_data(dataset), "loss_function": loss_name}
    if per_layer:
        net, info = models[0]
        obj = objective_for(net, dataset, split=split, dtype=dtype, device=dev, loss=loss_name)
        _per_layer(obj, model, dataset.name, info, group=group, blocks=blocks, samples=samples, operator=operator,
                   seed=seed, out=folder, json_out=json_out, progress=show, about=about)
        return
    reports, failed = [], {}
    for i, (net, info) in enumerate(models):
        try:
            obj = objective_for(net, dataset, split=split, dtype=dtype, device=dev, loss=loss_name)
            rep = compute_report(obj, parts, k=k, samples=samples, density_samples=density_samples,
                                 density_steps=density_steps, operator=operator, tol=tol, seed=seed, progress=show)
        except Exception as err:  # noqa: BLE001 - several checkpoints: one failing keeps the others' rows
            if len(models) == 1:
                raise
            failed[info["checkpoint"]] = f"{type(err).__name__}: {err}"
            continue
        if "density" in rep:
            stem = "spectral_density" if len(models) == 1 else f"spectral_density_{i + 1}"
            rep["density_files"] = rep["density"].plot(f"{folder}/{stem}")
        rep["out"] = folder
        reports.append((rep, info))
    if json_out:
        docs = [{key: (v.to_dict() if hasattr(v, "to_dict") else v) for key, v in rep.items()} | {"model": info}
                | about for rep, info in reports]
        docs += [{"model": {"checkpoint": path}, "failed": why} | about for path, why in failed.items()]
        print_json(docs[0] if len(models) == 1 else docs)  # one checkpoint (or training): the report itself
    else:
        console.print(data_line(about["data"], loss_name))
        if len(models) == 1:
            _print(reports[0][0], model, dataset.name)
        elif reports:
            _print_rows(reports, checkpoints, model, dataset.name)
        for path, why in failed.items():
            console.print(f"[red]failed[/red] {esc(checkpoint_label(path, checkpoints))}: {esc(why)}", markup=True,
                          highlight=False)
    if failed:
        raise typer.Exit(1)


def _one_or_list(checkpoints: list[str]) -> str | list[str] | None:
    """The checkpoint setting of a run's folder name: as the single option was (so one checkpoint keeps its
    folder), a list for several."""
    return None if not checkpoints else checkpoints[0] if len(checkpoints) == 1 else checkpoints


def compute_report(obj, parts: list[str], *, k: int, samples: int, density_samples: int, density_steps: int,
                   operator: str, tol: float, seed: int, progress: bool) -> dict:
    """The parts of :func:`flatminima.curvature.curvature_report` asked for, each with a progress line."""
    from ..curvature import eigenvalues, spectral_density, trace

    limit = min(obj.dim, 40 * k + 100)
    rep: dict = {"loss": obj.loss()}
    if "eigenvalues" in parts:
        with count_products(obj, None, f"Lanczos, top {k} (products, at most {limit})", enabled=progress):
            rep["top"] = eigenvalues(obj, k, "largest", tol=tol, operator=operator, seed=seed)
    if "smallest" in parts:
        with count_products(obj, None, f"Lanczos, smallest (products, at most {min(obj.dim, 140)})",
                            enabled=progress):
            rep["bottom"] = eigenvalues(obj, 1, "smallest", tol=tol, operator=operator, seed=seed)
    if "trace" in parts:
        with count_products(obj, samples, "Hutch++ trace (products)", enabled=progress):
            rep["trace"] = trace(obj, "hutch++", samples, operator=operator, seed=seed)
    if "density" in parts:
        with count_products(obj, density_samples * min(density_steps, obj.dim),
                            f"SLQ density, {density_samples} probes (products)", enabled=progress):
            rep["density"] = spectral_density(obj, density_samples, density_steps, operator=operator, seed=seed)
    return {"objective": obj.describe()} | rep


def _print(rep: dict, model: str, data: str) -> None:
    o = rep["objective"]
    console.print(f"[bold]{esc(model)}[/bold] on [bold]{esc(data)}[/bold]: {o['dim']} parameters, {o['samples']:.0f} "
                  f"samples, {o['mode']} mode, {o['dtype']}; loss {rep['loss']:.5g}")
    op = next((rep[key].operator for key in ("top", "bottom") if key in rep), "hessian")
    table = Table(title=f"Curvature of the {op} (full-data mean)")
    for col in ("quantity", "value", "true residual", "error bound", "converged", "cost"):
        table.add_column(col)
    rows = []
    if "top" in rep:
        rows += [(f"λ{i + 1}", rep["top"], i) for i in range(len(rep["top"].values))]
    if "bottom" in rep:
        rows += [("λmin", rep["bottom"], 0)]
    for name, res, i in rows:
        table.add_row(name, f"{res.values[i]:.6g}", f"{res.residuals[i]:.1e}", f"{res.error_bounds[i]:.1e}",
                      "yes" if res.converged[i] else "NO", fmt_cost(res.cost) if i == 0 else "")
    if "trace" in rep:
        tr = rep["trace"]
        table.add_row("trace (Hutch++)", fmt(tr.value, tr.stderr), "-", f"±{tr.stderr:.2g} (s.e.)", "-",
                      fmt_cost(tr.cost))
    if "density" in rep:
        d = rep["density"]
        table.add_row("negative mass (SLQ)", fmt(d.negative_mass, d.negative_mass_stderr), "-", "s.e. over probes",
                      "-", fmt_cost(d.cost))
        table.add_row("outliers above bulk", ", ".join(f"{x:.4g}" for x in d.outliers[:5]) or "none", "-",
                      f"bulk edge {d.bulk_edge:.3g}", "-", "")
    console.print(table)
    first = rep.get("top") or rep.get("bottom")
    if first is not None:
        console.print(f"true residual ‖Hv − λv‖ from one extra product per pair; no bound is below the "
                      f"{o['dtype']} rounding floor eps·‖H‖·√dim = {first.floor:.1e}")
    if "density_files" in rep:
        console.print("density plot: " + esc(", ".join(rep["density_files"])))


def _print_rows(reports: list[tuple[dict, dict]], paths: list[str], model: str, data: str) -> None:
    """One row per checkpoint: loss, top eigenvalues, λmin, trace ± s.e., negative mass, convergence, cost."""
    first = reports[0][0]
    o = first["objective"]
    console.print(f"[bold]{esc(model)}[/bold] on [bold]{esc(data)}[/bold]: {len(reports)} checkpoints, {o['dim']} "
                  "parameters, "
                  f"{o['samples']:.0f} samples, {o['mode']} mode, {o['dtype']}")
    op = next((first[key].operator for key in ("top", "bottom") if key in first), "hessian")
    table = Table(title=f"Curvature of the {op} (full-data mean), one row per checkpoint")
    cols = ["checkpoint", "loss"] + [c for key, c in (("top", "top eigenvalues"), ("bottom", "λmin"),
                                                       ("trace", "trace (Hutch++)"),
                                                       ("density", "negative mass (SLQ)")) if key in first]
    for col in (*cols, "converged", "cost"):
        table.add_column(col)
    for rep, info in reports:
        cells = [esc(checkpoint_label(info["checkpoint"], paths)), f"{rep['loss']:.6g}"]
        if "top" in rep:
            cells.append(", ".join(f"{v:.6g}" for v in rep["top"].values))
        if "bottom" in rep:
            cells.append(f"{rep['bottom'].values[0]:.6g}")
        if "trace" in rep:
            cells.append(fmt(rep["trace"].value, rep["trace"].stderr))
        if "density" in rep:
            cells.append(fmt(rep["density"].negative_mass, rep["density"].negative_mass_stderr))
        eig = [r for key in ("top", "bottom") if (r := rep.get(key)) is not None]
        cells.append("yes" if all(all(r.converged) for r in eig) else "NO")
        costs = [rep[key].cost for key in ("top", "bottom", "trace", "density") if key in rep]
        cells.append(_total_cost(costs))
        table.add_row(*cells)
    console.print(table)
    files = [f for rep, _ in reports for f in rep.get("density_files", [])]
    if files:
        console.print("density plots: " + esc(", ".join(files)))


def _total_cost(costs: list) -> str:
    """The summed cost of several results, in the one cost format."""
    if not costs:
        return "-"
    total = costs[0]
    for c in costs[1:]:
        total = total + c
    return fmt_cost(total)


def _per_layer(obj, model: str, data: str, info: dict, *, group: str, blocks: list[str] | None, samples: int,
               operator: str, seed: int, out: str | None, json_out: bool, progress: bool = True,
               about: dict | None = None) -> None:
    from ..curvature import per_layer

    res = per_layer(obj, group=group, blocks=blocks or None, samples=samples, operator=operator, seed=seed,
                    progress=progress, meta={"model": model, "data": data})
    files = res.plot(f"{out}/per_layer_curvature") if out else []
    if json_out:
        print_json(res.to_dict() | {"files": files, "model": info} | (about or {}))
        return
    if about:
        console.print(data_line(about["data"], about["loss_function"]))
    table = Table(title=esc(f"Per-{group} curvature of the {operator}: {model} on {data} ({res.mode} mode)"))
    for col in ("block", "size", "λmax", "residual", "trace ± s.e.", "share ± s.e.", "cost"):
        table.add_column(col)
    for x in res.layers:
        table.add_row(esc(x.name), str(x.size), f"{x.lambda_max:.5g}",
                      f"{x.residual:.1e}" + ("" if x.converged else " NO"),
                      fmt(x.trace, x.trace_stderr), fmt(x.share, x.share_stderr), fmt_cost(x.cost))
    table.add_row("total", str(sum(x.size for x in res.layers)), "-", "-",
                  fmt(res.total_trace, res.total_trace_stderr), "1" if res.complete else "-", fmt_cost(res.cost))
    console.print(table)
    console.print(f"trace: {res.method}, {res.samples} Rademacher probes per block; λmax: Lanczos per block "
                  "(true residual ‖Hv − λv‖)")
    if files:
        console.print("figure: " + esc(", ".join(p for p in files if p.endswith((".png", ".csv")))))
