"""Curvature of an Objective: extreme eigenvalues, trace and spectral density of the Hessian or GGN.

Every function takes an :class:`~flatminima.Objective`, an ``operator`` (``"hessian"`` or ``"ggn"``) and a
``seed``, and returns a result that carries its error estimate and its cost.
"""

from .density import spectral_density
from .lanczos import Krylov, eigenvalues, power_iteration, rounding_floor
from .operators import OPERATORS, make_operator
from .results import DensityResult, EigenResult, TraceResult
from .summary import curvature_report
from .trace import trace

__all__ = [
    "OPERATORS", "curvature_report", "DensityResult", "EigenResult", "Krylov", "TraceResult", "eigenvalues",
    "make_operator",
    "power_iteration", "rounding_floor", "spectral_density", "trace",
]
