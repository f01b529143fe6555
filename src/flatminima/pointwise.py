"""Moved: values at many θ at once live in :mod:`flatminima.objective` now (``values_at``, ``Span``...).

The old import path keeps working with a ``DeprecationWarning``; import from ``flatminima.objective``.
"""

from __future__ import annotations

import warnings
from typing import Any

_MOVED = ("LOOP_CHUNK", "MERGE_ROWS", "Span", "activation_bytes", "default_engine", "values_at")


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'flatminima.pointwise' has no attribute {name!r}")
    warnings.warn(f"flatminima.pointwise.{name} moved to flatminima.objective.{name}; import it from there.",
                  DeprecationWarning, stacklevel=2)
    from . import objective

    return getattr(objective, name)
