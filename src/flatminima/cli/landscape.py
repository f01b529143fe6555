"""``flatminima landscape``: 1-D/2-D slices, trajectory-PCA contours, interpolation, or all at once."""

from __future__ import annotations

import typer

from .common import (
    check_measure_options,
    check_options,
    check_positive,
    console,
    esc,
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
    resolve_device,
    run_name,
)

MODES = ("slice", "pca", "interpolate", "connect", "paper")


def register(app: typer.Typer) -> None:
    app.command("landscape")(landscape)


def landscape(
    mode: str = typer.Option(
        "slice",
        help="slice (1-D/2-D), pca (trajectory contour), interpolate (two "
        "solutions), connect (trained low-loss curve between two solutions vs the straight line), "
        "or paper (all figures for a small- vs large-batch pair)",
    ),
    model: str = typer.Option("mlp", help="built-in model (mlp, cnn1d) or 'module:factory' (the current folder "
                              "is importable)"),
    model_arg: list[str] | None = opt_model_arg(),
    data: str = typer.Option(
        "mnist1d", help="built-in data set, a data file (.npz, .csv, .pt) or 'module:factory'"
    ),
    data_arg: list[str] | None = opt_data_arg(),
    checkpoint: str | None = typer.Option(
        None, help="state-dict checkpoint (θ_a for interpolate); without it the model is trained"
    ),
    checkpoint_b: str | None = typer.Option(None, help="second checkpoint θ_b for --mode interpolate / connect"),
    seed_b: int | None = typer.Option(None, help="connect: seed of the second trained model (default seed + 1)"),
    curve: str = typer.Option("bezier", help="connect: bezier (quadratic Bézier) or polychain (one bend)"),
    curve_epochs: int = typer.Option(20, help="connect: epochs of training the curve's control point"),
    curve_lr: float = typer.Option(0.01, help="connect: learning rate of the curve's control point"),
    curve_optimizer: str = typer.Option("adam", help="connect: adam or sgd for the control point"),
    plane_steps: int = typer.Option(31, help="connect: grid points per axis of the plane figure (0: none)"),
    epochs: int = typer.Option(20, help="training epochs when a model is trained"),
    batch_size: int = typer.Option(32, help="training batch size (the small batch in paper/interpolate)"),
    large_batch: int = typer.Option(512, help="large training batch size (paper/interpolate)"),
    lr: float = typer.Option(0.05, help="SGD learning rate when training"),
    target_train_loss: float | None = typer.Option(
        None, "--target-train-loss", help="paper: train both models to this exact train loss (epochs = the cap), "
        "so they are compared at a matched loss"),
    kind: str = typer.Option("filter", help="directions for --mode slice: filter, layer, random or hessian"),
    dims: int = typer.Option(2, help="1 or 2 directions for --mode slice"),
    steps: int = typer.Option(51, help="grid points per axis"),
    span: float = typer.Option(1.0, help="coefficients run over [-span, span]"),
    include_1d: bool = typer.Option(
        False, help="keep biases/BatchNorm in normalised directions (default zero)"
    ),
    recompute_bn: bool = typer.Option(
        False, help="interpolate: recompute BatchNorm statistics at every point"
    ),
    test: bool = typer.Option(True, help="also evaluate on the test split"),
    memory_mb: float = typer.Option(
        512.0, help="memory budget (MiB) of the grid evaluation: a vmap chunk on GPUs; cached layer outputs "
        "and merged batches on the CPU"),
    log: bool = typer.Option(False, "--log", help="logarithmic loss axis / colour scale"),
    dtype: str = opt_dtype(),
    device: str = opt_device("training, checkpoint loading and the grid evaluation"),
    seed: int = opt_seed(0, "training and directions"),
    out: str | None = opt_out("landscape", "figures (PNG, SVG) and data (CSV, NPZ, JSON)"),
    progress: bool = opt_progress(),
    json_out: bool = opt_json(),
) -> None:
    """Draw loss-landscape figures (Li et al. 2018) with exact full-data losses, into --out."""
    import torch

    from ..errors import FlatminimaError, require_choice
    from ..workflows import landscape_figures as figures
    from ..workflows.common import get_data

    require_choice("--mode", mode, MODES)
    require_choice("--kind", kind, ("filter", "layer", "random", "hessian"))
    require_choice("--curve", curve, ("bezier", "polychain"))
    check_measure_options(dtype=dtype, device=device)
    device = resolve_device(device)  # auto → cuda, mps or cpu; checked before any data is loaded
    if dims not in (1, 2):
        raise FlatminimaError(f"--dims must be 1 or 2, got {dims}.")
    for name, value in (("--epochs", epochs), ("--batch-size", batch_size), ("--large-batch", large_batch),
                        ("--steps", steps), ("--curve-epochs", curve_epochs)):
        check_positive(name, value)
    if not span > 0 or not lr > 0:
        raise FlatminimaError(f"--span and --lr must be positive, got {span!r} and {lr!r}.")
    check_options(span=span, lr=lr, curve_lr=curve_lr, memory_mb=memory_mb, plane_steps=plane_steps,
                  target_train_loss=target_train_loss)
    from ..validate import check_grid

    axes = 2 if mode == "paper" or (mode == "slice" and dims == 2) else 1
    check_grid("--steps", steps**axes, shape=" × ".join([str(steps)] * axes))
    if mode == "connect" and plane_steps:
        check_grid("--plane-steps", plane_steps**2, shape=f"{plane_steps} × {plane_steps}")
    model_kw, data_kw = parse_kv(model_arg), parse_kv(data_arg)
    out = out_folder("landscape", out, run_name(mode, model, data, mode=mode, model=model, data=data,
                                                model_kw=model_kw, data_kw=data_kw, epochs=epochs, seed=seed,
                                                checkpoint=checkpoint, checkpoint_b=checkpoint_b))
    dataset, tdtype, progress = get_data(data, **data_kw), getattr(torch, dtype), progress and not json_out
    if mode == "connect":
        from ..workflows.connect import connect_models

        summary = connect_models(
            dataset, out, model=model, checkpoint=checkpoint, checkpoint_b=checkpoint_b, seed=seed, seed_b=seed_b,
            epochs=epochs, batch_size=batch_size, lr=lr, curve=curve, curve_epochs=curve_epochs, curve_lr=curve_lr,
            optimizer=curve_optimizer, steps=steps, plane_steps=plane_steps, test=test,
            recompute_bn=True if recompute_bn else "auto", dtype=tdtype, log=log, progress=progress,
            model_kw=model_kw, device=device,
        )
        summary.pop("result")
        _report(summary, json_out)
        return
    if mode == "paper":
        summary = figures.paper_figures(
            dataset,
            out,
            model=model,
            small_batch=batch_size,
            large_batch=large_batch,
            epochs=epochs,
            lr=lr,
            steps=steps,
            span=span,
            seed=seed,
            memory_mb=memory_mb,
            log=log,
            dtype=tdtype,
            progress=progress,
            target_train_loss=target_train_loss,
            device=device,
            **model_kw,
        )
        _report(summary, json_out)
        return
    kw = dict(
        model=model,
        checkpoint=checkpoint,
        checkpoint_b=checkpoint_b,
        epochs=epochs,
        batch_size=batch_size,
        large_batch=large_batch,
        lr=lr,
        kind=kind,
        dims=dims,
        steps=steps,
        span=span,
        include_1d=include_1d,
        recompute_bn=recompute_bn,
        test=test,
        memory_mb=memory_mb,
        log=log,
        dtype=tdtype,
        seed=seed,
        out=out,
        progress=progress,
        model_kw=model_kw,
        device=device,
    )
    summary = figures.single_figure(dataset, mode, **kw)
    _report(summary, json_out)


def _report(summary: dict, json_out: bool) -> None:
    if json_out:
        print_json(summary)
        return
    for name, paths in summary["files"].items():
        console.print(f"[bold]{esc(name)}[/bold]: " + esc(", ".join(p for p in paths if p.endswith((".png", ".csv")))))
    if "barrier" in summary:
        for key, b in summary["barrier"].items():
            console.print(f"barrier ({key}): {b['height']:.4g} at t={b['t']:.3g}")
    if "pca_explained_variance" in summary:
        console.print(
            "PCA explained variance: " + ", ".join(f"{v:.3f}" for v in summary["pca_explained_variance"])
        )
    if "cost" in summary:
        console.print("cost: " + fmt_cost(summary["cost"]))
