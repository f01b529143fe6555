"""Result records of the curvature algorithms: values, error estimates, and what they cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..jsonable import plain as _plain
from ..objective import Cost
from ..results import Estimate


@dataclass
class EigenResult:
    """Eigenpairs of the curvature operator.

    ``residuals[i] = ‖M v_i − λ_i v_i‖`` (v_i unit-norm), measured with a fresh product after the
    iteration stopped (the TRUE residual, not the Lanczos recurrence's estimate) and never below
    ``floor``, the rounding floor of the dtype (:func:`~flatminima.curvature.lanczos.rounding_floor`). By
    Bauer-Fike each λ_i is within ``residuals[i]`` of a true eigenvalue, and within
    ``error_bounds[i] = max(min(r_i, r_i²/δ_i), floor)`` once the gap δ_i to the rest of the spectrum (the
    Ritz gap less the neighbour's residual) is resolved. ``converged[i]`` says whether ``r_i <= tol·|λ_i|``
    (``stop="gap"``: whether the error bound is). ``recurrence_residuals`` are the recurrence's own
    residual estimates |β·s| at the stop (Lanczos only), kept to show how far they are from the true
    residuals.

    :attr:`eigenvalue_estimates` gives each λ_i as an :class:`~flatminima.results.Estimate` with the
    interval λ_i ± ``error_bounds[i]`` (a bound, not a confidence level: ``level`` is None, no stderr);
    :attr:`estimate` is the first one (the top eigenvalue for ``which="largest"``).
    """

    values: torch.Tensor
    residuals: torch.Tensor
    converged: torch.Tensor
    error_bounds: torch.Tensor
    vectors: torch.Tensor | None
    iterations: int
    method: str
    operator: str
    which: str
    tol: float
    seed: int
    mode: str
    cost: Cost = field(default_factory=Cost)
    floor: float = 0.0
    recurrence_residuals: torch.Tensor | None = None
    product: dict[str, Any] = field(default_factory=dict)  # what the products rest on (Operator.notes)
    precision: dict[str, str] = field(default_factory=dict)  # the products' dtype, the bounds' (Operator.precision)

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    @property
    def eigenvalue_estimates(self) -> list[Estimate]:
        """Each eigenvalue with its interval λ_i ± error_bounds[i] (see the class)."""
        method = "Bauer-Fike bound" if self.all_converged else "Bauer-Fike bound (not converged)"
        return [Estimate(v, None, v - b, v + b, None, method)
                for v, b in zip(self.values.tolist(), self.error_bounds.tolist(), strict=True)]

    @property
    def estimate(self) -> Estimate:
        """The first eigenvalue's Estimate."""
        return self.eigenvalue_estimates[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self) | {"cost": self.cost.to_dict()}
        d.pop("vectors")
        d["eigenvalue_estimates"] = [e.to_dict() for e in self.eigenvalue_estimates]
        return _plain(d)


@dataclass
class TraceResult:
    """tr(M) estimated from Hessian-vector products; ``stderr`` is the Monte Carlo standard error over
    ``samples`` random probes; :attr:`estimate` is value ± 1.96·stderr."""

    value: float
    stderr: float
    samples: int
    method: str
    operator: str
    seed: int
    mode: str
    cost: Cost = field(default_factory=Cost)
    product: dict[str, Any] = field(default_factory=dict)  # what the products rest on (Operator.notes)
    precision: dict[str, str] = field(default_factory=dict)  # the products' dtype (Operator.precision)

    @property
    def estimate(self) -> Estimate:
        return Estimate.from_stderr(self.value, self.stderr)

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        return self.value - z * self.stderr, self.value + z * self.stderr

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self) | {"cost": self.cost.to_dict(), "estimate": self.estimate.to_dict()})


@dataclass
class DensityResult:
    """Spectral density by stochastic Lanczos quadrature with Gaussian broadening.

    ``density`` integrates to 1 over ``grid``; ``nodes``/``weights`` are the quadrature (Ritz values and
    squared first components) of each of the ``samples`` random probes; ``negative_mass`` is the spectral
    mass below zero with its standard error across probes; ``outliers`` are the Ritz values above the bulk
    (the 99% quantile).
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    negative_mass: float
    negative_mass_stderr: float
    bulk_edge: float
    outliers: list[float]
    samples: int
    steps: int
    operator: str
    seed: int
    mode: str
    cost: Cost = field(default_factory=Cost)
    product: dict[str, Any] = field(default_factory=dict)  # what the products rest on (Operator.notes)
    precision: dict[str, str] = field(default_factory=dict)  # the products' dtype (Operator.precision)

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self) | {"cost": self.cost.to_dict(),
                                       "negative_mass_estimate": self.negative_mass_estimate.to_dict()})

    @property
    def negative_mass_estimate(self) -> Estimate:
        """The spectral mass below zero with its standard error across probes (normal 95% interval)."""
        return Estimate.from_stderr(self.negative_mass, self.negative_mass_stderr)

    @property
    def estimate(self) -> Estimate:
        """Same as :attr:`negative_mass_estimate` (the density's one estimated number with an error)."""
        return self.negative_mass_estimate

    def plot(self, path: str, *, log: bool = True, title: str | None = None) -> list[str]:
        """Save the density as PNG and SVG and the data behind it as CSV; returns the paths written."""
        import matplotlib.pyplot as plt

        from ..plotting import save_figure, save_table

        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        y = np.maximum(self.density, 1e-12) if log else self.density
        ax.plot(self.grid, y, lw=1.2)
        if log:
            ax.set_yscale("log")
        ax.axvline(0.0, color="grey", lw=0.6, ls=":")
        ax.set_xlabel(f"eigenvalue of the {self.operator}")
        ax.set_ylabel("density")
        ax.set_title(title or f"SLQ spectral density ({self.samples} probes x {self.steps} steps, "
                              f"sigma={self.sigma:.2g}, {self.mode} mode)", fontsize=8)
        paths = save_figure(fig, path)
        paths.append(save_table(path + ".csv", {"eigenvalue": self.grid, "density": self.density}))
        return paths
