"""The standard figure set, in one call: what ``flatminima landscape --mode paper`` draws.

For a built-in (or user) model on a data set, trains a small-batch and a large-batch solution with
:func:`flatminima.train.fit` (the classic flat-vs-sharp pair of Keskar et al. 2017), then writes into one
folder: 1-D filter-normalised slices of both overlaid, a 2-D filter-normalised contour and 3-D view of the
small-batch solution, the trajectory-PCA contour with the training path on it, and the linear
interpolation large-batch → small-batch with its barrier. Each figure as PNG + SVG with its data
(CSV, NPZ, JSON).

Every figure names its model(s) with their exact train loss and accuracy, and says whether the two were
compared at a matched training loss: with ``target_train_loss`` both stop at the first epoch whose exact
train loss is ≤ the target (Keskar et al. 2017 compare at matched loss); without it both train the same
number of epochs, so the large-batch one usually ends at a higher loss, and the figures say so.

A workflow: it trains the models it draws (with :mod:`flatminima.train`) and draws them with the library's
:mod:`flatminima.landscape` (directions, slices, interpolation, surfaces), which itself trains nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..errors import require_positive_int
from ..landscape import Surface, directions, interpolate, plot_curves, slice_1d, slice_2d
from ..models import build
from ..objective import Objective
from ..train import Recipe, TrainResult, evaluate, fit, make_recipe

Device = str | torch.device

__all__ = ["paper_figures", "single_figure", "train_pair"]


def _train(model: str, dataset: Dataset, recipe: Recipe, progress: bool, device: Device = "cpu",
           **model_kw: Any) -> TrainResult:
    torch.manual_seed(recipe.seed)  # same initial weights for every batch size: only the batch size differs
    net = build(model, dataset.input_shape, dataset.num_classes, **model_kw)  # built on the CPU: same init
    return fit(net, dataset.train, recipe, progress=progress, device=device)


def train_pair(
    model: str,
    dataset: Dataset,
    *,
    small_batch: int = 32,
    large_batch: int = 512,
    epochs: int = 20,
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    target_train_loss: float | None = None,
    device: Device = "cpu",
    **model_kw: Any,
) -> dict[str, TrainResult]:
    """Train the same model from the same initialisation with a small and a large batch size.

    With ``target_train_loss`` each run stops at the first epoch whose exact train loss is ≤ the target
    (``epochs`` is then the cap), so the pair is compared at a matched training loss. ``device``: where both
    train (:func:`flatminima.train.fit`); the initial weights are drawn on the CPU either way."""
    require_positive_int("small_batch", small_batch)
    require_positive_int("large_batch", large_batch)
    out = {}
    for name, bs in (("small-batch", small_batch), ("large-batch", large_batch)):
        recipe = make_recipe(batch_size=bs, epochs=epochs, lr=lr, seed=seed, target_train_loss=target_train_loss)
        out[name] = _train(model, dataset, recipe, progress, device, **model_kw)
    return out


def _fit_stats(run: TrainResult, dataset: Dataset, device: Device = "cpu") -> dict[str, float]:
    """The trained model's exact train loss and accuracy (eval mode, all training data)."""
    ev = evaluate(run.model, dataset.train, device=device)
    acc = ev.get("accuracy", float("nan"))
    return {"exact_train_loss": ev["loss"], "exact_train_accuracy": acc, "epochs": run.epochs_run}


def _describe(name: str, batch: int, st: dict[str, float]) -> str:
    return f"{name} (batch {batch}): train loss {st['exact_train_loss']:.3g}, acc {st['exact_train_accuracy']:.3f}"


def _pairing_note(runs: dict[str, TrainResult], stats: dict[str, dict], target: float | None) -> tuple[bool, str]:
    """Whether the pair is at a matched training loss, and one line saying so for the figures."""
    losses = " vs ".join(f"{stats[n]['exact_train_loss']:.3g}" for n in runs)
    if target is not None and all(r.reached_target for r in runs.values()):
        epochs = " vs ".join(str(stats[n]["epochs"]) for n in runs)
        return True, f"matched: each stopped at the first epoch with train loss ≤ {target:g} ({epochs} epochs)"
    if target is not None:
        missed = ", ".join(n for n, r in runs.items() if not r.reached_target)
        return False, f"NOT matched: {missed} did not reach train loss ≤ {target:g} (train loss {losses})"
    epochs = stats[next(iter(runs))]["epochs"]
    return False, f"NOT matched at train loss ({losses}): both trained {epochs} epochs"


def _objectives(net: nn.Module, dataset: Dataset, dtype: torch.dtype,
                device: Device = "cpu") -> tuple[Objective, Objective]:
    return (
        Objective(net, "cross_entropy", dataset.train, dtype=dtype, device=device),
        Objective(net, "cross_entropy", dataset.test, dtype=dtype, device=device),
    )


