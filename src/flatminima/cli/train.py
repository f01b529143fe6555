"""``flatminima train``: a recipe (options and/or a TOML file), a model and data in; a checkpoint, metrics
JSON (train, test, each distribution shift) and a training-curve plot (PNG, SVG, CSV) out."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import typer

from ..errors import FlatminimaError
from .common import (
    check_out_folder,
    check_positive,
    check_recipe_file,
    console,
    esc,
    opt_data_arg,
    opt_device,
    opt_json,
    opt_model_arg,
    opt_out,
    opt_progress,
    opt_seed,
    out_folder,
    print_json,
    resolve_device,
    run_name,
)


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def _value(text: str):
    """A command-line value: JSON/TOML literal (number, true/false, list) or else a plain string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _pairs(items: list[str], what: str) -> dict:
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise FlatminimaError(f"{what} takes key=value, got {item!r}.")
        out[key.strip().replace("-", "_")] = _value(val.strip())
    return out


def train(
    model: str = typer.Option("mlp", help="mlp, cnn1d, cnn2d, resnet, vgg or 'module:factory' (the current folder "
                              "is importable)"),
    data: str = typer.Option("mnist1d", help="mnist1d, digits, two_class, a .npz/.csv/.pt file, or 'module:factory' "
                             "returning a Dataset/DataLoader"),
    recipe: str | None = typer.Option(None, help="TOML recipe file (flags below override it)"),
    optimizer: str | None = typer.Option(None, help="sgd, adam, adamw, rmsprop, adagrad"),
    lr: float | None = typer.Option(None, help="learning rate"),
    momentum: float | None = typer.Option(None),
    weight_decay: float | None = typer.Option(None),
    batch_size: str | None = typer.Option(None, help="mini-batch size, or 'full' for full-batch GD"),
    epochs: int | None = typer.Option(None, help="epochs (the cap when --target-train-loss is given)"),
    target_train_loss: float | None = typer.Option(
        None, help="stop at the first epoch whose exact train loss (eval mode, all train data) is <= this"),
    seed: int | None = opt_seed(None, "the initialisation and the training (default: the recipe's, 0)"),
    schedule: str | None = typer.Option(None, help="constant, step, cosine, warm_restarts"),
    sam: str | None = typer.Option(None, help="none, sam, asam"),
    rho: float | None = typer.Option(None, help="SAM radius"),
    swa: bool | None = typer.Option(None, "--swa/--no-swa", help="stochastic weight averaging"),
    swa_start: int | None = typer.Option(None),
    swa_lr: float | None = typer.Option(None),
    noise: str | None = typer.Option(None, help="none, gaussian, pgd, anticorrelated"),
    noise_std: float | None = typer.Option(None),
    label_smoothing: float | None = typer.Option(None),
    augment: str | None = typer.Option(None, help="comma-separated: shift,noise,flip"),
    set_: list[str] = typer.Option([], "--set", help="any other recipe field: --set t0=5 (repeatable)"),
    model_arg: list[str] | None = opt_model_arg(),
    data_arg: list[str] | None = opt_data_arg(),
    shifts: bool = typer.Option(True, help="evaluate the data set's distribution shifts (built-in data)"),
    ensemble: int = typer.Option(1, help="train N members (seeds seed..seed+N-1) and evaluate their average"),
    out: str | None = opt_out("train", "checkpoint, metrics.json and the curve plot"),
    device: str = opt_device("training and evaluation"),
    progress: bool = opt_progress(),
    json_out: bool = opt_json(),
    track_sharpness: str | None = typer.Option(
        None, help="record λmax (warm Lanczos), the optimiser's stability threshold, the preconditioned and batch "
                   "sharpness and the loss: 'every=N' plus optional ',probe=M' (first M train samples; default "
                   "all), ',batch_samples=K', ',batch_sharpness=B|none', ',tol=T', ',seed=S', ',warm=false' "
                   "(cold Lanczos every record), ',refresh=K' (a cold start every K-th record, 0 never; "
                   "default 10), ',extrapolate=true' (warm start from v_t + (v_t - v_t-1)); booleans take "
                   "true/false, 1/0, yes/no; writes track.sqlite and sharpness.png/svg/csv"),
) -> None:
    """Train a model with a recipe and write its checkpoint, metrics (with shifts) and training curve."""
    from ..train.recipes import Recipe, make_recipe

    check_recipe_file(recipe)
    check_positive("--ensemble", ensemble)
    if epochs is not None:
        check_positive("--epochs", epochs)
    check_out_folder("--out", out)
    dev = resolve_device(device)

    flags = dict(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                 batch_size=None if batch_size is None else _value(batch_size), epochs=epochs,
                 target_train_loss=target_train_loss, seed=seed,
                 schedule=schedule, sam=sam, rho=rho, swa=swa, swa_start=swa_start, swa_lr=swa_lr,
                 noise=noise,
                 noise_std=noise_std, label_smoothing=label_smoothing,
                 augment=None if augment is None else [a.strip() for a in augment.split(",") if a.strip()])
    base = Recipe.from_toml(recipe) if recipe else None
    r = make_recipe(base, **{k: v for k, v in flags.items() if v is not None}, **_pairs(set_, "--set"))
    tracking = None if track_sharpness is None else parse_track_sharpness(track_sharpness)
    if tracking is not None and ensemble > 1:
        raise FlatminimaError("--track-sharpness tracks one run; drop --ensemble.")
    model_kw, data_kw = _pairs(model_arg or [], "--model-arg"), _pairs(data_arg or [], "--data-arg")
    out = out_folder("train", out, run_name(model, data, model=model, data=data, recipe=r.model_dump(),
                                            model_kw=model_kw, data_kw=data_kw, ensemble=ensemble, shifts=shifts))
    if not json_out and (Path(out) / "last.pt").exists():
        console.print(f"reusing the training run in {esc(out)} (it resumes, or stops at once if finished; delete the "
                      "folder or give another --out to train afresh)")
    summary = run_training(model, data, r, model_kwargs=model_kw, data_kwargs=data_kw, shifts=shifts,
                           members=ensemble, out=out, device=dev, progress=progress and not json_out,
                           track_sharpness=tracking)
    if json_out:
        print_json(summary)
        return
    m = summary["metrics"]
    console.print(f"[bold]{esc(model)}[/bold] on [bold]{esc(data)}[/bold], {summary['epochs_run']} epochs in "
                  f"{summary['seconds']:.1f}s: train loss {m['train']['loss']:.4g}, "
                  f"test loss {m['test']['loss']:.4g}"
                  + (f", test accuracy {m['test']['accuracy']:.4f}" if "accuracy" in m["test"] else ""))
    for name, sev in m.get("shifts", {}).items():
        accs = " ".join(f"{s}:{v.get('accuracy', v['loss']):.3f}" for s, v in sev.items())
        console.print(f"  shift {esc(f'{name:15s}')} accuracy by severity {accs}")
    if r.target_train_loss is not None:
        runs = summary["training"] if isinstance(summary["training"], list) else [summary["training"]]
        missed = [i for i, t in enumerate(runs) if not t["reached_target"]]
        console.print(f"target train loss {r.target_train_loss:g}: "
                      + ("reached" if not missed else f"[yellow]not reached within {r.epochs} epochs[/yellow]"
                         + (f" (members {missed})" if len(runs) > 1 else "")))
    if "dynamics" in summary:
        d = summary["dynamics"]
        th = d.get("threshold")
        console.print(f"edge of stability ({th['formula']} = {th['value']:.4g} at the last record)" if th else
                      "sharpness tracked", end=": ")
        console.print(f"onset at step {d['onset']}, sharpness/threshold median {d['ratio_median']:.3f} "
                      f"(range {d['ratio_min']:.3f}-{d['ratio_max']:.3f}) from then on" if d.get("onset") is not None
                      else f"not reached (sharpness/threshold {d.get('initial_ratio')} at the start)")
    console.print("written: " + esc(", ".join(summary["files"])))


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise FlatminimaError(f"--track-sharpness {key}= takes true/false (or 1/0, yes/no), got {value!r}.")


