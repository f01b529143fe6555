"""Lanczos with full reorthogonalisation, and power iteration as the baseline it is compared with.

Lanczos builds an orthonormal Krylov basis Q_m and the tridiagonal T_m = Q_mᵀ M Q_m; the Ritz pairs
(θ_i, Q_m s_i) of T_m approximate M's extreme eigenpairs, and the identity
    M Q_m s_i − θ_i Q_m s_i = β_m (e_mᵀ s_i) q_{m+1}
gives each residual ‖M v − θ v‖ ≈ |β_m s_{m,i}| without another product (Golub & Van Loan, §10.1).
That identity is only the recurrence's *estimate*: it holds for the matrix Lanczos believes it saw, and
in floating point it keeps shrinking far below what the product can resolve (2.6e-23 for a float32
model), and it cannot see a wrong operator (non-symmetric, noisy). So the estimate only decides when to
*check*; the reported residual is the TRUE one, ‖M v − θ v‖ from one more product per returned pair
(counted by the objective's meter like every other product), never below the rounding floor
(:func:`rounding_floor`). ``converged`` is judged on that true, floored residual, which by Bauer-Fike
bounds the eigenvalue error: a certificate, unlike a change between successive estimates (PyHessian).
If the check fails while the true residual is still above the floor, Lanczos goes on and checks again.
Full reorthogonalisation keeps Q_m orthonormal in floating point; when the Krylov space becomes invariant
(β ≈ 0) we restart with a fresh random vector orthogonal to Q_m, so repeated eigenvalues are found too
once the invariant subspace containing the first copy is exhausted.

Why hand-written: SciPy's ``eigsh`` (ARPACK) stops on its own tolerance and cannot return the certified
residuals, costs, or run on CUDA tensors; hessian-eigenthings wraps it. The tridiagonal eigenproblem
itself is solved with NumPy's ``eigh``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import FlatminimaError, require_choice, require_positive, require_positive_int
from ..objective import Operator
from ..validate import check_number, check_seed
from .operators import Curvature, MatVec, as_operator, random_vector
from .results import EigenResult

WHICH = ("largest", "smallest", "both")
STOPS = ("residual", "gap")


def rounding_floor(dtype: torch.dtype, norm_estimate: float, dim: int) -> float:
    """The smallest residual (and eigenvalue error) a product in ``dtype`` can resolve:
    ``eps(dtype) · ‖M‖ · √dim``, with ‖M‖ estimated by the largest |Ritz value| seen (a lower bound on ‖M‖
    that the extreme Ritz values reach within a few steps).

    Why this size: a computed product is fl(Mv) = Mv + e. Each entry of Mv is, in effect, an inner product
    of length up to ``dim`` accumulated in ``dtype``, whose rounding error grows like √n·eps in the
    probabilistic model of rounding (Higham & Mary, SIAM J. Sci. Comput. 2019; worst case n·eps), so
    ‖e‖ ≲ √dim·eps·‖M‖‖v‖. A residual ‖fl(Mv) − θv‖ below ‖e‖ is rounding noise, and the eigenvalue of the
    exact M can be off by about ‖e‖ even when the residual of the computed operator is zero (the
    operator itself is only known to that accuracy). So no residual or error bound below this floor is
    ever reported, and a ``tol`` with ``tol·|λ|`` below it cannot be certified: use float64 then. In
    float64 the floor is ~1e-16·√dim relative, far below any useful ``tol``; in float32 it is
    1.2e-7·√dim (1.5e-5 relative at 15k parameters, 1.2e-4 at 1M). The algorithms pass the operator's
    ``arithmetic_dtype``: a float64 model that computes part of its forward in float32 is floored at
    float32's rounding, since its products are only that accurate.
    """
    return float(torch.finfo(dtype).eps) * float(norm_estimate) * math.sqrt(max(dim, 1))


WARM_KEPT = 6  # products a warm-started run keeps for its true-residual check (a warm run needs 2–5 steps)


class Krylov:
    """Incremental Lanczos with full reorthogonalisation and restart on breakdown.

    The basis vectors are the rows of one buffer, grown by doubling up to ``capacity`` (the most vectors
    the caller will need, when known), so reorthogonalising against q_1..q_j reads a contiguous block
    instead of stacking the basis anew at every step (one copy of the whole basis per step before).
    """

    def __init__(self, matvec: MatVec, v0: torch.Tensor, generator: torch.Generator, keep_products: int = 0,
                 capacity: int | None = None):
        self.matvec, self.generator = matvec, generator
        self.dim = v0.numel()
        self.capacity = max(2, min(capacity or self.dim + 1, self.dim + 1))
        self._rows = torch.empty(min(self.capacity, 16), self.dim, dtype=v0.dtype, device=v0.device)
        torch.div(v0, v0.norm(), out=self._rows[0])
        self._n = 1  # basis vectors held: q_0 .. q_{n-1}
        self.keep_products = keep_products
        self.products: list[torch.Tensor] = []  # M q_j of the first ``keep_products`` steps, as computed
        self.alphas: list[float] = []
        self.betas: list[float] = []  # betas[j] couples q_j and q_{j+1} (0 after a restart)
        self.next_beta = 0.0  # ‖w‖ of the latest residual, before any restart
        self.block_start = 0  # index where the current Krylov block (after the latest restart) began

    @property
    def size(self) -> int:
        return len(self.alphas)

    @property
    def Q(self) -> list[torch.Tensor]:  # noqa: N802 - the basis' usual name
        """The basis vectors q_0 .. q_m (views)."""
        return list(self._rows[: self._n])

    def _append(self, w: torch.Tensor, scale: float) -> None:
        """Store ``w / scale`` as the next basis vector, written straight into the buffer."""
        if self._n == self._rows.shape[0]:
            grown = torch.empty(min(2 * self._n, max(self.capacity, self._n + 1)), self.dim, dtype=self._rows.dtype,
                                device=self._rows.device)
            grown[: self._n] = self._rows[: self._n]
            self._rows = grown
        torch.div(w, scale, out=self._rows[self._n])
        self._n += 1

    def step(self) -> bool:
        """One Lanczos step; returns False when the whole space has been spanned."""
        q = self._rows[self._n - 1]
        w = self.matvec(q)
        if len(self.products) < self.keep_products:
            self.products.append(w.clone())
        alpha = float(torch.dot(q, w))
        # One new vector (w may be the operator's own buffer, so it is not written to), then in place:
        # temporaries of dim entries at every step fragment the heap and stay resident at 4M parameters.
        w = torch.sub(w, q, alpha=alpha)
        if self.betas:
            w.sub_(self._rows[self._n - 2], alpha=self.betas[-1])
        rows = self._rows[: self._n]
        for _ in range(2):  # twice is enough (Kahan-Parlett "twice is enough")
            w.addmv_(rows.T, rows @ w, alpha=-1)
        self.alphas.append(alpha)
        beta = float(w.norm())
        self.next_beta = beta
        if self._n >= self.dim:
            return False
        scale = max(abs(a) for a in self.alphas) or 1.0
        if beta <= 1e-10 * scale * math.sqrt(self.dim) or beta == 0.0:
            # Invariant subspace found: restart orthogonally (β = 0 decouples T into blocks).
            w = random_vector(self.dim, self.generator, q)
            for _ in range(2):
                w.addmv_(rows.T, rows @ w, alpha=-1)
            beta = 0.0
            self._append(w, float(w.norm()))
            self.block_start = len(self.alphas)
        else:
            self._append(w, beta)
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
        """Q_m, the first ``size`` basis vectors as columns (a view)."""
        return self._rows[: self.size].T

    def applied(self, S: np.ndarray) -> torch.Tensor | None:
        """M·(Q S) from the kept products (M Q S = Σ_j M q_j S_j by linearity: no new product), or None when
        some basis vector's product was not kept."""
        if len(self.products) < self.size:
            return None
        W = torch.stack(self.products[: self.size], 1)
        return W @ torch.as_tensor(S, dtype=W.dtype, device=W.device)


