"""Curvature of an Objective: extreme eigenvalues, trace and spectral density of the Hessian or GGN.

Every function takes an :class:`~flatminima.Objective`, an ``operator`` (``"hessian"`` or ``"ggn"``) and a
``seed``, and returns a result that carries its error estimate and its cost. ``per_layer`` gives λmax,
trace ± s.e. and trace share of every parameter block (tensor or module).
"""

from .density import spectral_density
from .lanczos import Krylov, eigenvalues, power_iteration, rounding_floor
from .operators import OPERATORS, make_operator
from .per_layer import LayerCurvature, PerLayerResult, blocks_of, per_layer
from .results import DensityResult, EigenResult, TraceResult
from .summary import curvature_report
from .trace import trace

__all__ = [
    "OPERATORS", "curvature_report", "DensityResult", "EigenResult", "Krylov", "LayerCurvature", "PerLayerResult",
    "TraceResult", "blocks_of", "eigenvalues", "make_operator", "per_layer",
    "power_iteration", "rounding_floor", "spectral_density", "trace",
]