def _integer(key: str, value: Any, least: int | None) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise FlatminimaError(f"--track-sharpness {key}= takes an integer, got {value!r}.")
    try:
        n = int(value) if not isinstance(value, str) else int(value.strip())
    except (TypeError, ValueError):
        raise FlatminimaError(f"--track-sharpness {key}= takes an integer, got {value!r}.") from None
    if least is not None and n < least:
        raise FlatminimaError(f"--track-sharpness {key}= must be >= {least}, got {n}.")
    return n


def _positive_float(key: str, value: Any) -> float:
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise FlatminimaError(f"--track-sharpness {key}= takes a positive number, got {value!r}.")
    return x


def _batch_sharpness(key: str, value: Any) -> int | None:
    if value is None or str(value).strip().lower() in ("none", "off"):
        return None
    return _integer(key, value, 1)


# each option of --track-sharpness and how its text becomes the SharpnessMonitor's argument
_TRACK_OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "every": lambda k, v: _integer(k, v, 1),
    "probe": lambda k, v: _integer(k, v, 1),
    "batch_samples": lambda k, v: _integer(k, v, 1),
    "batch_sharpness": _batch_sharpness,
    "tol": _positive_float,
    "seed": lambda k, v: _integer(k, v, None),
    "warm": _flag,
    "refresh": lambda k, v: _integer(k, v, 0),
    "extrapolate": _flag,
}
_TRACK_KEYS = set(_TRACK_OPTIONS)


