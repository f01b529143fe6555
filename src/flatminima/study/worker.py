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
    loader = LOADERS.get(d["name"])
    # ask the loader for its shifted test sets when it can make them ("all" -> shifts=True)
    if loader is not None and "shifts" in inspect.signature(loader).parameters and "shifts" not in options:
        want = d.get("shifts", "all")
        options["shifts"] = {"all": True, "none": False}.get(want, want) if isinstance(want, str) else want
    return get_data(d["name"], **options)


def dataset_for(data: dict[str, Any]):
    """The run's data set (cached per process: every run of a study shares it)."""
    key = {"name": data["name"], "options": data.get("options", {}), "shifts": data.get("shifts", "all")}
    path = Path(data["name"])
    if path.suffix.lower() in (".npz", ".csv", ".pt") and path.is_file():  # a rewritten file is read again
        st = path.stat()
        key["file_stat"] = [st.st_mtime_ns, st.st_size]
    return _dataset(json.dumps(key, sort_keys=True))


def resolve_shifts(data: dict[str, Any], dataset: Any) -> list[str]:
    """The shift names to evaluate: ``"all"`` = every shift the data set offers (possibly none)."""
    want = data.get("shifts", "all")
    have = sorted(getattr(dataset, "shifts", {}) or {})
    if want == "all":
        return have
    if want == "none":
        return []
    missing = [s for s in want if s not in have]
    if missing:
        offer = f"it offers {have}" if have else "it offers no shifts"
        raise FlatminimaError(
            f"data.shifts = {want}: data set {dataset.name!r} has no shift {missing}; {offer}. "
            'Use shifts = "all" (whatever it offers) or "none".'
        )
    return list(want)


def build_model(config: dict[str, Any], dataset: Any) -> torch.nn.Module:
    from ..models import build

    torch.manual_seed(config["seed"])  # initial weights depend on the run's seed only
    return build(config["model"], dataset.input_shape, dataset.num_classes, **config.get("model_options", {}))


def _wants_init(name: str, config: dict[str, Any]) -> bool:
    """Whether the registered measure ``name`` takes an ``init`` keyword the spec did not set."""
    if "init" in config:
        return False
    from .. import sharpness

    return name in sharpness.available() and "init" in sharpness.entry(name).defaults()


def execute(config: dict[str, Any]) -> dict[str, Any]:
    """Train, measure and evaluate one run; returns the row's results (with per-stage seconds).

    ``results["training"]`` says how training ended: ``epochs_run`` (epochs trained), ``final_train_loss``
    (the exact train loss: eval mode, full train set, no smoothing), ``reached_target`` (None without a
    target) and ``target_train_loss``; the top-level ``final_train_loss`` is kept as before (the last
    epoch's mean mini-batch loss). A measure taking ``init`` gets the flat initial trainable parameters.
    """
    from ..objective import Objective
    from ..train import Recipe, fit, flat_params
    from .evaluate import evaluate
    from .measures import compute

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset = dataset_for(config["data"])
        shifts = resolve_shifts(config["data"], dataset)
        model = build_model(config, dataset)
        init = flat_params(model)  # the order of Objective(model, ...).params with params=None
        t1 = time.perf_counter()
        recipe = Recipe(**config["recipe"], seed=config["seed"])
        trained = fit(model, dataset.train, recipe, progress=False)
        t2 = time.perf_counter()
        # the spec's dtype (float32 by default); configs stored before it existed measured in float64
        dtype = {"float32": torch.float32, "float64": torch.float64}[config.get("dtype", "float64")]
        obj = Objective(model, "cross_entropy", dataset.train, dtype=dtype)
        measures = {}
        for name, cfg in config["measures"].items():
            cfg = dict(cfg)
            if _wants_init(name, cfg):
                cfg["init"] = init.to(dtype)
            measures[name] = compute(obj, name, cfg)
        t3 = time.perf_counter()
        metrics = evaluate(model, dataset, shifts, bins=config["evaluate"]["ece_bins"])
        t4 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    return {
        "measures": measures,
        "metrics": metrics,
        "final_train_loss": trained.history[-1]["train_loss"],
        "training": {
            "epochs_run": trained.epochs_run,
            "final_train_loss": trained.final_train_loss,
            "reached_target": trained.reached_target,
            "target_train_loss": recipe.target_train_loss,
        },
        "seconds": {
            "setup": t1 - t0,
            "train": t2 - t1,
            "measure": t3 - t2,
            "evaluate": t4 - t3,
            "total": t4 - t0,
        },
    }


def safe_execute(run_id: str, config: dict[str, Any]) -> tuple[str, bool, Any]:
    """``execute`` that never raises: ``(id, True, results)`` or ``(id, False, message)``."""
    try:
        return run_id, True, execute(config)
    except Exception as err:  # a failed run is recorded with its message; the study goes on
        tb = traceback.format_exception(type(err), err, err.__traceback__)
        return run_id, False, f"{type(err).__name__}: {err}\n{''.join(tb[-3:])}"
