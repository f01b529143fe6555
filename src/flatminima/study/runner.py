"""``run(spec)``: expand the grid, check everything, resume the store, execute the pending runs.

The coordinator (this process) is the only writer of the store, and holds the folder's writer lock
(:class:`~flatminima.study.store.WriterLock`) for the whole run, so a second ``study run`` on the same
folder is refused with the first one's pid, host and start time. Before any run it loads the data and
builds every model once, so an impossible combination (a model option the factory refuses, shifts the
data set does not offer) stops the study before any time is spent; the model factories a spec names are
listed on stderr before any is imported. The store records a fingerprint of the data (each data file's
SHA-256, the generator's settings and a hash of the loaded arrays), and a resume against other data is
refused, naming what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import FlatminimaError, require_positive_int
from ..progress import progress_bar
from .executors import check_executor, make_executor
from .spec import (
    IDENTITY_VERSION,
    RunConfig,
    StudySpec,
    axes_of,
    common_config,
    expand,
    load,
    load_preset,
    recipe_label,
    validate,
)
from .store import Counts, Store, WriterLock
from .worker import build_model, dataset_for, measuring_loss, resolve_shifts

WEIGHTS = "weights"  # <study>/weights/<run id>.pt: each finished run's final state_dict (weights_only loads)
MIN_DESIGN_CONFIGS = 5


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
        bad = self.resumed.get("unreadable_redone", 0)
        if not kept and not redo and not self.resumed.get("failed_retried", 0) and not bad \
                and not self.resumed.get("columns_added"):
            return "new study"
        msg = f"resumed: {kept} finished run(s) kept, {redo} interrupted run(s) redone"
        if self.resumed.get("failed_retried"):
            msg += f", {self.resumed['failed_retried']} failed run(s) retried"
        if bad:
            msg += f", {bad} run(s) with unreadable results redone"
        if self.resumed.get("columns_added"):
            msg += (f"; new measures or targets computed for {self.resumed['columns_added']} finished run(s) from "
                    "their kept weights")
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


def model_factories(spec: StudySpec) -> list[dict[str, str]]:
    """The ``module:factory`` models a spec names, each with the file it would be imported from (found
    without importing anything; the standard library and built-ins are refused here)."""
    from ..models.zoo import factory_origin

    named = [(f"models.{n}", n) for n in spec.models if ":" in n and spec.checkpoints is None]
    if spec.checkpoints:
        named.append(("checkpoints.model", spec.checkpoints.model))
    if spec.train:
        named.append(("train.function", spec.train.function))
    if spec.loss and ":" in spec.loss:
        named.append(("loss", spec.loss))
    if ":" in spec.data.name and not Path(spec.data.name).suffix:
        named.append(("data.name", spec.data.name))
    named += [(f"targets.{n}.function", t["function"]) for n, t in (spec.targets or {}).items() if "function" in t]
    named += [(f"shifts.{n}.factory", s.factory) for n, s in spec.shifts.items() if s.factory]
    out = []
    for where, name in named:
        try:
            out.append({**factory_origin(name), "where": where})
        except FlatminimaError as err:
            raise FlatminimaError(f"{where}: {err}") from None
    return out


def announce_factories(spec: StudySpec) -> list[dict[str, str]]:
    """Print (stderr) the model factories the spec will import, before any is imported."""
    found = model_factories(spec)
    for f in found:
        print(f"flatminima: {f['where']} = {f['spec']} imports {f['module']!r} from {f['file']} ({f['kind']} code)",
              file=sys.stderr)
    return found


def data_fingerprint(spec: StudySpec, dataset: Any) -> dict[str, Any]:
    """What the runs are trained on: each data file's SHA-256, the generator's settings and version, and a
    SHA-256 of the loaded arrays (train, test and every shifted test set)."""
    fp: dict[str, Any] = {"name": spec.data.name, "options": spec.data.options}
    path = Path(spec.data.name)
    if path.suffix.lower() in (".npz", ".csv", ".pt"):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        fp["file"] = {"path": str(path), "sha256": digest.hexdigest(), "bytes": path.stat().st_size}
    else:
        try:
            from importlib.metadata import version

            fp["generator"] = {"mnist1d": version("mnist1d")} if spec.data.name == "mnist1d" else {}
        except Exception:  # noqa: BLE001 - the package's metadata is optional
            fp["generator"] = {}
    arrays = hashlib.sha256()
    tensors = [dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test]
    for name in sorted(getattr(dataset, "shifts", {}) or {}):
        for sev in sorted(dataset.shifts[name]):
            tensors += list(dataset.shifts[name][sev])
    for t in tensors:
        arrays.update(str(tuple(t.shape)).encode())
        arrays.update(t.detach().cpu().contiguous().numpy().tobytes())
    fp["arrays_sha256"] = arrays.hexdigest()
    return fp


def _check_same_data(store: Store, new: dict[str, Any]) -> None:
    old = store.get_meta("data_fingerprint")
    if old is None or old == new:
        return
    changed = []
    if old.get("file") != new.get("file"):
        o, n = old.get("file") or {}, new.get("file") or {}
        changed.append(f"data file {n.get('path', o.get('path'))!r}: SHA-256 {str(o.get('sha256'))[:12]}… "
                       f"({o.get('bytes')} bytes) when the study started, {str(n.get('sha256'))[:12]}… "
                       f"({n.get('bytes')} bytes) now")
    if old.get("generator") != new.get("generator"):
        changed.append(f"data generator {old.get('generator')} then, {new.get('generator')} now")
    if old.get("arrays_sha256") != new.get("arrays_sha256") and not changed:
        changed.append("the loaded data arrays (same settings, different values)")
    raise FlatminimaError(
        f"the data of the study in {str(store.folder)!r} changed since its runs were trained: "
        + "; ".join(changed) + ". Its finished rows would mix two data sets: restore the original data to "
        "resume, or run the study on the new data into another --out folder."
    )


def preflight(spec: StudySpec, configs: list[RunConfig] | None = None) -> dict[str, Any]:
    """Load the data and build each model on two samples: refuse impossible combinations before any run.

    Also, before any work: every checkpoint loads safely and matches its architecture; the loss is
    differentiable on the model; the targets can be loaded; measures needing what the runs cannot give
    (initial weights of a checkpoint) are refused. Returns the data's description, with its fingerprint
    (:func:`data_fingerprint`) under ``"fingerprint"``."""
    data = spec.data.model_dump()
    user_shifts = {k: v.model_dump() for k, v in spec.shifts.items()} or None
    try:
        dataset = dataset_for(data, user_shifts)
    except FlatminimaError as err:
        raise FlatminimaError(f"data ({spec.data.name!r}, options {spec.data.options}): {err}") from None
    except TypeError as err:  # an option the loader does not take
        raise FlatminimaError(f"data.options = {spec.data.options}: {err}") from None
    shifts = resolve_shifts(data, dataset, user_shifts)
    task = getattr(dataset, "task", "classification")
    configs = configs if configs is not None else expand(spec)
    firsts = list({c.model + repr(sorted(c.model_options.items())) + repr(sorted(c.recipe.items()))
                   if spec.checkpoints else c.model: c for c in configs}.values())
    if task == "regression" and spec.source == "recipe":
        wrong = sorted({c.recipe.get("loss", "cross_entropy") for c in configs} - {"mse"})
        if wrong:
            raise FlatminimaError(f"data {spec.data.name!r} has float targets (a regression task), but the recipe "
                                  f"trains with loss {wrong}: set recipe.loss = \"mse\" (or give class labels as "
                                  "integers for classification).")
    for c in firsts:
        model = _check_model(c, dataset, spec)
        _check_loss(spec, c, model, dataset)
    if spec.checkpoints is not None:
        from .sources import check_checkpoints

        check_checkpoints(spec, configs, dataset, build_model)
        _refuse_init_measures(spec)
    from . import targets as tg

    chosen = tg.resolve(spec.targets, task, bool(shifts))
    return {
        "fingerprint": data_fingerprint(spec, dataset),
        "shifts": shifts,
        "train_size": len(dataset.x_train),
        "test_size": len(dataset.x_test),
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "task": task,
        "targets": {n: t.to_meta() for n, t in chosen.items()},
    }


def _check_model(c: RunConfig, dataset: Any, spec: StudySpec) -> torch.nn.Module:
    what = "checkpoints.model" if spec.checkpoints else f"models.{c.model}"
    try:
        model = build_model({"model": c.model, "model_options": c.model_options, "seed": 0, "recipe": c.recipe,
                             "source": c.source}, dataset)
        with torch.no_grad():
            out = model.eval()(dataset.x_train[:2])
    except Exception as err:
        raise FlatminimaError(
            f"{what} (options {c.model_options}) cannot be built for data of shape "
            f"{dataset.input_shape} with {dataset.num_classes} outputs: {err}"
        ) from None
    k = dataset.num_classes
    ok = tuple(out.shape) == (2, k) or (getattr(dataset, "task", "") == "regression" and k == 1
                                        and tuple(out.shape) == (2,))
    if not ok:
        kind = "regression targets" if getattr(dataset, "task", "") == "regression" else "a classifier"
        raise FlatminimaError(
            f"{what} outputs shape {tuple(out.shape[1:])} per sample; {kind} for this data must output "
            f"{k} value(s) per sample."
        )
    return model


def _check_loss(spec: StudySpec, c: RunConfig, model: torch.nn.Module, dataset: Any) -> None:
    """The measuring loss on two samples: a number, finite, and differentiable in the weights."""
    from ..train.losses import loss_function

    name = measuring_loss(c.to_dict(), dataset)
    fn = loss_function(name)
    model.train(False)
    try:
        value = fn(model(dataset.x_train[:2]), dataset.y_train[:2])
    except Exception as err:  # noqa: BLE001 - the user's loss, or a loss that does not fit the task
        raise FlatminimaError(f"loss {name!r} fails on the model's outputs and the data's targets: "
                              f"{type(err).__name__}: {err}") from None
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        raise FlatminimaError(f"loss {name!r} must return one number per batch (a 0-dim tensor), got "
                              f"{type(value).__name__}{tuple(value.shape) if isinstance(value, torch.Tensor) else ''}.")
    if not value.requires_grad:
        raise FlatminimaError(f"loss {name!r} is not differentiable in the model's weights (its value carries no "
                              "gradient: a .item(), .detach() or numpy step inside?); every measure needs its "
                              "derivatives. Write it with torch operations on the outputs.")


def _refuse_init_measures(spec: StudySpec) -> None:
    from .worker import wants_init

    needs = [n for n, cfg in spec.measures.items() if wants_init(n, cfg)]
    if needs:
        raise FlatminimaError(f"measures {needs} need each model's initial weights, which a checkpoint study does "
                              "not have; leave them out of [measures] (or measure them from Python with "
                              "init=...).")


def design_check(configs: list[RunConfig], axes: dict[str, list[Any]]) -> list[str]:
    """Warnings about the design, before any run: too few configurations for the cluster bootstrap to decide."""
    labels = [recipe_label(c.model, c.recipe, list(axes)) for c in configs]
    n = len(set(labels))
    per = {lab: labels.count(lab) for lab in set(labels)}
    seeds = sorted(set(per.values()))
    out = []
    if n < MIN_DESIGN_CONFIGS:
        from math import comb

        out.append(f"the design has {n} configuration(s) ({'/'.join(map(str, seeds))} seed(s) each): intervals "
                   f"resample whole configurations, and {n} configurations allow only {comb(2 * n - 1, n)} distinct "
                   "resamples, so no interval can exclude zero unless every configuration is ordered perfectly; "
                   f"expect inconclusive verdicts. Use at least {MIN_DESIGN_CONFIGS} configurations (more values "
                   "on an axis, or another axis).")
    if seeds and seeds[0] < 2:
        out.append("some configurations have a single seed: the seed-to-seed spread within a configuration "
                   "cannot be seen; use 2 or more seeds.")
    return out


DEFAULT_ROOT = Path("flatminima-out")  # the CLI's output root too: one place for every result


def default_folder(spec: StudySpec, root: str | Path = DEFAULT_ROOT) -> Path:
    """``<root>/<name>``; the spec's ``name`` is a plain folder name, so this never leaves ``root``."""
    root = Path(root)
    folder = root / spec.name
    if not folder.resolve().is_relative_to(root.resolve()) or folder.resolve() == root.resolve():
        raise FlatminimaError(f"study name {spec.name!r} would leave the output root {str(root)!r}.")
    return folder


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
    root: str | Path = DEFAULT_ROOT,
    models: list[dict[str, Any]] | None = None,
) -> StudyRun:
    """Run (or resume) a study: every grid point × seed trained (or every checkpoint loaded), measured,
    evaluated, stored, and its final weights kept in ``<study>/weights``.

    ``executor``/``workers``/``address`` override the spec's ``[executor]`` table. A folder that already
    holds this study resumes it: 'done' rows are kept, rows left 'running' by a killed process are redone, and
    a measure or target the spec adds is computed for the finished runs from their kept weights, without
    retraining. Without ``out`` the folder is ``<root>/<spec.name>`` (``flatminima-out/<name>``); the spec can
    never name a folder outside ``root``. ``models``: in-memory models to study instead of training
    (``[{"model": nn.Module, "hyperparameters": {...}, "seed": 0}, ...]``, run in this process).

    Examples:
        A two-configuration study of a tiny network (a few seconds), into a temporary folder:

        >>> import tempfile
        >>> from flatminima import study
        >>> spec = {"name": "tiny", "data": {"name": "two_class", "options": {"num_samples": 80}},
        ...         "models": {"mlp": {"width": 4}}, "recipe": {"lr": [0.05, 0.1], "batch_size": 16, "epochs": 1},
        ...         "seeds": 1, "measures": {"lambda_max": {}}}
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     done = study.run(spec, out=folder, workers=1, progress=False)
        ...     table = study.frame(folder)
        >>> done.counts.done, done.failed
        (2, 0)
        >>> sorted(table["lr"]), "lambda_max" in table.columns
        ([0.05, 0.1], True)
    """
    t_start = time.perf_counter()
    if workers is not None:
        require_positive_int("workers", workers)
    spec = resolve_spec(spec, preset)
    ex = spec.executor
    kind = executor or ex.kind
    n = workers if workers is not None else ex.workers
    addr = address if address is not None else ex.address
    folder = Path(out) if out else default_folder(spec, root)
    if folder.exists() and not folder.is_dir():
        raise FlatminimaError(f"the study folder {str(folder)!r} is a file; give a folder with --out.")
    announce_factories(spec)
    if models is not None:
        from .sources import memory_runs

        configs, modules = memory_runs(models, RunConfig, common_config(spec))
        kind, n = "local", 1  # the models live in this process
    else:
        configs, modules = expand(spec), {}
    check_executor(kind, n, addr, option="workers" if workers is not None else "executor.workers")
    info = preflight(spec, configs) if not modules else _memory_preflight(spec, configs, modules)
    fingerprint = info.pop("fingerprint")
    axes_map = axes_of(configs) if (spec.checkpoints or modules) else spec.axes
    design = design_check(configs, axes_map)
    for line in design:
        print(f"flatminima: warning: {line}", file=sys.stderr)
    with WriterLock(folder), Store(folder) as store:
        legacy = _check_same_study(store, spec)
        _check_same_data(store, fingerprint)
        _check_same_checkpoints(store, configs)
        unreadable = store.mark_unreadable()
        store.set_meta("spec", spec.model_dump(mode="json"))
        if not legacy:
            store.set_meta("identity_version", IDENTITY_VERSION)
        store.set_meta("axes", axes_map)
        store.set_meta("data_info", info)
        store.set_meta("data_fingerprint", fingerprint)
        store.set_meta("design", design)
        store.set_meta("targets", info["targets"])
        resumed = store.recover(retry_failed=retry_failed)
        resumed["unreadable_redone"] = resumed.get("unreadable_redone", 0) + sum(
            not b["config_ok"] for b in unreadable)
        resumed["done_kept"] = store.counts().done
        axes = list(axes_map)
        by_id = {(c.legacy_id if legacy else c.id): c for c in configs}
        store.add_runs((rid, recipe_label(c.model, c.recipe, axes), c.seed, c.to_dict()) for rid, c in by_id.items())
        jobs = [(rid, _job(by_id[rid], modules)) for rid, _ in store.pending(list(by_id))]
        updates = _column_jobs(store, folder, spec, by_id, modules, info)
        if updates:
            resumed["columns_added"] = len(updates)
        result = StudyRun(folder, store.counts(), resumed)
        runner = make_executor(kind, n, addr, options=ex, store=store)
        busy = 0.0
        update_ids = {rid for rid, _ in updates}
        claim = lambda rid: rid in update_ids or store.claim(rid)  # noqa: E731 - a done row is extended, not claimed
        try:
            with progress_bar(
                len(jobs) + len(updates), f"study {spec.name} ({kind}, {n} worker(s))", enabled=progress
            ) as advance:
                for rid, ok, payload in runner.run(updates + jobs, claim):
                    if ok and rid in update_ids:
                        store.extend(rid, payload)
                    elif ok:
                        _keep_weights(folder, rid, payload.pop("weights", None))
                        store.finish(rid, payload)
                    elif rid in update_ids:
                        print(f"flatminima: adding columns to run {rid} failed: {payload}", file=sys.stderr)
                    else:
                        store.fail(rid, payload)
                    if not ok:
                        result.failed += 1
                    else:
                        busy += payload["seconds"]["total"]
                    result.executed += 1
                    advance(failed=result.failed)
        finally:
            runner.close()
        result.counts = store.counts()
    result.seconds = time.perf_counter() - t_start
    # wall time not spent inside runs, per run (with 1 worker: store, executor and preflight costs)
    result.overhead_seconds = (result.seconds - busy / max(n, 1)) / max(result.executed, 1)
    return result


