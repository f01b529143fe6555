"""The landscape lab's toys: analytic landscapes, optimisers/samplers, physical models and the saddle test."""

from .landscapes import LANDSCAPES, CriticalPoint, Landscape, find_critical_points, get
from .optimisers import (
    METHODS,
    cooling_schedule,
    golden_section,
    newton,
    optimize,
    replica_exchange,
    simulated_annealing,
)
from .saddle_statistics import SaddleTestResult, saddle_test

__all__ = [
    "LANDSCAPES",
    "CriticalPoint",
    "Landscape",
    "find_critical_points",
    "get",
    "METHODS",
    "cooling_schedule",
    "golden_section",
    "newton",
    "optimize",
    "replica_exchange",
    "simulated_annealing",
    "SaddleTestResult",
    "saddle_test",
]
