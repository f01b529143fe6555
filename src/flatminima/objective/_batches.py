"""Batches, losses and reductions of the Objective: what one batch contributes to L(θ).

Helpers to walk, move and split batches (tensors, tuples, lists, any ``Mapping``), the built-in losses,
and :class:`LossTerms`, which turns a loss on (outputs, targets) into the batch's terms (s_b, w_b) so
that L = Σ_b s_b / Σ_b w_b is the exact mean over all data whatever the chunking. Split from
flatminima.objective so that flatminima.pointwise can use them without importing the Objective.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .errors import FlatminimaError

__all__ = [
    "DROPOUT_MODULES", "ELEMENTWISE_LOSSES", "LOSSES", "LossModule", "LossTerms", "check_batch_size",
    "check_class_labels", "iter_row_chunks", "leaf_tensors", "move_batch", "name_matches", "resolve_float_dtype",
    "resolve_torch_device", "row_count",
]


def name_matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether parameter ``name`` matches one of ``patterns`` (a glob, the exact name, or a module prefix)."""
    return any(fnmatch.fnmatchcase(name, p) or name == p or name.startswith(p + ".") for p in patterns)


def _is_mapping(x: Any) -> bool:
    return isinstance(x, Mapping)


def _rebuild_mapping(x: Mapping, items: dict) -> Any:
    """A mapping of the same type as ``x`` (UserDict, BatchEncoding...) when its constructor takes a dict."""
    if type(x) is dict:
        return items
    try:
        return type(x)(items)
    except Exception:  # noqa: BLE001 - a mapping type we cannot rebuild: a plain dict carries the same data
        return items