def _job(c: RunConfig, modules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    job = {**c.to_dict(), **extra}
    if (c.source or {}).get("kind") == "memory":
        job["module"] = modules[c.source["sha256"]]
    return job


def weights_path(folder: str | Path, run_id: str) -> Path:
    """Where a run's final weights are kept (a state_dict; load with ``torch.load(..., weights_only=True)``)."""
    return Path(folder) / WEIGHTS / f"{run_id}.pt"


def _keep_weights(folder: Path, run_id: str, state: dict[str, torch.Tensor] | None) -> None:
    """Write a run's final state_dict atomically (a temporary file renamed into place) before its row is done."""
    if state is None:
        return
    path = weights_path(folder, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _column_jobs(store: Store, folder: Path, spec: StudySpec, by_id: dict[str, RunConfig], modules: dict[str, Any],
                 info: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Jobs that add the spec's new measures and targets to finished runs, from their kept weights (a run
    without kept weights — finished before weights were kept — is retrained by its own seed instead)."""
    wanted_targets = [n for n, t in info["targets"].items() if not t.get("table")]
    jobs = []
    for row in store.rows("done"):
        c = by_id.get(row["id"])
        if c is None:
            continue
        res = row["results"] or {}
        have_targets = set(res.get("targets") or {})
        if not res.get("targets"):  # a row written before targets were stored: its metrics hold the built-ins
            have_targets = {k for k in wanted_targets if k in (res.get("metrics") or {})}
        missing_m = {k: v for k, v in spec.measures.items() if k not in res.get("measures", {})}
        missing_t = [t for t in wanted_targets if t not in have_targets]
        if not missing_m and not missing_t:
            continue
        state = None
        kept = weights_path(folder, row["id"])
        if kept.exists():
            state = torch.load(kept, map_location="cpu", weights_only=True)
        targets = {t: (spec.targets or {}).get(t, {}) for t in missing_t} if missing_t else {}
        jobs.append((row["id"], _job(c, modules, update=True, state=state, measures=missing_m, targets=targets)))
    return jobs


def _memory_preflight(spec: StudySpec, configs: list[RunConfig], modules: dict[str, Any]) -> dict[str, Any]:
    """The checks of :func:`preflight` for in-memory models (their outputs and the loss on two samples)."""
    from . import targets as tg
    from .worker import measuring_loss as _loss_of

    data = spec.data.model_dump()
    user_shifts = {k: v.model_dump() for k, v in spec.shifts.items()} or None
    dataset = dataset_for(data, user_shifts)
    shifts = resolve_shifts(data, dataset, user_shifts)
    from ..train.losses import loss_function

    for c in configs:
        model = modules[c.source["sha256"]]
        with torch.enable_grad():
            value = loss_function(_loss_of(c.to_dict(), dataset))(model.eval()(dataset.x_train[:2]),
                                                                   dataset.y_train[:2])
        if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.requires_grad:
            raise FlatminimaError(f"model {c.recipe}: the loss on its outputs is not a differentiable number.")
    chosen = tg.resolve(spec.targets, getattr(dataset, "task", "classification"), bool(shifts))
    return {"fingerprint": data_fingerprint(spec, dataset), "shifts": shifts, "train_size": len(dataset.x_train),
            "test_size": len(dataset.x_test), "input_shape": list(dataset.input_shape),
            "num_classes": dataset.num_classes, "task": getattr(dataset, "task", "classification"),
            "targets": {n: t.to_meta() for n, t in chosen.items()}}


def _check_same_checkpoints(store: Store, configs: list[RunConfig]) -> None:
    from .sources import changed_checkpoints

    changed = changed_checkpoints(store.rows(), configs)
    if changed:
        raise FlatminimaError(
            f"checkpoint file(s) changed since the study in {str(store.folder)!r} measured them: "
            + "; ".join(changed[:5]) + ". Their rows would mix two models: restore the files to resume, or "
            "measure the new checkpoints into another --out folder."
        )


IDENTITY_FREE = ("executor", "measures", "targets")  # may change between runs of the same study
NEW_KEYS = ("loss", "checkpoints", "train", "targets", "shifts")  # keys later versions added, empty by default


def _identity_spec(d: dict[str, Any], free: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in free and not (k in NEW_KEYS and v in (None, {}, []))}


def _check_same_study(store: Store, spec: StudySpec) -> bool:
    """Refuse a folder holding another study; True when it is a version-1 store resumed as it was.

    The study's identity (see :data:`flatminima.study.spec.IDENTITY_VERSION`) leaves out the executor, the
    measures and the targets: adding those is the same study. A store written before the version was kept
    (version 1) hashed the measures into its run ids; it resumes only with its spec unchanged."""
    old = store.get_meta("spec")
    if old is None:
        return False
    new = spec.model_dump(mode="json")
    version = store.get_meta("identity_version", 1)
    if version > IDENTITY_VERSION:
        raise FlatminimaError(
            f"the folder {str(store.folder)!r} was written by a newer flatminima (study identity version "
            f"{version}; this one knows {IDENTITY_VERSION}): upgrade flatminima to resume it."
        )
    if version == 1:
        same = json.dumps(_identity_spec(old, ("executor",)), sort_keys=True) == json.dumps(
            _identity_spec(new, ("executor",)), sort_keys=True)
        if same:
            return True
        raise FlatminimaError(
            f"the folder {str(store.folder)!r} holds a study written by an earlier flatminima (study identity "
            "version 1: its run ids include the measures, and it kept no weights), with other settings than this "
            "spec. Resume it with its own spec unchanged (`flatminima study run` with the same file), or run "
            "this spec into another --out folder; to add measures or targets to its runs, rerun it into a new "
            "folder (the new store keeps every run's weights, so later additions need no retraining)."
        )
    if json.dumps(_identity_spec(old, IDENTITY_FREE), sort_keys=True) != json.dumps(
            _identity_spec(new, IDENTITY_FREE), sort_keys=True):
        changed = sorted(k for k in set(old) | set(new) if k not in IDENTITY_FREE and old.get(k) != new.get(k))
        raise FlatminimaError(
            f"the folder {str(store.folder)!r} holds a different study (spec {old.get('name')!r}; changed: "
            f"{', '.join(changed)}); give another --out folder, or the same spec to resume (measures, targets "
            "and the executor may change)."
        )
    return False
