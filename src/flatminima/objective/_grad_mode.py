"""Gradient mode for the Objective's derivatives: ``grad``, ``hvp`` and ``ggn_vp`` differentiate through the
model whatever the caller's mode, so a user who calls them (or a curvature algorithm) inside ``torch.no_grad()``
gets the same numbers as outside it, not autograd's "element 0 of tensors does not require grad".

Only these passes enable gradients: ``loss`` and the batched evaluations keep their own ``no_grad`` (no graph,
no memory). ``torch.inference_mode`` is left alone: tensors created under it cannot enter autograd at all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def with_grad(method: F) -> F:
    """Run an Objective method with gradients enabled (``torch.enable_grad()``), restoring the caller's mode."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.enable_grad():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
