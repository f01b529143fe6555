"""One run, start to finish, as a pure function of its config: train → measure → evaluate.

It runs in whatever process an executor chooses (the coordinator itself, a spawned pool worker, a Ray
worker), so it takes and returns plain JSON-able dicts and never touches the store. Each run uses one
thread (``torch.set_num_threads(1)``): runs are the unit of parallelism, and single-threaded kernels make
the same config give the same numbers in every executor.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from ..errors import FlatminimaError


@functools.lru_cache(maxsize=4)
def _dataset(data_json: str):
    from ..data import LOADERS
    from ..data import load as get_data  # a file path keeps its options (test_fraction, input_shape, ...)

    d = json.loads(data_json)
    options = dict(d.get("options", {}))
    if ":" in d["name"] and not Path(d["name"]).suffix:  # a data factory of the user's, module:function
        from ..workflows.common import data_from_factory

        dataset = data_from_factory(d["name"], **options)
    else:
        loader = LOADERS.get(d["name"])
        # ask the loader for its shifted test sets when it can make them ("all" -> shifts=True)
        if loader is not None and "shifts" in inspect.signature(loader).parameters and "shifts" not in options:
            want = d.get("shifts", "all")
            options["shifts"] = {"all": True, "none": False}.get(want, want) if isinstance(want, str) else want
        dataset = get_data(d["name"], **options)
    user = d.get("user_shifts") or {}
    if user:
        from .sources import load_shift

        clash = sorted(set(user) & set(dataset.shifts or {}))
        if clash:
            raise FlatminimaError(f"shifts {clash}: the data set {dataset.name!r} offers shifts of these names "
                                  "already; name yours differently.")
        dataset.shifts = {**(dataset.shifts or {}), **{n: load_shift(n, s, dataset) for n, s in user.items()}}
    return dataset


def dataset_for(data: dict[str, Any], user_shifts: dict[str, Any] | None = None):
    """The run's data set (cached per process: every run of a study shares it), with the user's own shifted
    test sets (the spec's ``[shifts]``) added."""
    key = {"name": data["name"], "options": data.get("options", {}), "shifts": data.get("shifts", "all"),
           "user_shifts": user_shifts or {}}
    files = [data["name"]] + [s.get("file") for s in (user_shifts or {}).values() if s.get("file")]
    for name in files:
        path = Path(name)
        if path.suffix.lower() in (".npz", ".csv", ".pt") and path.is_file():  # a rewritten file is read again
            st = path.stat()
            key.setdefault("file_stat", []).append([st.st_mtime_ns, st.st_size])
    return _dataset(json.dumps(key, sort_keys=True))


def resolve_shifts(data: dict[str, Any], dataset: Any, user_shifts: dict[str, Any] | None = None) -> list[str]:
    """The shift names to evaluate: ``"all"`` = every shift the data set offers (possibly none); the user's
    own shifts (the spec's ``[shifts]``) always."""
    want = data.get("shifts", "all")
    mine = sorted(user_shifts or {})
    have = sorted(set(getattr(dataset, "shifts", {}) or {}) - set(mine))
    if want == "all":
        return have + mine
    if want == "none":
        return mine
    missing = [s for s in want if s not in have]
    if missing:
        offer = f"it offers {have}" if have else "it offers no shifts"
        raise FlatminimaError(
            f"data.shifts = {want}: data set {dataset.name!r} has no shift {missing}; {offer}. "
            'Use shifts = "all" (whatever it offers) or "none"; add your own in a [shifts] table.'
        )
    return list(want) + mine


def build_model(config: dict[str, Any], dataset: Any) -> torch.nn.Module:
    """The run's untrained model: initial weights depend on the run's seed only. A checkpoint study's
    factory also gets the manifest columns its signature names."""
    from ..models import build

    torch.manual_seed(config["seed"])
    options = dict(config.get("model_options", {}))
    if (config.get("source") or {}).get("kind") == "checkpoint":
        from .sources import factory_kwargs

        options = factory_kwargs(config["model"], options, config.get("recipe", {}))
    return build(config["model"], dataset.input_shape, dataset.num_classes, **options)


def wants_init(name: str, config: dict[str, Any]) -> bool:
    """Whether the registered measure ``name`` takes an ``init`` keyword the spec did not set."""
    if "init" in config:
        return False
    from .. import sharpness

    return name in sharpness.available() and "init" in sharpness.entry(name).defaults()


def measuring_loss(config: dict[str, Any], dataset: Any) -> str:
    """The loss every measure of the run uses: the spec's ``loss``, else the runs' own data loss (the recipe's
    ``loss`` without label smoothing or regularisers; with no recipe loss, the task's: cross-entropy for
    classification, MSE for regression)."""
    if config.get("loss"):
        return config["loss"]
    kind = (config.get("source") or {}).get("kind", "recipe")
    if kind == "recipe" and "loss" in config.get("recipe", {}):
        return config["recipe"]["loss"]
    return "mse" if getattr(dataset, "task", "classification") == "regression" else "cross_entropy"


def _train_user(config: dict[str, Any], model: torch.nn.Module, dataset: Any) -> torch.nn.Module:
    """The user's ``[train] function(model, data, hyperparameters, seed) -> trained model``, checked."""
    from ..models.zoo import factory_origin, import_origin

    spec = config["source"]["function"]["function"]
    try:
        fn = import_origin(factory_origin(spec))
    except Exception as err:  # noqa: BLE001
        raise FlatminimaError(f"train.function {spec!r} cannot be loaded: {type(err).__name__}: {err}") from None
    torch.manual_seed(config["seed"])
    trained = fn(model, dataset.train, dict(config["recipe"]), config["seed"])
    if not isinstance(trained, torch.nn.Module):
        raise FlatminimaError(f"train.function {spec!r} returned {type(trained).__name__}; it must return the "
                              "trained torch.nn.Module (e.g. `return model`).")
    from .sources import check_finite

    check_finite(trained.state_dict(), f"the model train.function {spec!r} returned")
    return trained


def obtain_model(config: dict[str, Any], dataset: Any) -> tuple[torch.nn.Module, torch.Tensor | None, dict]:
    """The run's trained model, its initial flat parameters (None when unknown) and how training ended.

    Sources: flatminima's trainer (``recipe``), the user's function (``train``), a checkpoint file, or a
    state handed in (``config["state"]``: kept weights when a column is added, or an in-memory model)."""
    from ..train import Recipe, flat_params
    from ..workflows.pipeline import train_model

    kind = (config.get("source") or {}).get("kind", "recipe")
    if kind == "memory":  # a model handed in from Python (this process): measured as it is, on a copy
        import copy

        return copy.deepcopy(config["module"]), None, {}
    model = build_model(config, dataset)
    init = flat_params(model) if kind in ("recipe", "train") else None
    if config.get("state") is not None or kind in ("checkpoint", "memory"):
        from .sources import load_state

        state = config.get("state")
        if state is None:
            state = load_state(config["source"]["path"])
        model.load_state_dict(state)
        return model, init, {}
    if kind == "train":
        return _train_user(config, model, dataset), init, {}
    recipe = Recipe(**config["recipe"], seed=config["seed"])
    model, trained = train_model(model, dataset.train, recipe)
    return model, init, {
        "epochs_run": trained.epochs_run,
        "final_train_loss": trained.final_train_loss,
        "reached_target": trained.reached_target,
        "target_train_loss": recipe.target_train_loss,
        "last_batch_loss": trained.history[-1]["train_loss"],
    }


def execute(config: dict[str, Any]) -> dict[str, Any]:
    """The row's results of one run (see :func:`execute_with_weights`, which also returns the weights)."""
    return execute_with_weights(config)[0]


def execute_with_weights(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Obtain (train, load) the model, measure and evaluate one run; returns the row's results.

    ``results["training"]`` says how training ended: ``epochs_run`` (epochs trained; None when the model was
    not trained by flatminima), ``final_train_loss`` (the exact loss every measure uses, at the measured
    weights: eval mode, full train set, no smoothing), ``reached_target`` (None without a target) and
    ``target_train_loss``. ``results["loss"]`` names that loss. A measure taking ``init`` gets the flat initial
    trainable parameters (unknown for checkpoints: such a measure is refused before the study starts).
    Returns ``(results, weights)``: the trained state_dict, None for a checkpoint (the file is the weights)
    or an update. With ``config["update"]`` only the measures and targets named in the config are computed,
    from ``config["state"]`` (the kept weights).
    """
    from ..train.losses import loss_function
    from ..workflows.pipeline import train_measure_evaluate
    from . import targets as tg
    from .measures import record

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    update = bool(config.get("update"))
    try:
        dataset = dataset_for(config["data"], config.get("shifts"))
        shifts = resolve_shifts(config["data"], dataset, config.get("shifts"))
        t1 = time.perf_counter()
        # the spec's dtype (float32 by default); configs stored before it existed measured in float64
        dtype = {"float32": torch.float32, "float64": torch.float64}[config.get("dtype", "float64")]
        loss_name = measuring_loss(config, dataset)
        lossf = loss_function(loss_name)
        wanted = tg.resolve(config.get("targets"), getattr(dataset, "task", "classification"), bool(shifts))
        # the one pipeline: obtain (train, load) -> exact train loss and measures -> evaluation; an added column
        # needs no training loss, and adding only measures to a finished run evaluates nothing again
        out = train_measure_evaluate(lambda: obtain_model(config, dataset), dataset,
                                     measures=config.get("measures") or {}, loss=lossf, dtype=dtype, shifts=shifts,
                                     bins=config["evaluate"]["ece_bins"], loss_fn=lossf, train_loss=not update,
                                     evaluate=not update or bool(wanted))
        model, training, exact, metrics = out.model, out.training, out.train_loss, out.metrics
        measures = {name: record(m) for name, m in out.measures.items()}
        t4 = time.perf_counter()
        target_values, target_errors = {}, {}
        if not update or wanted:
            target_values, target_errors = tg.compute(wanted, model, dataset, metrics)
        t5 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    sec = out.seconds
    target = training.get("target_train_loss", (config.get("source") or {}).get("target_train_loss"))
    if (config.get("source") or {}).get("kind") == "train":
        target = config["source"]["function"].get("target_train_loss")
    results: dict[str, Any] = {
        "measures": measures,
        "metrics": metrics,
        "targets": target_values,
        "target_errors": target_errors,
        "target_meta": {n: t.to_meta() for n, t in wanted.items()},
        "loss": loss_name if isinstance(loss_name, str) else repr(loss_name),
        "task": getattr(dataset, "task", "classification"),
        "seconds": {"setup": t1 - t0, "train": sec["train"], "measure": sec["measure"],
                    "evaluate": sec["evaluate"] + (t5 - t4), "total": t5 - t0},
    }
    if update:
        return results, None
    results["final_train_loss"] = training.get("last_batch_loss", exact)
    results["training"] = {
        "epochs_run": training.get("epochs_run"),
        "final_train_loss": exact,
        "reached_target": None if target is None else bool(exact <= target),
        "target_train_loss": target,
    }
    if (config.get("source") or {}).get("kind") == "checkpoint":
        return results, None
    return results, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def safe_execute(run_id: str, config: dict[str, Any]) -> tuple[str, bool, Any]:
    """``execute`` that never raises: ``(id, True, results)`` or ``(id, False, message)``."""
    try:
        results, weights = execute_with_weights(config)
        if weights is not None:  # the coordinator keeps them in <study>/weights and takes them out of the row
            results["weights"] = weights
        return run_id, True, results
    except Exception as err:  # a failed run is recorded with its message; the study goes on
        tb = traceback.format_exception(type(err), err, err.__traceback__)
        return run_id, False, f"{type(err).__name__}: {err}\n{''.join(tb[-3:])}"