def leaf_tensors(batch: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a batch (a tensor, or tensors nested in tuples, lists and mappings), in order."""
    if isinstance(batch, torch.Tensor):
        yield batch
    elif _is_mapping(batch):
        for v in batch.values():
            yield from leaf_tensors(v)
    elif isinstance(batch, (list, tuple)):
        for v in batch:
            yield from leaf_tensors(v)


def move_batch(batch: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """The batch with every tensor on ``device`` (floating tensors also cast to ``dtype``), same structure."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device=device, dtype=dtype if batch.is_floating_point() else None)
    if _is_mapping(batch):
        return _rebuild_mapping(batch, {k: move_batch(v, device, dtype) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        parts = [move_batch(v, device, dtype) for v in batch]
        return parts if isinstance(batch, list) else tuple(parts)
    return batch


# The built-in losses by name: the ``loss=`` strings an Objective accepts -> the torch loss class.
LOSSES: dict[str, Callable[[], nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "mse": nn.MSELoss,
    "bce": nn.BCEWithLogitsLoss,
}
# Elementwise losses: the "mean" reduction divides the sum by the number of (broadcast) entries.
ELEMENTWISE_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss,
                      nn.SoftMarginLoss, nn.PoissonNLLLoss)
# Dropout module types: active in train mode they make the loss random (what fixed_mask fixes).
DROPOUT_MODULES = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)


class LossTerms:
    """One batch's terms of the objective: (s_b, w_b) from (outputs, targets).

        reduction "mean":  L = Σ_b s_b / Σ_b w_b,  s_b = the batch's loss SUM, w_b = the count its mean divides by
        reduction "sum":   L = Σ_b s_b

    For a torch loss module the sum is computed by a copy with ``reduction="sum"`` and w_b is the
    denominator torch's ``"mean"`` would use (non-ignored targets, or their class weights, for
    cross-entropy; the broadcast entries for elementwise losses), so the value equals the loss over the
    whole data in one batch, whatever the batch size or memory chunks. A plain callable returns the batch
    mean (or, with ``reduction="sum"``, the batch sum) and is weighted by the batch's rows.
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


class LossModule(nn.Module):
    """Wraps model + loss so ``functional_call`` swaps the parameters the user's code sees.

    ``forward(batch)`` returns the batch's terms (s_b, w_b) of :class:`LossTerms`.
    """

    def __init__(self, model: nn.Module, loss: Callable | None, loss_fn: Callable | None, reduction: str = "mean"):
        super().__init__()
        self.model = model
        self._loss = loss
        self._loss_fn = loss_fn
        self._reduction = reduction
        self._terms = LossTerms(loss, reduction) if loss is not None else None

    def forward(self, batch: Any) -> tuple[torch.Tensor, float]:
        if self._loss_fn is not None:
            out = self._loss_fn(self.model, batch)
            value, count = (out[0], out[1]) if isinstance(out, tuple) else (out, _batch_size(batch))
            _require_scalar(value, "loss_fn(model, batch)")
            count = float(count)
            return (value * count, count) if self._reduction == "mean" else (value, count)
        outputs, targets = self.outputs(batch)
        return self._terms(outputs, targets)

    def outputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise FlatminimaError(
                "with a `loss`, each batch must be (inputs, targets) or (input1, ..., targets); "
                f"got {type(batch).__name__}. For other batch structures pass loss_fn=f(model, batch).")
        return self.model(*batch[:-1]), batch[-1]


def _batch_size(batch: Any) -> int:
    for t in leaf_tensors(batch):
        return int(t.shape[0]) if t.dim() > 0 else 1
    raise FlatminimaError("a batch holds no tensors; cannot tell its size (return (loss, count) from loss_fn).")


def row_count(batch: Any) -> int:
    """The rows of a batch: dim 0 of its first tensor (1 for a 0-dim tensor or a batch with no tensors)."""
    for t in leaf_tensors(batch):
        return int(t.shape[0]) if t.dim() > 0 else 1
    return 1


def _split_rows(batch: Any, rows: int | None) -> list[Any]:
    """Split a batch (tensor, tuple, list or dict) into parts of at most ``rows`` rows along dim 0.

    Every tensor leaf whose first dimension is the batch's row count is sliced; other leaves are shared.
    """
    return list(iter_row_chunks(batch, rows))


def iter_row_chunks(batch: Any, rows: int | None) -> Iterator[Any]:
    """The parts of :func:`_split_rows` one at a time: only the current part's views exist.

    Measured: the views of every part at once cost about 1 KB per part (0.4 MB at 2,000 rows in 5-row
    chunks), memory the plan did not count and that grew with the data, not the chunk.
    """
    n = row_count(batch)
    if not rows or rows >= n:
        yield batch
        return

    def cut(x: Any, i: int) -> Any:
        if isinstance(x, torch.Tensor):
            return x[i:i + rows] if x.dim() > 0 and x.shape[0] == n else x
        if _is_mapping(x):
            return _rebuild_mapping(x, {k: cut(v, i) for k, v in x.items()})
        if isinstance(x, (list, tuple)):
            parts = [cut(v, i) for v in x]
            return parts if isinstance(x, list) else tuple(parts)
        return x

    for i in range(0, n, rows):
        yield cut(batch, i)


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_float_dtype(dtype: Any) -> torch.dtype | None:
    """``dtype`` as a torch floating dtype: a ``torch.dtype`` or the strings ``"float32"`` / ``"float64"``."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.")
        if key not in _DTYPES:
            raise FlatminimaError(f"dtype={dtype!r} is not supported; pass 'float32' or 'float64' (or torch.float32 / "
                                  "torch.float64). Half precision is too coarse for exact Hessian products.")
        return _DTYPES[key]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise FlatminimaError(f"dtype must be a floating torch dtype or 'float32' / 'float64', got {dtype!r}.")
    return dtype


def _available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def resolve_torch_device(device: Any) -> torch.device | None:
    """``device`` as a ``torch.device`` that exists on this machine; a clear error naming the ones that do."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise FlatminimaError(f"device={device!r} is not a device name ({err}); available here: "
                              f"{', '.join(_available_devices())}.") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        what = "CUDA is not available on this machine" if not torch.cuda.is_available() else (
            f"only {torch.cuda.device_count()} CUDA device(s) are visible")
        raise FlatminimaError(f"device={device!r}: {what}; available here: {', '.join(_available_devices())}.")
    if dev.type == "mps" and "mps" not in _available_devices():
        raise FlatminimaError(f"device={device!r}: MPS is not available on this machine; available here: "
                              f"{', '.join(_available_devices())}.")
    return dev


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` itself when it is a positive int; a clear error otherwise."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FlatminimaError(f"batch_size must be a positive whole number of samples, got {batch_size!r}; "
                              "for the whole data in one batch pass its number of samples.")
    return batch_size


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
