"""Operator views: a symmetric matrix M known only through v ↦ M v, with its size, dtype, device and cost.

    obj.hessian @ v          H(θ₀)·v              obj.hessian @ V      [H v_1, ..., H v_m]  (V: dim × m)
    obj.ggn @ v              G(θ₀)·v              obj.operator("hessian", θ) @ v   at another θ

Curvature algorithms (Lanczos, Hutch++, SLQ) take an :class:`Operator`, as curvlinops' algorithms take a
linear operator: "what matrix" is split from "what algorithm". An Objective's views call its own products,
so they are metered by its meter and reserve inside its memory budget; an Operator around any other
matvec (a dense tensor, a SciPy ``LinearOperator``: ``flatminima.curvature.as_operator``) records one
product per column on a meter of its own (seconds included, no data passes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import torch

from ..errors import FlatminimaError
from ._memory import MemoryPlan
from ._meter import Cost, Meter

__all__ = ["Operator"]

MatVec = Callable[[torch.Tensor], torch.Tensor]


class Operator:
    """A symmetric ``dim × dim`` matrix M as the product v ↦ M v (see the module).

    ``matvec(v)`` takes and returns a flat vector of ``dim`` entries in ``dtype`` on ``device``. ``counted``:
    whether ``matvec`` records its own work on ``meter`` (an Objective's products do); otherwise each
    product is recorded here, as one ``hvps`` point with its seconds. ``reserve(n, what)``: the context that
    holds ``n`` vectors of ``dim`` entries inside a memory budget (an Objective's; none by default).
    ``kind`` names the matrix in results ("hessian", "ggn", "matrix"...), ``mode`` the model mode behind
    it ("eval", "train", "function", or "matrix" for a plain matrix). ``arithmetic_dtype``: the coarsest
    precision the products are computed in (default ``dtype``; an Objective's model may compute part of its
    forward in less), which error bounds use.
    """

    def __init__(self, matvec: MatVec, dim: int, dtype: torch.dtype, device: torch.device | str = "cpu", *,
                 meter: Meter | None = None, reserve: Callable[[int, str], AbstractContextManager] | None = None,
                 kind: str = "matrix", mode: str = "matrix", counted: bool = False,
                 measure: Callable[[], AbstractContextManager[Cost]] | None = None,
                 arithmetic_dtype: torch.dtype | None = None):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise FlatminimaError(f"an operator needs a positive whole dimension, got {dim!r}.")
        self._matvec, self.dim, self.dtype, self.device = matvec, dim, dtype, torch.device(device)
        self._meter = meter if meter is not None else Meter()
        self._reserve, self._measure = reserve, measure
        self.kind, self.mode, self._counted = kind, mode, counted
        self.arithmetic_dtype = arithmetic_dtype or dtype

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    def __repr__(self) -> str:
        return f"Operator({self.kind}, dim={self.dim}, dtype={self.dtype}, device={self.device})"

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        if self._counted:
            return self._matvec(v)
        start = time.perf_counter()
        out = self._matvec(v)
        self._meter.record("hvps", 1, 0.0, time.perf_counter() - start)
        return out

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        """M·x for a vector (``dim``) or each column of a matrix (``dim × m``: m products)."""
        x = torch.as_tensor(x)
        if x.dim() not in (1, 2) or x.shape[0] != self.dim:
            raise FlatminimaError(f"an operator of dimension {self.dim} multiplies a vector of {self.dim} entries or "
                                  f"a matrix of {self.dim} rows, got shape {tuple(x.shape)}.")
        x = x.to(device=self.device, dtype=self.dtype)
        if x.dim() == 1:
            return self._apply(x)
        m = x.shape[1]
        # The m product columns are held until the last is done: reserve them in the budget.
        with self.reserve(m, f"a block of {m} products"):
            return torch.stack([self._apply(x[:, j]) for j in range(m)], 1) if m else x.new_zeros(self.dim, 0)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """M·v (as ``@``)."""
        return self @ v

    def meter(self) -> AbstractContextManager[Cost]:
        """``with op.meter() as cost:`` fills ``cost`` with the products done inside the block (``measure``,
        where given, is the context of whatever meters ``matvec``: an objective-like object's ``meter``)."""
        return self._measure() if self._measure is not None else self._meter.measure()

    @property
    def cost(self) -> Cost:
        """Every product this operator's meter recorded (for an Objective's view: the Objective's total)."""
        return self._meter.total

    def subscribe(self, subscriber: Callable[[str | None, int], None]) -> AbstractContextManager[None]:
        """``subscriber(kind, points)`` on every record of the meter inside the block."""
        return self._meter.subscribe(subscriber)

    def reserve(self, n_vectors: int, what: str = "") -> AbstractContextManager[MemoryPlan | None]:
        """Hold ``n_vectors`` vectors of ``dim`` entries inside the memory budget (if any) for the block."""
        return self._reserve(n_vectors, what) if self._reserve is not None else _unbudgeted()

    def conjugated(self, d: torch.Tensor, kind: str | None = None) -> Operator:
        """D M D with D = diag(d): symmetric, with the eigenvalues of P⁻¹M for d = P^(−1/2) (a diagonal
        preconditioner P, as Adam's second moments). Same meter and memory budget as this operator."""
        d = torch.as_tensor(d).reshape(-1).to(device=self.device, dtype=self.dtype)
        if d.numel() != self.dim:
            raise FlatminimaError(f"the diagonal must have {self.dim} entries, got {d.numel()}.")
        return Operator(lambda v: d * self._apply(d * v), self.dim, self.dtype, self.device, meter=self._meter,
                        reserve=self._reserve, kind=kind or f"D·{self.kind}·D", mode=self.mode, counted=True,
                        measure=self._measure, arithmetic_dtype=self.arithmetic_dtype)

    @property
    def precision(self) -> dict[str, str]:
        """The dtype of the products and the dtype whose rounding error bounds use (results carry it)."""
        return {"dtype": str(self.dtype).replace("torch.", ""),
                "error_bounds_in": str(self.arithmetic_dtype).replace("torch.", "")}

    _notes: Callable[[], dict] | None = None  # what the products rest on (annotate)

    def annotate(self, notes: Callable[[], dict]) -> Operator:
        """Attach ``notes()``: what the products rest on (an Objective's: attention backend, the method's check
        or error estimate, a compiled model's eager module), which curvature results carry. Returns self."""
        self._notes = notes
        return self

    def notes(self) -> dict:
        """The attached notes (:meth:`annotate`); ``{}`` for a plain matrix."""
        return dict(self._notes()) if self._notes is not None else {}

    def like(self) -> torch.Tensor:
        """An empty tensor of the operator's dtype and device (where random probes are put)."""
        return torch.empty(0, dtype=self.dtype, device=self.device)


@contextmanager
def _unbudgeted() -> Iterator[None]:
    yield None
