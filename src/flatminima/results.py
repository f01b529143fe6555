"""The shared vocabulary of results: one uncertainty type (:class:`Estimate`) and the keyword-rename helper.

Every result in flatminima (a sharpness :class:`~flatminima.sharpness.Measure`, a trace, an eigenvalue,
a statistic's interval, a lab sub-test) exposes its number with its uncertainty as an :class:`Estimate`:
the value, its standard error where one exists, and an interval (low, high) at a level where one exists.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

__all__ = ["Estimate", "renamed"]


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


def renamed(kwargs: dict[str, Any], old: str, new: str, value: Any = None, *, where: str = "",
            default: Any = None, stacklevel: int = 3) -> Any:
    """Take a deprecated keyword ``old`` out of ``kwargs`` (warning that it is now ``new``).

    Returns the value to use for ``new``: the old keyword's value when it was passed (an error when both
    were passed with different values), otherwise ``value``. ``default`` is the new keyword's default, used
    to tell whether ``new`` was passed too. ``stacklevel`` 3 blames the caller of the function that calls this.
    """
    if old not in kwargs:
        return value
    old_value = kwargs.pop(old)
    place = f"{where}: " if where else ""
    if value is not None and _differs(value, default) and _differs(value, old_value):
        raise TypeError(f"{place}got both {new}={value!r} and its deprecated name {old}={old_value!r}; "
                        f"pass {new} only.")
    warnings.warn(f"{place}the keyword {old!r} is deprecated; use {new!r}.", DeprecationWarning, stacklevel=stacklevel)
    return old_value


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except (TypeError, ValueError):  # arrays: compare element-wise
        return a is not b and not (_np_equal(a, b))


def _np_equal(a: Any, b: Any) -> bool:
    try:
        import numpy as np

        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return False


def reject_unknown(kwargs: dict[str, Any], where: str) -> None:
    """A TypeError naming the unexpected keywords left in ``kwargs`` (after the renamed ones were taken)."""
    if kwargs:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {sorted(kwargs)}.")
