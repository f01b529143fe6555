"""The record every sharpness measure returns: value, error bar, config, cost and extras."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..jsonable import plain
from ..objective import Cost
from ..results import Estimate


@dataclass
class Measure:
    """One sharpness/flatness number.

    ``value`` is the measure; ``stderr`` its Monte Carlo standard error where it is an estimate (``None``
    where it is exact, or a max over restarts whose spread is in ``extra``); ``config`` every setting used,
    defaults included, so the number can be reproduced; ``cost`` the work done (HVPs, gradients, losses,
    batched points, data passes, seconds); ``extra`` measure-specific details (σ for ``pac_bayes``, the
    ½σ²tr(H) prediction for ``average_case``, the restarts' values for ``worst_case``...).

    :attr:`estimate` is the value with its uncertainty as an :class:`~flatminima.results.Estimate`: the
    interval the measure computed itself when it set ``uncertainty`` (``average_case``: a Student-t 95%
    interval), else value ± 1.96·stderr, and no interval where the value is exact.
    """

    name: str
    value: float
    stderr: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)
    extra: dict[str, Any] = field(default_factory=dict)
    uncertainty: Estimate | None = None

    @property
    def estimate(self) -> Estimate:
        """The value with its standard error and interval (see the class)."""
        u = self.uncertainty
        if u is not None:
            return Estimate(self.value, self.stderr, u.low, u.high, u.level, u.method)
        return Estimate.from_stderr(self.value, self.stderr)

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """value ± z·stderr (a normal-approximation confidence interval); the value twice if exact."""
        err = 0.0 if self.stderr is None or math.isnan(self.stderr) else self.stderr
        return self.value - z * err, self.value + z * err

    def to_dict(self) -> dict[str, Any]:
        return plain({"name": self.name, "value": self.value, "stderr": self.stderr, "config": self.config,
                      "cost": self.cost, "extra": self.extra, "estimate": self.estimate.to_dict()})
