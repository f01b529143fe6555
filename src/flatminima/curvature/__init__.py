"""Curvature of an Objective: extreme eigenvalues, trace and spectral density of the Hessian or GGN.

Every function takes an :class:`~flatminima.Objective` with an ``operator`` (``"hessian"`` or ``"ggn"``), or
the matrix itself: an operator view (``obj.hessian``, ``obj.ggn``), a dense symmetric tensor or a SciPy
``LinearOperator`` (:func:`as_operator`); and a ``seed``, and returns a result that carries its error estimate
and its cost. ``per_layer`` gives λmax, trace ± s.e. and trace share of every parameter block (tensor or
module) of an Objective.
"""

from .density import spectral_density
from .lanczos import Krylov, eigenvalues, power_iteration, rounding_floor
from .operators import OPERATORS, as_operator, make_operator
from .per_layer import LayerCurvature, PerLayerResult, blocks_of, per_layer
from .results import DensityResult, EigenResult, TraceResult
from .summary import curvature_report
from .trace import trace

__all__ = [
    "OPERATORS", "DensityResult", "EigenResult", "Krylov", "LayerCurvature", "PerLayerResult", "TraceResult",
    "as_operator", "blocks_of", "curvature_report", "eigenvalues", "make_operator", "per_layer", "power_iteration",
    "rounding_floor", "spectral_density", "trace",
]
