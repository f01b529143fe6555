"""The objective L(θ): the loss as a function of one flat parameter vector, over a fixed data set.

    L(θ) = Σ_b w_b · ℓ_b(θ) / Σ_b w_b

where ℓ_b is the mean loss of batch b and w_b its size (or the number of targets a ``loss_fn`` reports),
so the value is the exact mean over every sample, the last partial batch included. ``grad`` and ``hvp``
are the exact derivatives of that same mean. Every measure, plot and probe in flatminima consumes this
one object (DESIGN.md).

Why hand-written: curvlinops and PyHessian each bundle the operator with their algorithms; we need one
small object that any algorithm, landscape or measure can call, that counts its own cost, that never
mutates the user's model, and that sums over shards with ``torch.distributed``. The derivatives
themselves come from ``torch.autograd`` (double backward) and ``torch.func`` (forward-over-reverse,
``vmap`` for many θ at once, in flatminima.pointwise).

The pieces: objective_base (the protocol and what every objective shares: θ, loss/grad/hvp over batch
terms, cost), objective_hvp (the Hessian- and GGN-vector backends), objective_function (analytic f(θ)),
objective_data (batches, losses, input checks), objective_memory (the memory budget). This module holds
what needs a network and data: construction, batches, fixed masks, the memory plan, describe/replace.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from .errors import FlatminimaError, require_choice
from .objective_base import Cost, ObjectiveBase
from .objective_data import (
    DROPOUT_MODULES,
    LOSSES,
    LossModule,
    check_batch_size,
    check_class_labels,
    iter_row_chunks,
    leaf_tensors,
    move_batch,
    name_matches,
    resolve_float_dtype,
    resolve_torch_device,
    row_count,
)
from .objective_function import FunctionObjective
from .objective_hvp import HVP_BACKENDS, GraphCache, ggn_terms
from .objective_hvp import no_second_derivative as _no_second_derivative
from .objective_hvp import second_derivative_error as _attention_error
from .objective_memory import MemoryPlan, plan

__all__ = ["HVP_BACKENDS", "Cost", "FunctionObjective", "MemoryPlan", "Objective", "ObjectiveBase"]


class Objective(ObjectiveBase):
    """L(θ) over a fixed data set, with exact gradients and Hessian products (an :class:`ObjectiveBase`).

    An analytic f(θ) is :meth:`from_function`'s :class:`~flatminima.objective_function.FunctionObjective`,
    a sibling under the same base (and registered, so ``isinstance(obj, Objective)`` holds for it too).

    The value is exactly the mean (``reduction="mean"``) or the sum (``reduction="sum"``) of the loss over
    every sample of the data, the same whatever ``batch_size`` and ``memory_mb`` chunks it is computed in:

        mean:  L(θ) = Σ_b s_b(θ) / Σ_b w_b        sum:  L(θ) = Σ_b s_b(θ)

    with s_b the loss summed over batch b and w_b the number of terms a mean over it divides by (see
    :class:`~flatminima.objective_data.LossTerms`). Sums are accumulated in float64, so float32 models still get
    exact-ish totals.

    Args:
        model: any ``nn.Module``; it is copied, never mutated.
        loss: ``"cross_entropy"``, ``"mse"``, ``"bce"`` (``BCEWithLogitsLoss``), a torch loss module such
            as ``nn.CrossEntropyLoss(reduction="sum")`` (its ``.reduction`` is read: ``"mean"`` or
            ``"sum"``; ``"none"`` is refused), or a callable ``loss(outputs, targets)`` returning the batch
            mean (the batch sum with ``reduction="sum"``). Batches are then ``(inputs, targets)`` or
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
        hvp_method: ``"double_backward"`` (default, measured faster on CPU) or ``"forward_over_reverse"``.
        reuse_graph: keep the gradient graph of every batch between Hessian products at the same θ (the
            data must fit in memory; ``"auto"`` does so for in-memory tensor data).
        distributed: sum over the shards of all ``torch.distributed`` ranks (one all-reduce per call).
        memory_mb: a memory budget (MiB, per process) for one Hessian-vector product. Batches are split
            into chunks of as many rows as fit (estimated from the tensors autograd saves per sample, see
            :class:`MemoryPlan`), ``loss_batched`` evaluates as many θ at once as fit, and ``reuse_graph``
            is turned off when the cached graphs would not fit. ``None``: no budget.
    """

    memory_mb: float | None = None
    _mem_plan: MemoryPlan | None = None
    _mem_probe: tuple[float, float, int] | None = None
    _reserved: int = 0
    _reserved_for: tuple[str, ...] = ()
    reduction: str = "mean"
    fixed_mask: bool = False
    _batch_index: int = 0
    _determinism_checked: bool = True

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
        require_choice("hvp_method", hvp_method, ["double_backward", "forward_over_reverse"])
        if (loss is None) == (loss_fn is None):
            raise FlatminimaError("pass exactly one of `loss` (outputs, targets) or `loss_fn` (model, batch).")
        if not isinstance(model, nn.Module):
            raise FlatminimaError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        batch_size = check_batch_size(batch_size)
        dtype, device = resolve_float_dtype(dtype), resolve_torch_device(device)
        self._config = {"loss": loss, "data": data, "loss_fn": loss_fn, "params": params, "mode": mode,
                        "batch_size": batch_size, "hvp_method": hvp_method, "reuse_graph": reuse_graph,
                        "distributed": distributed, "memory_mb": memory_mb, "reduction": reduction,
                        "fixed_mask": fixed_mask, "seed": seed}
        if isinstance(loss, str):
            require_choice("loss", loss, list(LOSSES))
            loss = LOSSES[loss]()
        self.reduction = self._resolve_reduction(loss, reduction)
        if fixed_mask and mode != "train":
            raise FlatminimaError("fixed_mask=True fixes dropout masks in mode='train'; in mode='eval' there are "
                                  "none (dropout is off). Pass mode='train' or drop fixed_mask.")
        self.mode = mode
        self.hvp_method = hvp_method
        self.distributed = distributed
        self.fixed_mask, self.seed = bool(fixed_mask), int(seed)
        first = next(model.parameters(), None)
        self.dtype = dtype or (first.dtype if first is not None else torch.get_default_dtype())
        self.device = torch.device(device) if device is not None else (
            first.device if first is not None else torch.device("cpu"))
        model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        model.train(mode == "train")
        self._model = model  # the copy users get back from model_at (running statistics intact)
        self._module = LossModule(self._compute_model(model), loss, loss_fn, self.reduction)
        self._has_outputs = loss_fn is None
        self._check_randomness(model)
        self._select_params(params)
        self._batches, in_memory = self._prepare_data(data, batch_size)
        self.reuse_graph = in_memory if reuse_graph == "auto" else bool(reuse_graph)
        self._set_budget(memory_mb, model)
        self._reserved, self._reserved_for = 0, []
        self.graph_cache = GraphCache()  # the gradient graphs the "cached" backend keeps (objective_hvp)
        self.n_batches: int | None = None
        self.total_weight: float | None = None
        self._determinism_checked = False

    # ----------------------------------------------------------------- construction helpers
    @staticmethod
    def _resolve_reduction(loss: Callable | None, reduction: str | None) -> str:
        if reduction is not None:
            require_choice("reduction", reduction, ["mean", "sum"])
        own = getattr(loss, "reduction", None) if isinstance(loss, nn.Module) else None
        if isinstance(own, str):
            if own not in ("mean", "sum"):
                raise FlatminimaError(
                    f"{type(loss).__name__}(reduction={own!r}) gives one loss per sample, not an objective; "
                    "build it with reduction='mean' (the mean over the data) or reduction='sum' (the total).")
            if reduction is not None and reduction != own:
                raise FlatminimaError(
                    f"reduction={reduction!r} contradicts {type(loss).__name__}(reduction={own!r}); "
                    "set it in one place (the loss module's reduction is used when reduction is not given).")
            return own
        return reduction or "mean"

    def _compute_model(self, model: nn.Module) -> nn.Module:
        """The model the functional calls run: in train mode, BatchNorm without running statistics.

        In train mode BatchNorm normalises with the batch statistics (functions of θ, differentiated like
        any layer) and would update its running statistics in place, which torch.func's forward-mode AD
        cannot do on plain buffers and which would change the copy behind the user's back. A second copy
        with ``torch.func.replace_all_batch_norm_modules_`` drops the running statistics from the
        computation; ``model_at`` keeps returning the first copy, statistics intact.
        """
        if self.mode != "train" or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            return model
        work = copy.deepcopy(model)
        torch.func.replace_all_batch_norm_modules_(work)
        return work

    def _check_randomness(self, model: nn.Module) -> None:
        active = sorted({type(m).__name__ for m in model.modules()
                         if isinstance(m, DROPOUT_MODULES) and m.training and getattr(m, "p", 0.0) > 0})
        if active and not self.fixed_mask:
            raise FlatminimaError(
                f"the loss is random: the model has dropout ({', '.join(active)}) active in mode='train', so "
                "every evaluation draws a new mask and Hessian products of the same vector disagree. Use "
                "mode='eval' (dropout off, the default), or mode='train', fixed_mask=True to reuse one "
                "dropout mask per batch at every evaluation.")

    def _select_params(self, patterns: str | Sequence[str] | None) -> None:
        named = [(n, p) for n, p in self._module.model.named_parameters()]
        trainable = [(n, p) for n, p in named if p.requires_grad]
        if not trainable:
            raise FlatminimaError(
                "the model has no trainable parameters (all requires_grad=False); unfreeze the ones whose "
                "curvature you want.")
        if patterns is not None:
            patterns = [patterns] if isinstance(patterns, str) else list(patterns)
            chosen = [(n, p) for n, p in trainable if name_matches(n, patterns)]
            if not chosen:
                raise FlatminimaError(
                    f"params={patterns} matches no trainable parameter; available: {[n for n, _ in trainable]}.")
        else:
            chosen = trainable
        chosen_names = {n for n, _ in chosen}
        self._init_params([n for n, _ in chosen], [p.shape for _, p in chosen],
                          torch.cat([p.detach().reshape(-1) for _, p in chosen]))
        # Everything not chosen (other parameters, buffers) is held fixed at the copy's values.
        self._fixed = {"model." + n: p.detach() for n, p in named if n not in chosen_names}
        self._fixed.update({"model." + n: b for n, b in self._module.model.named_buffers()})

    def _prepare_data(self, data: Any, batch_size: int) -> tuple[Iterable | None, bool]:
        if data is None:
            raise FlatminimaError("data is required: a DataLoader, a tuple (X, y) of tensors, or a list of batches.")
        if isinstance(data, tuple) and data and all(isinstance(t, torch.Tensor) for t in data):
            n = data[0].shape[0]
            if n == 0 and not self.distributed:  # a rank's shard may be empty; the global sum is not
                raise FlatminimaError("data is empty (0 samples); pass at least one sample.")
            if any(t.shape[0] != n for t in data):
                raise FlatminimaError(f"data tensors have different lengths {[t.shape[0] for t in data]}; "
                                      "inputs and targets must have one row per sample.")
            return [tuple(t[i:i + batch_size] for t in data) for i in range(0, n, batch_size)], True
        if iter(data) is data:
            raise FlatminimaError(
                "data is a one-shot iterator (a generator?); the objective passes over the data many times. "
                "Pass a list of batches, a DataLoader or a tuple of tensors.")
        return data, isinstance(data, (list, tuple))

    def model_at(self, theta: torch.Tensor | None = None) -> nn.Module:
        """A fresh copy of the model holding θ (for plotting, saving or evaluation by the user)."""
        model = copy.deepcopy(self._model)
        with torch.no_grad():
            named = dict(model.named_parameters())
            for n, t in self.unflatten(self._theta(theta)).items():
                named[n].copy_(t)
        return model

    def _state(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        state = dict(self._fixed)
        state.update({"model." + n: t for n, t in self.unflatten(theta).items()})
        return state

    # ----------------------------------------------------------------- the public protocol
    @property
    def has_outputs(self) -> bool:
        """Whether the objective sees model outputs and targets (built with ``loss=``, not ``loss_fn=``)."""
        return self._has_outputs

    @property
    def loss_function(self) -> Callable | None:
        """The per-batch ``loss(outputs, targets)`` as given (a module or a callable); None with ``loss_fn``."""
        module = getattr(self, "_module", None)
        return None if module is None else module._loss

    def outputs(self, theta: torch.Tensor | None, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(model outputs at θ on a prepared batch, its targets), differentiable in θ (``loss=`` objectives)."""
        if not self._has_outputs:
            raise FlatminimaError("outputs need (inputs, targets) batches: build the Objective with `loss=`.")
        return self._call_outputs(self._theta(theta), batch)

    def loss_terms(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(s, w) of the objective's loss on given outputs and targets (``loss=`` objectives)."""
        if not self._has_outputs:
            raise FlatminimaError("loss_terms needs (outputs, targets): build the Objective with `loss=`.")
        return self._module._terms(outputs, targets)

    @property
    def has_model(self) -> bool:
        """Whether there is a network behind the objective (always, for a data objective)."""
        return True

    @property
    def working_model(self) -> nn.Module:
        """The objective's own copy of the network, which every evaluation runs (never the user's model).

        Engines that write θ into it in place (flatminima.pointwise's CPU loop) must restore it after.
        """
        return self._module.model

    @property
    def fixed_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors held fixed (unselected parameters, buffers), by name in ``working_model``."""
        return {k[len("model."):]: t for k, t in self._fixed.items()}

    @property
    def stored_batches(self) -> Iterable:
        """The data's batches as stored at construction: not moved, cast or split into memory chunks."""
        return self._batches

    def working_terms(self, batch: Any) -> tuple[torch.Tensor, float]:
        """(s_b, w_b) of a prepared batch with the parameters ``working_model`` holds right now."""
        return self._module(batch)

    def with_fixed(self, tensors: Mapping[str, torch.Tensor]) -> Objective:
        """A view of this objective with some fixed tensors (e.g. BatchNorm statistics) replaced.

        Shares data, model and cost meter; ``tensors`` are named as in ``working_model``.
        """
        view = copy.copy(self)
        view._fixed = dict(self._fixed) | {"model." + k: t for k, t in tensors.items()}
        view.graph_cache = GraphCache()  # graphs built with the other fixed tensors are not this view's
        return view

    # ----------------------------------------------------------------- batches and reduction
    def _iter_batches(self) -> Iterator[Any]:
        count = 0
        rows = self.memory_plan.rows if self.memory_mb is not None else None
        for batch in self._batches:
            for part in (iter_row_chunks(batch, rows) if rows else (batch,)):
                part = move_batch(part, self.device, self.dtype)
                self._batch_index = count  # keys the fixed dropout mask of this batch
                if not self._determinism_checked:
                    self._check_first_batch(part)
                count += 1
                yield part
        if count == 0 and not self.distributed:  # a rank may hold an empty shard; the sum still counts
            raise FlatminimaError("data yielded no batches; pass a non-empty data set.")
        self.n_batches = count

    def _check_first_batch(self, batch: Any) -> None:
        """Once, on the first batch: class labels in range, and two evaluations at θ₀ agree (a random loss
        has no Hessian)."""
        self._determinism_checked = True
        self._check_batch_labels(batch)
        with torch.no_grad():
            a = float(self._batch_terms(self._theta0, batch)[0])
            b = float(self._batch_terms(self._theta0, batch)[0])
        tol = (1e-10 if self.dtype == torch.float64 else 1e-4) * max(1.0, abs(a))
        if abs(a - b) > tol:
            raise FlatminimaError(
                f"the loss is random: two evaluations at the same θ on the same batch gave {a:.8g} and {b:.8g}. "
                "Dropout (or another random op) is active, in train mode or in loss_fn; use mode='eval', or "
                "mode='train', fixed_mask=True to reuse one dropout mask per batch at every evaluation.")

    def _check_batch_labels(self, batch: Any) -> None:
        """Cross-entropy / NLL labels of a prepared batch against the model's number of outputs."""
        if not self._has_outputs or not isinstance(batch, (tuple, list)) or len(batch) < 2:
            return
        if not isinstance(self.loss_function, (nn.CrossEntropyLoss, nn.NLLLoss)):
            return
        outputs = None
        # The outputs' shape is all it needs: one row, not a full-batch forward outside the memory budget
        # (the whole batch where one row cannot run: train-mode BatchNorm; budgets are refused there).
        for part in (next(iter_row_chunks(batch, 1)), batch):
            with torch.no_grad(), contextlib.suppress(RuntimeError, TypeError, IndexError, ValueError):
                outputs = self._call_outputs(self._theta0, part)[0]  # a failing forward is reported by the loss
                break
        if outputs is not None:
            check_class_labels(self.loss_function, outputs, batch[-1])

    @contextmanager
    def _randomness(self) -> Iterator[None]:
        """With ``fixed_mask``: the RNG seeded by (seed, batch index), so each batch redraws the same mask."""
        if not self.fixed_mask:
            yield
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + self._batch_index)
            yield

    def _batch_terms(self, theta: torch.Tensor, batch: Any) -> tuple[torch.Tensor, float]:
        """(s_b, w_b) of one prepared batch at θ (see the class docstring)."""
        try:
            with self._randomness():
                s, weight = functional_call(self._module, self._state(theta), (batch,))
        except (RuntimeError, TypeError, IndexError) as err:
            if _no_second_derivative(err):
                raise _attention_error(err) from err
            if isinstance(err, IndexError):
                self._check_batch_labels(batch)  # out-of-range class labels: say which
            shapes = [tuple(t.shape) for t in leaf_tensors(batch)]
            raise FlatminimaError(
                f"the model's forward/loss failed on a batch with tensor shapes {shapes}: {err}. "
                "Check that the data's shape matches what the model expects.") from err
        return s, float(weight)

    # ----------------------------------------------------------------- products
    def _hvp_terms(self, theta: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Σ_b H_b·v by ``hvp_method``, or the ``cached`` backend under graph reuse (:data:`HVP_BACKENDS`)."""
        self._require_second_derivatives()
        plan = self.memory_plan  # plans the budget first: it may turn graph reuse off
        reuse = self.reuse_graph if plan is None else plan.reuse_graph
        backend = "cached" if reuse and self.hvp_method == "double_backward" else self.hvp_method
        if backend == "forward_over_reverse" and self._module.model is not self._model:
            # Measured: torch.func's second derivatives through train-mode batch_norm (jvp, jacfwd or
            # jacrev over jacrev) disagree with double backward and with a dense autograd Hessian on the
            # BatchNorm parameters (torch 2.13), while first derivatives agree; refuse, never a wrong number.
            raise FlatminimaError(
                "hvp_method='forward_over_reverse' is not exact through BatchNorm in mode='train' (torch.func's "
                "second derivatives of batch statistics are wrong); use hvp_method='double_backward'.")
        return HVP_BACKENDS[backend](self, theta, v)

    def _require_second_derivatives(self) -> None:
        """Hugging Face's fused attention (SDPA, flash) has no second derivative: refuse before the raw error."""
        for m in self._module.model.modules():
            impl = getattr(getattr(m, "config", None), "_attn_implementation", None)
            if isinstance(impl, str) and impl != "eager":
                raise _attention_error(None, impl)

    def ggn_vp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """G(θ)·v with the generalised Gauss-Newton G = Σ_b J_bᵀ ∇²_z s_b J_b / Σ_b w_b (PSD for convex ℓ).

        z are the model outputs, J_b = ∂z/∂θ on batch b and s_b the batch's summed loss (divided by the
        total weight with ``reduction="mean"``, not with ``"sum"``). Needs the ``loss(outputs, targets)``
        form (Schraudolph 2002; Martens 2010). In train mode BatchNorm's batch statistics are part of z(θ).
        """
        if not self._has_outputs:
            raise FlatminimaError("the GGN needs the model outputs: build the Objective with `loss=`, not `loss_fn=`.")
        start, v, theta = time.perf_counter(), self._check_vector(v), self._theta(theta)
        total, weight = ggn_terms(self, theta, v)
        value = self._reduce(total, weight)
        self._check_finite(value, "GGN-vector product")
        self._account("hvps", start)
        return value

    def _call_outputs(self, theta: torch.Tensor, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        state = {k[len("model."):]: t for k, t in self._state(theta).items()}
        with self._randomness():
            return functional_call(self._module.model, state, tuple(batch[:-1])), batch[-1]

    # ----------------------------------------------------------------- memory budget
    def _set_budget(self, memory_mb: float | None, model: nn.Module) -> None:
        if memory_mb is None:
            return
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, (int, float)) or not memory_mb > 0:
            raise FlatminimaError(f"memory_mb must be a positive number of MiB (or None), got {memory_mb!r}.")
        batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if self.mode == "train" and batchnorm:
            # Splitting a batch changes BatchNorm's batch statistics in train mode, hence L(θ) itself.
            raise FlatminimaError(
                "memory_mb cannot split batches of a BatchNorm model in mode='train' (the batch statistics "
                "would change the loss); use mode='eval' or a smaller batch_size.")
        self.memory_mb = float(memory_mb)

    @property
    def memory_plan(self) -> MemoryPlan | None:
        """How the memory budget is spent (rows per chunk, bytes per sample); ``None`` without a budget."""
        if self.memory_mb is None:
            return None
        if self._mem_plan is None:
            self._mem_plan = self._plan_memory()
        return self._mem_plan

    def _plan_memory(self) -> MemoryPlan:
        if self._mem_probe is None:
            self._mem_probe = self._measure_saved()
        per_sample, intercept, batch_rows = self._mem_probe
        if batch_rows == 0:  # an empty shard on this rank: nothing to split, any chunk fits
            return MemoryPlan(self.memory_mb, 0.0, 0.0, 1 << 62, self.reuse_graph)
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return plan(self.memory_mb, per_sample, intercept, self.dim * itemsize, self._reserved,
                    self._known_rows(), batch_rows, self.reuse_graph, " and ".join(self._reserved_for))

    def _measure_saved(self) -> tuple[float, float, int]:
        """(bytes saved per sample, intercept, rows of the first batch), measured once on that batch."""
        first = next(iter(self._batches), None)
        if first is None:
            return 0.0, 0.0, 0
        first = move_batch(first, self.device, self.dtype)
        self._check_batch_labels(first)
        n = row_count(first)
        small = 1 if n > 1 else n
        big = min(n, 4) if n > 1 else n
        # next(iter_row_chunks(...)): only the first part's views (all n/rows of them took ~1 KB a part,
        # 7 MB at n=8000).
        s_small = self._saved_bytes(next(iter_row_chunks(first, small)))
        s_big = self._saved_bytes(next(iter_row_chunks(first, big))) if big > small else s_small
        # Saved-for-backward bytes grow linearly in the rows: slope per sample, intercept fixed (θ views...).
        per_sample = (s_big - s_small) / (big - small) if big > small else s_small
        per_sample = max(per_sample, 1.0)
        return per_sample, max(s_small - per_sample * small, 0.0), n

    @contextmanager
    def reserve(self, n_vectors: int, what: str = "") -> Iterator[MemoryPlan | None]:
        """Hold ``n_vectors`` parameter-sized vectors inside the memory budget for the block.

        Algorithms that keep vectors across products call it (Lanczos its basis, Hutch++ its sketch, SLQ
        its steps): the plan is redone with those bytes taken out of ``memory_mb``, which lowers the rows
        per chunk or turns graph reuse off, and a :class:`FlatminimaError` names the smallest budget that
        works when the vectors and one sample's product do not fit. Nested reservations add up. Without a
        budget it does nothing and yields ``None``; otherwise it yields the plan in force.
        """
        self._check_reservation(n_vectors)
        if self.memory_mb is None:
            yield None
            return
        self._reserved += n_vectors
        self._reserved_for.append(what or f"{n_vectors} reserved vectors")
        try:
            self._replan()
            yield self.memory_plan
        finally:
            self._reserved -= n_vectors
            self._reserved_for.pop()
            self._replan()

    def _replan(self) -> None:
        """Plan the budget again (a reservation changed); a cached graph that no longer fits is freed."""
        self._mem_plan = None
        self.graph_cache.clear()  # built for the old chunks and budget
        self._mem_plan = self._plan_memory()

    def _saved_bytes(self, batch: Any) -> float:
        """Bytes of the tensors autograd saves for backward in one forward pass (distinct storages)."""
        theta = self._theta0.detach().clone().requires_grad_(True)
        seen: dict[tuple[int, int], int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            # Keyed by (address, size): a view saved twice counts once; a slice counts its own rows only.
            seen[(t.data_ptr() or id(t), t.numel())] = t.numel() * t.element_size()
            return t

        # enable_grad: the plan may be made inside loss()'s no_grad, where nothing would be saved.
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self._batch_terms(theta, batch)
        return float(sum(seen.values()))

    def _known_rows(self) -> int | None:
        if not isinstance(self._batches, (list, tuple)):
            return None
        return sum(row_count(b) for b in self._batches)

    def theta_chunk(self, chunk_size: int) -> int:
        """How many θ ``loss_batched`` evaluates at once: ``chunk_size``, or fewer to fit the budget.

        The same on every rank (a MIN all-reduce), since every chunk ends with one all-reduce.
        """
        chunk = max(1, int(chunk_size))
        plan = self.memory_plan
        if plan is not None and plan.per_sample_bytes > 0:
            itemsize = torch.empty((), dtype=self.dtype).element_size()
            per_theta = plan.rows * plan.per_sample_bytes + 2 * self.dim * itemsize
            free = plan.memory_mb * 2**20 - plan.fixed_bytes - plan.reserved_bytes
            chunk = max(1, min(chunk, int(free // per_theta)))
        if self.distributed and plan is not None:
            import torch.distributed as dist

            box = torch.tensor([chunk], dtype=torch.int64, device=self.device)
            dist.all_reduce(box, op=dist.ReduceOp.MIN)
            chunk = int(box)
        return chunk

    # ----------------------------------------------------------------- analytic landscapes
    @classmethod
    def from_function(cls, f: Callable[[torch.Tensor], torch.Tensor], x0: Any, *,
                      dtype: torch.dtype | None = None, name: str | None = None) -> Objective:
        """An analytic landscape f: Rⁿ → R as an Objective (one "batch", no data)."""
        return FunctionObjective(f, x0, dtype=dtype, name=name)

    def describe(self) -> dict[str, Any]:
        """What this objective is, for results and reports (randomness included: ``fixed_mask``)."""
        loss = self.loss_function
        return {"dim": self.dim, "mode": self.mode, "dtype": str(self.dtype).replace("torch.", ""),
                "device": str(self.device), "params": self.param_names if len(self.param_names) <= 20
                else f"{len(self.param_names)} tensors", "samples": self.total_weight,
                "loss": "loss_fn" if loss is None else getattr(loss, "__name__", type(loss).__name__),
                "reduction": self.reduction, "hvp_method": self.hvp_method, "memory_mb": self.memory_mb,
                "chunk_rows": self._mem_plan.rows if self._mem_plan is not None else None,
                "fixed_mask": (f"one dropout mask per batch, seed {self.seed}" if self.fixed_mask else False)}

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


# A FunctionObjective is a sibling under ObjectiveBase; registered so isinstance(obj, Objective) still holds.
Objective.register(FunctionObjective)
