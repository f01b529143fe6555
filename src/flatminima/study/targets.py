"""Study targets: what the measures are correlated with, in a registry like the measure registry.

A target is either

* a **model target**: ``fn(model, dataset, metrics) -> float`` for one trained model (``metrics`` is what
  :func:`flatminima.workflows.pipeline.evaluate_model` computed for it: the built-ins only read from it), or
* a **table target**: ``fn(rows) -> list[float | None]``, computed from the whole table of finished runs
  (effective robustness needs the other models' accuracies: Miller et al. 2021; Taori et al. 2020).

Each has a direction (``higher_is_better``) that fixes what "better" means in a verdict. A user's target
is a function of their own, ``module:function(model, data) -> float``, named in the spec::

    [targets.robust_acc]
    function = "mytargets:robust_acc"     # called with (model, dataset) after training
    higher_is_better = true

A model target that raises or returns a non-finite value is recorded as failed for that run, with the
message; the other targets and runs go on. Built-ins (``available()``): classification ``gap`` (train −
test accuracy), ``test_acc``, ``test_loss``, ``ece`` (Guo et al. 2017), ``nll``, ``brier``; with shifts
``shift_drop`` (clean − shifted accuracy), ``shift_acc``, ``relative_drop`` (drop / clean accuracy) and the
table target ``effective_robustness``; regression ``test_mse`` and ``mse_gap`` (test − train MSE).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import FlatminimaError

TASKS = ("classification", "regression", "any")


@dataclass(frozen=True)
class Target:
    """One registered target: its direction, the task it applies to and how it is computed."""

    name: str
    fn: Callable[..., Any]
    higher_is_better: bool
    title: str
    task: str = "any"
    table: bool = False
    description: str = ""
    default: bool = True  # part of a study's targets when the spec names none

    def to_meta(self) -> dict[str, Any]:
        """What the report needs to read a verdict (stored in the study's meta; the report imports no study)."""
        good, bad = (("higher", "lower") if self.higher_is_better else ("lower", "higher"))
        return {"title": self.title, "lower_is_better": not self.higher_is_better, "table": self.table,
                "good": f"{good} {self.name}", "bad": f"{bad} {self.name}"}


_REGISTRY: dict[str, Target] = {}


def register(name: str, fn: Callable[..., Any], *, higher_is_better: bool, title: str | None = None,
             task: str = "any", table: bool = False, description: str = "", default: bool = False) -> Target:
    """Add a target. ``fn(model, dataset, metrics) -> float`` (``table=False``) or ``fn(rows) -> list``
    (``table=True``); ``task`` is ``"classification"``, ``"regression"`` or ``"any"``.

    Examples:
        A per-model target: the test loss, lower is better (``metrics`` holds what the evaluation measured).

        >>> from flatminima.study import targets
        >>> t = targets.register("my_test_loss", lambda model, dataset, metrics: metrics["test_loss"],
        ...                      higher_is_better=False, title="test loss", description="the test loss")
        >>> targets.available()["my_test_loss"], t.to_meta()["good"]
        ('the test loss', 'lower my_test_loss')
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise FlatminimaError(f"a target name is an identifier (letters, digits, _), got {name!r}.")
    if task not in TASKS:
        raise FlatminimaError(f"target {name!r}: task must be one of {list(TASKS)}, got {task!r}.")
    if not callable(fn):
        raise FlatminimaError(f"target {name!r}: fn must be callable, got {type(fn).__name__}.")
    if not isinstance(higher_is_better, bool):
        raise FlatminimaError(f"target {name!r}: higher_is_better must be true or false, got {higher_is_better!r}.")
    target = Target(name, fn, higher_is_better, title or name, task, table, description, default)
    _REGISTRY[name] = target
    return target


def available(task: str | None = None) -> dict[str, str]:
    """Registered targets (for ``task``, or all) → one-line description."""
    return {n: t.description or t.title for n, t in sorted(_REGISTRY.items())
            if task is None or t.task in (task, "any")}


def get(name: str) -> Target:
    if name not in _REGISTRY:
        raise FlatminimaError(f"unknown target {name!r}; registered: {sorted(_REGISTRY)}, or a table "
                              "[targets.<name>] with function = 'module:function' and higher_is_better.")
    return _REGISTRY[name]


def defaults(task: str, has_shifts: bool) -> list[str]:
    """The targets a study computes when its spec names none."""
    return [n for n, t in sorted(_REGISTRY.items())
            if t.default and t.task in (task, "any") and (has_shifts or not _needs_shifts(n))]


def _needs_shifts(name: str) -> bool:
    return name in ("shift_drop", "shift_acc", "relative_drop", "effective_robustness")


def user_target(name: str, function: str, higher_is_better: bool) -> Target:
    """The target a spec's ``[targets.<name>] function = "module:function"`` names (not registered globally)."""
    from ..models.zoo import factory_origin, import_origin

    try:
        where = factory_origin(function)
        fn = import_origin(where)
    except Exception as err:  # noqa: BLE001 - a bad spec, a missing module or name, the module failing on import
        raise FlatminimaError(f"targets.{name}.function = {function!r}: cannot load it "
                              f"({type(err).__name__}: {str(err).replace('model factory', 'function')}).") from None
    if where["kind"] != "user" or not inspect.isfunction(fn):
        raise FlatminimaError(f"targets.{name}.function = {function!r} must be a function of your own, "
                              "(model, data) -> float.")
    return Target(name, lambda model, data, metrics: fn(model, data), higher_is_better,
                  f"{name} ({function})", "any", False, f"user target {function}")


def resolve(names: dict[str, dict[str, Any]] | None, task: str, has_shifts: bool) -> dict[str, Target]:
    """The study's targets from its spec's ``[targets]`` table (None: :func:`defaults`), each checked."""
    if names is None:
        return {n: _REGISTRY[n] for n in defaults(task, has_shifts)}
    out = {}
    for name, settings in names.items():
        settings = dict(settings or {})
        if "function" in settings:
            if "higher_is_better" not in settings:
                raise FlatminimaError(f"targets.{name}: a user target needs higher_is_better = true or false "
                                      "(which end of it is 'better').")
            unknown = sorted(set(settings) - {"function", "higher_is_better"})
            if unknown:
                raise FlatminimaError(f"targets.{name}.{unknown[0]}: unknown key; a user target takes "
                                      "function and higher_is_better.")
            out[name] = user_target(name, settings["function"], settings["higher_is_better"])
            continue
        if settings:
            raise FlatminimaError(f"targets.{name}: a built-in target takes no settings, got {sorted(settings)}.")
        t = get(name)
        if t.task not in (task, "any"):
            raise FlatminimaError(f"targets.{name} applies to {t.task} studies; this study's data is {task} "
                                  f"(targets for it: {sorted(available(task))}).")
        if _needs_shifts(name) and not has_shifts:
            raise FlatminimaError(f"targets.{name} needs distribution shifts, and this study has none "
                                  "(data.shifts, or a [shifts] table).")
        out[name] = t
    return out


def compute(targets: dict[str, Target], model: Any, dataset: Any, metrics: dict[str, Any]
            ) -> tuple[dict[str, float | None], dict[str, str]]:
    """Every model target of one run: ``(values, errors)``; a failing target is None with its message."""
    values: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    for name, t in targets.items():
        if t.table:
            continue
        try:
            v = t.fn(model, dataset, metrics)
            v = None if v is None else float(v)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"returned a non-finite value ({v})")
        except Exception as err:  # noqa: BLE001 - one target failing never loses the run or its other targets
            values[name], errors[name] = None, f"{type(err).__name__}: {err}"
            continue
        values[name] = v
    return values, errors


