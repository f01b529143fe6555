"""The Objective's own arguments, checked where they are given: each error names the argument, shows the value
and says what to pass, before any batch runs (so never a frame from deep inside torch).

The batch size, dtype, device, mode and reduction have their checks beside the code that uses them
(flatminima.objective._batches, ._terms); this module holds the rest: the loss, the data's kind and size, the
seed and the memory budget (:func:`check_arguments`), the model's trainable parameters, and what the first
batch shows (:func:`check_unchanged`: a forward that modifies the model's own parameters). An integer-valued
loss is refused by the loss terms themselves (flatminima.objective._terms), on every batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import FlatminimaError
from ..validate import check_number, check_seed

DATA_KINDS = "a tuple (X, y) of tensors, a DataLoader, a Dataset or a list of batches"


def check_arguments(model: nn.Module, *, loss: Any, loss_fn: Any, data: Any, seed: Any, memory_mb: Any,
                    device: Any, distributed: bool, losses: Mapping[str, Any]) -> None:
    """The loss, the data, the seed, the device's kind and the memory budget of an :class:`~flatminima.Objective`."""
    if loss is not None and not isinstance(loss, str) and not callable(loss):
        raise FlatminimaError(f"loss must be a loss name ({', '.join(repr(n) for n in losses)}), a torch loss module "
                              f"or a callable loss(outputs, targets), got {type(loss).__name__} {loss!r}.")
    if loss_fn is not None and not callable(loss_fn):
        raise FlatminimaError(f"loss_fn must be a callable loss_fn(model, batch) returning the batch's loss, got "
                              f"{type(loss_fn).__name__} {loss_fn!r}.")
    if not any(p.requires_grad for p in model.parameters()):
        what = "has no parameters" if next(model.parameters(), None) is None else "has no trainable parameters " \
                                                                                 "(all requires_grad=False)"
        raise FlatminimaError(f"model {type(model).__name__} {what}: the objective is a function of the trainable "
                              "parameters; pass a model with some, or unfreeze the ones whose curvature you want "
                              "(p.requires_grad_(True)).")
    check_data(data, with_loss=loss is not None, distributed=distributed)
    check_seed("seed", seed)
    if device is not None and (isinstance(device, bool) or not isinstance(device, (str, int, torch.device))):
        raise FlatminimaError(f"device must be a device name such as 'cpu' or 'cuda:0' (or a torch.device), got "
                              f"{type(device).__name__} {device!r}.")
    check_number("memory_mb", memory_mb)  # None passes; inf, nan, ≤ 0 and strings do not


def check_data(data: Any, *, with_loss: bool, distributed: bool) -> None:
    """``data`` of a kind the objective can pass over many times, and not empty (a rank's shard may be)."""
    if data is None:
        return  # the batch source says what is required
    if isinstance(data, (str, bytes)):
        raise FlatminimaError(f"data must be {DATA_KINDS}, got the {type(data).__name__} {data!r}; load the file "
                              "into tensors first (flatminima.data reads the built-in data sets).")
    if isinstance(data, Mapping):
        raise FlatminimaError(f"data must be {DATA_KINDS}, got a {type(data).__name__} (iterating it gives its "
                              "keys); pass [batch] for one dict batch, or a DataLoader of dict batches.")
    if isinstance(data, torch.Tensor) and with_loss:
        raise FlatminimaError(f"data must be {DATA_KINDS}, got one tensor of shape {tuple(data.shape)}; with a "
                              "`loss`, pass the inputs with their targets: data=(X, y).")
    if isinstance(data, (tuple, list)) and any(_is_array(t) for t in data):
        kinds = sorted({type(t).__name__ for t in data if _is_array(t)})
        raise FlatminimaError(f"data holds {', '.join(kinds)} arrays, not tensors; convert them: "
                              "data=(torch.as_tensor(X), torch.as_tensor(y)).")
    if not (hasattr(data, "__iter__") or hasattr(data, "__getitem__")):
        raise FlatminimaError(f"data must be {DATA_KINDS}, got {type(data).__name__} {data!r}.")
    if distributed:
        return
    try:
        n = len(data)
    except TypeError:  # an iterable dataset: its size shows at the first pass
        return
    if n == 0:
        raise FlatminimaError(f"data is empty (an empty {type(data).__name__}: no batches); pass at least one "
                              "sample.")


def _is_array(x: Any) -> bool:
    """A NumPy (or array-like non-tensor) array: has a shape and a dtype but is no tensor."""
    return not isinstance(x, torch.Tensor) and hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__array__")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal entry by entry, NaN equal to NaN (a model with NaN weights is reported as not finite, elsewhere)."""
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def check_unchanged(theta: torch.Tensor, before: torch.Tensor, names: list[str], numels: list[int]) -> None:
    """After one forward on the first batch θ must be as before: a model whose forward modifies its own
    parameters (an in-place update, a weight clamp, a normalisation done on ``.data``) makes L(θ) a moving
    target. ``theta`` is restored before the error, so the objective's θ₀ stays the user's."""
    if _same(theta, before):
        return
    changed = [n for n, a, b in zip(names, torch.split(theta, numels), torch.split(before, numels), strict=True)
               if not _same(a, b)]
    theta.copy_(before)
    raise FlatminimaError(
        f"model modifies its own parameters in forward ({', '.join(changed[:5])}"
        f"{', ...' if len(changed) > 5 else ''} changed during a forward on the first batch); the loss is then "
        "not a function of θ. Move the update out of forward (into the training step) or apply it to a copy: "
        "forward must leave the parameters as it found them.")