def paper_figures(
    dataset: Dataset,
    out: str | Path,
    *,
    model: str = "mlp",
    small_batch: int = 32,
    large_batch: int = 512,
    epochs: int = 20,
    lr: float = 0.05,
    steps: int = 51,
    span: float = 1.0,
    seed: int = 0,
    memory_mb: float = 512.0,
    log: bool = False,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    target_train_loss: float | None = None,
    device: Device = "cpu",
    **model_kw: Any,
) -> dict[str, Any]:
    """Draw the four standard landscape figures into ``out`` and return a summary with every file written.

    ``target_train_loss``: train both models to this exact train loss (``epochs`` is the cap) so they are
    compared at a matched loss; without it both train ``epochs`` epochs and the figures say they are not
    matched. Each figure states each model's train loss and accuracy. ``device``: where the models train and
    the grids are evaluated (every Objective is built there); the values come back to the CPU for plotting."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = train_pair(
        model,
        dataset,
        small_batch=small_batch,
        large_batch=large_batch,
        epochs=epochs,
        lr=lr,
        seed=seed,
        progress=progress,
        target_train_loss=target_train_loss,
        device=device,
        **model_kw,
    )
    stats = {name: _fit_stats(run, dataset, device) for name, run in runs.items()}
    matched, note = _pairing_note(runs, stats, target_train_loss)
    desc = {name: _describe(name, run_batch(name, small_batch, large_batch), stats[name]) for name in runs}
    common = {"model": model, "data": dataset.name, "note": note}
    files: dict[str, list[str]] = {}
    curves: list[Surface] = []
    objs = {}
    for name, run in runs.items():
        train, test = objs[name] = _objectives(run.model, dataset, dtype, device)
        d = directions(train, "filter", 1, seed=seed)
        curves.append(
            slice_1d(
                train,
                d,
                steps=steps,
                span=(-span, span),
                test=test,
                memory_mb=memory_mb,
                progress=progress,
                label=desc[name],
                meta=common,
            )
        )
        curves[-1].save(out / f"slice1d_filter_{name}")
    files["slice1d_filter"] = plot_curves(curves, out / "slice1d_filter", log=log)
    train, test = objs["small-batch"]
    plane = slice_2d(
        train,
        directions(train, "filter", 2, seed=seed),
        steps=steps,
        span=(-span, span),
        test=test,
        memory_mb=memory_mb,
        progress=progress,
        label=desc["small-batch"],
        meta=common,
    )
    files["slice2d_filter"] = plane.plot(out / "slice2d_filter", log=log)
    pca = directions(train, "pca", 2, snapshots=runs["small-batch"].snapshots)
    reach = 1.2 * float(abs(pca.trajectory).max())  # the plane must contain the whole path
    path = slice_2d(
        train,
        pca,
        steps=steps,
        span=(-reach, reach),
        memory_mb=memory_mb,
        progress=progress,
        label=f"training path of the {desc['small-batch']}",
        meta=common,
    )
    files["pca_contour"] = path.plot(out / "pca_contour", kind="contour", log=log)
    lb = objs["large-batch"][0].params
    line = interpolate(
        train,
        lb,
        train.params,
        steps=steps,
        span=(-0.25, 1.25),
        test=test,
        memory_mb=memory_mb,
        progress=progress,
        label=(
            f"large-batch (train loss {stats['large-batch']['exact_train_loss']:.3g}) → "
            f"small-batch (train loss {stats['small-batch']['exact_train_loss']:.3g})"
        ),
        meta=common,
    )
    files["interpolation"] = line.plot(out / "interpolation_lb_sb", log=log)
    summary = {
        "files": files,
        "training": {n: r.history[-1] | stats[n] | {"seconds": r.seconds} for n, r in runs.items()},
        "matched_train_loss": matched,
        "pairing": note,
        # max over the 1-D slice of L(θ₀ + αd) − L(θ₀): a crude flatness read-out of the first figure
        "slice1d_rise": {c.label: float(c.loss.max() - c.loss[np.argmin(np.abs(c.axes[0]))]) for c in curves},
        "pca_explained_variance": [float(v) for v in pca.explained_variance_ratio],
        "barrier": line.meta["barrier"],
        "seconds": {
            "slice1d": sum(c.cost.seconds for c in curves),
            "slice2d": plane.cost.seconds,
            "pca": path.cost.seconds,
            "interpolation": line.cost.seconds,
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def run_batch(name: str, small: int, large: int) -> int:
    return small if name == "small-batch" else large


def _model_from(
    model: str, dataset: Dataset, checkpoint: str | None, recipe: Recipe, progress: bool, device: Device = "cpu",
    **model_kw: Any,
) -> tuple[nn.Module, TrainResult | None]:
    """A user's checkpoint loaded into ``model`` and moved to ``device``, or the model trained there with
    ``recipe`` (with snapshots)."""
    from ..train import load_checkpoint

    if checkpoint:
        torch.manual_seed(recipe.seed)
        net = build(model, dataset.input_shape, dataset.num_classes, **model_kw)
        load_checkpoint(checkpoint, net)  # read onto the CPU (map_location), then moved
        return net.to(device).eval(), None
    run = _train(model, dataset, recipe, progress, device, **model_kw)
    return run.model, run


def single_figure(
    dataset: Dataset,
    mode: str,
    *,
    model: str = "mlp",
    checkpoint: str | None = None,
    checkpoint_b: str | None = None,
    epochs: int = 20,
    batch_size: int = 32,
    large_batch: int = 512,
    lr: float = 0.05,
    kind: str = "filter",
    dims: int = 2,
    steps: int = 51,
    span: float = 1.0,
    include_1d: bool = False,
    recompute_bn: bool = False,
    test: bool = True,
    memory_mb: float = 512.0,
    log: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    out: str | Path = "landscape",
    progress: bool = True,
    model_kw: dict | None = None,
    device: Device = "cpu",
) -> dict[str, Any]:
    """One figure (``mode`` = ``slice`` | ``pca`` | ``interpolate``) for a trained or checkpointed model.

    ``device``: where the model trains (or its checkpoint is loaded) and the grid is evaluated."""
    from ..errors import FlatminimaError, require_choice

    require_choice("mode", mode, ["slice", "pca", "interpolate"])
    require_choice("kind", kind, ["filter", "layer", "random", "hessian"])
    require_choice("dims", dims, [1, 2])
    out = Path(out)
    recipe = make_recipe(batch_size=batch_size, epochs=epochs, lr=lr, seed=seed)
    if mode == "pca" and checkpoint:
        raise FlatminimaError("--mode pca needs the training trajectory: train here (drop --checkpoint).")
    model_kw = model_kw or {}
    net, run = _model_from(model, dataset, checkpoint, recipe, progress, device, **model_kw)
    train, test_obj = _objectives(net, dataset, dtype, device)
    test_obj = test_obj if test else None
    common = {"model": model, "data": dataset.name}
    ev = evaluate(net, dataset.train, device=device)
    who = f"{model} ({'checkpoint ' + Path(checkpoint).name if checkpoint else f'trained, batch {batch_size}'})"
    label = f"{who}: train loss {ev['loss']:.3g}, acc {ev.get('accuracy', float('nan')):.3f}"
    if mode == "slice":
        d = directions(train, kind, dims, seed=seed, include_1d=include_1d)
        fn = slice_1d if dims == 1 else slice_2d
        surf = fn(
            train,
            d,
            steps=steps,
            span=(-span, span),
            test=test_obj,
            memory_mb=memory_mb,
            progress=progress,
            label=label,
            meta=common,
        )
        name = f"slice{dims}d_{kind}"
    elif mode == "pca":
        d = directions(train, "pca", 2, snapshots=run.snapshots)
        reach = 1.2 * float(abs(d.trajectory).max())
        surf = slice_2d(
            train,
            d,
            steps=steps,
            span=(-reach, reach),
            memory_mb=memory_mb,
            progress=progress,
            label=label,
            meta=common,
        )
        name = "pca_contour"
    else:
        if checkpoint_b:
            net_b, _ = _model_from(model, dataset, checkpoint_b, recipe, progress, device, **model_kw)
        else:
            net_b, _ = _model_from(
                model,
                dataset,
                None,
                recipe.model_copy(update={"batch_size": large_batch}),
                progress,
                device,
                **model_kw,
            )
        theta_b = Objective(net_b, "cross_entropy", dataset.train, dtype=dtype, device=device).params
        surf = interpolate(
            train,
            train.params,
            theta_b,
            steps=steps,
            span=(-0.25, 1.25),
            test=test_obj,
            recompute_bn=recompute_bn,
            memory_mb=memory_mb,
            progress=progress,
            label=f"θ_a = {label} → θ_b",
            meta=common,
        )
        name = "interpolation"
    summary: dict[str, Any] = {
        "files": {name: surf.plot(out / name, log=log)},
        "cost": surf.cost.to_dict(),
        "directions": surf.meta["directions"],
    }
    if mode == "interpolate":
        summary["barrier"] = surf.meta["barrier"]
    if mode == "pca":
        summary["pca_explained_variance"] = summary["directions"]["explained_variance_ratio"]
    return summary
