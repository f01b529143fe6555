"""Loss-landscape pictures: 1-D and 2-D slices, interpolation between solutions, batched evaluation.

    slice_1d:    f(α)    = L(θ₀ + α·d)
    slice_2d:    f(α, β) = L(θ₀ + α·d₁ + β·d₂)
    interpolate: L((1 − t)·θ_a + t·θ_b), with the barrier height (Frankle et al. 2020)
    connect:     a trained Bézier / polygonal-chain curve from θ_a to θ_b (Garipov et al. 2018)

Directions: random Gaussian, filter- and layer-normalised (Li et al. 2018), top Hessian eigenvectors,
trajectory PCA, the line between two solutions. Grids are evaluated in chunks with ``torch.func.vmap``
(one data pass per chunk) sized by a memory budget; every result is a :class:`Surface` that plots
(PNG + SVG) and saves (CSV, NPZ, JSON) itself.
"""

from .connect import CURVES, Connection, connect, curve_point, curve_weights
from .directions import KINDS, Directions, directions
from .grid_losses import chunk_size_for, evaluate_points, per_point_bytes
from .interpolation import barrier, interpolate
from .slices import make_grid, slice_1d, slice_2d, theta_at
from .surface import Surface, plot_curves

__all__ = [
    "CURVES",
    "Connection",
    "KINDS",
    "Directions",
    "Surface",
    "barrier",
    "chunk_size_for",
    "connect",
    "curve_point",
    "curve_weights",
    "directions",
    "evaluate_points",
    "interpolate",
    "make_grid",
    "per_point_bytes",
    "plot_curves",
    "slice_1d",
    "slice_2d",
    "theta_at",
]