def table_targets(targets: dict[str, Target] | None = None) -> dict[str, Callable]:
    """``name -> fn(rows)`` of the table targets (all registered ones, or those of ``targets``)."""
    pool = _REGISTRY if targets is None else targets
    return {n: t.fn for n, t in pool.items() if t.table}


# ---- the built-ins: read from the evaluation every run makes (workflows.pipeline.evaluate_model) -----------
def _metric(key: str) -> Callable[[Any, Any, dict], Any]:
    return lambda model, data, metrics: metrics.get(key)


def _relative_drop(model: Any, data: Any, metrics: dict) -> float | None:
    drop, acc = metrics.get("shift_drop"), metrics.get("test_acc")
    return None if drop is None or not acc else drop / acc


def _effective_robustness(rows: list[dict[str, Any]]) -> list[float | None]:
    """Each run's mean effective robustness over its shifts (:func:`flatminima.statistics.effective_robustness`,
    probit fit leaving the run's configuration out)."""
    from .. import statistics as st

    ok = [i for i, r in enumerate(rows) if r.get("shift_accs") and r.get("test_acc") is not None]
    out: list[float | None] = [None] * len(rows)
    if len(ok) < 3 or len({rows[i]["label"] for i in ok}) < 2:
        return out
    shifts = sorted(set.intersection(*(set(rows[i]["shift_accs"]) for i in ok)))
    if not shifts:
        return out
    values = st.effective_robustness_over_shifts(
        [rows[i]["test_acc"] for i in ok], {s: [rows[i]["shift_accs"][s] for i in ok] for s in shifts},
        groups=[rows[i]["label"] for i in ok])
    for i, v in zip(ok, values.values, strict=True):
        out[i] = float(v)
    return out


# (name, higher is better, title, task, in the default set)
for _name, _hib, _title, _task, _default in (
    ("gap", False, "generalisation gap (train − test accuracy)", "classification", True),
    ("test_acc", True, "test accuracy", "classification", True),
    ("test_loss", False, "test loss (the study's loss)", "any", False),
    ("ece", False, "calibration error (ECE, test set)", "classification", True),
    ("nll", False, "negative log-likelihood (test set)", "classification", False),
    ("brier", False, "Brier score (test set)", "classification", False),
    ("shift_drop", False, "accuracy drop under shift (test − shifted accuracy)", "classification", True),
    ("shift_acc", True, "accuracy under shift (mean over shifts)", "classification", False),
    ("test_mse", False, "test mean squared error", "regression", True),
    ("mse_gap", False, "MSE gap (test − train MSE)", "regression", True),
):
    register(_name, _metric(_name), higher_is_better=_hib, title=_title, task=_task, default=_default)
register("relative_drop", _relative_drop, higher_is_better=False, task="classification", default=False,
         title="relative accuracy drop under shift (drop / test accuracy)")
register("effective_robustness", _effective_robustness, higher_is_better=True, task="classification", table=True,
         default=True, title="effective robustness (shifted accuracy above the line clean accuracy predicts)")
