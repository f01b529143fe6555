"""Where a study's models come from, besides flatminima's own trainer.

* **Checkpoints the user already has** (the PGDL / Jiang et al. 2020 setting: a fixed population of trained
  models scored by the measures): a CSV manifest with a ``path`` column (relative to the manifest), an
  optional ``seed`` column and one column per hyperparameter, plus the ``module:function`` that builds the
  architecture. Every file is checked before any work: it exists, it loads with ``weights_only=True``, its
  ``state_dict`` matches the factory's (a mismatch is reported by parameter name). Each checkpoint's
  SHA-256 is part of its run's id, so a file changed after it was measured is reported, never mixed in.
* **The user's training function** (``[train] function``): called by the worker (:mod:`.worker`).
* **In-memory models** from Python (:func:`memory_runs`): a notebook's trained models with their
  hyperparameters.

Manifest columns are typed once: a column whose every cell is a number is numeric (ints stay ints), a
column of words is categorical; an empty cell, or words mixed with numbers, is refused naming the row.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from pathlib import Path
from typing import Any

import torch

from ..errors import FlatminimaError

RESERVED = ("path", "seed")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cell(value: str) -> int | float | str:
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_manifest(manifest: str | Path) -> list[dict[str, Any]]:
    """The manifest's rows: ``{"path": absolute Path, "seed": int | None, "hyperparameters": {column: value}}``.

    Refused, naming the file, row and column: a missing file or ``path`` column, a path that does not exist,
    duplicate paths, an empty cell, a column mixing numbers and words, a non-integer seed."""
    import csv

    manifest = Path(manifest)
    if not manifest.is_file():
        raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r} does not exist (or is not a file); give the "
                              "CSV that lists your checkpoints (a path column, optional seed, one column per "
                              "hyperparameter).")
    try:
        with manifest.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r} is not a UTF-8 CSV file ({err}).") from None
    if len(rows) < 2:
        raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r} needs a header row and one row per checkpoint.")
    header = [h.strip() for h in rows[0]]
    if "path" not in header:
        raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r} has no 'path' column; its columns are "
                              f"{header}.")
    if len(set(header)) != len(header) or "" in header:
        raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r}: every column needs a distinct name, got "
                              f"{header}.")
    table = []
    for line, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r}, line {line}: {len(r)} values for "
                                  f"{len(header)} columns.")
        for col, cell in zip(header, r, strict=True):
            if not cell.strip():
                raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r}, line {line}: column {col!r} is "
                                      "empty; every checkpoint needs a value in every column.")
        table.append((line, {c: v.strip() for c, v in zip(header, r, strict=True)}))
    kinds: dict[str, set[str]] = {}
    for col in header:
        if col == "path":
            continue
        kinds[col] = {"number" if isinstance(_cell(row[col]), (int, float)) else "word" for _, row in table}
        if len(kinds[col]) > 1:
            line = next(n for n, row in table if isinstance(_cell(row[col]), str))
            raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r}, line {line}: column {col!r} mixes words "
                                  f"({_cell(dict(table)[line][col])!r}) with numbers; a hyperparameter column is "
                                  "all numbers or all words.")
    seen: dict[Path, int] = {}
    out = []
    for line, row in table:
        path = (manifest.parent / row["path"]).resolve()
        if path in seen:
            raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r}, line {line}: path {row['path']!r} "
                                  f"is listed already on line {seen[path]}; list each checkpoint once.")
        seen[path] = line
        if not path.is_file():
            raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r}, line {line}: checkpoint {row['path']!r} "
                                  f"does not exist ({path}); paths are relative to the manifest's folder.")
        seed = None
        if "seed" in row:
            seed = _cell(row["seed"])
            if not isinstance(seed, int):
                raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r}, line {line}: seed {row['seed']!r} "
                                      "is not an integer.")
        hp = {c: _cell(v) for c, v in row.items() if c not in RESERVED}
        for c, v in hp.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise FlatminimaError(f"checkpoints.manifest {str(manifest)!r}, line {line}: column {c!r} is {v}; "
                                      "give a finite number.")
        out.append({"line": line, "path": path, "seed": seed, "hyperparameters": hp})
    return out


def factory_kwargs(factory: str, options: dict[str, Any], hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """``options`` plus the hyperparameters the factory's signature names (a ``width`` column builds that
    width); nothing is imported twice (the factory is imported once per process by the model zoo)."""
    from ..models.zoo import load_factory

    fn = load_factory(factory)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(options)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in hyperparameters.items() if k in params and not takes_any}
    return {**options, **extra}


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's state_dict, loaded with ``weights_only=True`` (no code runs); a dict holding a
    ``state_dict`` or ``model`` entry (what Lightning and many loops save) is unwrapped."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with code, a damaged or foreign file
        raise FlatminimaError(f"checkpoint {str(path)!r} cannot be loaded safely (torch.load weights_only=True): "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. Save the "
                              "model's state_dict with torch.save(model.state_dict(), path).") from None
    if isinstance(blob, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(blob.get(key), dict):
                blob = blob[key]
                break
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise FlatminimaError(f"checkpoint {str(path)!r} holds a {type(blob).__name__}, not a state_dict of tensors; "
                              "save it with torch.save(model.state_dict(), path).")
    return blob


def state_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """What differs between ``model.state_dict()`` and ``state``, parameter by parameter (empty: they match)."""
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k}: shape {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
                 for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    return problems


def check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FlatminimaError(f"{what} has non-finite (NaN/inf) weights in {bad[:5]}; measure a model whose "
                              "weights are finite.")


def checkpoint_runs(spec: Any, make_run: Any, common: dict[str, Any]) -> list[Any]:
    """One run per manifest row, ``make_run(**fields, **common)`` (the spec's
    :class:`~flatminima.study.spec.RunConfig`, handed in so this module never imports the spec's); each
    checkpoint's SHA-256 is in its id."""
    ck = spec.checkpoints
    rows = read_manifest(ck.manifest)
    per_config: dict[str, int] = {}
    runs = []
    for row in rows:
        key = repr(sorted(row["hyperparameters"].items()))
        seed = row["seed"] if row["seed"] is not None else per_config.get(key, 0)
        per_config[key] = per_config.get(key, 0) + 1
        source = {"kind": "checkpoint", "path": str(row["path"]), "sha256": sha256_file(row["path"]),
                  "line": row["line"], "target_train_loss": ck.target_train_loss}
        runs.append(make_run(model=ck.model, model_options=dict(ck.options), recipe=row["hyperparameters"],
                             seed=seed, source=source, **common))
    seeds: dict[tuple, list[int]] = {}
    for r in runs:
        seeds.setdefault(tuple(sorted(r.recipe.items())), []).append(r.seed)
    for hp, s in seeds.items():
        if len(set(s)) != len(s):
            raise FlatminimaError(f"checkpoints.manifest {ck.manifest!r}: two checkpoints have the same "
                                  f"hyperparameters {dict(hp)} and seed; give each a distinct seed.")
    return runs


def check_checkpoints(spec: Any, configs: list[Any], dataset: Any, build: Any) -> None:
    """Before any work: every checkpoint loads safely, matches the architecture and is finite."""
    for c in configs:
        src = c.source or {}
        if src.get("kind") != "checkpoint":
            continue
        where = f"checkpoint {src['path']!r} (manifest line {src['line']})"
        state = load_state(src["path"])
        model = build({"model": c.model, "model_options": c.model_options, "recipe": c.recipe, "seed": c.seed,
                       "source": src}, dataset)
        problems = state_mismatch(model, state)
        if problems:
            raise FlatminimaError(f"{where} does not match the architecture {c.model} builds "
                                  f"(options {c.model_options}): " + "; ".join(problems[:8])
                                  + (f" and {len(problems) - 8} more" if len(problems) > 8 else "")
                                  + ". Fix checkpoints.model/options, or the manifest row.")
        check_finite(state, where)


def changed_checkpoints(old_rows: list[dict[str, Any]], configs: list[Any]) -> list[str]:
    """Checkpoints measured before whose file has changed since (same path, other SHA-256)."""
    before = {}
    for r in old_rows:
        src = (r.get("config") or {}).get("source") or {}
        if src.get("kind") == "checkpoint":
            before[src["path"]] = src["sha256"]
    out = []
    for c in configs:
        src = c.source or {}
        if src.get("kind") == "checkpoint" and src["path"] in before and before[src["path"]] != src["sha256"]:
            out.append(f"{src['path']} (SHA-256 {before[src['path']][:12]}… when measured, {src['sha256'][:12]}… now)")
    return out


def load_shift(name: str, spec: dict[str, Any], dataset: Any) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """A user's shifted test set(s) as ``{severity: (x, y)}``, in the dataset's dtypes, checked against it."""
    from ..data.datasets import as_inputs, as_labels, as_targets

    if spec.get("file"):
        from ..data.files import read_arrays

        arrays = read_arrays(spec["file"])
        x = arrays.get("x_test", arrays.get("x"))
        y = arrays.get("y_test", arrays.get("y"))
        if x is None or y is None:
            raise FlatminimaError(f"shifts.{name}.file {spec['file']!r} needs arrays x_test and y_test (or x and y); "
                                  f"it has {sorted(arrays)}.")
        made: Any = {1: (x, y)}
    else:
        from ..models.zoo import factory_origin, import_origin

        try:
            fn = import_origin(factory_origin(spec["factory"]))
            made = fn(**spec.get("options", {}))
        except FlatminimaError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's factory failed: name it
            raise FlatminimaError(f"shifts.{name}.factory {spec['factory']!r} failed: "
                                  f"{type(err).__name__}: {err}") from None
        if isinstance(made, (tuple, list)) and len(made) == 2:
            made = {1: made}
        if not isinstance(made, dict) or not made:
            raise FlatminimaError(f"shifts.{name}.factory {spec['factory']!r} must return (x, y) or "
                                  "{severity: (x, y)}.")
    out = {}
    regression = getattr(dataset, "task", "classification") == "regression"
    for sev, (x, y) in made.items():
        x = as_inputs(x.numpy() if isinstance(x, torch.Tensor) else x)
        y = (as_targets if regression else as_labels)(y.numpy() if isinstance(y, torch.Tensor) else y)
        if tuple(x.shape[1:]) != tuple(dataset.input_shape) or len(x) != len(y) or len(x) == 0:
            raise FlatminimaError(f"shifts.{name}: inputs of shape {tuple(x.shape)} and {len(y)} targets; the data's "
                                  f"samples have shape {tuple(dataset.input_shape)} (and as many targets as inputs).")
        if not regression and (int(y.min()) < 0 or int(y.max()) >= dataset.num_classes):
            raise FlatminimaError(f"shifts.{name}: labels outside 0..{dataset.num_classes - 1}.")
        out[int(sev)] = (x, y)
    return out


def memory_runs(models: list[dict[str, Any]], make_run: Any, common: dict[str, Any]
                ) -> tuple[list[Any], dict[str, torch.nn.Module]]:
    """Runs for in-memory models (``[{"model": nn.Module, "hyperparameters": {...}, "seed": 0}, ...]``), each
    ``make_run(**fields, **common)``: each run's id hashes its weights, so a model changed after it was measured
    is a new run."""
    if not isinstance(models, (list, tuple)) or not models:
        raise FlatminimaError("models= takes a non-empty list of {'model': nn.Module, 'hyperparameters': {...}, "
                              "'seed': int} entries.")
    configs, modules, seen = [], {}, set()
    for i, entry in enumerate(models):
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), torch.nn.Module):
            raise FlatminimaError(f"models[{i}] must be a dict with a torch.nn.Module under 'model', got "
                                  f"{type(entry).__name__}.")
        unknown = sorted(set(entry) - {"model", "hyperparameters", "seed"})
        if unknown:
            raise FlatminimaError(f"models[{i}]: unknown key(s) {unknown}; an entry takes model, hyperparameters, "
                                  "seed.")
        hp = dict(entry.get("hyperparameters") or {})
        seed = entry.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise FlatminimaError(f"models[{i}]: seed must be an integer, got {seed!r}.")
        state = entry["model"].state_dict()
        check_finite(state, f"models[{i}]")
        digest = hashlib.sha256()
        for k in sorted(state):
            digest.update(k.encode())
            digest.update(state[k].detach().cpu().contiguous().numpy().tobytes())
        sha = digest.hexdigest()
        if (sha, seed, repr(sorted(hp.items()))) in seen:
            raise FlatminimaError(f"models[{i}] repeats an earlier entry (same weights, hyperparameters and seed).")
        seen.add((sha, seed, repr(sorted(hp.items()))))
        modules[sha] = entry["model"]
        configs.append(make_run(model="memory", model_options={}, recipe=hp, seed=seed,
                                source={"kind": "memory", "sha256": sha, "class": type(entry["model"]).__name__},
                                **common))
    return configs, modules
