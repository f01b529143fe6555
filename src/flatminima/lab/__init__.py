"""The landscape lab: named experiments, one per claim, each printing numbers and saving its figure.

flatminima.lab.available()               -> {name: "Cn: title"}
flatminima.lab.run(name, out=..., quick=True, seed=0) -> LabResult
"""

from . import analytic, networks  # noqa: F401  (registers the experiments)
from .registry import LabResult, available, get, run

__all__ = ["LabResult", "available", "get", "run"]
