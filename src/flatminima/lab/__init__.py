"""The landscape lab: one pre-registered experiment per claim, each printing numbers and saving its figure.

flatminima.lab.specs()                   -> [ClaimSpec] in claim order: the single source of truth
flatminima.lab.available()               -> {name: "Cn: statement"}
flatminima.lab.run(name, out=..., quick=True, seed=k) -> LabResult (seed set k: seeds k·n … k·n + n − 1)
flatminima.lab.rules                     -> the decision rules (sign, band, Holm, combine, stable)
"""

from . import (  # noqa: F401  (registers the experiments)
    critical_points,
    data_sculpting,
    edge,
    flat_regions,
    networks,
    optimiser_basins,
    physical_landscapes,
    plateaus,
    rules,
    saddles,
)
from .bench import Bench
from .registry import ClaimSpec, Context, LabResult, available, get, run, specs

__all__ = ["Bench", "ClaimSpec", "Context", "LabResult", "available", "get", "rules", "run", "specs"]
