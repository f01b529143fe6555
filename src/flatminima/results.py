"""The shared vocabulary of results: one uncertainty type (:class:`Estimate`).

Every result in flatminima (a sharpness :class:`~flatminima.sharpness.Measure`, a trace, an eigenvalue,
a statistic's interval, a lab sub-test) exposes its number with its uncertainty as an :class:`Estimate`:
the value, its standard error where one exists, and an interval (low, high) at a level where one exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Estimate"]


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


@dataclass(frozen=True)
class Estimate:
    """A number with its uncertainty.

    ``value`` the estimate; ``stderr`` its standard error (``None`` where none exists: an exact value, or
    an interval without one); ``low``/``high`` an interval at ``level`` (``None`` where none exists);
    ``method`` how the interval or error was obtained ("normal", "t", "bootstrap percentile",
    "Bauer-Fike"...; "" when not said).
    """

    value: float
    stderr: float | None = None
    low: float | None = None
    high: float | None = None
    level: float | None = None
    method: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        for name in ("stderr", "low", "high", "level"):
            object.__setattr__(self, name, _num(getattr(self, name)))
        if (self.low is None) != (self.high is None):
            raise ValueError(f"an Estimate's interval needs both low and high, got low={self.low!r}, "
                             f"high={self.high!r}.")

    @classmethod
    def from_stderr(cls, value: float, stderr: float | None, *, level: float | None = 0.95,
                    method: str = "normal") -> Estimate:
        """value ± z·stderr at ``level`` (normal approximation); no interval when stderr is None/NaN or level None."""
        if stderr is None or math.isnan(float(stderr)) or level is None:
            return cls(value, stderr, method=method if stderr is not None else "")
        from statistics import NormalDist

        z = NormalDist().inv_cdf((1 + level) / 2)
        return cls(value, stderr, value - z * stderr, value + z * stderr, level, method)

    @property
    def interval(self) -> tuple[float, float] | None:
        """(low, high), or None where there is no interval."""
        return None if self.low is None else (self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (NaN stays a float NaN; ``json.dumps`` writes it as NaN)."""
        return {"value": self.value, "stderr": self.stderr, "low": self.low, "high": self.high,
                "level": self.level, "method": self.method}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        return cls(**{k: d[k] for k in ("value", "stderr", "low", "high", "level", "method") if k in d})

