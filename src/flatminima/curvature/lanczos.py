"""Lanczos with full reorthogonalisation, and power iteration as the baseline it is compared with.

Lanczos builds an orthonormal Krylov basis Q_m and the tridiagonal T_m = Q_mᵀ M Q_m; the Ritz pairs
(θ_i, Q_m s_i) of T_m approximate M's extreme eigenpairs, and the identity
    M Q_m s_i − θ_i Q_m s_i = β_m (e_mᵀ s_i) q_{m+1}
gives each residual ‖M v − θ v‖ = |β_m s_{m,i}| without another product (Golub & Van Loan, §10.1).
We stop as soon as every wanted pair has r_i <= tol·|θ_i|, which by Bauer-Fike bounds the relative
eigenvalue error by tol: a certificate, unlike a change between successive estimates (PyHessian).
Full reorthogonalisation keeps Q_m orthonormal in floating point; when the Krylov space becomes invariant
(β ≈ 0) we restart with a fresh random vector orthogonal to Q_m, so repeated eigenvalues are found too
once the invariant subspace containing the first copy is exhausted.

Why hand-written: SciPy's ``eigsh`` (ARPACK) stops on its own tolerance and cannot return the certified
residuals, costs, or run on CUDA tensors; hessian-eigenthings wraps it. The tridiagonal eigenproblem
itself is solved with NumPy's ``eigh``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import FlatminimaError, require_choice, require_positive, require_positive_int
from ..objective import Objective
from .operators import MatVec, make_operator, random_vector
from .results import EigenResult

WHICH = ("largest", "smallest", "both")
STOPS = ("residual", "gap")


class Krylov:
    """Incremental Lanczos with full reorthogonalisation and restart on breakdown."""

    def __init__(self, matvec: MatVec, v0: torch.Tensor, generator: torch.Generator):
        self.matvec, self.generator = matvec, generator
        self.Q = [v0 / v0.norm()]
        self.alphas: list[float] = []
        self.betas: list[float] = []  # betas[j] couples q_j and q_{j+1} (0 after a restart)
        self.next_beta = 0.0  # ‖w‖ of the latest residual, before any restart
        self.dim = v0.numel()
        self.block_start = 0  # index where the current Krylov block (after the latest restart) began

    @property
    def size(self) -> int:
        return len(self.alphas)

    def step(self) -> bool:
        """One Lanczos step; returns False when the whole space has been spanned."""
        q = self.Q[-1]
        w = self.matvec(q)
        alpha = float(torch.dot(q, w))
        w = w - alpha * q
        if self.betas:
            w = w - self.betas[-1] * self.Q[-2]
        basis = torch.stack(self.Q, 1)
        for _ in range(2):  # twice is enough (Kahan-Parlett "twice is enough")
            w = w - basis @ (basis.T @ w)
        self.alphas.append(alpha)
        beta = float(w.norm())
        self.next_beta = beta
        if len(self.Q) >= self.dim:
            return False
        scale = max(abs(a) for a in self.alphas) or 1.0
        if beta <= 1e-10 * scale * math.sqrt(self.dim) or beta == 0.0:
            # Invariant subspace found: restart orthogonally (β = 0 decouples T into blocks).
            w = random_vector(self.dim, self.generator, q)
            for _ in range(2):
                w = w - basis @ (basis.T @ w)
            beta = 0.0
            self.Q.append(w / w.norm())
            self.block_start = len(self.alphas)
        else:
            self.Q.append(w / beta)
        self.betas.append(beta)
        return True

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and eigenvectors of T_m, in float64."""
        m = self.size
        T = np.diag(np.asarray(self.alphas, dtype=np.float64))
        if m > 1:
            off = np.asarray(self.betas[: m - 1], dtype=np.float64)
            T += np.diag(off, 1) + np.diag(off, -1)
        return np.linalg.eigh(T)

    def basis(self) -> torch.Tensor:
        return torch.stack(self.Q[: self.size], 1)


