"""``flatminima inspect``: one command, one page: the geometry of one trained model (`flatminima.inspect`)."""

from __future__ import annotations

import typer

from .common import (
    check_checkpoint_paths,
    check_measure_options,
    check_options,
    checkpoint_label,
    console,
    esc,
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
    resolve_device,
    run_name,
    say,
)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)


def inspect_command(
    model: str = typer.Option("mlp", help="built-in model (mlp, cnn1d, ...) or 'module:factory'"),
    model_arg: list[str] | None = opt_model_arg(),
    data: str = typer.Option("mnist1d", help="built-in data set, a data file (.npz, .csv, .pt with x_train, y_train) "
                             "or 'module:factory'"),
    data_arg: list[str] | None = opt_data_arg(),
    checkpoint: str | None = typer.Option(None, help="state-dict checkpoint; without it the model is trained"),
    loss: str | None = opt_loss(),
    lr: float | None = typer.Option(None, "--lr", help="learning rate η for the stability threshold (with "
                                    "--optimizer)"),
    optimizer: str | None = typer.Option(None, "--optimizer", help="sgd (2/η), momentum (heavy ball, (2+2β)/η) or "
                                         "adam ((2+2β₁)/((1−β₁)η) against λmax(P⁻¹H), P from the checkpoint's "
                                         "optimiser state)"),
    momentum: float = typer.Option(0.9, help="β of --optimizer momentum"),
    beta1: float = typer.Option(0.9, "--beta1", help="β₁ of --optimizer adam"),
    compare: list[str] | None = typer.Option(None, "--compare", help="another checkpoint of the same architecture "
                                             "(repeatable): barriers, eigenspace overlap, numbers side by side"),
    budget: str = typer.Option("standard", help="fast, standard, full, or a number of Hessian-vector products"),
    epochs: int = typer.Option(20, help="training epochs when no checkpoint is given"),
    dtype: str = opt_dtype(),
    device: str = opt_device(),
    seed: int = opt_seed(),
    out: str | None = opt_out("inspect", "page.html, inspection.json, CSVs and figures"),
    progress: bool = opt_progress(),
    json_out: bool = opt_json(),
) -> None:
    """Train (or load) a model and write one page of its geometry: curvature, per-layer, sharpness, slices,
    stability threshold and compared solutions, each number with its error bar and cost."""
    from .. import inspection
    from ..train import load_checkpoint
    from ..workflows.common import build_for, check_checkpoint, default_loss, get_data, get_model, resolve_loss

    check_measure_options(dtype=dtype, device=device, epochs=None if checkpoint else epochs)
    check_options(lr=lr, momentum=momentum, beta1=beta1)
    inspection.check_optimizer(optimizer, lr, momentum, beta1)  # --lr without --optimizer etc.: refused now
    inspection.budget.budget_settings(budget)
    if checkpoint:
        check_checkpoint_paths([checkpoint])
    others = check_checkpoint_paths(compare or [], "--compare")
    resolve_loss(loss)
    model_kw, data_kw = parse_kv(model_arg), parse_kv(data_arg)
    dev = resolve_device(device)
    name = run_name(model, data, model=model, data=data, model_kw=model_kw, data_kw=data_kw, epochs=epochs,
                    seed=seed, loss=loss, checkpoint=checkpoint, compare=others, budget=budget, lr=lr,
                    optimizer=optimizer)
    folder = out_folder("inspect", out, name)
    show = progress and not json_out
    dataset = get_data(data, **data_kw)
    loss_name = loss or default_loss(dataset)
    shape = build_for(model, dataset, **model_kw)
    for path in others:  # a checkpoint of another architecture is refused before any training or measuring
        check_checkpoint(path, shape, "--compare")
    net, info = get_model(model, dataset, checkpoint=checkpoint, recipe={"epochs": epochs, "seed": seed},
                          out_dir=None if checkpoint else folder, progress=show, device=dev, loss=loss_name,
                          say=None if json_out else say, **model_kw)
    ckpt = checkpoint or info.get("checkpoint")
    state = load_checkpoint(ckpt).get("optimizer") if (ckpt and optimizer == "adam") else None
    labels = [checkpoint_label(p, others) for p in others]
    ins = inspection.inspect(net, dataset, loss_name, others=others, names=labels, lr=lr, optimizer=optimizer,
                             momentum=momentum, beta1=beta1, optimizer_state=state, budget=budget, seed=seed,
                             out=folder, progress=show, dtype=dtype, device=dev, title=f"{model} on {dataset.name}",
                             say=None if json_out else say)
    if json_out:
        print_json(ins.to_dict())
        return
    for w in ins.warnings:
        console.print(f"[yellow]warning:[/yellow] {esc(w['text'])}", markup=True, highlight=False)
    console.print(f"λmax {ins.lambda_max:.5g}, loss {ins.loss:.5g}; {int(ins.cost.hvps)} HVPs in {ins.seconds:.1f} s")
    console.print(f"page: {esc(ins.html)}")
