"""Errors and argument checks shared by every module.

Every check names the parameter, the bad value and what is allowed (scikit-learn style), so a user
never has to read a traceback to learn what to change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class FlatminimaError(ValueError):
    """Bad input or a state the tool refuses to compute on (never a silently wrong number)."""


class NonFiniteLossError(FlatminimaError, FloatingPointError):
    """The loss (or its gradient) is NaN or infinite where a finite value is needed."""


def require_positive(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise FlatminimaError(f"{name} must be a positive finite number, got {value!r}.")


def require_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FlatminimaError(f"{name} must be a positive integer, got {value!r}.")


def require_nonnegative(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise FlatminimaError(f"{name} must be a non-negative finite number, got {value!r}.")


def require_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise FlatminimaError(f"{name} must be one of {allowed}, got {value!r}.")


def require_in_range(name: str, value: Any, low: float, high: float, *, inclusive: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = low <= value <= high if inclusive else low < value < high
    if not ok:
        bracket = "[{}, {}]" if inclusive else "({}, {})"
        raise FlatminimaError(f"{name} must be in {bracket.format(low, high)}, got {value!r}.")


class StoreError(FlatminimaError):
    """A study store (or its folder) that cannot be used as it is: damaged, read-only, or in use."""


class StudyLockedError(StoreError):
    """Another process holds the study folder's writer lock (one ``study run`` per folder at a time)."""


def require_int(name: str, value: Any, low: int | None = None) -> None:
    """An integer (not a bool), at least ``low`` when given."""
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
        bound = f" ≥ {low}" if low is not None else ""
        raise FlatminimaError(f"{name} must be an integer{bound}, got {value!r}.")