def _wanted(values: np.ndarray, k: int, which: str) -> np.ndarray:
    order = np.argsort(values)
    if which == "largest":
        return order[::-1][:k]
    if which == "smallest":
        return order[:k]
    top, bottom = order[::-1][:k], order[:k]
    picked = list(top) + [i for i in bottom[::-1] if i not in set(top)]
    return np.asarray(sorted(picked, key=lambda i: -values[i]))


def _gap_bounds(values: np.ndarray, picked: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    bounds = []
    for i, r in zip(picked, residuals, strict=True):
        others = np.delete(values, i)
        gap = np.min(np.abs(others - values[i])) if others.size else np.inf
        bounds.append(min(r, r * r / gap) if gap > 0 else r)
    return np.asarray(bounds)


def _safe_gap_bounds(values: np.ndarray, picked: np.ndarray, all_residuals: np.ndarray) -> np.ndarray:
    """min(r_i, r_i²/δ_i), δ_i = min_{j≠i} (|θ_i − θ_j| − r_j): the gap shrunk by each neighbour's residual.

    A Ritz value that has not converged sits up to r_j inside the true spectrum, so its raw gap would
    overstate δ; subtracting r_j keeps the quadratic bound (Parlett, The Symmetric Eigenvalue Problem,
    Thm 11.7.1; Saad, Numerical Methods for Large Eigenvalue Problems, §3.2) from stopping too early.
    """
    bounds = []
    for i in picked:
        r = all_residuals[i]
        others = np.delete(np.arange(values.size), i)
        # No other Ritz value yet means no gap information: fall back to the residual bound.
        gap = np.min(np.abs(values[others] - values[i]) - all_residuals[others]) if others.size else 0.0
        bounds.append(min(r, r * r / gap) if gap > 0 else r)
    return np.asarray(bounds)


def eigenvalues(
    obj: Objective,
    k: int = 1,
    which: str = "largest",
    *,
    tol: float = 1e-5,
    max_iter: int | None = None,
    operator: str = "hessian",
    return_vectors: bool = False,
    seed: int = 0,
    theta: torch.Tensor | None = None,
    stop: str = "residual",
) -> EigenResult:
    """The k extreme eigenvalues of the Hessian (or GGN) at θ by Lanczos with certified residuals.

    ``which="largest"`` gives λ₁ ≥ … ≥ λ_k, ``"smallest"`` the k most negative (ascending), ``"both"``
    both ends (descending). Stops when every wanted pair has ``‖Mv − λv‖ <= tol·|λ|`` or after
    ``max_iter`` products (default ``min(dim, 40·k + 100)``), and flags each pair's convergence.
    ``stop="gap"`` stops instead when the gap-refined bound ``min(r, r²/δ) <= tol·|λ|`` holds, δ being the
    distance to the nearest other Ritz value less that value's residual: eigenvalues converge about twice
    as fast as residuals, so this saves products (benchmarks/curvature.py) at the price of relying on the
    Ritz gap, an estimate of the true gap; ``converged`` then refers to this bound.
    Ref: Lanczos 1950; Golub & Van Loan, Matrix Computations §10.1; Ghorbani et al. 2019 for its use on
    neural-network Hessians.
    """
    _check_k(obj, k, which)
    require_choice("stop", stop, STOPS)
    require_positive("tol", tol)
    limit = min(obj.dim, max_iter if max_iter is not None else 40 * k + 100)
    require_positive_int("max_iter", limit)
    gen = torch.Generator().manual_seed(seed)
    with obj.meter() as cost:
        krylov = Krylov(make_operator(obj, operator, theta), random_vector(obj.dim, gen, obj.params), gen)
        while True:
            more = krylov.step()
            values, S = krylov.ritz()
            picked = _wanted(values, k, which)
            residuals = np.abs(krylov.next_beta * S[-1, picked])
            scale = np.maximum(np.abs(values[picked]), 1e-3 * np.abs(values).max() + 1e-300)
            if stop == "gap":
                bounds = _safe_gap_bounds(values, picked, np.abs(krylov.next_beta * S[-1, :]))
                converged = bounds <= tol * scale
            else:
                converged = residuals <= tol * scale
            # After a restart the new block must grow k steps before we trust that no further copy of a
            # repeated eigenvalue hides in the rest of the space.
            settled = krylov.size - krylov.block_start >= min(k, obj.dim - krylov.block_start)
            if (converged.all() and settled) or not more or krylov.size >= limit:
                break
        vectors = None
        if return_vectors:
            S_t = torch.as_tensor(S[:, picked], dtype=obj.dtype, device=obj.device)
            vectors = krylov.basis() @ S_t
    return EigenResult(
        values=torch.as_tensor(values[picked], dtype=torch.float64),
        residuals=torch.as_tensor(residuals, dtype=torch.float64),
        converged=torch.as_tensor(converged),
        error_bounds=torch.as_tensor(_gap_bounds(values, picked, residuals), dtype=torch.float64),
        vectors=vectors, iterations=krylov.size, method="lanczos", operator=operator, which=which, tol=tol,
        seed=seed, mode=obj.mode, cost=cost,
    )


def power_iteration(
    obj: Objective,
    *,
    tol: float = 1e-5,
    max_iter: int = 200,
    operator: str = "hessian",
    seed: int = 0,
    theta: torch.Tensor | None = None,
) -> EigenResult:
    """The largest (algebraic) eigenvalue by power iteration: the baseline PyHessian uses.

    Power iteration converges to the eigenvalue of largest |λ|. If that is negative (a saddle whose
    negative curvature dominates), a second run on M + |λ|·I recovers the largest algebraic eigenvalue,
    instead of silently returning the negative one. Convergence is judged on the residual ‖Mv − λv‖, not on
    the change between iterates; ``converged`` is False if ``max_iter`` ran out.
    """
    require_positive("tol", tol)
    require_positive_int("max_iter", max_iter)
    matvec = make_operator(obj, operator, theta)
    gen = torch.Generator().manual_seed(seed)
    with obj.meter() as cost:
        lam, vec, res, ok, its = _dominant(matvec, random_vector(obj.dim, gen, obj.params), tol, max_iter)
        if lam < 0:
            shift = abs(lam)
            lam2, vec, res, ok, its2 = _dominant(lambda v: matvec(v) + shift * v,
                                                 random_vector(obj.dim, gen, obj.params), tol, max_iter)
            lam, its = lam2 - shift, its + its2
    return EigenResult(
        values=torch.tensor([lam], dtype=torch.float64), residuals=torch.tensor([res], dtype=torch.float64),
        converged=torch.tensor([ok]), error_bounds=torch.tensor([res], dtype=torch.float64),
        vectors=vec[:, None], iterations=its, method="power", operator=operator, which="largest",
        tol=tol, seed=seed, mode=obj.mode, cost=cost,
    )


def _dominant(matvec: MatVec, v: torch.Tensor, tol: float, max_iter: int):
    v = v / v.norm()
    lam, res = 0.0, math.inf
    for it in range(1, max_iter + 1):
        w = matvec(v)
        lam = float(torch.dot(v, w))
        res = float((w - lam * v).norm())
        if res <= tol * abs(lam):
            return lam, v, res, True, it
        norm = w.norm()
        if norm == 0:
            return 0.0, v, 0.0, True, it
        v = w / norm
    return lam, v, res, False, max_iter


def _check_k(obj: Objective, k: int, which: str) -> None:
    require_choice("which", which, WHICH)
    require_positive_int("k", k)
    if k > obj.dim:
        raise FlatminimaError(
            f"k={k} is larger than the number of parameters ({obj.dim}); ask for k <= {obj.dim}.")
