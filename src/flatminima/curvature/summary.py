"""One call for the curvature report the CLI prints: top eigenvalues, trace and spectral density."""

from __future__ import annotations

from typing import Any

from ..objective import Objective
from .density import spectral_density
from .lanczos import eigenvalues
from .trace import trace


def curvature_report(obj: Objective, *, k: int = 5, samples: int = 60, density_samples: int = 4,
                     density_steps: int = 60, operator: str = "hessian", tol: float = 1e-4,
                     seed: int = 0) -> dict[str, Any]:
    """Top-k and bottom eigenvalues, trace (Hutch++) and SLQ density summary, each with error and cost."""
    top = eigenvalues(obj, k, "largest", tol=tol, operator=operator, seed=seed)
    bottom = eigenvalues(obj, 1, "smallest", tol=tol, operator=operator, seed=seed)
    tr = trace(obj, "hutch++", samples, operator=operator, seed=seed)
    dens = spectral_density(obj, density_samples, density_steps, operator=operator, seed=seed)
    return {"objective": obj.describe(), "loss": obj.loss(), "top": top, "bottom": bottom, "trace": tr,
            "density": dens}
