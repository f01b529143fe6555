"""The sharpness measures a study can compute: ``flatminima.sharpness`` when present, else curvature.

The study uses the measure registry's contract ``measure(obj, name, **config) -> Measure(value, stderr,
cost)``. Until the registry exists (or for names it lacks), two measures come straight from
:mod:`flatminima.curvature`:

* ``lambda_max``: the largest Hessian eigenvalue λ₁(∇²L(θ)) by Lanczos (Keskar et al. 2017 used it as a
  sharpness proxy; Ghorbani et al. 2019 for the method).
* ``trace``: tr(∇²L(θ)) by Hutch++ (Meyer et al. 2021), with its standard error.
"""

from __future__ import annotations

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
