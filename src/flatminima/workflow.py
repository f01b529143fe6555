"""Moved: ``get_data``, ``get_model`` and ``objective_for`` live in :mod:`flatminima.workflows` now.

``from flatminima.workflow import get_data`` still works (with a ``DeprecationWarning``); import from
``flatminima.workflows`` instead.
"""

from __future__ import annotations

import warnings

from .workflows.common import SPLITS, data_from_factory, get_data, get_model, objective_for

__all__ = ["SPLITS", "data_from_factory", "get_data", "get_model", "objective_for"]

warnings.warn("flatminima.workflow moved to flatminima.workflows (get_data, get_model, objective_for); "
              "the old module will go away.", DeprecationWarning, stacklevel=2)
