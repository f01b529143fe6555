"""Stochastic trace estimators from matrix-vector products.

Hutchinson (1989): tr(M) = E[zᵀ M z] for Rademacher z; the estimate is the mean of m such products and
its standard error the sample standard deviation over √m.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021): spend m/3 products on a sketch Y = M S, take an
orthonormal Q = orth(Y), compute tr(QᵀMQ) exactly (m/3 products) and estimate the rest, tr of the
deflated (I−QQᵀ)M(I−QQᵀ), by Hutchinson with the remaining m/3 probes. On spectra that decay its error
falls like 1/m instead of 1/√m. The standard error is that of the Hutchinson part (the rest is exact).

Why hand-written: no maintained PyTorch library provides these over a matrix-free operator with a
standard error; curvlinops has Hutchinson/Hutch++ but no error bars and no CUDA-agnostic metering.
"""

from __future__ import annotations

import math

import torch

from ..errors import FlatminimaError, require_choice, require_positive_int
from ..objective import Operator
from ..validate import check_seed
from .operators import Curvature, MatVec, as_operator, random_vector
from .results import TraceResult

METHODS = ("hutchinson", "hutch++")


def trace(
    obj: Curvature,
    method: str = "hutch++",
    samples: int = 60,
    *,
    operator: str | None = None,
    seed: int = 0,
    theta: torch.Tensor | None = None,
) -> TraceResult:
    """tr(H) (or tr(GGN)) with its standard error, spending ``samples`` matrix-vector products (random probes).

    ``obj``: an Objective (``operator="hessian"`` or ``"ggn"``, at ``theta``), an operator view, a dense
    symmetric tensor or a SciPy ``LinearOperator`` (:func:`~flatminima.curvature.operators.as_operator`).

    Examples:
        Hutchinson's estimator is exact on a diagonal matrix (every Rademacher probe gives zᵀDz = tr D):

        >>> import torch
        >>> from flatminima import Objective
        >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        >>> obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.ones(3, dtype=torch.float64))
        >>> from flatminima.curvature import trace
        >>> tr = trace(obj, "hutchinson", samples=10, seed=0)
        >>> round(tr.value, 6), round(tr.stderr, 6), tr.samples, tr.cost.hvps
        (6.0, 0.0, 10, 10)
        >>> round(trace(A, "hutchinson", samples=10, seed=0).value, 6)  # a dense symmetric matrix works too
        6.0
    """
    probes = samples
    require_choice("method", method, METHODS)
    require_positive_int("samples", probes)
    check_seed("seed", seed)
    if method == "hutch++" and probes < 6:
        raise FlatminimaError(
            f"hutch++ needs samples >= 6 (a third each for sketch, exact part and rest), got {probes}.")
    if probes < 2:
        raise FlatminimaError(f"samples must be >= 2 to estimate a standard error, got {probes}.")
    op = as_operator(obj, operator, theta)
    matvec = op.matvec
    gen = torch.Generator().manual_seed(seed)
    # Hutch++ holds its sketch S, M·S and Q = orth(M·S) with the QR's workspace: 4·probes/3 vectors.
    reserved = 4 * min(probes // 3, op.dim) if method == "hutch++" else 0
    with op.reserve(reserved, f"the Hutch++ sketch of samples={probes}"), op.meter() as cost:
        if method == "hutchinson":
            value, stderr = _hutchinson(matvec, op, gen, probes, basis=None)
        else:
            value, stderr = _hutchpp(matvec, op, gen, probes)
    return TraceResult(value=value, stderr=stderr, samples=probes, method=method, operator=op.kind, seed=seed,
                       product=op.notes(),  # attention backend, the product method's check or error
                       mode=op.mode, cost=cost, precision=op.precision)


def _hutchinson(matvec: MatVec, op: Operator, gen: torch.Generator, m: int, basis: torch.Tensor | None):
    samples = []
    for _ in range(m):
        z = random_vector(op.dim, gen, op.like(), "rademacher")
        if basis is not None:
            z = z - basis @ (basis.T @ z)
        samples.append(float(torch.dot(z, matvec(z))))
    t = torch.tensor(samples, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=True) / math.sqrt(m))


def _hutchpp(matvec: MatVec, op: Operator, gen: torch.Generator, m: int):
    s = min(m // 3, op.dim)
    # Sketch and products are written as rows of one buffer each (no list of vectors and stacked copy); the
    # rows' transpose is the column-major matrix LAPACK's QR works on, and S is freed before the QR.
    S = op.like().new_empty(s, op.dim)
    for j in range(s):
        S[j] = random_vector(op.dim, gen, op.like(), "rademacher")
    Y = torch.empty_like(S)
    for j in range(s):
        Y[j] = matvec(S[j])
    del S
    Q, _ = torch.linalg.qr(Y.T)
    del Y
    exact = sum(float(torch.dot(Q[:, j], matvec(Q[:, j]))) for j in range(Q.shape[1]))
    rest = m - 2 * s
    if rest < 2 or Q.shape[1] >= op.dim:  # the sketch spans the space: the trace is exact
        return exact, 0.0
    value, stderr = _hutchinson(matvec, op, gen, rest, basis=Q)
    return exact + value, stderr
