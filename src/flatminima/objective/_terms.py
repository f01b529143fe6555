"""The loss terms of an Objective: what one batch contributes to L(θ).

    reduction "mean":  L(θ) = Σ_b s_b(θ) / Σ_b w_b        reduction "sum":  L(θ) = Σ_b s_b(θ)

s_b is the loss summed over batch b and w_b the number of terms a mean over it divides by, so the value is
the exact mean over every sample, whatever the batch size or memory chunks (:class:`LossTerms`).

- :data:`LOSSES`, the named losses (``loss="cross_entropy" | "mse" | "bce"``). The names training and
  studies share (``flatminima.train.loss_function``: "cross_entropy", "mse") mean the same
  function here, so a model is measured on the loss it was trained with: "mse" on class labels regresses
  their one-hot vectors, and a target with as many entries as the outputs is compared entry by entry.
- :class:`NetworkTerms`: a network and its loss: θ → ``functional_call`` of a private copy of the model
  (never the user's), the unselected parameters and buffers held fixed, under the batch's fixed dropout
  mask; also the model outputs (for the GGN and batched metrics) and fresh model copies at any θ.
- :class:`FunctionTerms`: an analytic f(θ), one "batch" of weight 1.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F  # noqa: N812

from ..errors import FlatminimaError, require_choice
from ._arguments import check_unchanged
from ._attention import check_attention
from ._batches import iter_row_chunks, leaf_tensors, name_matches
from ._products import no_second_derivative, second_derivative_error
from ._storage import share_parameters

__all__ = [
    "DROPOUT_MODULES", "ELEMENTWISE_LOSSES", "LOSSES", "FunctionTerms", "LossModule", "LossTerms", "MSELoss",
    "NetworkTerms", "check_class_labels", "named_loss", "resolve_reduction",
]


class MSELoss(nn.MSELoss):
    """Mean squared error as training uses it (``flatminima.train.loss_function("mse")``): class
    labels (integer targets) are regressed as their one-hot vectors, and targets holding as many entries as
    the outputs are reshaped to them (an (N,) target for (N, 1) outputs), never broadcast to (N, N)."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return super().forward(outputs, self.target_like(outputs, targets))

    @staticmethod
    def target_like(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not targets.is_floating_point():
            return F.one_hot(targets.long(), outputs.shape[-1]).to(outputs.dtype)
        return targets.reshape(outputs.shape) if targets.numel() == outputs.numel() else targets

    def denominator(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """The count ``reduction="mean"`` divides by: every entry compared."""
        return float(torch.broadcast_shapes(outputs.shape, self.target_like(outputs, targets).shape).numel())


# The named losses: the ``loss=`` strings an Objective accepts -> a factory of the torch loss module.
LOSSES: dict[str, Callable[[], nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "mse": MSELoss,
    "bce": nn.BCEWithLogitsLoss,
}
# Elementwise losses: the "mean" reduction divides the sum by the number of (broadcast) entries.
ELEMENTWISE_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss,
                      nn.SoftMarginLoss, nn.PoissonNLLLoss)
# Dropout module types: active in train mode they make the loss random (what fixed_mask fixes).
DROPOUT_MODULES = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)


def named_loss(loss: str | Callable) -> Callable:
    """The loss module a name in :data:`LOSSES` stands for; anything else as given."""
    if isinstance(loss, str):
        require_choice("loss", loss, list(LOSSES))
        return LOSSES[loss]()
    return loss


def resolve_reduction(loss: Callable | None, reduction: str | None) -> str:
    """"mean" or "sum": a loss module's own ``reduction``, else the one given, else "mean"."""
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


class LossTerms:
    """One batch's terms of the objective: (s_b, w_b) from (outputs, targets).

        reduction "mean":  L = Σ_b s_b / Σ_b w_b,  s_b = the batch's loss SUM, w_b = the count its mean divides by
        reduction "sum":   L = Σ_b s_b

    For a torch loss module the sum is computed by a copy with ``reduction="sum"`` and w_b is the
    denominator torch's ``"mean"`` would use (non-ignored targets, or their class weights, for
    cross-entropy; the broadcast entries for elementwise losses; a module's own ``denominator(outputs,
    targets)`` where it has one), so the value equals the loss over the whole data in one batch, whatever
    the batch size or memory chunks. A plain callable returns the batch mean (or, with ``reduction="sum"``,
    the batch sum) and is weighted by the batch's rows.
    """

    def __init__(self, loss: Callable, reduction: str):
        self.loss, self.reduction = loss, reduction
        self.sum_module: nn.Module | None = None
        if isinstance(loss, nn.Module) and isinstance(getattr(loss, "reduction", None), str):
            self.sum_module = copy.copy(loss)
            self.sum_module.reduction = "sum"

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        rows = float(targets.shape[0]) if targets.dim() > 0 else 1.0
        if self.sum_module is None:
            value = self.loss(outputs, targets)
            _require_scalar(value, "loss(outputs, targets)")
            return (value * rows, rows) if self.reduction == "mean" else (value, rows)
        s = self.sum_module(outputs, targets)
        _require_scalar(s, type(self.loss).__name__)
        return s, (self._denominator(outputs, targets) if self.reduction == "mean" else rows)

    def _denominator(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        m = self.loss
        own = getattr(m, "denominator", None)
        if callable(own):
            return float(own(outputs, targets))
        if isinstance(m, (nn.CrossEntropyLoss, nn.NLLLoss)):
            if targets.is_floating_point():  # class probabilities: the mean is over every sample position
                return float(outputs.numel() // outputs.shape[1]) if outputs.dim() > 1 else 1.0
            keep = targets != m.ignore_index
            if m.weight is not None:
                return float(m.weight.to(outputs.dtype)[targets[keep]].sum())
            return float(keep.sum())
        if isinstance(m, nn.KLDivLoss):
            return float(outputs.shape[0]) if m.reduction == "batchmean" else float(outputs.numel())
        if isinstance(m, ELEMENTWISE_LOSSES):
            return float(torch.broadcast_shapes(outputs.shape, targets.shape).numel())
        # An unknown module: assume a per-row mean (rows weigh the same), as for a plain callable.
        return float(targets.shape[0]) if targets.dim() > 0 else 1.0


def _require_scalar(value: Any, what: str) -> None:
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise FlatminimaError(
            f"{what} must return one number per batch (a 0-dim tensor), got {shape}; reduce it with "
            "reduction='mean' or 'sum' (reduction='none' is not an objective).")
    if not (value.is_floating_point() or value.is_complex()):  # a count or an accuracy has no derivative
        raise FlatminimaError(f"{what} returned an integer-valued loss (dtype {value.dtype}, value {value.item()!r}); "
                              "an integer (a count of errors, an accuracy) has no derivative. Return a floating-"
                              "point loss that depends on the outputs, such as a cross-entropy.")


def _batch_rows(batch: Any) -> int:
    for t in leaf_tensors(batch):
        return int(t.shape[0]) if t.dim() > 0 else 1
    raise FlatminimaError("a batch holds no tensors; cannot tell its size (return (loss, count) from loss_fn).")


class LossModule(nn.Module):
    """Wraps model + loss so ``functional_call`` swaps the parameters the user's code sees.

    ``forward(batch)`` returns the batch's terms (s_b, w_b) of :class:`LossTerms`.
    """

    def __init__(self, model: nn.Module, loss: Callable | None, loss_fn: Callable | None, reduction: str = "mean"):
        super().__init__()
        self.model = model
        self.loss = loss
        self.loss_fn = loss_fn
        self.reduction = reduction
        self.terms = LossTerms(loss, reduction) if loss is not None else None

    def forward(self, batch: Any) -> tuple[torch.Tensor, float]:
        if self.loss_fn is not None:
            out = self.loss_fn(self.model, batch)
            value, count = (out[0], out[1]) if isinstance(out, tuple) else (out, _batch_rows(batch))
            _require_scalar(value, "loss_fn(model, batch)")
            count = float(count)
            return (value * count, count) if self.reduction == "mean" else (value, count)
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise FlatminimaError(
                "with a `loss`, each batch must be (inputs, targets) or (input1, ..., targets); "
                f"got {type(batch).__name__}. For other batch structures pass loss_fn=f(model, batch).")
        return self.terms(self.model(*batch[:-1]), batch[-1])


def check_class_labels(loss: Any, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Class labels of a cross-entropy / NLL loss must lie in [0, C), C the model's number of outputs."""
    if not isinstance(loss, (nn.CrossEntropyLoss, nn.NLLLoss)) or not isinstance(targets, torch.Tensor):
        return
    if targets.is_floating_point() or targets.numel() == 0 or not isinstance(outputs, torch.Tensor):
        return
    classes = int(outputs.shape[1]) if outputs.dim() > 1 else int(outputs.shape[0])
    labels = targets[targets != loss.ignore_index]
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise FlatminimaError(
            f"the targets hold class labels {low}..{high}, but the model has {classes} outputs (classes "
            f"0..{classes - 1}) for {type(loss).__name__}; relabel the targets to 0..{classes - 1} or give the "
            "model one output per class.")


# ----------------------------------------------------------------------------- a network's terms
class NetworkTerms:
    """(s_b, w_b) of a network and its loss at any θ (see the module).

    Holds two copies of the model: ``user_model`` (what :meth:`model_at` copies, running statistics
    intact) and the one every evaluation runs (``LossModule.model``; in train mode with BatchNorm a
    second copy without running statistics, see :meth:`_compute_model`). θ is the flat vector of the
    selected parameters (``names``, ``shapes``); everything else is held ``fixed``.
    """

    def __init__(self, model: nn.Module, loss: Callable | None, loss_fn: Callable | None, *, reduction: str,
                 params: str | Sequence[str] | None, mode: str, dtype: torch.dtype, device: torch.device,
                 fixed_mask: bool):
        self.mode = mode
        chosen = self._chosen(model, params)
        # θ₀ first, straight from the user's parameters; the copy gets empty stand-ins for them (the deepcopy
        # memo), re-pointed at views of θ₀ below: building the Objective never holds the parameters twice.
        self.theta0 = torch.cat([p.detach().reshape(-1).to(device=device, dtype=dtype) for _, p in chosen])
        stand_ins = {id(p): nn.Parameter(torch.empty(0, dtype=p.dtype, device=p.device), p.requires_grad)
                     for _, p in chosen}
        model = copy.deepcopy(model, stand_ins).to(device=device, dtype=dtype)
        model.train(mode == "train")
        self.user_model = model
        self.module = LossModule(self._compute_model(model), loss, loss_fn, reduction)
        self.has_outputs = loss_fn is None
        self.randomness: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        self._check_randomness(model, fixed_mask)
        self._select([n for n, _ in chosen], [p.shape for _, p in chosen])

    # ------------------------------------------------------------------------- construction
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

    @staticmethod
    def _check_randomness(model: nn.Module, fixed_mask: bool) -> None:
        active = sorted({type(m).__name__ for m in model.modules()
                         if isinstance(m, DROPOUT_MODULES) and m.training and getattr(m, "p", 0.0) > 0})
        if active and not fixed_mask:
            raise FlatminimaError(
                f"the loss is random: the model has dropout ({', '.join(active)}) active in mode='train', so "
                "every evaluation draws a new mask and Hessian products of the same vector disagree. Use "
                "mode='eval' (dropout off, the default), or mode='train', fixed_mask=True to reuse one "
                "dropout mask per batch at every evaluation.")

    @staticmethod
    def _chosen(model: nn.Module, patterns: str | Sequence[str] | None) -> list[tuple[str, nn.Parameter]]:
        """The selected parameters of the user's model: the trainable ones, filtered by ``patterns``."""
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            raise FlatminimaError(
                "the model has no trainable parameters (all requires_grad=False); unfreeze the ones whose "
                "curvature you want.")
        if patterns is None:
            return trainable
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        chosen = [(n, p) for n, p in trainable if name_matches(n, patterns)]
        if not chosen:
            raise FlatminimaError(
                f"params={patterns} matches no trainable parameter; available: {[n for n, _ in trainable]}.")
        return chosen

    def _select(self, names: list[str], shapes: list[torch.Size]) -> None:
        self.names = names
        self.shapes = shapes
        self.numels = [s.numel() for s in shapes]
        # The copies' parameters become views of θ₀: held once at rest, not again in the copy (_storage).
        share_parameters(self.theta0, (self.module.model, self.user_model), self.names, self.shapes)
        chosen_names = set(self.names)
        # Everything not chosen (other parameters, buffers) is held fixed at the copy's values.
        named = list(self.module.model.named_parameters())
        self.fixed = {"model." + n: p.detach() for n, p in named if n not in chosen_names}
        self.fixed.update({"model." + n: b for n, b in self.module.model.named_buffers()})

    def with_fixed(self, tensors: dict[str, torch.Tensor]) -> NetworkTerms:
        """A copy sharing the model whose fixed tensors (named as in the working model) are replaced."""
        view = copy.copy(self)
        view.fixed = dict(self.fixed) | {"model." + k: t for k, t in tensors.items()}
        return view

    # ------------------------------------------------------------------------- evaluation
    def state(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        state = dict(self.fixed)
        for n, t, s in zip(self.names, torch.split(theta, self.numels), self.shapes, strict=True):
            state["model." + n] = t.view(s)
        return state

    def __call__(self, theta: torch.Tensor, batch: Any) -> tuple[torch.Tensor, float]:
        """(s_b, w_b) of one prepared batch at θ."""
        try:
            with self.randomness():
                s, weight = functional_call(self.module, self.state(theta), (batch,))
        except (RuntimeError, TypeError, IndexError) as err:
            if no_second_derivative(err):
                raise second_derivative_error(err) from err
            if isinstance(err, IndexError):
                self.check_labels(batch)  # out-of-range class labels: say which
            shapes = [tuple(t.shape) for t in leaf_tensors(batch)]
            raise FlatminimaError(
                f"the model's forward/loss failed on a batch with tensor shapes {shapes}: {err}. "
                "Check that the data's shape matches what the model expects.") from err
        return s, float(weight)

    def outputs(self, theta: torch.Tensor, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(model outputs at θ, targets) of a prepared ``(inputs..., targets)`` batch, differentiable in θ."""
        state = {k[len("model."):]: t for k, t in self.state(theta).items()}
        with self.randomness():
            return functional_call(self.module.model, state, tuple(batch[:-1])), batch[-1]

    def loss_terms(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        return self.module.terms(outputs, targets)

    def check_labels(self, batch: Any) -> None:
        """Cross-entropy / NLL labels of a prepared batch against the model's number of outputs."""
        if not self.has_outputs or not isinstance(batch, (tuple, list)) or len(batch) < 2:
            return
        if not isinstance(self.module.loss, (nn.CrossEntropyLoss, nn.NLLLoss)):
            return
        outputs = None
        # The outputs' shape is all it needs: one row, not a full-batch forward outside the memory budget
        # (the whole batch where one row cannot run: train-mode BatchNorm; budgets are refused there).
        for part in (next(iter_row_chunks(batch, 1)), batch):
            with torch.no_grad(), contextlib.suppress(RuntimeError, TypeError, IndexError, ValueError):
                outputs = self.outputs(self.theta0, part)[0]  # a failing forward is reported by the loss
                break
        if outputs is not None:
            check_class_labels(self.module.loss, outputs, batch[-1])

    def check_first(self, batch: Any, dtype: torch.dtype) -> None:
        """Once, on the first batch: class labels in range, and two evaluations at θ₀ agree (a random loss
        has no Hessian)."""
        before = self.theta0.clone()  # a forward that modifies the model's parameters: say so (_arguments)
        self.check_labels(batch)
        with torch.no_grad():
            first = self(self.theta0, batch)[0]
            check_unchanged(self.theta0, before, self.names, self.numels)
            a, b = float(first), float(self(self.theta0, batch)[0])
        tol = (1e-10 if dtype == torch.float64 else 1e-4) * max(1.0, abs(a))
        if abs(a - b) > tol:
            raise FlatminimaError(
                f"the loss is random: two evaluations at the same θ on the same batch gave {a:.8g} and {b:.8g}. "
                "Dropout (or another random op) is active, in train mode or in loss_fn; use mode='eval', or "
                "mode='train', fixed_mask=True to reuse one dropout mask per batch at every evaluation.")

    def saved_bytes(self, batch: Any) -> float:
        """Bytes of the tensors autograd saves for backward in one forward pass (distinct storages)."""
        theta = self.theta0.detach().clone().requires_grad_(True)
        seen: dict[tuple[int, int], int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            # Keyed by (address, size): a view saved twice counts once; a slice counts its own rows only.
            seen[(t.data_ptr() or id(t), t.numel())] = t.numel() * t.element_size()
            return t

        # enable_grad: the plan may be made inside loss()'s no_grad, where nothing would be saved.
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self(theta, batch)
        return float(sum(seen.values()))

    def require_second_derivatives(self) -> None:
        """Hugging Face attention other than eager/SDPA (flash, flex) has no second derivative: refuse first."""
        check_attention(self.module.model)

    @property
    def batchnorm_in_train_mode(self) -> bool:
        """Whether the computation runs train-mode BatchNorm (the copy without running statistics)."""
        return self.module.model is not self.user_model

    def model_at(self, values: dict[str, torch.Tensor]) -> nn.Module:
        """A fresh copy of the model holding ``values`` (named tensors of the selected parameters)."""
        model = copy.deepcopy(self.user_model)
        with torch.no_grad():
            named = dict(model.named_parameters())
            for n, t in values.items():
                named[n].copy_(t)
        return model


class FunctionTerms:
    """An analytic f(θ): one batch (``None``) whose term is (f(θ), 1)."""

    has_outputs = False

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], name: str):
        self.f, self.name = f, name

    def __call__(self, theta: torch.Tensor, batch: Any) -> tuple[torch.Tensor, float]:
        return self.f(theta), 1.0
