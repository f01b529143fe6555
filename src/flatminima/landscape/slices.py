"""1-D and 2-D slices of the loss landscape (Goodfellow et al. 2015; Li et al. 2018):

    f(α)    = L(θ₀ + α·d₁)
    f(α, β) = L(θ₀ + α·d₁ + β·d₂)

evaluated exactly (full-data means) at every grid point, on the training data and optionally a test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import FlatminimaError, require_positive_int
from ..objective import Cost, Objective
from .directions import Directions, as_directions, directions
from .grid_losses import evaluate_points, has_outputs
from .surface import Surface

__all__ = ["make_grid", "slice_1d", "slice_2d"]

Grid = int | Sequence[float] | np.ndarray


def make_grid(grid: Grid, span: tuple[float, float] = (-1.0, 1.0), name: str = "grid") -> np.ndarray:
    """``grid`` points evenly spaced over ``span`` (an int), or the given coefficients (a sequence)."""
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        require_positive_int(name, int(grid))
        lo, hi = span
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise FlatminimaError(f"span must be (low, high) with low < high, got {span!r}.")
        return np.linspace(lo, hi, int(grid))
    coefs = np.asarray(grid, dtype=np.float64).ravel()
    if coefs.size == 0:
        raise FlatminimaError(f"{name} has no points; pass a positive number of points or a non-empty list.")
    if not np.all(np.isfinite(coefs)):
        raise FlatminimaError(f"{name} holds non-finite coefficients: {coefs[~np.isfinite(coefs)][:5]}.")
    return coefs


def evaluate_directions(
    obj: Objective,
    test: Objective | None,
    dirs: Directions,
    coefs: np.ndarray,
    memory_mb: float,
    progress: bool,
    what: str,
    accuracy: bool | None = None,
    chunk_size: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any], Cost]:
    """Evaluate loss (+ accuracy) at every row of ``coefs`` on the train objective and the test one."""
    values: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    cost = Cost()
    for split, o in (("train", obj), ("test", test)):
        if o is None:
            continue
        if o.dim != obj.dim:
            raise FlatminimaError(
                f"the test objective has {o.dim} parameters, the train one {obj.dim}; "
                "build both from the same model and parameter selection."
            )
        with o.meter() as c:
            acc = has_outputs(o) if accuracy is None else accuracy
            vals, info = evaluate_points(
                o,
                dirs.origin,
                dirs.vectors,
                coefs,
                accuracy=acc,
                memory_mb=memory_mb,
                chunk_size=chunk_size,
                progress=progress,
                description=f"{what} ({split})",
            )
        cost = cost + c
        values |= {f"{split}_{k}": v for k, v in vals.items()}
    return values, info, cost


def surface_meta(obj: Objective, test: Objective | None, dirs: Directions, info: dict, meta: dict | None) -> dict:
    """The metadata every surface carries: the objective, the directions, the evaluation info and ``meta``."""
    d = obj.describe()
    out = {
        "directions": dirs.describe(),
        "objective": d,
        "mode": d.get("mode"),
        "evaluation": info,
        "test_objective": test.describe() if test is not None else None,
    }
    return out | (meta or {})


def slice_1d(
    obj: Objective,
    direction: Any = None,
    *,
    steps: Grid = 51,
    span: tuple[float, float] = (-1.0, 1.0),
    test: Objective | None = None,
    seed: int = 0,
    memory_mb: float = 512.0,
    progress: bool = True,
    accuracy: bool | None = None,
    chunk_size: int | None = None,
    label: str = "",
    meta: dict | None = None,
) -> Surface:
    """f(α) = L(θ₀ + α·d) at ``steps`` grid points (default 51, evenly over ``span``; or a sequence of the
    coefficients themselves).

    ``direction``: a :class:`Directions` (its origin is used), a vector of ``obj.dim`` entries, or ``None``
    for one filter-normalised random direction drawn with ``seed``. ``test``: a second Objective (same
    model, test data) evaluated at the same points. ``memory_mb`` bounds the memory of one chunk of points,
    ``chunk_size`` its number of points. ``accuracy``: also evaluate accuracy (default: when the objective
    has outputs; costs a second pass).

    Examples:
        Along the first axis of f(θ) = ½θᵀ diag(3, 2, 1) θ from θ₀ = (1, 1, 1):
        f(θ₀ + α·e₁) = 1.5·(1 + α)² + 1.5.

        >>> import torch
        >>> from flatminima import Objective
        >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        >>> obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.ones(3, dtype=torch.float64))
        >>> from flatminima.landscape import slice_1d
        >>> s = slice_1d(obj, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), steps=5, progress=False)
        >>> s.axes[0].tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]
        >>> s.values["train_loss"].tolist()
        [1.5, 1.875, 3.0, 4.875, 7.5]
    """
    dirs = directions(obj, "filter", 1, seed=seed) if direction is None else as_directions(obj, direction, 1)
    alpha = make_grid(steps, span, "steps")
    values, info, cost = evaluate_directions(
        obj, test, dirs, alpha[:, None], memory_mb, progress, "1-D slice", accuracy, chunk_size
    )
    return Surface(
        [alpha],
        values,
        surface_meta(obj, test, dirs, info, meta) | {"axis_names": ["alpha"]},
        cost=cost,
        label=label,
    )


def slice_2d(
    obj: Objective,
    directions_: Any = None,
    *,
    steps: Grid | tuple[Grid, Grid] = 51,
    span: tuple[float, float] = (-1.0, 1.0),
    test: Objective | None = None,
    seed: int = 0,
    memory_mb: float = 512.0,
    progress: bool = True,
    trajectory: np.ndarray | None = None,
    accuracy: bool | None = None,
    chunk_size: int | None = None,
    label: str = "",
    meta: dict | None = None,
) -> Surface:
    """f(α, β) = L(θ₀ + α·d₁ + β·d₂) on a grid (``steps`` for both axes, or ``(steps_alpha, steps_beta)``;
    each an int or a sequence of coefficients).

    ``directions_``: :class:`Directions` with two vectors, a (2, dim) matrix, or ``None`` for two
    filter-normalised random directions drawn with ``seed``. For ``pca`` directions the projected training
    trajectory is attached (drawn by ``plot``); ``trajectory`` overrides it with (points × 2) coordinates.
    """
    if directions_ is None:
        dirs = directions(obj, "filter", 2, seed=seed)
    else:
        dirs = as_directions(obj, directions_, 2)
    # A tuple of two is (steps_alpha, steps_beta); a list or an array gives the same coefficients on both axes.
    ga, gb = steps if isinstance(steps, tuple) and len(steps) == 2 else (steps, steps)
    alpha, beta = make_grid(ga, span, "steps (alpha)"), make_grid(gb, span, "steps (beta)")
    A, B = np.meshgrid(alpha, beta, indexing="ij")
    coefs = np.stack([A.ravel(), B.ravel()], axis=1)
    values, info, cost = evaluate_directions(obj, test, dirs, coefs, memory_mb, progress, "2-D slice", accuracy,
                                             chunk_size)
    values = {k: v.reshape(len(alpha), len(beta)) for k, v in values.items()}
    path = trajectory if trajectory is not None else dirs.trajectory
    if path is not None:
        path = np.asarray(path, dtype=np.float64)
        if path.ndim != 2 or path.shape[1] < 2:
            raise FlatminimaError(f"trajectory must have shape (points, 2), got {path.shape}.")
        path = path[:, :2]
    meta_all = surface_meta(obj, test, dirs, info, meta) | {"axis_names": ["alpha", "beta"]}
    return Surface([alpha, beta], values, meta_all, trajectory=path, cost=cost, label=label)


def theta_at(dirs: Directions, coefs: Sequence[float]) -> torch.Tensor:
    """θ₀ + Σ c_i d_i: the parameter vector at one grid point (to check or reuse a point)."""
    c = torch.as_tensor(list(coefs), dtype=dirs.vectors.dtype, device=dirs.vectors.device)
    return dirs.origin + c @ dirs.vectors[: len(c)]