def parse_track_sharpness(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``--track-sharpness`` ('every=10,extrapolate=true,refresh=5', or a dict of them, as
    ``run_training`` takes) checked and typed as :class:`~flatminima.dynamics.SharpnessMonitor` takes them
    (``probe`` stays for the caller: it cuts the probe set).

    Checked here, before any training, so that a typo ('extrapolate=ture') stops the command at once rather
    than being read as a string, which Python would take for true.
    """
    if isinstance(spec, str):
        raw: dict[str, Any] = {}
        for item in (p.strip() for p in spec.split(",")):
            if not item:
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise FlatminimaError(f"--track-sharpness takes key=value items, got {item!r}.")
            raw[key.strip().replace("-", "_")] = val.strip()
    else:
        raw = dict(spec)
    unknown = sorted(set(raw) - _TRACK_KEYS)
    if unknown or "every" not in raw:
        raise FlatminimaError(f"--track-sharpness takes every=N and optionally {sorted(_TRACK_KEYS - {'every'})}; "
                              f"got {sorted(raw)}.")
    options = {key: _TRACK_OPTIONS[key](key, value) for key, value in raw.items()}
    if options.get("extrapolate") and options.get("warm") is False:
        raise FlatminimaError("--track-sharpness extrapolate=true moves the warm start; it does nothing with "
                              "warm=false (every record cold): drop one of them.")
    return options


def run_training(model: str, data: str, recipe, *, model_kwargs: dict, data_kwargs: dict, shifts: bool,
                 members: int, out: str, device: str, progress: bool, track_sharpness: dict | None = None
                 ) -> dict:
    """The library calls behind ``flatminima train`` (importable for scripts and tests); ``track_sharpness``
    takes the options of ``--track-sharpness`` as a dict (see :func:`parse_track_sharpness`)."""
    import torch

    from ..models import build
    from ..train import save_checkpoint, train_ensemble
    from ..train.report import run_metrics, save_curve, write_json
    from ..workflows.common import get_data
    from ..workflows.pipeline import train_model

    suffix = Path(data).suffix.lower()
    if shifts and not suffix and data != "two_class" and ":" not in data:
        data_kwargs = {"shifts": True, **data_kwargs}
    dataset = get_data(data, **data_kwargs)
    outp = Path(out)
    make = lambda: build(model, dataset.input_shape, dataset.num_classes, **model_kwargs)  # noqa: E731
    monitor = None
    if members > 1:
        if track_sharpness:
            raise FlatminimaError("--track-sharpness tracks one run; drop --ensemble.")
        net, results = train_ensemble(make, dataset.train, recipe, members=members, checkpoint_dir=outp,
                                      progress=progress, device=device, eval_data=dataset.test)
        history, seconds = results[0].history, sum(r.seconds for r in results)
        training = [_training(r) for r in results]
    else:
        torch.manual_seed(recipe.seed)
        net = make()
        monitor = _monitor(net, dataset.train, recipe, track_sharpness, outp) if track_sharpness else None
        net, res = train_model(net, dataset.train, recipe, checkpoint_dir=outp, progress=progress, device=device,
                               eval_data=dataset.test,
                               step_callback=None if monitor is None else lambda s, m, o: monitor.step(s, optimizer=o))
        history, seconds = res.history, res.seconds
        training = _training(res)
    metrics = run_metrics(net, dataset, loss=recipe.loss, device=device)
    files = [save_checkpoint(outp / "model.pt", net, recipe=recipe.model_dump(), model_name=model,
                             model_kwargs=json.dumps(model_kwargs), data=data)]
    files += save_curve(history, outp / "curve")
    dynamics = None
    if monitor is not None:
        from dataclasses import asdict

        from ..dynamics import plot_dynamics, summarize

        monitor.close()
        files += [str(outp / "track.sqlite")] + plot_dynamics(monitor.history, outp / "sharpness",
                                                             title=f"{model} on {data}, {recipe.optimizer}")
        dynamics = summarize(monitor.history) | {
            "threshold": asdict(monitor.threshold) if monitor.threshold else None,
            "probe": monitor.probe_size, "every": monitor.every, "warm": monitor.warm,
            "refresh": monitor.refresh, "extrapolate": monitor.extrapolate}
    summary = {"model": model, "data": data, "recipe": recipe.model_dump(), "model_kwargs": model_kwargs,
               "data_kwargs": data_kwargs, "members": members, "epochs": recipe.epochs, "seconds": seconds,
               "epochs_run": max(t["epochs_run"] for t in training) if members > 1 else training["epochs_run"],
               "training": training,
               "metrics": metrics, "history": history}
    if dynamics is not None:
        summary["dynamics"] = dynamics
    files.append(write_json(outp / "metrics.json", summary))
    summary["files"] = files
    return summary


def _monitor(net, train, recipe, options: dict, outp: Path):
    """The SharpnessMonitor behind ``--track-sharpness``: on all training data (the full-data Hessian) or its
    first ``probe`` samples, with the recipe's loss; batch sharpness at the recipe's batch size for
    mini-batch runs."""
    from ..dynamics import SharpnessMonitor
    from ..train.losses import loss_function

    options = parse_track_sharpness(options)
    if recipe.sam != "none" or recipe.swa:
        raise FlatminimaError("--track-sharpness supports plain optimiser steps; drop sam/swa.")
    X, y = train
    probe = options.pop("probe", None)
    if probe is not None:
        X, y = X[:probe], y[:probe]
    bs = recipe.batch_for(len(train[0]))
    options.setdefault("batch_sharpness", bs if bs < len(train[0]) else None)
    outp.mkdir(parents=True, exist_ok=True)
    (outp / "track.sqlite").unlink(missing_ok=True)
    mon = SharpnessMonitor(net, (X, y), loss=loss_function(recipe.loss), store=outp / "track.sqlite",
                           run="train", **options)
    mon.probe_size = len(X)
    return mon


def _training(res) -> dict:
    """How the run ended: epochs trained, exact final train loss, whether the target was reached (the shared
    pipeline's :func:`~flatminima.workflows.pipeline.training_record`)."""
    from ..workflows.pipeline import training_record

    return training_record(res)
