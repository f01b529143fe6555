"""The objective L(θ): the loss as a function of one flat parameter vector, over a fixed data set.

    L(θ) = Σ_b s_b(θ) / Σ_b w_b   (reduction "mean")       L(θ) = Σ_b s_b(θ)   (reduction "sum")

with s_b the loss summed over batch b and w_b the count its mean divides by, so the value is the exact
mean over every sample, the last partial batch included. ``grad`` and ``hvp`` are the exact derivatives of
that same mean. Every measure, plot and probe in flatminima consumes this one object (DESIGN.md).

An :class:`Objective` is composed, not inherited, of four parts:

- a batch source (flatminima.objective._batches): the data, its chunks under the memory plan, the device,
  the fixed dropout masks; for an analytic function one batch, ``None``;
- the loss terms (flatminima.objective._terms): (θ, batch) → (s_b, w_b), a network with its loss (one
  registry of named losses) or an analytic f(θ);
- a meter (flatminima.objective._meter): every loss, gradient and product recorded once, where computed;
- the products, plain functions of (batches, terms, θ, v) (flatminima.objective._products).

:class:`FunctionObjective` (``Objective.from_function``) is the same Objective with a one-batch source and
f(θ) as its terms. ``obj.hessian`` and ``obj.ggn`` are the operator views curvature algorithms take
(flatminima.objective._operators).

Why hand-written: curvlinops and PyHessian each bundle the operator with their algorithms; we need one
small object that any algorithm, landscape or measure can call, that counts its own cost, that never
mutates the user's model, and that sums over shards with ``torch.distributed``. The derivatives
themselves come from ``torch.autograd`` (double backward) and ``torch.func`` (forward-over-reverse,
``vmap`` for many θ at once).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

import torch
from torch import nn

from ..errors import FlatminimaError, NonFiniteLossError, require_choice
from ._arguments import check_arguments
from ._attention import ATTENTION_NOTE, second_order
from ._batches import DataSource, OneBatch, check_batch_size, resolve_float_dtype, resolve_torch_device
from ._checks import ProductChecks
from ._compiled import eager_module, eager_patterns
from ._finite_difference import FINITE_DIFFERENCE
from ._grad_mode import with_grad
from ._memory import MemoryPlan
from ._meter import Cost, Meter
from ._operators import Operator
from ._precision import Precision, evaluation_dtype, own_precision, scan_objective
from ._products import GraphCache, add, ggn_terms, no_second_derivative, second_derivative_error, summed
from ._ranks import warn_if_undistributed
from ._terms import LOSSES, FunctionTerms, NetworkTerms, named_loss, resolve_reduction

__all__ = ["FunctionObjective", "Objective"]



_VARIANTS: list[tuple[Callable[[Any], bool], type]] = []


def register_variant(applies: Callable[[Any], bool], variant: type) -> None:
    """``Objective(model, ...)`` builds ``variant`` (a subclass) for a model where ``applies(model)``."""
    _VARIANTS.append((applies, variant))


class Objective:
    """L(θ) over a fixed data set, with exact gradients, Hessian and GGN products and a cost meter.

    The value is exactly the mean (``reduction="mean"``) or the sum (``reduction="sum"``) of the loss over
    every sample of the data, the same whatever ``batch_size`` and ``memory_mb`` chunks it is computed in:

        mean:  L(θ) = Σ_b s_b(θ) / Σ_b w_b        sum:  L(θ) = Σ_b s_b(θ)

    with s_b the loss summed over batch b and w_b the number of terms a mean over it divides by (see
    :class:`~flatminima.objective.LossTerms`). Sums are accumulated in float64, so float32 models still get
    exact-ish totals. An analytic f(θ) is :meth:`from_function`.

    Args:
        model: any ``nn.Module``; it is copied, never mutated.
        loss: ``"cross_entropy"``, ``"mse"`` (class labels regressed as one-hot vectors, as in training),
            ``"bce"`` (``BCEWithLogitsLoss``), a torch loss module such as
            ``nn.CrossEntropyLoss(reduction="sum")`` (its ``.reduction`` is read: ``"mean"`` or ``"sum"``;
            ``"none"`` is refused), or a callable ``loss(outputs, targets)`` returning the batch mean (the
            batch sum with ``reduction="sum"``). Batches are then ``(inputs, targets)`` or
            ``(input1, input2, ..., targets)``.
        data: a DataLoader, a tuple ``(X, y)`` of tensors (split into ``batch_size`` batches), or any
            re-iterable of batches (a list, a Dataset-backed loader). One-shot iterators are refused.
            Batches may be tensors, tuples, lists or any ``Mapping`` (dict, UserDict, HF BatchEncoding).
        loss_fn: instead of ``loss``: ``loss_fn(model, batch)`` returning one number per batch, or
            ``(value, count)``. With ``reduction="mean"`` the value is the batch MEAN over its ``count``
            terms (default count: the batch's rows) and L = Σ_b count_b·value_b / Σ_b count_b; returning
            (mean over the batch's tokens, number of tokens) gives the per-token mean over all data.
            With ``reduction="sum"`` the value is the batch SUM and L = Σ_b value_b (count only reported).
        reduction: ``"mean"`` (default) or ``"sum"``; for a loss module it is read from the module.
        params: parameter-name patterns (globs or module prefixes) selecting the part of the model whose
            curvature is wanted; ``None`` selects every parameter with ``requires_grad``.
        mode: ``"eval"`` (default: BatchNorm running statistics, no dropout) or ``"train"`` (BatchNorm
            batch statistics, which depend on θ and are differentiated; running statistics never change).
        fixed_mask: in ``mode="train"``, draw one dropout mask per batch (seeded by ``seed`` and the
            batch's index) and reuse it at every evaluation, so L(θ) is one deterministic function. Without
            it a model with active dropout in train mode is refused: its loss changes at every call.
        seed: the seed of the fixed masks.
        dtype: ``torch.float64`` (or ``"float64"``) for reference-grade numbers; default keeps the model's dtype.
        device: where to compute (must exist on this machine); data batches are moved there on the fly.
        batch_size: rows per batch when ``data`` is a tuple of tensors (a positive integer).
        hvp_method: ``"double_backward"`` (default, exact, measured faster on CPU), ``"forward_over_reverse"``
            (checked against double backward on a probe at first use and refused when they differ: torch's
            forward-mode derivatives through LayerNorm's weight are wrong) or ``"finite_difference"`` (central
            differences of the exact gradient for models with ops that have no second derivative; its error
            estimate is in ``describe()["hvp_error"]``; flatminima.objective._finite_difference).
        reuse_graph: keep the gradient graph of every batch between Hessian products at the same θ (the
            data must fit in memory; ``"auto"`` does so for in-memory tensor data).
        distributed: sum over the shards of all ``torch.distributed`` ranks (one all-reduce per call).
        memory_mb: a memory budget (MiB, per process) for one Hessian-vector product. Batches are split
            into chunks of as many rows as fit (estimated from the tensors autograd saves per sample, see
            :class:`~flatminima.objective.MemoryPlan`), ``loss_batched`` evaluates as many θ at once as
            fit, and ``reuse_graph`` is turned off when the cached graphs would not fit. ``None``: no budget.
            Not counted: torch's one-time ~33 MB (CPU) of a process's first second backward, paid when the
            plan is measured.

    Examples:
        A one-weight model y = w·x at w = 1, under the mean squared error on two points:

        >>> import torch
        >>> from flatminima import Objective
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> _ = torch.nn.init.ones_(model.weight)
        >>> x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[2.0], [4.0]])
        >>> obj = Objective(model, "mse", (x, y))
        >>> obj.loss()  # ((1 − 2)² + (2 − 4)²) / 2
        2.5
        >>> obj.grad()  # the mean of 2·x·(w·x − y)
        tensor([-5.])
        >>> obj.hvp(torch.ones(1))  # H·v with H = mean(2·x²) = 5
        tensor([5.])
    """

    mode: str = "eval"
    reduction: str = "mean"
    hvp_method: str = "double_backward"

    def __new__(cls, *args: Any, **kwargs: Any) -> Objective:
        # A model that needs another Objective (FSDP2's sharded parameters: _sharded) gets the variant that
        # registered for it; the variants import this module, never the other way round.
        if cls is Objective:
            model = args[0] if args else kwargs.get("model")
            cls = next((variant for applies, variant in _VARIANTS if applies(model)), cls)
        return super().__new__(cls)

    def __init__(
        self,
        model: nn.Module,
        loss: str | Callable | None = None,
        data: Any = None,
        *,
        loss_fn: Callable | None = None,
        params: str | Sequence[str] | None = None,
        mode: str = "eval",
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 1024,
        hvp_method: str = "double_backward",
        reuse_graph: bool | str = "auto",
        distributed: bool = False,
        memory_mb: float | None = None,
        reduction: str | None = None,
        fixed_mask: bool = False,
        seed: int = 0,
    ):
        require_choice("mode", mode, ["eval", "train"])
        require_choice("hvp_method", hvp_method, ["double_backward", "forward_over_reverse", FINITE_DIFFERENCE])
        if (loss is None) == (loss_fn is None):
            raise FlatminimaError("pass exactly one of `loss` (outputs, targets) or `loss_fn` (model, batch).")
        if not isinstance(model, nn.Module):
            raise FlatminimaError(f"model must be a torch.nn.Module, got {type(model).__name__}; for a function "
                                  "f(θ) of a parameter vector use Objective.from_function(f, x0).")
        check_arguments(model, loss=loss, loss_fn=loss_fn, data=data, seed=seed, memory_mb=memory_mb,
                        device=device, distributed=distributed, losses=LOSSES)
        batch_size = check_batch_size(batch_size)
        dtype, device = resolve_float_dtype(dtype), resolve_torch_device(device)
        config = {"loss": loss, "data": data, "loss_fn": loss_fn, "params": params, "mode": mode,
                  "batch_size": batch_size, "hvp_method": hvp_method, "reuse_graph": reuse_graph,
                  "distributed": distributed, "memory_mb": memory_mb, "reduction": reduction,
                  "fixed_mask": fixed_mask, "seed": seed}
        loss = None if loss is None else named_loss(loss)
        reduction = resolve_reduction(loss, reduction)
        if fixed_mask and mode != "train":
            raise FlatminimaError("fixed_mask=True fixes dropout masks in mode='train'; in mode='eval' there are "
                                  "none (dropout is off). Pass mode='train' or drop fixed_mask.")
        first = next(model.parameters(), None)
        dtype = evaluation_dtype(dtype, first.dtype if first is not None else None) or torch.get_default_dtype()
        device = torch.device(device) if device is not None else (
            first.device if first is not None else torch.device("cpu"))
        warn_if_undistributed(distributed, model)  # a process group without distributed=True: say so
        model, eager_note = eager_module(model)  # a torch.compile'd model: its eager module (_compiled)
        params = eager_patterns(params)
        terms = NetworkTerms(model, loss, loss_fn, reduction=reduction, params=params, mode=mode, dtype=dtype,
                             device=device, fixed_mask=fixed_mask)
        _check_budget(memory_mb, model, mode)
        source = DataSource(data, batch_size=batch_size, device=device, dtype=dtype, distributed=distributed,
                            memory_mb=memory_mb, reuse_graph=reuse_graph, fixed_mask=fixed_mask, seed=seed)
        terms.randomness = source.randomness  # each batch's evaluation under that batch's fixed mask
        self._compose(source, terms, dtype=dtype, device=device, mode=mode, reduction=reduction,
                      hvp_method=hvp_method, config=config)
        self._checks.fixed = {"attention": ATTENTION_NOTE} | eager_note
        self.precision_state.weights = first.dtype if first is not None else None
        source.bind(dim=self.dim, saved_bytes=terms.saved_bytes, check_first=partial(terms.check_first, dtype=dtype),
                    check_labels=terms.check_labels, on_replan=self._clear_graphs, largest=max(self._numels, default=0))

    def _compose(self, source: DataSource | OneBatch, terms: NetworkTerms | FunctionTerms, *, dtype: torch.dtype,
                 device: torch.device, mode: str, reduction: str, hvp_method: str, config: dict[str, Any],
                 names: list[str] | None = None, shapes: list[torch.Size] | None = None,
                 theta0: torch.Tensor | None = None) -> None:
        """Put the parts together: θ₀ with its names and shapes (the terms' unless given), a fresh meter."""
        self._source, self._terms, self._meter = source, terms, Meter()
        self.dtype, self.device, self.mode, self.reduction = dtype, device, mode, reduction
        self.hvp_method, self._config = hvp_method, config
        self._checks = ProductChecks()  # runs the products, checks their method (flatminima.objective._checks)
        self.param_names = list(names if names is not None else terms.names)
        self.param_shapes = list(shapes if shapes is not None else terms.shapes)
        self._numels = [int(torch.Size(s).numel()) for s in self.param_shapes]
        # A network's θ₀ is its terms' own (the model copy's parameters are views of it: one copy at rest).
        self._theta0 = theta0.detach().clone() if theta0 is not None else terms.theta0.detach()
        self.graph_cache = GraphCache()  # the gradient graphs the "cached" backend keeps
        self.precision_state = Precision(dtype)  # what the numbers are computed in (flatminima.objective._precision)
        self._caches = [self.graph_cache]  # every view's cache: all are freed when the memory plan changes
        self.total_weight: float | None = None

    def _clear_graphs(self) -> None:
        for cache in self._caches:
            cache.clear()

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
        return {n: t.view(s) for n, t, s in zip(self.param_names, parts, self.param_shapes, strict=True)}

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

    # ----------------------------------------------------------------- settings held by the parts
    @property
    def memory_mb(self) -> float | None:
        return self._source.memory_mb

    @property
    def distributed(self) -> bool:
        return self._source.distributed

    @property
    def fixed_mask(self) -> bool:
        return self._source.fixed_mask

    @property
    def seed(self) -> int:
        return getattr(self._source, "seed", 0)

    @property
    def reuse_graph(self) -> bool:
        return self._source.reuse_graph

    @property
    def n_batches(self) -> int | None:
        """Batches (memory chunks) of the latest pass over the data; None before the first."""
        return self._source.n_batches

    # ----------------------------------------------------------------- the public protocol
    @property
    def has_model(self) -> bool:
        """Whether there is a network behind the objective (False for an analytic function)."""
        return isinstance(self._terms, NetworkTerms)

    @property
    def has_outputs(self) -> bool:
        """Whether the objective sees model outputs and targets (built with ``loss=``, not ``loss_fn=``)."""
        return self._terms.has_outputs

    @property
    def loss_function(self) -> Callable | None:
        """The per-batch ``loss(outputs, targets)`` (a module or a callable); None with ``loss_fn`` or f(θ)."""
        return self._terms.module.loss if self.has_model else None

    def batches(self) -> Iterator[Any]:
        """The prepared batches, as every operation sees them: moved to the device, cast, split into chunks."""
        return self._source.batches()

    @property
    def stored_batches(self) -> Iterable:
        """The data's batches as stored at construction: not moved, cast or split into memory chunks."""
        return self._source.stored_batches

    @second_order  # math SDPA (_attention)
    def terms(self, theta: torch.Tensor | None, batch: Any) -> tuple[torch.Tensor, float]:
        """(s_b, w_b) of one prepared batch at θ: the batch's summed loss (differentiable) and its weight."""
        return self._terms(self._theta(theta), batch)

    def reduce(self, total: torch.Tensor, weight: float, reduction: str | None = None) -> torch.Tensor:
        """Σ s / Σ w ("mean") or Σ s ("sum") of sums over this rank's batches, summed over all ranks.

        ``total`` is accumulated in float64 by the callers over several batches (one batch's product comes in
        the objective's dtype, see flatminima.objective._products.add); the value comes back in the
        objective's dtype. One all-reduce when distributed.
        """
        reduction = reduction or self.reduction
        exact_weight = float(torch.tensor(weight, dtype=total.dtype)) == weight
        if total.dtype != torch.float64 and (self.distributed or not exact_weight):
            # A sum over ranks is a sum over several batches: float64, as before. A weight inexact in the
            # dtype (class weights): divide in float64, as before.
            total = total.to(torch.float64)
        if self.distributed:
            import torch.distributed as dist

            packed = torch.cat([total.reshape(-1), total.new_tensor([weight])])
            dist.all_reduce(packed)
            total, weight = packed[:-1].reshape(total.shape), float(packed[-1])
        if weight <= 0:
            raise FlatminimaError("the data's total weight is zero (no samples / no targets).")
        self.total_weight = weight
        if reduction == "mean" and total.dtype != torch.float64:
            # One batch's product in its own dtype, the weight exact there: a correctly rounded division in
            # that dtype gives the same bits as dividing in float64 and rounding, without the float64 copies.
            # By a tensor, not a Python number: CUDA multiplies by the reciprocal of a scalar divisor.
            return (total / torch.tensor(weight, dtype=total.dtype, device=total.device)).to(self.dtype)
        value = total / weight if reduction == "mean" else total
        return value.to(self.dtype)

    def fixed_randomness(self) -> AbstractContextManager:
        """The RNG state of the batch last yielded by ``batches()`` (``fixed_mask``: its dropout mask)."""
        return self._source.randomness()

    def theta_chunk(self, chunk_size: int) -> int:
        """How many θ one vectorised pass takes: ``chunk_size``, or fewer to fit the memory budget."""
        return self._source.theta_chunk(chunk_size)

    @property
    def memory_plan(self) -> MemoryPlan | None:
        """How the memory budget is spent (rows per chunk, bytes per sample); ``None`` without a budget."""
        return self._source.memory_plan

    def reserve(self, n_vectors: int, what: str = "") -> AbstractContextManager[MemoryPlan | None]:
        """Hold ``n_vectors`` parameter-sized vectors inside the memory budget for the block.

        Algorithms that keep vectors across products call it (Lanczos its basis, Hutch++ its sketch, SLQ
        its steps): the plan is redone with those bytes taken out of ``memory_mb``, which lowers the rows
        per chunk or turns graph reuse off, and a :class:`FlatminimaError` names the smallest budget that
        works when the vectors and one sample's product do not fit. Nested reservations add up. Without a
        budget it does nothing and yields ``None``; otherwise it yields the plan in force.
        """
        return self._source.reserve(n_vectors, what)

    # ----------------------------------------------------------------- a network behind it
    def _no_model(self, what: str) -> FlatminimaError:
        return FlatminimaError(f"{what} needs a network; an analytic objective has none (use its parameters "
                               "directly).")

    def model_at(self, theta: torch.Tensor | None = None) -> nn.Module:
        """A fresh copy of the model holding θ (for plotting, saving or evaluation by the user)."""
        if not self.has_model:
            raise self._no_model("model_at")
        return self._terms.model_at(self.unflatten(self._theta(theta)))

    @property
    def working_model(self) -> nn.Module:
        """The objective's own copy of the network, which every evaluation runs (never the user's model).

        Engines that write θ into it in place (the CPU loop of ``values_at``) must restore it after.
        """
        if not self.has_model:
            raise self._no_model("working_model")
        return self._terms.module.model

    @property
    def fixed_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors held fixed (unselected parameters, buffers), by name in ``working_model``."""
        if not self.has_model:
            return {}
        return {k[len("model."):]: t for k, t in self._terms.fixed.items()}

    @second_order  # math SDPA (_attention)
    def working_terms(self, batch: Any) -> tuple[torch.Tensor, float]:
        """(s_b, w_b) of a prepared batch with the parameters ``working_model`` holds right now."""
        if not self.has_model:
            raise self._no_model("working_terms")
        return self._terms.module(batch)

    def with_fixed(self, tensors: Mapping[str, torch.Tensor]) -> Objective:
        """A view of this objective with some fixed tensors (e.g. BatchNorm statistics) replaced.

        Shares data, model and cost meter; ``tensors`` are named as in ``working_model``.
        """
        if not self.has_model:
            raise self._no_model("with_fixed")
        view = copy.copy(self)
        view._terms = self._terms.with_fixed(dict(tensors))
        view.graph_cache = GraphCache()  # graphs built with the other fixed tensors are not this view's
        self._caches.append(view.graph_cache)
        return view

    @second_order  # math SDPA (_attention)
    def outputs(self, theta: torch.Tensor | None, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(model outputs at θ on a prepared batch, its targets), differentiable in θ (``loss=`` objectives)."""
        if not self.has_outputs:
            raise FlatminimaError("outputs need (inputs, targets) batches: build the Objective with `loss=`.")
        return self._terms.outputs(self._theta(theta), batch)

    def loss_terms(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(s, w) of the objective's loss on given outputs and targets (``loss=`` objectives)."""
        if not self.has_outputs:
            raise FlatminimaError("loss_terms needs (outputs, targets): build the Objective with `loss=`.")
        return self._terms.loss_terms(outputs, targets)

    # ----------------------------------------------------------------- cost metering
    def meter(self) -> AbstractContextManager[Cost]:
        """``with obj.meter() as cost:`` fills ``cost`` with the work done inside the block."""
        return self._meter.measure()

    @property
    def cost(self) -> Cost:
        """Total work done by this objective so far."""
        return self._meter.total

    def record(self, kind: str | None, points: int = 1, passes: float = 1.0, seconds: float = 0.0) -> None:
        """Add work done outside the objective's own calls to its cost meter.

        ``kind``: the :class:`Cost` count it adds ``points`` to (``"losses"``, ``"grads"``, ``"hvps"``,
        ``"batched_points"``), or ``None`` for data passes only (a forward pass a measure runs itself).
        """
        self._meter.record(kind, points, passes, seconds)

    def subscribe(self, subscriber: Callable[[str | None, int], None]) -> AbstractContextManager[None]:
        """``with obj.subscribe(f):`` calls ``f(kind, points)`` on every piece of work recorded in the block
        (``kind`` as in :meth:`record`; a Hessian or GGN product is ``"hvps"``): progress bars follow an
        algorithm this way, without touching the objective's methods."""
        return self._meter.subscribe(subscriber)

    @property
    def precision(self) -> Precision:
        """What the numbers are computed in (flatminima.objective._precision); the model's own arithmetic
        dtype is scanned once, at first use."""
        state = self.precision_state
        if not state.scanned:
            state.scanned = True
            state.arithmetic = scan_objective(self)
        return state

    def _check_finite(self, value: torch.Tensor, what: str) -> None:
        # By its smallest and largest entries (NaN propagates, ±inf shows there): two reductions without a
        # temporary, where ``isfinite(value).all()`` made 1.75 vectors of value's size (abs and three masks).
        if value.numel() and not all(torch.isfinite(end) for end in torch.aminmax(value)):
            raise NonFiniteLossError(
                f"the {what} is not finite (NaN or inf). The model diverged or the data holds NaN/inf; "
                "check the checkpoint and the inputs, or lower the learning rate that produced it."
                + self.precision.nonfinite_hint())

    # ----------------------------------------------------------------- the operations
    @own_precision
    @second_order  # math SDPA (_attention)
    def loss(self, theta: torch.Tensor | None = None) -> float:
        """L(θ): the exact mean (or sum, with ``reduction="sum"``) of the loss over all data."""
        start, theta = time.perf_counter(), self._theta(theta)
        total, weight = torch.zeros((), device=self.device, dtype=torch.float64), 0.0
        with torch.no_grad():
            for batch in self._source.batches():
                s, w = self._terms(theta, batch)
                total, weight = total + s.detach().to(torch.float64), weight + w
        value = self.reduce(total, weight)
        self._check_finite(value, "loss")
        self._meter.account("losses", start)
        return float(value)

    @own_precision
    @second_order  # math SDPA (_attention)
    @with_grad  # under a caller's no_grad too (_grad_mode)
    def grad(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """∇L(θ), the exact derivative of the same mean (or sum); never touches any ``.grad`` attribute."""
        start, theta = time.perf_counter(), self._theta(theta).detach().requires_grad_(True)
        total, weight = None, 0.0
        for batch in self._source.batches():
            s, w = self._terms(theta, batch)
            (g,) = torch.autograd.grad(s, theta, allow_unused=True)
            if g is not None:
                total = add(total, g, theta)  # one batch: no float64 detour (the same bits, see add)
            weight += w
        value = self.reduce(summed(total, theta), weight)
        self._check_finite(value, "gradient")
        self._meter.account("grads", start)
        return value

    @own_precision
    @second_order  # math SDPA (_attention)
    @with_grad  # under a caller's no_grad too (_grad_mode)
    def hvp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """H(θ)·v with H = ∇²L(θ), exact over all data (backends: ``flatminima.objective.HVP_BACKENDS``)."""
        start, v, theta = time.perf_counter(), self._check_vector(v), self._theta(theta)
        try:
            total, weight = self._checks.product(self._backend(), self._source.batches, self._terms, theta, v,
                                                 self.graph_cache)
        except BaseException as err:
            # A graph cached before the failure (built under a fused attention kernel, say) would fail again
            # after the cause is fixed: drop it, so the same objective works without replace().
            self._clear_graphs()
            if isinstance(err, RuntimeError) and no_second_derivative(err):
                raise second_derivative_error(err) from err
            raise
        value = self.reduce(total, weight)
        self._check_finite(value, "Hessian-vector product")
        # Central differences pass over the data twice (four times for the first product's error estimate).
        self._meter.record("hvps", 1, self._checks.passes, time.perf_counter() - start)
        return value

    def _backend(self) -> str:
        """``hvp_method``, or ``cached`` under graph reuse (which the memory plan may turn off)."""
        if not self.has_model:
            return "double_backward"
        if self.hvp_method != FINITE_DIFFERENCE:  # central differences need first derivatives only
            self._terms.require_second_derivatives()
        plan = self._source.memory_plan  # plans the budget first: it may turn graph reuse off
        reuse = self.reuse_graph if plan is None else plan.reuse_graph
        backend = "cached" if reuse and self.hvp_method == "double_backward" else self.hvp_method
        if backend == "forward_over_reverse" and self._terms.batchnorm_in_train_mode:
            # Measured: torch.func's second derivatives through train-mode batch_norm (jvp, jacfwd or
            # jacrev over jacrev) disagree with double backward and with a dense autograd Hessian on the
            # BatchNorm parameters (torch 2.13), while first derivatives agree; refuse, never a wrong number.
            raise FlatminimaError(
                "hvp_method='forward_over_reverse' is not exact through BatchNorm in mode='train' (torch.func's "
                "second derivatives of batch statistics are wrong); use hvp_method='double_backward'.")
        return backend

    @own_precision
    @second_order  # math SDPA (_attention)
    @with_grad  # under a caller's no_grad too (_grad_mode)
    def ggn_vp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """G(θ)·v with the generalised Gauss-Newton G = Σ_b J_bᵀ ∇²_z s_b J_b / Σ_b w_b (PSD for convex ℓ).

        z are the model outputs, J_b = ∂z/∂θ on batch b and s_b the batch's summed loss (divided by the
        total weight with ``reduction="mean"``, not with ``"sum"``). Needs the ``loss(outputs, targets)``
        form (Schraudolph 2002; Martens 2010). In train mode BatchNorm's batch statistics are part of z(θ).
        """
        if not self.has_outputs:
            raise FlatminimaError("the GGN needs the model outputs: build the Objective with `loss=`, not `loss_fn=`.")
        start, v, theta = time.perf_counter(), self._check_vector(v), self._theta(theta)
        total, weight = ggn_terms(self._source.batches, self._terms.outputs, self._terms.loss_terms, theta, v)
        value = self.reduce(total, weight)
        self._check_finite(value, "GGN-vector product")
        self._meter.account("hvps", start)
        return value

    # ----------------------------------------------------------------- operator views
    @property
    def hessian(self) -> Operator:
        """H(θ₀) as an operator: ``obj.hessian @ v`` (a vector) or ``@ V`` (a dim × m matrix of columns),
        with ``dim``, ``dtype``, ``device``, this objective's meter and memory budget."""
        return self.operator("hessian")

    @property
    def ggn(self) -> Operator:
        """G(θ₀), the generalised Gauss-Newton matrix, as an operator (see :attr:`hessian`)."""
        return self.operator("ggn")

    def operator(self, kind: str = "hessian", theta: torch.Tensor | None = None) -> Operator:
        """The operator view of ``kind`` (``"hessian"`` or ``"ggn"``) at θ (default θ₀)."""
        require_choice("operator", kind, ["hessian", "ggn"])
        if kind == "ggn" and not self.has_outputs:
            raise FlatminimaError("the GGN needs the model outputs: build the Objective with `loss=`, not `loss_fn=`.")
        theta = None if theta is None else self._theta(theta).detach().clone()
        product = self.hvp if kind == "hessian" else self.ggn_vp
        return Operator(lambda v: product(v, theta), self.dim, self.dtype, self.device, meter=self._meter,
                        reserve=self.reserve, kind=kind, mode=self.mode, counted=True,
                        arithmetic_dtype=self.precision.bound_dtype).annotate(partial(self.product_notes, kind))

    # ----------------------------------------------------------------- many points at once
    def loss_batched(self, thetas: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
        """L(θ_i) for every row θ_i of ``thetas`` (n × dim), ``chunk_size`` rows per pass over the data.

        Non-finite values are returned as they are (a landscape may leave the finite region).
        """
        return self.values_at(thetas, ["loss"], chunk_size=chunk_size)[0]

    def metric_batched(self, thetas: torch.Tensor, metric: str | Callable = "accuracy",
                       chunk_size: int = 32) -> torch.Tensor:
        """The mean of ``metric(outputs, targets)`` (``"accuracy"`` built in) at every row of ``thetas``."""
        return self.values_at(thetas, [metric], chunk_size=chunk_size)[0]

    @own_precision
    @second_order  # math SDPA (_attention)
    def values_at(self, points: Any, metrics: Sequence[str | Callable] = ("loss",), **options: Any
                  ) -> list[torch.Tensor]:
        """Several metrics at many points in one pass per chunk: see :func:`flatminima.objective.values_at`.

        ``points``: an (n × dim) matrix or a :class:`flatminima.objective.Span` (origin + coefs @ vectors).
        """
        from ._pointwise import values_at

        return values_at(self, points, metrics, **options)

    # ----------------------------------------------------------------- description
    @classmethod
    def from_function(cls, f: Callable[[torch.Tensor], torch.Tensor], x0: Any, *,
                      dtype: torch.dtype | None = None, name: str | None = None) -> FunctionObjective:
        """An analytic landscape f: Rⁿ → R as an Objective (one "batch", no data).

        Examples:
            f(θ) = ½θᵀAθ with A = diag(3, 2, 1), at θ₀ = (1, 1, 1):

            >>> import torch
            >>> from flatminima import Objective
            >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
            >>> obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.ones(3, dtype=torch.float64))
            >>> obj.dim, obj.loss()
            (3, 3.0)
            >>> obj.grad()  # A·θ₀
            tensor([3., 2., 1.], dtype=torch.float64)
            >>> obj.hvp(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))  # A·e₁
            tensor([3., 0., 0.], dtype=torch.float64)
        """
        return FunctionObjective(f, x0, dtype=dtype, name=name)

    def describe(self) -> dict[str, Any]:
        """What this objective is, for results and reports (randomness included: ``fixed_mask``)."""
        loss = self.loss_function
        planned = self._source.planned
        return {"dim": self.dim, "mode": self.mode, "dtype": str(self.dtype).replace("torch.", ""),
                "device": str(self.device), "params": self.param_names if len(self.param_names) <= 20
                else f"{len(self.param_names)} tensors", "samples": self.total_weight,
                "loss": "loss_fn" if loss is None else getattr(loss, "__name__", type(loss).__name__),
                "reduction": self.reduction, "hvp_method": self.hvp_method, "memory_mb": self.memory_mb,
                "chunk_rows": planned.rows if planned is not None else None,
                "fixed_mask": (f"one dropout mask per batch, seed {self.seed}" if self.fixed_mask else False),
                "precision": self.precision.describe()} | self.product_notes()

    def product_notes(self, kind: str = "hessian") -> dict[str, Any]:
        """What the products of ``kind`` rest on, for ``describe()`` and curvature results: the attention
        backend, a compiled model's eager module, and (Hessian) the method with its check or error estimate."""
        notes = dict(self._checks.fixed)
        if kind == "hessian":
            notes |= {"hvp_method": self.hvp_method} | self._checks.notes(self.hvp_method)
        return notes

    def replace(self, **changes: Any) -> Objective:
        """A new Objective with every setting of this one except ``changes``.

        The model is this one's at θ₀ (``model_at()``); loss or loss_fn, data, params, mode, dtype, device,
        batch_size, hvp_method, reuse_graph, distributed, memory_mb, reduction, fixed_mask and seed carry
        over unless given. Passing ``loss`` replaces ``loss_fn`` and vice versa. A new plain-callable loss
        keeps this objective's reduction (a loss module brings its own).
        """
        config = dict(self._config, dtype=self.dtype, device=self.device)
        unknown = set(changes) - set(config) - {"model"}
        if unknown:
            raise FlatminimaError(f"replace() got unknown settings {sorted(unknown)}; allowed: "
                                  f"{sorted(set(config) | {'model'})}.")
        if "loss" in changes and changes["loss"] is not None:
            config["loss_fn"] = None
        if "loss_fn" in changes and changes["loss_fn"] is not None:
            config["loss"] = None
        if ("loss" in changes or "loss_fn" in changes) and "reduction" not in changes:
            new = changes.get("loss", config["loss"])
            own = isinstance(new, str) or (isinstance(new, nn.Module)
                                           and isinstance(getattr(new, "reduction", None), str))
            config["reduction"] = None if own else self.reduction
        config.update(changes)
        model = config.pop("model", None)
        return Objective(model if model is not None else self.model_at(), **config)


class FunctionObjective(Objective):
    """An analytic landscape f: Rⁿ → R as an Objective: the same object with a one-batch source (``None``,
    weight 1) and f(θ) as its terms, so the same curvature code serves the toy lab. Built by
    ``Objective.from_function``; the parts only a network has raise a :class:`FlatminimaError`."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], x0: Any, *, dtype: torch.dtype | None = None,
                 name: str | None = None):
        if not callable(f):
            raise FlatminimaError(f"f must be a callable f(x) -> scalar tensor, got {type(f).__name__}.")
        x0 = torch.as_tensor(x0)  # a floating x0 keeps its dtype (float64 stays float64)
        x0 = x0.to(dtype or (x0.dtype if x0.is_floating_point() else torch.get_default_dtype()))
        if x0.dim() != 1 or x0.numel() == 0:
            raise FlatminimaError(f"x0 must be a non-empty 1-D vector, got shape {tuple(x0.shape)}.")
        self.f, self.name = f, name or getattr(f, "__name__", "function")
        self._compose(OneBatch(), FunctionTerms(f, self.name), dtype=x0.dtype, device=x0.device, mode="function",
                      reduction="mean", hvp_method="double_backward", config={}, names=["x"], shapes=[x0.shape],
                      theta0=x0)
        self.total_weight = 1.0

    def replace(self, **changes: Any) -> FunctionObjective:
        """The same analytic objective with ``f``, ``x0``, ``dtype`` or ``name`` changed."""
        config = {"f": self.f, "x0": self._theta0, "dtype": self.dtype, "name": self.name}
        unknown = set(changes) - set(config)
        if unknown:
            raise FlatminimaError(f"replace() got unknown settings {sorted(unknown)}; allowed: {sorted(config)}.")
        config.update(changes)
        return FunctionObjective(config.pop("f"), config.pop("x0"), **config)

    def describe(self) -> dict[str, Any]:
        return {"dim": self.dim, "mode": "function", "function": self.name, "dtype": str(self.dtype),
                "precision": self.precision.describe()}


def _check_budget(memory_mb: Any, model: nn.Module, mode: str) -> None:
    """A memory budget is a positive number of MiB, and cannot split train-mode BatchNorm batches."""
    if memory_mb is None:
        return
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, (int, float)) or not memory_mb > 0:
        raise FlatminimaError(f"memory_mb must be a positive number of MiB (or None), got {memory_mb!r}.")
    batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if mode == "train" and batchnorm:
        # Splitting a batch changes BatchNorm's batch statistics in train mode, hence L(θ) itself.
        raise FlatminimaError(
            "memory_mb cannot split batches of a BatchNorm model in mode='train' (the batch statistics "
            "would change the loss); use mode='eval' or a smaller batch_size.")
