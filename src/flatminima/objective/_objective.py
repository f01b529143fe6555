"""The protocol every objective implements: L(θ) of one flat parameter vector, its derivatives and cost.

:class:`ObjectiveBase` holds what the data objective (:class:`flatminima.objective.Objective`) and the
analytic one (:class:`flatminima.objective_function.FunctionObjective`) share: θ₀ and its flattening,
``loss`` / ``grad`` / ``hvp`` as sums of per-batch terms, the cost meter, and the public protocol that
algorithms, pointwise evaluation and measures use (``batches``, ``terms``, ``reduce``, ``record``,
``reserve``, ``theta_chunk``, ``describe``, ``replace``...). A subclass says what its batches are and what
one batch contributes:

    _iter_batches()            the prepared batches (a single ``None`` for an analytic function)
    _batch_terms(θ, batch)     (s_b, w_b): the batch's summed loss (differentiable in θ) and its weight
    _hvp_terms(θ, v)           (Σ_b H_b·v in float64, Σ_b w_b), by a backend of flatminima.objective_hvp
    describe(), replace(**changes)

The parts only a network has (``outputs``, ``loss_terms``, ``ggn_vp``, ``model_at``, ``working_model``)
are optional: ``has_outputs`` / ``has_model`` say whether they are there, and without them they raise a
:class:`FlatminimaError` saying so.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from .errors import FlatminimaError, NonFiniteLossError, require_choice, require_nonnegative
from .objective_hvp import no_second_derivative, second_derivative_error, zeros64
from .objective_memory import MemoryPlan

__all__ = ["Cost", "ObjectiveBase"]


@dataclass
class Cost:
    """Work done by an Objective: full-data evaluations, batch passes and wall time.

    ``data_passes`` counts passes over the whole data set (a batched evaluation of many θ in one pass
    counts once), which is what users pay for when data is streamed.
    """

    losses: int = 0
    grads: int = 0
    hvps: int = 0
    batched_points: int = 0
    data_passes: float = 0.0
    seconds: float = 0.0

    def __sub__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def __add__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_dict(self) -> dict[str, float]:
        """Deprecated name of :meth:`to_dict`."""
        warnings.warn("Cost.as_dict() is deprecated; use Cost.to_dict().", DeprecationWarning, stacklevel=2)
        return self.to_dict()


class ObjectiveBase(abc.ABC):
    """L(θ) with exact gradients and Hessian products, and the cost of computing them (see the module)."""

    dtype: torch.dtype
    device: torch.device
    mode: str = "eval"
    reduction: str = "mean"
    hvp_method: str = "double_backward"
    distributed: bool = False
    fixed_mask: bool = False
    memory_mb: float | None = None
    n_batches: int | None = None
    total_weight: float | None = None

    def _init_params(self, names: list[str], shapes: list[torch.Size], theta0: torch.Tensor) -> None:
        """θ₀ (a copy), the names and shapes it splits into, and a fresh cost meter."""
        self.param_names, self.param_shapes = list(names), list(shapes)
        self._numels = [int(torch.Size(s).numel()) for s in shapes]
        self._theta0 = theta0.detach().clone()
        self._counter = Cost()

    # ----------------------------------------------------------------- what a subclass provides
    @abc.abstractmethod
    def _iter_batches(self) -> Iterator[Any]:
        """The prepared batches every operation sees."""

    @abc.abstractmethod
    def _batch_terms(self, theta: torch.Tensor, batch: Any) -> tuple[torch.Tensor, float]:
        """(s_b, w_b) of one prepared batch at θ."""

    @abc.abstractmethod
    def _hvp_terms(self, theta: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(Σ_b H_b·v in float64, Σ_b w_b) by the objective's backend."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What this objective is, for results and reports."""

    @abc.abstractmethod
    def replace(self, **changes: Any) -> ObjectiveBase:
        """A new objective with every setting of this one except ``changes``."""

    # ----------------------------------------------------------------- parameters
    @property
    def params(self) -> torch.Tensor:
        """θ₀, the (selected) parameters as one flat vector (a copy)."""
        return self._theta0.clone()

    @property
    def dim(self) -> int:
        return self._theta0.numel()

    @property
    def param_numels(self) -> list[int]:
        """Entries of each parameter tensor, in θ's order (``param_names``)."""
        return list(self._numels)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat θ into named tensors (views) shaped like the selected parameters."""
        if theta.shape != (self.dim,):
            raise FlatminimaError(f"θ must be a flat vector of {self.dim} entries, got shape {tuple(theta.shape)}.")
        parts = torch.split(theta, self._numels)
        return {n: t.view(s) for n, t, s in zip(self.param_names, parts, self.param_shapes, strict=False)}

    def _theta(self, theta: torch.Tensor | None) -> torch.Tensor:
        if theta is None:
            return self._theta0
        theta = torch.as_tensor(theta)
        if theta.shape != (self.dim,):
            raise FlatminimaError(f"θ must be a flat vector of {self.dim} entries, got shape {tuple(theta.shape)}.")
        return theta.to(device=self.device, dtype=self.dtype)

    def _check_vector(self, v: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(v)
        if v.shape != (self.dim,):
            raise FlatminimaError(f"v must be a flat vector of {self.dim} entries, got shape {tuple(v.shape)}.")
        return v.to(device=self.device, dtype=self.dtype)

    # ----------------------------------------------------------------- the public protocol
    @property
    def has_model(self) -> bool:
        """Whether there is a network behind the objective (False for an analytic function)."""
        return False

    @property
    def has_outputs(self) -> bool:
        """Whether the objective sees model outputs and targets (built with ``loss=``, not ``loss_fn=``)."""
        return False

    @property
    def loss_function(self) -> Callable | None:
        """The per-batch ``loss(outputs, targets)`` as given; None without one."""
        return None

    def batches(self) -> Iterator[Any]:
        """The prepared batches, as every operation sees them: moved to the device, cast, split into chunks."""
        return self._iter_batches()

    def terms(self, theta: torch.Tensor | None, batch: Any) -> tuple[torch.Tensor, float]:
        """(s_b, w_b) of one prepared batch at θ: the batch's summed loss (differentiable) and its weight."""
        return self._batch_terms(self._theta(theta), batch)

    def reduce(self, total: torch.Tensor, weight: float, reduction: str | None = None) -> torch.Tensor:
        """Σ s / Σ w ("mean") or Σ s ("sum") of sums over this rank's batches, summed over all ranks."""
        return self._reduce(total, weight, reduction)

    def fixed_randomness(self) -> contextlib.AbstractContextManager:
        """The RNG state of the batch last yielded by ``batches()`` (``fixed_mask``: its dropout mask)."""
        return self._randomness()

    def _randomness(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def theta_chunk(self, chunk_size: int) -> int:
        """How many θ fit one vectorised pass: ``chunk_size``, or fewer under the memory budget."""
        return max(1, int(chunk_size))

    @property
    def memory_plan(self) -> MemoryPlan | None:
        """How the memory budget is spent; ``None`` without a budget."""
        return None

    @contextmanager
    def reserve(self, n_vectors: int, what: str = "") -> Iterator[MemoryPlan | None]:
        """Hold ``n_vectors`` parameter-sized vectors inside the memory budget for the block (see
        :meth:`flatminima.objective.Objective.reserve`); without a budget it does nothing and yields None."""
        self._check_reservation(n_vectors)
        yield None

    @staticmethod
    def _check_reservation(n_vectors: Any) -> None:
        if isinstance(n_vectors, bool) or not isinstance(n_vectors, int):
            raise FlatminimaError(f"n_vectors must be a whole number of vectors, got {n_vectors!r}.")
        require_nonnegative("n_vectors", n_vectors)

    # ----------------------------------------------------------------- optional: a network behind it
    def _no_model(self, what: str) -> FlatminimaError:
        return FlatminimaError(f"{what} needs a network; an analytic objective has none (use its parameters "
                               "directly).")

    def model_at(self, theta: torch.Tensor | None = None) -> nn.Module:
        """A fresh copy of the model holding θ."""
        raise self._no_model("model_at")

    @property
    def working_model(self) -> nn.Module:
        """The objective's own copy of the network."""
        raise self._no_model("working_model")

    def outputs(self, theta: torch.Tensor | None, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(model outputs at θ on a prepared batch, its targets) (``loss=`` objectives)."""
        raise FlatminimaError("outputs need (inputs, targets) batches: build the Objective with `loss=`.")

    def loss_terms(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(s, w) of the objective's loss on given outputs and targets (``loss=`` objectives)."""
        raise FlatminimaError("loss_terms needs (outputs, targets): build the Objective with `loss=`.")

    def ggn_vp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """G(θ)·v, the generalised Gauss-Newton product (``loss=`` objectives)."""
        raise FlatminimaError("the GGN needs the model outputs: build the Objective with `loss=`, not `loss_fn=`.")

    # ----------------------------------------------------------------- cost metering
    @contextmanager
    def meter(self) -> Iterator[Cost]:
        """``with obj.meter() as cost:`` fills ``cost`` with the work done inside the block."""
        before, start, cost = copy.copy(self._counter), time.perf_counter(), Cost()
        try:
            yield cost
        finally:
            delta = self._counter - before
            delta.seconds = time.perf_counter() - start
            for f in fields(Cost):
                setattr(cost, f.name, getattr(delta, f.name))

    @property
    def cost(self) -> Cost:
        """Total work done by this objective so far."""
        return copy.copy(self._counter)

    def record(self, kind: str | None, points: int = 1, passes: float = 1.0, seconds: float = 0.0) -> None:
        """Add work done outside the objective's own calls to its cost meter.

        ``kind``: the :class:`Cost` count it adds ``points`` to (``"losses"``, ``"grads"``, ``"hvps"``,
        ``"batched_points"``), or ``None`` for data passes only (a forward pass a measure runs itself).
        """
        if kind is not None:
            require_choice("kind", kind, ["losses", "grads", "hvps", "batched_points"])
        c = self._counter
        if kind is not None:
            setattr(c, kind, getattr(c, kind) + points)
        c.data_passes += passes
        c.seconds += seconds

    def _account(self, kind: str, start: float, points: int = 1) -> None:
        self.record(kind, points, 1.0, time.perf_counter() - start)

    @staticmethod
    def _check_finite(value: torch.Tensor, what: str) -> None:
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(
                f"the {what} is not finite (NaN or inf). The model diverged or the data holds NaN/inf; "
                "check the checkpoint and the inputs, or lower the learning rate that produced it.")

    @staticmethod
    def _zeros(like: torch.Tensor) -> torch.Tensor:
        return zeros64(like)

    def _reduce(self, total: torch.Tensor, weight: float, reduction: str | None = None) -> torch.Tensor:
        """Σ s / Σ w ("mean") or Σ s ("sum"), summed over all ranks when distributed (one all-reduce).

        ``total`` is accumulated in float64 by the callers; the value comes back in the objective's dtype.
        """
        reduction = reduction or self.reduction
        if self.distributed:
            import torch.distributed as dist

            packed = torch.cat([total.reshape(-1), total.new_tensor([weight])])
            dist.all_reduce(packed)
            total, weight = packed[:-1].reshape(total.shape), float(packed[-1])
        if weight <= 0:
            raise FlatminimaError("the data's total weight is zero (no samples / no targets).")
        self.total_weight = weight
        value = total / weight if reduction == "mean" else total
        return value.to(self.dtype)

    # ----------------------------------------------------------------- the operations
    def loss(self, theta: torch.Tensor | None = None) -> float:
        """L(θ): the exact mean (or sum, with ``reduction="sum"``) of the loss over all data."""
        start, theta = time.perf_counter(), self._theta(theta)
        total, weight = torch.zeros((), device=self.device, dtype=torch.float64), 0.0
        with torch.no_grad():
            for batch in self._iter_batches():
                s, w = self._batch_terms(theta, batch)
                total, weight = total + s.detach().to(torch.float64), weight + w
        value = self._reduce(total, weight)
        self._check_finite(value, "loss")
        self._account("losses", start)
        return float(value)

    def grad(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """∇L(θ), the exact derivative of the same mean (or sum); never touches any ``.grad`` attribute."""
        start, theta = time.perf_counter(), self._theta(theta).detach().requires_grad_(True)
        total, weight = zeros64(theta), 0.0
        for batch in self._iter_batches():
            s, w = self._batch_terms(theta, batch)
            (g,) = torch.autograd.grad(s, theta, allow_unused=True)
            if g is not None:
                total += g
            weight += w
        value = self._reduce(total, weight)
        self._check_finite(value, "gradient")
        self._account("grads", start)
        return value

    def hvp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """H(θ)·v with H = ∇²L(θ), exact over all data (backends: flatminima.objective_hvp.HVP_BACKENDS)."""
        start = time.perf_counter()
        v = self._check_vector(v)
        theta = self._theta(theta)
        try:
            total, weight = self._hvp_terms(theta, v)
        except RuntimeError as err:
            if no_second_derivative(err):
                raise second_derivative_error(err) from err
            raise
        value = self._reduce(total, weight)
        self._check_finite(value, "Hessian-vector product")
        self._account("hvps", start)
        return value

    def loss_batched(self, thetas: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
        """L(θ_i) for every row θ_i of ``thetas`` (n × dim), ``chunk_size`` rows per pass over the data.

        Non-finite values are returned as they are (a landscape may leave the finite region).
        """
        return self.values_at(thetas, ["loss"], chunk_size=chunk_size)[0]

    def metric_batched(self, thetas: torch.Tensor, metric: str | Callable = "accuracy",
                       chunk_size: int = 32) -> torch.Tensor:
        """The mean of ``metric(outputs, targets)`` (``"accuracy"`` built in) at every row of ``thetas``."""
        return self.values_at(thetas, [metric], chunk_size=chunk_size)[0]

    def values_at(self, points: Any, metrics: Sequence[str | Callable] = ("loss",), **options: Any
                  ) -> list[torch.Tensor]:
        """Several metrics at many points in one pass per chunk: see :func:`flatminima.pointwise.values_at`.

        ``points``: an (n × dim) matrix or a :class:`flatminima.pointwise.Span` (origin + coefs @ vectors).
        """
        from .pointwise import values_at

        return values_at(self, points, metrics, **options)
