"""``flatminima curvature``: top eigenvalues, trace and spectral density of a trained model."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import console, fmt, fmt_cost, parse_kv, print_json


def register(app: typer.Typer) -> None:
    app.command("curvature")(curvature)


def curvature(
    model: str = typer.Option("mlp", help="built-in model (mlp, cnn1d, ...) or 'package.module:factory'"),
    model_arg: list[str] | None = typer.Option(None, help="model keyword KEY=VALUE (repeatable), e.g. width=32"),
    data: str = typer.Option("mnist1d", help="built-in data set or a .npz file (x_train, y_train[, x_test, y_test])"),
    checkpoint: str | None = typer.Option(None, help="state-dict checkpoint; without it the model is trained"),
    epochs: int = typer.Option(20, help="training epochs when no checkpoint is given"),
    k: int = typer.Option(5, help="how many top eigenvalues"),
    probes: int = typer.Option(60, help="Hessian-vector products for the Hutch++ trace"),
    operator: str = typer.Option("hessian", help="hessian or ggn"),
    split: str = typer.Option("train", help="measure on the train or test split"),
    dtype: str = typer.Option("float32", help="float32 or float64"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ..."),
    seed: int = typer.Option(0, help="seed for training and for the random probes"),
    out: str | None = typer.Option(None, help="folder for the checkpoint and the density plot"),
    per_layer: bool = typer.Option(False, "--per-layer", help="per parameter block: λmax, trace ± s.e. and trace "
                                   "share (instead of the whole-model report); bar chart into --out"),
    group: str = typer.Option("parameter", help="--per-layer blocks: parameter (one per tensor) or module"),
    blocks: list[str] | None = typer.Option(None, help="--per-layer: only tensors matching this pattern (repeatable)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Train (or load) a model and print its curvature report with error bars and costs."""
    from ..curvature import curvature_report
    from ..workflow import get_data, get_model, objective_for

    dataset = get_data(data)
    net, info = get_model(model, dataset, checkpoint=checkpoint, recipe={"epochs": epochs, "seed": seed},
                          out_dir=out, progress=not json_out, **parse_kv(model_arg))
    obj = objective_for(net, dataset, split=split, dtype=dtype, device=device)
    if per_layer:
        _per_layer(obj, model, dataset.name, info, group=group, blocks=blocks, probes=probes, operator=operator,
                   seed=seed, out=out, json_out=json_out)
        return
    rep = curvature_report(obj, k=k, probes=probes, operator=operator, seed=seed)
    if out:
        rep["density_files"] = rep["density"].plot(f"{out}/spectral_density")
    if json_out:
        print_json({key: (v.to_dict() if hasattr(v, "to_dict") else v) for key, v in rep.items()} | {"model": info})
        return
    _print(rep, model, dataset.name)


def _print(rep: dict, model: str, data: str) -> None:
    o = rep["objective"]
    console.print(f"[bold]{model}[/bold] on [bold]{data}[/bold]: {o['dim']} parameters, {o['samples']:.0f} "
                  f"samples, {o['mode']} mode, {o['dtype']}; loss {rep['loss']:.5g}")
    table = Table(title=f"Curvature of the {rep['top'].operator} (full-data mean)")
    for col in ("quantity", "value", "true residual", "error bound", "converged", "cost"):
        table.add_column(col)
    top, bottom = rep["top"], rep["bottom"]
    rows = [(f"λ{i + 1}", top, i) for i in range(len(top.values))] + [("λmin", bottom, 0)]
    for name, res, i in rows:
        table.add_row(name, f"{res.values[i]:.6g}", f"{res.residuals[i]:.1e}", f"{res.error_bounds[i]:.1e}",
                      "yes" if res.converged[i] else "NO", fmt_cost(res.cost) if i == 0 else "")
    tr = rep["trace"]
    table.add_row("trace (Hutch++)", fmt(tr.value, tr.stderr), "-", f"±{tr.stderr:.2g} (s.e.)", "-", fmt_cost(tr.cost))
    d = rep["density"]
    table.add_row("negative mass (SLQ)", fmt(d.negative_mass, d.negative_mass_stderr), "-", "s.e. over probes", "-",
                  fmt_cost(d.cost))
    table.add_row("outliers above bulk", ", ".join(f"{x:.4g}" for x in d.outliers[:5]) or "none", "-",
                  f"bulk edge {d.bulk_edge:.3g}", "-", "")
    console.print(table)
    console.print(f"true residual ‖Hv − λv‖ from one extra product per pair; no bound is below the {o['dtype']} "
                  f"rounding floor eps·‖H‖·√dim = {top.floor:.1e}")
    if "density_files" in rep:
        console.print("density plot: " + ", ".join(rep["density_files"]))


def _per_layer(obj, model: str, data: str, info: dict, *, group: str, blocks: list[str] | None, probes: int,
               operator: str, seed: int, out: str | None, json_out: bool) -> None:
    from ..curvature import per_layer

    res = per_layer(obj, group=group, blocks=blocks or None, probes=probes, operator=operator, seed=seed,
                    progress=not json_out, meta={"model": model, "data": data})
    files = res.plot(f"{out}/per_layer_curvature") if out else []
    if json_out:
        print_json(res.to_dict() | {"files": files, "model": info})
        return
    table = Table(title=f"Per-{group} curvature of the {operator}: {model} on {data} ({res.mode} mode)")
    for col in ("block", "size", "λmax", "residual", "trace ± s.e.", "share ± s.e.", "cost"):
        table.add_column(col)
    for x in res.layers:
        table.add_row(x.name, str(x.size), f"{x.lambda_max:.5g}", f"{x.residual:.1e}" + ("" if x.converged else " NO"),
                      fmt(x.trace, x.trace_stderr), fmt(x.share, x.share_stderr), fmt_cost(x.cost))
    table.add_row("total", str(sum(x.size for x in res.layers)), "-", "-",
                  fmt(res.total_trace, res.total_trace_stderr), "1" if res.complete else "-", fmt_cost(res.cost))
    console.print(table)
    console.print(f"trace: {res.method}, {res.probes} Rademacher probes per block; λmax: Lanczos per block "
                  "(true residual ‖Hv − λv‖)")
    if files:
        console.print("figure: " + ", ".join(p for p in files if p.endswith((".png", ".csv"))))
