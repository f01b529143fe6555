"""One copy of the parameters at rest: the Objective's model copy holds its selected parameters as views of θ₀.

An Objective copies the user's model (it never evaluates or mutates the user's own) and keeps θ₀, the
selected parameters as one flat vector. Without sharing, a model of P parameters is held three more times at
rest: the copy's parameters, the flat θ₀ of the loss terms, and the Objective's own clone of it (measured on
a 49M-parameter MLP: the Objective added 3.04 model sizes). Every evaluation swaps θ in with
``functional_call``, so the copy's parameter tensors are only read where a model is needed whole (``model_at``
copies them; the landscape loop of ``values_at`` re-points them at a buffer of its own and back), and they can
be views of θ₀ itself: the copy's own parameter storage is freed, and θ₀ is held once.

Nothing writes θ₀ in place (products take ``detach()``\\ed aliases or new tensors; ``Objective.params`` returns
a clone), so the views never change under the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["share_parameters"]


def share_parameters(theta0: torch.Tensor, models: Iterable[nn.Module], names: Sequence[str],
                     shapes: Sequence[torch.Size]) -> None:
    """Re-point the parameters ``names`` (of ``shapes``) of every model in ``models`` at views of the flat
    ``theta0``, in the order of ``names`` (θ₀'s order). The models hold empty stand-ins for them (or the very
    values ``theta0`` was concatenated from): after this they hold θ₀'s values."""
    seen: set[int] = set()
    for model in models:
        if id(model) in seen:
            continue
        seen.add(id(model))
        named = dict(model.named_parameters())
        offset = 0
        with torch.no_grad():
            for n, shape in zip(names, shapes, strict=True):
                numel = shape.numel()
                named[n].data = theta0[offset:offset + numel].view(shape)
                offset += numel
