"""``run(spec)``: expand the grid, check everything, resume the store, execute the pending runs.

The coordinator (this process) is the only writer of the store. Before any run it loads the data and
builds every model once, so an impossible combination (a model option the factory refuses, shifts the
data set does not offer) stops the study before any time is spent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import FlatminimaError
from ..progress import progress_bar
from .executors import make_executor
from .spec import StudySpec, expand, load, load_preset, recipe_label, validate
from .store import Counts, Store
from .worker import build_model, dataset_for, resolve_shifts


@dataclass
class StudyRun:
    """What a call to :func:`run` did: the folder, the counts at the end, what it resumed, its timing."""

    folder: Path
    counts: Counts
    resumed: dict[str, int] = field(default_factory=dict)
    executed: int = 0
    failed: int = 0
    seconds: float = 0.0
    overhead_seconds: float = 0.0

    @property
    def resumed_message(self) -> str:
        kept, redo = self.resumed.get("done_kept", 0), self.resumed.get("interrupted", 0)
        if not kept and not redo and not self.resumed.get("failed_retried", 0):
            return "new study"
        msg = f"resumed: {kept} finished run(s) kept, {redo} interrupted run(s) redone"
        if self.resumed.get("failed_retried"):
            msg += f", {self.resumed['failed_retried']} failed run(s) retried"
        return msg


def resolve_spec(spec: StudySpec | dict | str | Path | None = None, preset: str | None = None) -> StudySpec:
    """A validated spec from a StudySpec, a dict, a TOML path, or a preset name."""
    if preset is not None:
        if spec is not None:
            raise FlatminimaError("give a spec file or a preset, not both.")
        return load_preset(preset)
    if spec is None:
        raise FlatminimaError("give a study spec (a TOML file) or a preset (e.g. preset='quick').")
    if isinstance(spec, (str, Path)):
        return load(spec)
    return validate(spec)


def preflight(spec: StudySpec) -> dict[str, Any]:
    """Load the data and build each model on two samples: refuse impossible combinations before any run."""
    data = spec.data.model_dump()
    try:
        dataset = dataset_for(data)
    except FlatminimaError as err:
        raise FlatminimaError(f"data ({spec.data.name!r}, options {spec.data.options}): {err}") from None
    except TypeError as err:  # an option the loader does not take
        raise FlatminimaError(f"data.options = {spec.data.options}: {err}") from None
    shifts = resolve_shifts(data, dataset)
    for name, opts in spec.models.items():
        try:
            model = build_model({"model": name, "model_options": opts, "seed": 0}, dataset)
            with torch.no_grad():
                out = model.eval()(dataset.x_train[:2])
        except Exception as err:
            raise FlatminimaError(
                f"models.{name} (options {opts}) cannot be built for data of shape "
                f"{dataset.input_shape} with {dataset.num_classes} classes: {err}"
            ) from None
        if tuple(out.shape) != (2, dataset.num_classes):
            raise FlatminimaError(
                f"models.{name} outputs shape {tuple(out.shape[1:])} per sample; a classifier "
                f"for this data must output {dataset.num_classes} logits."
            )
    return {
        "shifts": shifts,
        "train_size": len(dataset.x_train),
        "test_size": len(dataset.x_test),
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
    }


def default_folder(spec: StudySpec) -> Path:
    return Path("studies") / spec.name


def run(
    spec: StudySpec | dict | str | Path | None = None,
    *,
    preset: str | None = None,
    out: str | Path | None = None,
    executor: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
) -> StudyRun:
    """Run (or resume) a study: every grid point × seed trained, measured, evaluated, stored.

    ``executor``/``workers``/``address`` override the spec's ``[executor]`` table. A folder that already
    holds this study resumes it: 'done' rows are kept, rows left 'running' by a killed process are redone.
    """
    t_start = time.perf_counter()
    spec = resolve_spec(spec, preset)
    ex = spec.executor
    kind, n, addr = executor or ex.kind, workers or ex.workers, address if address is not None else ex.address
    folder = Path(out) if out else default_folder(spec)
    info = preflight(spec)
    configs = expand(spec)
    with Store(folder) as store:
        _check_same_study(store, spec)
        store.set_meta("spec", spec.model_dump(mode="json"))
        store.set_meta("axes", spec.axes)
        store.set_meta("data_info", info)
        resumed = store.recover(retry_failed=retry_failed)
        resumed["done_kept"] = store.counts().done
        axes = list(spec.axes)
        store.add_runs((c.id, recipe_label(c.model, c.recipe, axes), c.seed, c.as_dict()) for c in configs)
        jobs = store.pending([c.id for c in configs])
        result = StudyRun(folder, store.counts(), resumed)
        runner = make_executor(kind, n, addr)
        busy = 0.0
        try:
            with progress_bar(
                len(jobs), f"study {spec.name} ({kind}, {n} worker(s))", enabled=progress
            ) as advance:
                for rid, ok, payload in runner.run(jobs, store.claim):
                    if ok:
                        store.finish(rid, payload)
                        busy += payload["seconds"]["total"]
                    else:
                        store.fail(rid, payload)
                        result.failed += 1
                    result.executed += 1
                    advance(failed=result.failed)
        finally:
            runner.close()
        result.counts = store.counts()
    result.seconds = time.perf_counter() - t_start
    # wall time not spent inside runs, per run (with 1 worker: store, executor and preflight costs)
    result.overhead_seconds = (result.seconds - busy / max(n, 1)) / max(result.executed, 1)
    return result


def _check_same_study(store: Store, spec: StudySpec) -> None:
    old = store.get_meta("spec")
    new = spec.model_dump(mode="json")
    ignore = ("executor",)  # the same study may be resumed with another executor
    strip = lambda d: {k: v for k, v in d.items() if k not in ignore}  # noqa: E731
    if old is not None and json.dumps(strip(old), sort_keys=True) != json.dumps(strip(new), sort_keys=True):
        raise FlatminimaError(
            f"the folder {str(store.folder)!r} holds a different study (spec {old.get('name')!r} "
            "with other settings); give another --out folder, or the same spec to resume."
        )
