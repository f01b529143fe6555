"""Sharpness and flatness measures from the literature behind one call.

    measure(obj, "worst_case", rho=0.05, adaptive=True)  ->  Measure(value, stderr, config, cost, extra)
    available()                                          ->  {name: one-line description}

Each measure is one function in one module of this package, registered with
``@register("name", "description")``; every public module here is imported on package import, so a new
measure is one function in one file. Formulas and citations: ``docs/measures.md`` and each docstring.
"""

from __future__ import annotations

import importlib
import pkgutil

from .registry import available, entry, measure, measure_all, register, settings_per_measure
from .result import Measure

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name not in ("registry", "result"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["Measure", "available", "entry", "measure", "measure_all", "register", "settings_per_measure"]
