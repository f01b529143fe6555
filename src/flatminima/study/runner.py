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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import FlatminimaError, require_positive_int
from ..progress import progress_bar
from .executors import make_executor
from .spec import StudySpec, expand, load, load_preset, recipe_label, validate
from .store import Counts, Store, WriterLock
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
        bad = self.resumed.get("unreadable_redone", 0)
        if not kept and not redo and not self.resumed.get("failed_retried", 0) and not bad:
            return "new study"
        msg = f"resumed: {kept} finished run(s) kept, {redo} interrupted run(s) redone"
        if self.resumed.get("failed_retried"):
            msg += f", {self.resumed['failed_retried']} failed run(s) retried"
        if bad:
            msg += f", {bad} run(s) with unreadable results redone"
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

    out = []
    for name in spec.models:
        if ":" in name:
            try:
                out.append(factory_origin(name))
            except FlatminimaError as err:
                raise FlatminimaError(f"models.{name}: {err}") from None
    return out


def announce_factories(spec: StudySpec) -> list[dict[str, str]]:
    """Print (stderr) the model factories the spec will import, before any is imported."""
    found = model_factories(spec)
    for f in found:
        print(f"flatminima: models.{f['spec']} imports {f['module']!r} from {f['file']} ({f['kind']} code)",
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


def preflight(spec: StudySpec) -> dict[str, Any]:
    """Load the data and build each model on two samples: refuse impossible combinations before any run.

    Returns the data's description, with its fingerprint (:func:`data_fingerprint`) under ``"fingerprint"``."""
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
        "fingerprint": data_fingerprint(spec, dataset),
        "shifts": shifts,
        "train_size": len(dataset.x_train),
        "test_size": len(dataset.x_test),
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
    }


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
) -> StudyRun:
    """Run (or resume) a study: every grid point × seed trained, measured, evaluated, stored.

    ``executor``/``workers``/``address`` override the spec's ``[executor]`` table. A folder that already
    holds this study resumes it: 'done' rows are kept, rows left 'running' by a killed process are redone.
    Without ``out`` the folder is ``<root>/<spec.name>`` (``flatminima-out/<name>``); the spec can never name a
    folder outside ``root``.
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
    info = preflight(spec)
    fingerprint = info.pop("fingerprint")
    configs = expand(spec)
    with WriterLock(folder), Store(folder) as store:
        _check_same_study(store, spec)
        _check_same_data(store, fingerprint)
        unreadable = store.mark_unreadable()
        store.set_meta("spec", spec.model_dump(mode="json"))
        store.set_meta("axes", spec.axes)
        store.set_meta("data_info", info)
        store.set_meta("data_fingerprint", fingerprint)
        resumed = store.recover(retry_failed=retry_failed)
        resumed["unreadable_redone"] = resumed.get("unreadable_redone", 0) + sum(
            not b["config_ok"] for b in unreadable)
        resumed["done_kept"] = store.counts().done
        axes = list(spec.axes)
        store.add_runs((c.id, recipe_label(c.model, c.recipe, axes), c.seed, c.to_dict()) for c in configs)
        jobs = store.pending([c.id for c in configs])
        result = StudyRun(folder, store.counts(), resumed)
        runner = make_executor(kind, n, addr, options=ex, store=store)
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
