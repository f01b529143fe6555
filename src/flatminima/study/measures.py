"""The sharpness measures a study can compute: ``flatminima.sharpness`` when present, else curvature.

The study uses the measure registry's contract ``measure(obj, name, **config) -> Measure(value, stderr,
cost)``. Until the registry exists (or for names it lacks), two measures come straight from
:mod:`flatminima.curvature`:

* ``lambda_max``: the largest Hessian eigenvalue λ₁(∇²L(θ)) by Lanczos (Keskar et al. 2017 used it as a
  sharpness proxy; Ghorbani et al. 2019 for the method).
* ``trace``: tr(∇²L(θ)) by Hutch++ (Meyer et al. 2021), with its standard error.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from ..errors import FlatminimaError

_FALLBACK = ("lambda_max", "trace")


def _registry():
    try:
        from .. import sharpness
    except ImportError:
        return None
    return sharpness if hasattr(sharpness, "measure") and hasattr(sharpness, "available") else None


def available() -> list[str]:
    """Names a spec may list under ``[measures]``."""
    reg = _registry()
    names = set(_FALLBACK) | (set(reg.available()) if reg else set())
    return sorted(names)


def settings(name: str) -> list[str] | None:
    """The settings a measure takes (None when unknown: then the measure itself checks them)."""
    reg = _registry()
    if reg is not None and name in reg.available() and hasattr(reg, "entry"):
        return list(reg.entry(name).defaults())
    return None


def _cost_dict(cost: Any) -> dict[str, float]:
    if cost is None:
        return {}
    d = cost.as_dict() if hasattr(cost, "as_dict") else dict(cost)
    return {k: float(v) for k, v in d.items()}


def compute(obj: Any, name: str, config: dict[str, Any]) -> dict[str, Any]:
    """One measure as ``{"value", "stderr", "cost"}`` (plain floats, ready for the store)."""
    reg = _registry()
    if reg is not None and name in reg.available():
        m = reg.measure(obj, name, **config)
        stderr = getattr(m, "stderr", None)
        return {
            "value": float(m.value),
            "stderr": None if stderr is None else float(stderr),
            "cost": _cost_dict(getattr(m, "cost", None)),
        }
    from .. import curvature

    if name == "lambda_max":
        r = curvature.eigenvalues(obj, 1, which="largest", **config)
        return {
            "value": float(r.values[0]),
            "stderr": float(r.error_bounds[0]) if r.error_bounds is not None else None,
            "cost": _cost_dict(r.cost),
        }
    if name == "trace":
        r = curvature.trace(obj, **config)
        return {"value": float(r.value), "stderr": float(r.stderr), "cost": _cost_dict(r.cost)}
    raise FlatminimaError(f"unknown measure {name!r}; available: {available()}.")


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
    reg = _registry()
    if reg is not None and name in reg.available() and "init" in reg.entry(name).defaults() and "init" not in config:
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
