"""An Objective over a model sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``, DTensor parameters).

Models that fit no single device are trained with their parameters (and activations) sharded across ranks. An
:class:`~flatminima.Objective` built on such a model (every rank builds it, with ``distributed=True``, over its
own shard of the data) is a :class:`ShardedObjective`, and every curvature algorithm runs on it unchanged:

- θ₀ is the full flat parameter vector: each DTensor parameter gathered with ``full_tensor()``. The vectors
  the algorithms see (θ, the probes v, the products H v, a Lanczos basis) stay **full-size and identical on
  every rank**; only the parameters, their gradients and the activations are sharded. That is the limit of
  this path: an algorithm holding k vectors holds k full parameter vectors on every rank.
- The loss and the exact gradient at θ come from FSDP2's own forward and ``backward()``: θ's slice of each
  parameter is written into the local shard in place (the shards are restored exactly afterwards, and the
  model's ``.grad`` and train/eval flags too), so FSDP2 does its own all-gathers and reduce-scatters. The
  model is never copied (a deep copy of an FSDP2 model is neither possible nor affordable).
- The weighting is the one ``distributed=True`` uses for DDP: the global mean over every sample of every
  rank, exact on unequal shards, L(θ) = Σ_r Σ_{b∈r} s_b(θ) / Σ_r Σ_{b∈r} w_b. FSDP2's reduce-scatter divides
  the summed gradient by its divide factor (the data-parallel world size unless ``set_gradient_divide_factor``
  changed it); each backward is scaled by that factor, so the reduced gradient is Σ_r Σ_b ∇s_b, then divided by
  the all-reduced weight. Every rank runs the same number of forward/backward passes (FSDP2's collectives must
  match): a rank with fewer batches runs its first batch again with weight zero.
- Hessian-vector products are central differences of that gradient (``hvp_method="finite_difference"``,
  chosen automatically; flatminima.objective._finite_difference gives the step and the error estimate, which
  ``describe()`` and every curvature result carry). ``torch.func`` transforms and ``functional_call`` do not go
  through FSDP2's sharded parameters, so no other method is offered.

Not supported here, each refused with a :class:`~flatminima.FlatminimaError` that says what to do: the GGN,
values at many points at once (``values_at``; ``loss_batched`` loops over ``loss``), ``model_at`` and the other
views of a model copy, ``mode="train"``, ``fixed_mask``, ``memory_mb``, a dtype or device other than the
model's, parameter meshes of more than one dimension (HSDP, tensor parallel) and ``distributed=False``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import FlatminimaError, require_choice
from ._arguments import check_arguments
from ._batches import DataSource, check_batch_size, name_matches, resolve_float_dtype, resolve_torch_device
from ._finite_difference import FINITE_DIFFERENCE, fd_step
from ._objective import Objective, register_variant
from ._precision import own_precision
from ._terms import LOSSES, LossModule, named_loss, resolve_reduction

__all__ = ["ShardedObjective", "is_sharded"]

SHARDED = "sharded"


def is_sharded(model: Any) -> bool:
    """Whether ``model`` is a module with DTensor parameters (FSDP2). Cheap: without ``torch.distributed.tensor``
    imported no parameter can be a DTensor."""
    if not isinstance(model, nn.Module) or "torch.distributed.tensor" not in sys.modules:
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _refuse(what: str) -> FlatminimaError:
    return FlatminimaError(f"{what} is not supported for a model sharded with FSDP2 (fully_shard, DTensor "
                           "parameters): the Objective runs the model's own forward and backward and never copies "
                           "it. Use loss(), grad() and the Hessian (obj.hessian), or gather the model into one "
                           "process.")


class ShardedTerms:
    """The terms of a sharded model: the names, shapes and θ₀ the Objective needs; no functional evaluation."""

    has_outputs = False
    fixed: dict[str, torch.Tensor] = {}

    def __init__(self, module: LossModule, names: list[str], shapes: list[torch.Size], theta0: torch.Tensor):
        self.module, self.names, self.shapes, self.theta0 = module, names, shapes, theta0

    def __call__(self, theta: torch.Tensor, batch: Any) -> tuple[torch.Tensor, float]:
        raise _refuse("evaluating the loss terms of one batch at a given θ (a functional call)")

    def outputs(self, theta: torch.Tensor, batch: Any) -> Any:
        raise _refuse("model outputs at a given θ (a functional call)")

    def loss_terms(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        if self.module.terms is None:
            raise FlatminimaError("loss_terms needs (outputs, targets): build the Objective with `loss=`.")
        return self.module.terms(outputs, targets)


class ShardedObjective(Objective):
    """The Objective of an FSDP2-sharded model (see the module); ``Objective(model, ...)`` returns one when the
    model has DTensor parameters. Every rank builds it collectively and calls it collectively."""

    def __init__(self, model: nn.Module, loss: str | Callable | None = None, data: Any = None, *,
                 loss_fn: Callable | None = None, params: str | Sequence[str] | None = None, mode: str = "eval",
                 dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                 batch_size: int = 1024, hvp_method: str = "double_backward", reuse_graph: bool | str = "auto",
                 distributed: bool = False, memory_mb: float | None = None, reduction: str | None = None,
                 fixed_mask: bool = False, seed: int = 0):
        require_choice("mode", mode, ["eval", "train"])
        require_choice("hvp_method", hvp_method, ["double_backward", "forward_over_reverse", FINITE_DIFFERENCE])
        if (loss is None) == (loss_fn is None):
            raise FlatminimaError("pass exactly one of `loss` (outputs, targets) or `loss_fn` (model, batch).")
        check_arguments(model, loss=loss, loss_fn=loss_fn, data=data, seed=seed, memory_mb=memory_mb,
                        device=device, distributed=distributed, losses=LOSSES)
        batch_size = check_batch_size(batch_size)
        dtype, device = resolve_float_dtype(dtype), resolve_torch_device(device)
        first = next(model.parameters())
        self._check_settings(first, distributed=distributed, mode=mode, fixed_mask=fixed_mask,
                             memory_mb=memory_mb, hvp_method=hvp_method, dtype=dtype, device=device)
        config = {"loss": loss, "data": data, "loss_fn": loss_fn, "params": params, "mode": mode,
                  "batch_size": batch_size, "hvp_method": hvp_method, "reuse_graph": reuse_graph,
                  "distributed": distributed, "memory_mb": memory_mb, "reduction": reduction,
                  "fixed_mask": fixed_mask, "seed": seed}
        loss = None if loss is None else named_loss(loss)
        reduction = resolve_reduction(loss, reduction)
        self._model = model
        self._chosen = _select(model, params)
        self._factor, world = _gradient_factor(model, self._chosen)
        dtype, device = first.dtype, first.to_local().device
        names = [n for n, _ in self._chosen]
        shapes = [p.shape for _, p in self._chosen]
        theta0 = torch.cat([p.detach().full_tensor().reshape(-1) for _, p in self._chosen])  # collective
        terms = ShardedTerms(LossModule(model, loss, loss_fn, reduction), names, shapes, theta0)
        source = DataSource(data, batch_size=batch_size, device=device, dtype=dtype, distributed=True,
                            reuse_graph=False)
        self._compose(source, terms, dtype=dtype, device=device, mode="eval", reduction=reduction,
                      hvp_method=FINITE_DIFFERENCE, config=config)
        self.precision_state.weights = dtype
        self.precision_state.scanned = True  # the dtype scan is a functional call; the model's own dtype stands
        self._checks.fixed = {SHARDED: (
            f"FSDP2 (fully_shard, DTensor parameters) over {world} ranks: θ and the algorithms' vectors are "
            "full-size on every rank (parameters and activations sharded, the vectors not); loss and gradient by "
            f"the model's own forward/backward (FSDP2's gradient divide factor {self._factor:g} undone, global "
            "mean over every rank's samples); Hessian products by central differences of that gradient "
            "(hvp_method='finite_difference', chosen automatically)")}
        self._check_layout(theta0)

    @staticmethod
    def _check_settings(first: torch.Tensor, *, distributed: bool, mode: str, fixed_mask: bool,
                        memory_mb: float | None, hvp_method: str, dtype: torch.dtype | None,
                        device: torch.device | None) -> None:
        if not distributed:
            raise FlatminimaError(
                "a model sharded with FSDP2 needs distributed=True: its forward and backward run collectively on "
                "every rank, each over its own shard of the data (pass the same data on every rank if each holds "
                "all of it: the global mean is the same).")
        if mode != "eval":
            raise FlatminimaError(
                "mode='train' is not supported for a model sharded with FSDP2 (train-mode BatchNorm would update "
                "the model's running statistics, dropout would make the loss random); use mode='eval'.")
        if fixed_mask:
            raise FlatminimaError("fixed_mask is not supported for a model sharded with FSDP2 (it needs mode='train', "
                                  "which is refused there); use mode='eval'.")
        if memory_mb is not None:
            raise FlatminimaError("memory_mb is not supported for a model sharded with FSDP2 (FSDP2 holds the "
                                  "parameters sharded already); pass smaller batches with batch_size instead.")
        if hvp_method == "forward_over_reverse":
            raise FlatminimaError(
                "hvp_method='forward_over_reverse' does not go through FSDP2's sharded parameters (torch.func "
                "transforms cannot); a sharded model's Hessian products are central differences of its exact "
                "gradient (hvp_method='finite_difference', the default there).")
        if dtype is not None and dtype != first.dtype:
            raise FlatminimaError(
                f"dtype={dtype} differs from the sharded model's parameters ({first.dtype}); a model sharded with "
                "FSDP2 is evaluated as it is, never copied: cast it before fully_shard, or leave dtype out.")
        if device is not None and device != first.to_local().device:
            raise FlatminimaError(
                f"device={device} differs from the sharded model's ({first.to_local().device}); a model sharded "
                "with FSDP2 is evaluated where its shards are: leave device out.")

    def _check_layout(self, theta0: torch.Tensor) -> None:
        """θ₀'s slices, split the way the DTensors are, must give back every rank's own shards exactly."""
        bad = 0.0
        for (_, p), local in zip(self._chosen, self._locals(theta0), strict=True):
            own = p.detach().to_local()
            if local.shape != own.shape or not torch.equal(local, own):
                bad = 1.0
        flag = torch.tensor([bad], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() > 0:
            raise FlatminimaError(
                "the sharded parameters' local shards do not match their DTensor layout (placements); this "
                "sharding is not supported: shard with fully_shard on a one-dimensional device mesh.")

    # ----------------------------------------------------------------- θ into the shards and back
    def _locals(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """This rank's slice of each selected parameter of the full flat θ (no communication)."""
        from torch.distributed.tensor import distribute_tensor

        out = []
        for (_, p), part in zip(self._chosen, torch.split(theta, self._numels), strict=True):
            full = part.reshape(p.shape).to(dtype=p.dtype)
            out.append(distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None).to_local())
        return out

    @contextmanager
    def _at(self, theta: torch.Tensor) -> Iterator[None]:
        """The model holding θ (written into the local shards) in eval mode with no ``.grad``; afterwards the
        shards, the ``.grad`` attributes and the train/eval flags are as before, exactly."""
        model = self._model
        modules = list(model.modules())
        training = [m.training for m in modules]
        params = list(model.parameters())
        grads = [p.grad for p in params]
        saved: list[torch.Tensor] = []
        _reshard(model)
        try:
            with torch.no_grad():
                for p in params:
                    p.grad = None
                if theta is not self._theta0:
                    for (_, p), local in zip(self._chosen, self._locals(theta), strict=True):
                        shard = p.to_local()
                        saved.append(shard.clone())
                        shard.copy_(local)
            model.eval()
            yield
        finally:
            with torch.no_grad():
                for (_, p), old in zip(self._chosen, saved, strict=False):
                    p.to_local().copy_(old)
                for p, g in zip(params, grads, strict=True):
                    p.grad = g
            for m, flag in zip(modules, training, strict=True):
                m.training = flag
            _reshard(model)

    def _rounds(self) -> Iterator[tuple[Any, float]]:
        """(batch, scale) until every rank is out of batches: every rank runs the same number of passes (FSDP2's
        collectives must match); a rank out of batches repeats its first with scale 0 (no contribution)."""
        dist = torch.distributed
        batches, template = iter(self._source.batches()), None
        while True:
            batch = next(batches, None)
            template = batch if template is None else template
            flags = torch.tensor([batch is not None, template is None], dtype=torch.float64, device=self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            if flags[0].item() == 0:
                return
            if flags[1].item() > 0:
                raise FlatminimaError(
                    "a rank holds no data while others do; a model sharded with FSDP2 runs its forward and "
                    "backward on every rank together, so every rank needs at least one sample (shard the data "
                    "so that each rank gets some).")
            yield (batch, 1.0) if batch is not None else (template, 0.0)

    def _weight(self, total: torch.Tensor | None, weight: float) -> tuple[torch.Tensor | None, float]:
        """All-reduce the weight (and a loss total) over the ranks; the gradient is summed by FSDP2 itself."""
        packed = torch.tensor([weight] if total is None else [weight, float(total)], dtype=torch.float64,
                              device=self.device)
        torch.distributed.all_reduce(packed)
        weight = float(packed[0])
        if weight <= 0:
            raise FlatminimaError("the data's total weight is zero (no samples / no targets).")
        self.total_weight = weight
        return (None if total is None else packed[1]), weight

    def _loss_at(self, theta: torch.Tensor) -> torch.Tensor:
        total, weight = torch.zeros((), dtype=torch.float64, device=self.device), 0.0
        with self._at(theta), torch.no_grad():
            for batch, scale in self._rounds():
                s, w = self._terms.module(batch)
                total, weight = total + scale * s.detach().to(torch.float64), weight + scale * float(w)
        total, weight = self._weight(total, weight)
        return total / weight if self.reduction == "mean" else total

    def _gradient_at(self, theta: torch.Tensor) -> torch.Tensor:
        """∇L(θ) (float64, full-size on every rank) from FSDP2's forward/backward on every batch."""
        weight = 0.0
        with self._at(theta), torch.enable_grad():
            for batch, scale in self._rounds():
                s, w = self._terms.module(batch)
                (s * (scale * self._factor)).backward()  # FSDP2 divides the reduced sum by its factor
                weight += scale * float(w)
            parts = [p.grad.full_tensor().reshape(-1) if p.grad is not None  # collective, same order everywhere
                     else torch.zeros(p.numel(), dtype=p.dtype, device=self.device) for _, p in self._chosen]
        total = torch.cat(parts).to(torch.float64)
        _, weight = self._weight(None, weight)
        return total / weight if self.reduction == "mean" else total

    def _difference(self, theta: torch.Tensor, v: torch.Tensor, h: float) -> torch.Tensor:
        return (self._gradient_at(theta + h * v) - self._gradient_at(theta - h * v)) / (2 * h)

    # ----------------------------------------------------------------- the operations
    @own_precision
    def loss(self, theta: torch.Tensor | None = None) -> float:
        start = time.perf_counter()
        value = self._loss_at(self._theta(theta)).to(self.dtype)
        self._check_finite(value, "loss")
        self._meter.account("losses", start)
        return float(value)

    @own_precision
    def grad(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        start = time.perf_counter()
        value = self._gradient_at(self._theta(theta)).to(self.dtype)
        self._check_finite(value, "gradient")
        self._meter.account("grads", start)
        return value

    @own_precision
    def hvp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """H(θ)·v by central differences of FSDP2's exact gradient, with the error estimate of
        flatminima.objective._finite_difference (measured on the first product)."""
        start, v, theta = time.perf_counter(), self._check_vector(v), self._theta(theta)
        h = fd_step(theta, v)
        fine, passes = self._difference(theta, v, h), 2.0
        if self._checks.fd_error is None:
            coarse, passes = self._difference(theta, v, 2 * h), 4.0
            scale = float(fine.norm())
            self._checks.fd_error = {
                "step": h * float(v.norm()),
                "relative_error": float((coarse - fine).norm()) / scale if scale > 0 else 0.0,
                "how": "central differences of the exact (FSDP2) gradient, h = cbrt(eps)·max(1, ‖θ‖)/‖v‖; error "
                       "‖D(2h) − D(h)‖/‖D(h)‖ (Richardson) on the first product"}
        value = fine.to(self.dtype)
        self._check_finite(value, "Hessian-vector product")
        self._meter.record("hvps", 1, passes, time.perf_counter() - start)
        return value

    def ggn_vp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        raise FlatminimaError(
            "the generalised Gauss-Newton product is not supported for a model sharded with FSDP2 (it needs "
            "Jacobian products of the model outputs, which torch.func cannot take through sharded parameters); "
            "use the Hessian (obj.hessian), or an Objective on the unsharded model.")

    def loss_batched(self, thetas: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
        """L(θ_i) for every row of ``thetas``, one :meth:`loss` (one collective pass) per row."""
        thetas = torch.as_tensor(thetas)
        if thetas.dim() != 2 or thetas.shape[1] != self.dim:
            raise FlatminimaError(f"thetas must be an (n × {self.dim}) matrix, got shape {tuple(thetas.shape)}.")
        values = []
        for row in thetas:
            start = time.perf_counter()
            values.append(float(self._loss_at(self._theta(row))))
            self._meter.account("losses", start)
        return torch.tensor(values, dtype=torch.float64)

    def values_at(self, points: Any, metrics: Sequence[str | Callable] = ("loss",), **options: Any
                  ) -> list[torch.Tensor]:
        raise FlatminimaError(
            "values at many points at once (landscapes, metric_batched, perturbation probes) evaluate the model "
            "functionally, which FSDP2's sharded parameters do not allow; call obj.loss(θ) (or obj.loss_batched) "
            "point by point, or gather the model into one process and build an Objective on it.")

    # ----------------------------------------------------------------- views of a model copy: none here
    @property
    def has_model(self) -> bool:
        return True

    def model_at(self, theta: torch.Tensor | None = None) -> nn.Module:
        raise FlatminimaError(
            "model_at copies the model, and a model sharded with FSDP2 is never copied; the sharded model itself "
            "holds θ₀. For another θ, gather the model into one process (full_tensor of each parameter) and use "
            "an Objective on it.")

    @property
    def working_model(self) -> nn.Module:
        raise _refuse("working_model (the Objective's own model copy)")

    def working_terms(self, batch: Any) -> tuple[torch.Tensor, float]:
        raise _refuse("working_terms (a pass of the Objective's own model copy)")

    def with_fixed(self, tensors: Any) -> Objective:
        raise _refuse("with_fixed (a model copy with other fixed tensors)")

    def replace(self, **changes: Any) -> Objective:
        """A new Objective on the same sharded model (which holds θ₀) with ``changes``."""
        changes.setdefault("model", self._model)
        return super().replace(**changes)


def _select(model: nn.Module, patterns: str | Sequence[str] | None) -> list[tuple[str, Any]]:
    """The selected trainable parameters (name, DTensor), each one sharded."""
    from torch.distributed.tensor import DTensor

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if patterns is not None:
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        chosen = [(n, p) for n, p in trainable if name_matches(n, patterns)]
        if not chosen:
            raise FlatminimaError(
                f"params={patterns} matches no trainable parameter; available: {[n for n, _ in trainable]}.")
    else:
        chosen = trainable
    plain = [n for n, p in trainable if not isinstance(p, DTensor)]
    if plain:
        raise FlatminimaError(
            f"the model mixes sharded (DTensor) and plain parameters ({', '.join(plain[:5])}); apply fully_shard "
            "to the root module too, so that FSDP2 manages every parameter.")
    deep = [n for n, p in chosen if p.device_mesh.ndim != 1]
    if deep:
        raise FlatminimaError(
            f"parameters on a device mesh of more than one dimension ({', '.join(deep[:5])}: HSDP or tensor "
            "parallel) are not supported; shard with fully_shard on a one-dimensional mesh.")
    return chosen


def _gradient_factor(model: nn.Module, chosen: list[tuple[str, Any]]) -> tuple[float, int]:
    """(the factor FSDP2's reduce-scatter divides the summed gradient by, the mesh's size). It reads FSDP2's
    parameter groups (``set_gradient_divide_factor`` sets the factor; by default the data-parallel size), and
    refuses when gradient synchronisation is off or the factor cannot be read."""
    from torch.distributed.fsdp import FSDPModule

    factors, managed = set(), set()
    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        group = getattr(module._get_fsdp_state(), "_fsdp_param_group", None)
        if group is None:
            continue
        if not getattr(group, "reduce_grads", True) or not getattr(group, "all_reduce_grads", True):
            raise FlatminimaError(
                "FSDP2's gradient synchronisation is off on this model (set_requires_gradient_sync(False)); the "
                "gradient would be each rank's own. Turn it back on before building the Objective.")
        factor = getattr(group, "gradient_divide_factor", None)
        info = getattr(group, "mesh_info", None)
        if factor is None and info is not None:
            factor = getattr(info, "shard_mesh_size", None)
        if factor is None:
            raise FlatminimaError("this torch version's FSDP2 does not show its gradient divide factor; the "
                                  "sharded Objective cannot tell how FSDP2 averages gradients, so it refuses.")
        factors.add(float(factor))
        managed.update(id(getattr(fp, "sharded_param", None)) for fp in getattr(group, "fsdp_params", []))
    unmanaged = [n for n, p in chosen if id(p) not in managed]
    if unmanaged:
        raise FlatminimaError(
            f"the DTensor parameters {', '.join(unmanaged[:5])} are not managed by fully_shard (tensor parallel "
            "or a hand-made DTensor); only FSDP2-sharded models are supported.")
    if len(factors) != 1:
        raise FlatminimaError(f"FSDP2 divides the gradients of different modules by different factors "
                              f"({sorted(factors)}); set one with set_gradient_divide_factor.")
    return factors.pop(), int(chosen[0][1].device_mesh.size())


def _reshard(model: nn.Module) -> None:
    """Free every unsharded parameter (the root keeps its own after a forward), so the next forward gathers the
    shards as they are now."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


register_variant(is_sharded, ShardedObjective)