def _wanted(values: np.ndarray, k: int, which: str) -> np.ndarray:
    order = np.argsort(values)
    if which == "largest":
        return order[::-1][:k]
    if which == "smallest":
        return order[:k]
    top, bottom = order[::-1][:k], order[:k]
    picked = list(top) + [i for i in bottom[::-1] if i not in set(top)]
    return np.asarray(sorted(picked, key=lambda i: -values[i]))


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
    obj: Curvature,
    k: int = 1,
    which: str = "largest",
    *,
    tol: float = 1e-5,
    max_iter: int | None = None,
    operator: str | None = None,
    return_vectors: bool = False,
    seed: int = 0,
    theta: torch.Tensor | None = None,
    stop: str = "residual",
    v0: torch.Tensor | None = None,
) -> EigenResult:
    """The k extreme eigenvalues of the Hessian (or GGN) at θ by Lanczos with certified residuals.

    ``obj``: an Objective (``operator`` ``"hessian"``, the default, or ``"ggn"``, at ``theta``), an operator
    view (``obj.hessian``), a dense symmetric tensor or a SciPy ``LinearOperator``
    (:func:`~flatminima.curvature.operators.as_operator`); the result's ``operator`` names which.

    ``which="largest"`` gives λ₁ ≥ … ≥ λ_k, ``"smallest"`` the k most negative (ascending), ``"both"``
    both ends (descending). Lanczos runs until the recurrence's residual estimates say every wanted pair
    has ``‖Mv − λv‖ <= tol·|λ|`` (or the estimates fall below the rounding floor, or ``max_iter`` products,
    default ``min(dim, 40·k + 100)``, are spent); then one more product per pair measures the TRUE
    residual. ``residuals`` are those true residuals and ``converged`` is judged on them, both floored at
    :func:`rounding_floor`; if a true residual fails while still above the floor, Lanczos continues and
    checks again (at most every ~25% more steps), so a wrong operator (non-symmetric, noisy) is reported
    as not converged instead of certified by its own recurrence.
    ``stop="gap"`` stops instead when the gap-refined bound ``min(r, r²/δ) <= tol·|λ|`` holds, δ being the
    distance to the nearest other Ritz value less that value's residual: eigenvalues converge about twice
    as fast as residuals, so this saves products (benchmarks/curvature.py) at the price of relying on the
    Ritz gap, an estimate of the true gap; ``converged`` then refers to this bound, computed from the
    true residuals. ``error_bounds`` is always that gap-refined bound from the true residuals (floored).
    ``v0`` starts the Krylov space from a given vector instead of a seeded random one (a warm start: the
    previous top eigenvector while tracking λmax during training, so a few products suffice); ``seed``
    still draws any restart vector. A warm run keeps the products of its first ``WARM_KEPT`` steps, and
    while it is no longer than that it measures the true residual from them (M·Qs = Σ_j s_j·M q_j, exact by
    linearity, from the operator's own outputs rather than the recurrence) instead of one more product:
    a warm run that converges at once costs its Krylov steps and nothing more.
    Ref: Lanczos 1950; Golub & Van Loan, Matrix Computations §10.1; Parlett, The Symmetric Eigenvalue
    Problem §11.7; Ghorbani et al. 2019 for its use on neural-network Hessians.

    Examples:
        The top two eigenvalues of a quadratic with Hessian diag(3, 2, 1):

        >>> import torch
        >>> from flatminima import Objective
        >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        >>> obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.ones(3, dtype=torch.float64))
        >>> from flatminima.curvature import eigenvalues
        >>> top = eigenvalues(obj, k=2, seed=0)
        >>> [round(v, 6) for v in top.values.tolist()], bool(top.converged.all())
        ([3.0, 2.0], True)
        >>> round(eigenvalues(obj, k=1, which="smallest", seed=0).values.item(), 6)
        1.0
    """
    op = as_operator(obj, operator, theta)
    _check_k(op.dim, k, which)
    require_choice("stop", stop, STOPS)
    require_positive("tol", tol)
    check_number("tol", tol, low=False)  # a relative tolerance: below 1 too (flatminima.validate)
    check_seed("seed", seed)
    limit = min(op.dim, max_iter if max_iter is not None else 40 * k + 100)
    require_positive_int("max_iter", limit)
    gen = torch.Generator().manual_seed(seed)
    matvec = op.matvec
    start = random_vector(op.dim, gen, op.like()) if v0 is None else _check_start(op, v0)
    kept = 0 if v0 is None else min(WARM_KEPT, limit)
    # The basis (limit + 1 vectors), its stacked copy for reorthogonalisation, the k Ritz vectors and, warm,
    # the kept products with their stacked copy.
    with op.reserve(2 * (limit + 1) + k + 2 * kept, f"Lanczos's basis of max_iter={limit}"), \
            op.meter() as cost:
        krylov = Krylov(matvec, start, gen, keep_products=kept, capacity=limit + 1)
        next_check = 0  # the Krylov size from which a true-residual check may run again
        while True:
            more = krylov.step()
            values, S = krylov.ritz()
            picked = _wanted(values, k, which)
            floor = rounding_floor(op.arithmetic_dtype, np.abs(values).max(), op.dim)
            scale = np.maximum(np.abs(values[picked]), 1e-3 * np.abs(values).max() + 1e-300)
            raw = np.abs(krylov.next_beta * S[-1, :])
            estimate = np.maximum(raw, floor)
            ok = _passes(values, picked, estimate, estimate[picked], scale, tol, stop)
            # An estimate already at the floor cannot improve: check now even if tol is out of reach.
            ok |= raw[picked] <= floor
            # After a restart the new block must grow k steps before we trust that no further copy of a
            # repeated eigenvalue hides in the rest of the space.
            settled = krylov.size - krylov.block_start >= min(k, op.dim - krylov.block_start)
            out_of_steps = not more or krylov.size >= limit
            if not ((ok.all() and settled and krylov.size >= next_check) or out_of_steps):
                continue
            # The Ritz vectors as contiguous rows (each a product's input as it is); the previous check's are
            # dropped first, so one set is held at a time.
            vectors = applied = None
            rows = torch.as_tensor(S[:, picked].T, dtype=op.dtype, device=op.device) @ krylov.basis().T
            vectors = rows.T
            applied = krylov.applied(S[:, picked])
            true = np.asarray([_true_residual(matvec, rows[j], values[i],
                                              None if applied is None else applied[:, j])
                               for j, i in enumerate(picked)])
            del rows
            residuals = np.maximum(true, floor)
            converged = _passes(values, picked, estimate, residuals, scale, tol, stop)
            # Go on only where more steps can help: some failing pair is still above the rounding floor.
            if out_of_steps or (converged | (true <= floor)).all():
                break
            next_check = krylov.size + max(1, krylov.size // 4)
    bounds = np.maximum(_safe_gap_bounds(values, picked, _merged(estimate, picked, residuals)), floor)
    return EigenResult(
        product=op.notes(),  # attention backend, the product method's check or error estimate
        values=torch.as_tensor(values[picked], dtype=torch.float64),
        residuals=torch.as_tensor(residuals, dtype=torch.float64),
        converged=torch.as_tensor(converged),
        error_bounds=torch.as_tensor(bounds, dtype=torch.float64),
        vectors=vectors.contiguous() if return_vectors else None, iterations=krylov.size, method="lanczos",
        operator=op.kind, which=which, tol=tol, seed=seed, mode=op.mode, cost=cost, floor=floor, precision=op.precision,
        recurrence_residuals=torch.as_tensor(raw[picked], dtype=torch.float64),
    )


def _check_start(op: Operator, v0: torch.Tensor) -> torch.Tensor:
    v0 = torch.as_tensor(v0).detach().reshape(-1).to(device=op.device, dtype=op.dtype)
    if v0.numel() != op.dim or not torch.isfinite(v0).all() or float(v0.norm()) == 0.0:
        raise FlatminimaError(f"v0 must be a finite, non-zero vector of {op.dim} entries (the parameter count), "
                              f"got {v0.numel()} entries.")
    return v0


def _merged(all_residuals: np.ndarray, picked: np.ndarray, picked_residuals: np.ndarray) -> np.ndarray:
    out = all_residuals.copy()
    out[picked] = picked_residuals
    return out


def _passes(values, picked, all_residuals, picked_residuals, scale, tol, stop) -> np.ndarray:
    """Whether each wanted pair meets ``tol`` by the residual (``stop="residual"``) or the gap bound."""
    if stop == "gap":
        bounds = _safe_gap_bounds(values, picked, _merged(all_residuals, picked, picked_residuals))
        return bounds <= tol * scale
    return picked_residuals <= tol * scale


def _true_residual(matvec: MatVec, v: torch.Tensor, value: float, mv: torch.Tensor | None = None) -> float:
    """‖M v − θ v‖/‖v‖ from one fresh product, or from ``mv`` = M v already computed from the operator's own
    products (not the recurrence's estimate)."""
    norm = float(v.norm())
    if norm == 0.0:
        return math.inf
    if mv is not None:
        return float((mv - value * v).norm()) / norm
    v = v / norm
    return float(torch.sub(matvec(v), v, alpha=value).norm())


def power_iteration(
    obj: Curvature,
    *,
    tol: float = 1e-5,
    max_iter: int = 200,
    operator: str | None = None,
    seed: int = 0,
    theta: torch.Tensor | None = None,
) -> EigenResult:
    """The largest (algebraic) eigenvalue by power iteration: the baseline PyHessian uses.

    Power iteration converges to the eigenvalue of largest |λ|. If that is negative (a saddle whose
    negative curvature dominates), a second run on M + |λ|·I recovers the largest algebraic eigenvalue,
    instead of silently returning the negative one. Convergence is judged on the residual ‖Mv − λv‖ of the
    product just computed (a true residual, not a change between iterates), floored at
    :func:`rounding_floor` like Lanczos; the iteration also stops once the residual reaches the floor
    (more products cannot help), and ``converged`` is False if ``max_iter`` ran out or tol is below the
    floor.
    """
    require_positive("tol", tol)
    check_number("tol", tol, low=False)  # a relative tolerance: below 1 too (flatminima.validate)
    check_seed("seed", seed)
    require_positive_int("max_iter", max_iter)
    op = as_operator(obj, operator, theta)
    matvec = op.matvec
    gen = torch.Generator().manual_seed(seed)

    def floor_of(lam: float) -> float:
        return rounding_floor(op.arithmetic_dtype, abs(lam), op.dim)

    with op.meter() as cost:
        lam, vec, res, its = _dominant(matvec, random_vector(op.dim, gen, op.like()), tol, max_iter, floor_of)
        if lam < 0:
            shift = abs(lam)
            lam2, vec, res, its2 = _dominant(lambda v: matvec(v) + shift * v,
                                             random_vector(op.dim, gen, op.like()), tol, max_iter, floor_of,
                                             shift)
            lam, its = lam2 - shift, its + its2
            floor = floor_of(lam2)  # the shifted operator's products are what was computed
            scale = _power_scale(lam2, shift)
        else:
            floor, scale = floor_of(lam), abs(lam)
    res = max(res, floor)
    ok = res <= tol * scale
    return EigenResult(
        product=op.notes(),
        values=torch.tensor([lam], dtype=torch.float64), residuals=torch.tensor([res], dtype=torch.float64),
        converged=torch.tensor([ok]), error_bounds=torch.tensor([res], dtype=torch.float64),
        vectors=vec[:, None], iterations=its, method="power", operator=op.kind, which="largest",
        tol=tol, seed=seed, mode=op.mode, cost=cost, floor=floor, precision=op.precision,
    )


def _power_scale(lam: float, shift: float) -> float:
    """|λ| of the unshifted operator, kept off zero by the shifted one's size (as Lanczos' scale)."""
    return max(abs(lam - shift), 1e-3 * abs(lam))


def _dominant(matvec: MatVec, v: torch.Tensor, tol: float, max_iter: int, floor_of: Callable[[float], float],
              shift: float = 0.0):
    v = v / v.norm()
    lam, res = 0.0, math.inf
    for it in range(1, max_iter + 1):
        w = matvec(v)
        lam = float(torch.dot(v, w))
        res = float((w - lam * v).norm())
        if res <= max(tol * _power_scale(lam, shift), floor_of(lam)):
            return lam, v, res, it
        norm = w.norm()
        if norm == 0:
            return 0.0, v, 0.0, it
        v = w / norm
    return lam, v, res, max_iter


def _check_k(dim: int, k: int, which: str) -> None:
    require_choice("which", which, WHICH)
    require_positive_int("k", k)
    if k > dim:
        raise FlatminimaError(
            f"k={k} is larger than the number of parameters ({dim}); ask for k <= {dim}.")
