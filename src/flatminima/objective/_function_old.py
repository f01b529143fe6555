"""An analytic landscape f: Rⁿ → R as an objective, so the same curvature code serves the toy lab.

A sibling of the data :class:`flatminima.objective.Objective` under :class:`ObjectiveBase`: one "batch"
(``None``) of weight 1, L(θ) = f(θ), derivatives by double backward. Built by ``Objective.from_function``.
It is registered as a virtual subclass of ``Objective`` so that ``isinstance(obj, Objective)`` holds for
every objective, as it did when it was a subclass; the model-only parts raise a FlatminimaError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from .errors import FlatminimaError
from .objective_base import ObjectiveBase
from .objective_hvp import double_backward

__all__ = ["FunctionObjective"]


class FunctionObjective(ObjectiveBase):
    """An analytic f(θ) viewed as an objective (see the module)."""

    mode = "function"
    reuse_graph = False

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], x0: Any, *, dtype: torch.dtype | None = None,
                 name: str | None = None):
        if not callable(f):
            raise FlatminimaError(f"f must be a callable f(x) -> scalar tensor, got {type(f).__name__}.")
        x0 = torch.as_tensor(x0)  # a floating x0 keeps its dtype (float64 stays float64)
        x0 = x0.to(dtype or (x0.dtype if x0.is_floating_point() else torch.get_default_dtype()))
        if x0.dim() != 1 or x0.numel() == 0:
            raise FlatminimaError(f"x0 must be a non-empty 1-D vector, got shape {tuple(x0.shape)}.")
        self.f, self.name = f, name or getattr(f, "__name__", "function")
        self.dtype, self.device = x0.dtype, x0.device
        self.n_batches, self.total_weight = 1, 1.0
        self._init_params(["x"], [x0.shape], x0)

    def _iter_batches(self) -> Iterator[Any]:
        yield None

    def _batch_terms(self, theta: torch.Tensor, batch: Any) -> tuple[torch.Tensor, float]:
        return self.f(theta), 1.0

    def _hvp_terms(self, theta: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, float]:
        return double_backward(self, theta, v)

    @property
    def stored_batches(self) -> list[None]:
        """One batch, ``None``: an analytic function reads no data."""
        return [None]

    def replace(self, **changes: Any) -> FunctionObjective:
        """The same analytic objective with ``f``, ``x0``, ``dtype`` or ``name`` changed."""
        config = {"f": self.f, "x0": self._theta0, "dtype": self.dtype, "name": self.name}
        unknown = set(changes) - set(config)
        if unknown:
            raise FlatminimaError(f"replace() got unknown settings {sorted(unknown)}; allowed: {sorted(config)}.")
        config.update(changes)
        return FunctionObjective(config.pop("f"), config.pop("x0"), **config)

    def describe(self) -> dict[str, Any]:
        return {"dim": self.dim, "mode": "function", "function": self.name, "dtype": str(self.dtype)}
