"""Which symmetric matrix the curvature algorithms act on.

    hessian:  H = ∇²L(θ)                          (indefinite away from a minimum)
    ggn:      G = Σ_b w_b J_bᵀ ∇²_z ℓ_b J_b / Σ w_b  (positive semi-definite for convex losses;
                                                    Schraudolph 2002, Martens 2010)

Every algorithm takes an :class:`~flatminima.objective.Operator` (v ↦ M v with its ``dim``, ``dtype``,
``device``, meter and memory reservation), so the split between "what matrix" and "what algorithm" stays
as in curvlinops. :func:`as_operator` makes one from what a user has:

- an Objective and ``operator="hessian" | "ggn"`` (its view ``obj.hessian`` / ``obj.ggn``, at ``theta``);
- an operator view itself (``obj.hessian``, ``obj.operator("ggn", θ)``);
- a dense symmetric ``torch.Tensor`` (products ``A @ v``, each recorded as one product);
- a SciPy ``scipy.sparse.linalg.LinearOperator`` (or any object with ``shape``, ``dtype`` and
  ``matvec``), its products through NumPy on the CPU, each recorded as one product;
- an object with an Objective's product protocol (``hvp``, ``dim``, ``dtype``, ``device``, and its own
  ``meter()`` / ``reserve()`` where it has them).

For a matrix there is no data: a result's cost counts its products and seconds, no data passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import FlatminimaError, require_choice
from ..objective import Objective, Operator

OPERATORS = ("hessian", "ggn")

MatVec = Callable[[torch.Tensor], torch.Tensor]
Curvature = Objective | Operator | torch.Tensor | Any  # Any: a SciPy LinearOperator


def make_operator(obj: Objective, kind: str = "hessian", theta: torch.Tensor | None = None) -> MatVec:
    """The matrix-vector product ``v ↦ M(θ) v`` for ``kind`` in ``("hessian", "ggn")``."""
    require_choice("operator", kind, OPERATORS)
    if kind == "hessian":
        return lambda v: obj.hvp(v, theta)
    return lambda v: obj.ggn_vp(v, theta)


def as_operator(A: Curvature, operator: str | None = None, theta: torch.Tensor | None = None) -> Operator:
    """``A`` as an :class:`~flatminima.objective.Operator` (see the module for what ``A`` may be).

    ``operator`` (default ``"hessian"``) and ``theta`` choose the matrix of an Objective; for anything else
    the matrix is ``A`` itself, so they must be left out.
    """
    if isinstance(A, Objective):
        return A.operator(operator or "hessian", theta)
    if operator is not None and not (isinstance(A, Operator) and operator == A.kind):
        raise FlatminimaError(f"operator={operator!r} picks the matrix of an Objective; {_what(A)} is already the "
                              "matrix. Leave operator out (or pass the Objective).")
    if theta is not None:
        raise FlatminimaError(f"theta= picks the point of an Objective; {_what(A)} is already the matrix. Use "
                              "obj.operator(kind, theta) for an Objective's matrix at another θ.")
    if isinstance(A, Operator):
        return A
    if isinstance(A, torch.Tensor):
        return _dense(A)
    if all(hasattr(A, name) for name in ("shape", "dtype", "matvec")):
        return _linear_operator(A)
    if all(hasattr(A, name) for name in ("hvp", "dim", "dtype", "device")):
        return _objective_like(A)
    raise FlatminimaError(
        f"cannot take the curvature of a {type(A).__name__}: pass an Objective, its view obj.hessian / obj.ggn, a "
        "dense symmetric torch.Tensor or a scipy.sparse.linalg.LinearOperator.")


def _objective_like(A: Any) -> Operator:
    """An object with an Objective's product protocol (``hvp``, ``dim``, ``dtype``, ``device``; ``meter()``,
    ``reserve()`` and ``mode`` where it has them), as algorithms accepted before operator views."""
    meter, reserve = getattr(A, "meter", None), getattr(A, "reserve", None)
    return Operator(lambda v: A.hvp(v), int(A.dim), A.dtype, A.device, reserve=reserve, kind="hessian",
                    mode=getattr(A, "mode", "matrix"), counted=meter is not None, measure=meter)


def _what(A: Any) -> str:
    return f"a {type(A).__name__}" if not isinstance(A, Operator) else f"the operator view {A.kind!r}"


def _square(shape: Any, what: str) -> int:
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise FlatminimaError(f"{what} must be a square, non-empty matrix, got shape {tuple(shape)}.")
    return int(shape[0])


def _dense(A: torch.Tensor) -> Operator:
    """A dense symmetric matrix; refused when it is not symmetric (Lanczos' certificates assume it)."""
    n = _square(A.shape, "a dense matrix")
    if not A.is_floating_point() or A.is_complex():
        raise FlatminimaError(f"a dense matrix must be real floating point (float32 or float64), got {A.dtype}.")
    A = A.detach()
    if not bool(torch.isfinite(A).all()):
        raise FlatminimaError("obj, the matrix, has NaN or infinite entries; the eigenvalue, trace and density "
                              "algorithms need a finite symmetric matrix.")
    scale = float(A.abs().max()) if A.numel() else 0.0
    tol = 10 * torch.finfo(A.dtype).eps * max(scale, 1e-300) * max(n, 1) ** 0.5
    asym = float((A - A.T).abs().max())
    if asym > tol:
        raise FlatminimaError(f"obj, the matrix, is not symmetric (max |A - Aᵀ| = {asym:.3g}); the eigenvalue, trace "
                              "and density algorithms here are for symmetric matrices. Pass (A + A.T) / 2.")
    return Operator(lambda v: A @ v, n, A.dtype, A.device, kind="matrix", mode="matrix")


def _linear_operator(A: Any) -> Operator:
    """A SciPy ``LinearOperator`` (real, square): NumPy matvec on the CPU, in its dtype (float32 or float64)."""
    n = _square(A.shape, "a LinearOperator")
    kind = np.dtype(A.dtype)
    if kind.kind != "f":
        raise FlatminimaError(f"a LinearOperator must be real (float32 or float64), got dtype {kind}.")
    dtype = torch.float32 if kind == np.float32 else torch.float64
    np_dtype = np.float32 if dtype == torch.float32 else np.float64

    def matvec(v: torch.Tensor) -> torch.Tensor:
        out = np.asarray(A.matvec(v.detach().cpu().numpy().astype(np_dtype, copy=False)))
        return torch.from_numpy(np.ascontiguousarray(out.reshape(-1), dtype=np_dtype))

    return Operator(matvec, n, dtype, "cpu", kind="linear_operator", mode="matrix")


def random_vector(dim: int, generator: torch.Generator, like: torch.Tensor,
                  kind: str = "gaussian") -> torch.Tensor:
    """A reproducible probe drawn on the CPU (the same numbers on every device and rank).

    Rademacher probes are drawn straight in the working dtype (one vector; the same numbers and generator
    state as drawing int64 and converting, which took five vectors' worth of float64 temporaries).
    """
    if kind == "rademacher":
        z = torch.randint(0, 2, (dim,), generator=generator, dtype=like.dtype).mul_(2).sub_(1)
    else:
        z = torch.randn(dim, generator=generator, dtype=torch.float64)
    return z.to(device=like.device, dtype=like.dtype)
