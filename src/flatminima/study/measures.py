"""The measures a study computes: every one through the registry, :func:`flatminima.sharpness.measure`.

``compute`` turns the registry's :class:`~flatminima.sharpness.Measure` into the plain record the study
store keeps: ``value``, ``stderr``, ``cost``, ``config`` (every setting used, defaults included),
``converged`` (the measure's own flag: False when an iteration such as Lanczos stopped before its
tolerance; None for a measure with nothing to converge) and ``extra`` (the measure's details). Tensors in
``config``/``extra`` with more than :data:`MAX_LIST` entries (``init``, the initial weights) are stored
as a short description, not as numbers.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from .. import sharpness
from ..errors import FlatminimaError
from ..jsonable import plain

MAX_LIST = 64


def available() -> list[str]:
    """Names a spec may list under ``[measures]``: the registry's."""
    return sorted(sharpness.available())


def settings(name: str) -> list[str] | None:
    """The settings a measure takes (None for a name the registry lacks: the spec check reports it)."""
    if name not in sharpness.available():
        return None
    from ..sharpness.registry import accepted_settings

    return accepted_settings(name)


def _cost_dict(cost: Any) -> dict[str, float]:
    if cost is None:
        return {}
    d = cost.to_dict() if hasattr(cost, "to_dict") else dict(cost)
    return {k: float(v) for k, v in d.items()}


def _small(x: Any) -> Any:
    """JSON-ready ``x`` with long vectors (a tensor of initial weights) replaced by a description."""
    if hasattr(x, "shape") and hasattr(x, "numel") and x.numel() > MAX_LIST:
        return f"<tensor of {x.numel()} values, not stored>"
    x = plain(x)
    if isinstance(x, dict):
        return {k: _small(v) for k, v in x.items()}
    if isinstance(x, list):
        return f"<list of {len(x)} values, not stored>" if len(x) > MAX_LIST else [_small(v) for v in x]
    return x if x is None or isinstance(x, (bool, int, float, str)) else str(x)


def record(m: Any) -> dict[str, Any]:
    """The store's record of one registry :class:`~flatminima.sharpness.Measure` (see the module doc)."""
    converged = m.extra.get("converged")
    return {
        "value": float(m.value),
        "stderr": None if m.stderr is None else float(m.stderr),
        "cost": _cost_dict(m.cost),
        "config": _small(m.config),
        "converged": None if converged is None else bool(converged),
        "extra": _small(m.extra),
    }


def compute(obj: Any, name: str, config: dict[str, Any]) -> dict[str, Any]:
    """One measure by the registry, as the store's record (plain JSON values; see the module doc)."""
    if name not in sharpness.available():
        raise FlatminimaError(f"unknown measure {name!r}; available: {available()}.")
    return record(sharpness.measure(obj, name, **config))


# ---- checking a spec's measure settings before any run -----------------------------------------------------
@functools.lru_cache(maxsize=1)
def _tiny_objective():
    """A 3-feature, 2-class linear model on 8 samples: every measure runs on it in milliseconds."""
    import torch

    from ..objective import Objective

    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    x = torch.randn(8, 3, generator=gen)
    y = torch.tensor([0, 1] * 4)
    return Objective(model, "cross_entropy", (x, y))


def _dry_run(name: str, config_json: str) -> str | None:
    """None when the measure runs with ``config`` on the tiny objective, else the error's message."""
    obj = _tiny_objective()
    config = json.loads(config_json)
    if name in sharpness.available() and "init" in sharpness.entry(name).defaults() and "init" not in config:
        config["init"] = obj.params.clone()
    try:
        compute(obj, name, config)
    except Exception as err:  # noqa: BLE001 - reported with the setting's path by check_settings
        return f"{type(err).__name__}: {err}" if not isinstance(err, FlatminimaError) else str(err)
    return None


_dry_cache: dict[tuple[str, str], str | None] = {}


def check_settings(name: str, config: dict[str, Any]) -> None:
    """Refuse settings a measure would refuse at run time, by a dry run on a tiny objective.

    Each measure validates its own settings when called (``require_positive("rho", rho)`` ...), so calling
    it on an 8-sample linear model is the one check that cannot drift from the measure's code. An error is
    blamed on the settings only when the same measure with its defaults runs there; a measure that cannot
    run on the tiny model at all is left to the real run (its settings' names were checked already).
    """
    if not config:
        return  # the defaults are the measure's own
    try:
        key = (name, json.dumps(config, sort_keys=True))
    except TypeError:
        return  # a non-JSON value (a tensor given through the library): checked by the run itself
    if key not in _dry_cache:
        _dry_cache[key] = _dry_run(*key)
    problem = _dry_cache[key]
    if problem is None or not any(re.search(rf"\b{re.escape(k)}\b", problem) for k in config):
        return  # it runs, or what failed is not one of the settings given
    if (name, "{}") not in _dry_cache:
        _dry_cache[name, "{}"] = _dry_run(name, "{}")
    if _dry_cache[name, "{}"] is not None:
        return  # the measure cannot run on the tiny model even with its defaults: left to the real run
    shown = ", ".join(f"{k} = {v!r}" for k, v in config.items()) or "(defaults)"
    raise FlatminimaError(f"measures.{name} ({shown}): {problem}")
