"""Moved: the standard figure set trains its models, so it is a workflow now, in :mod:`flatminima.workflows`.

``from flatminima.landscape.figures import paper_figures`` still works (with a ``DeprecationWarning``);
import ``paper_figures``, ``single_figure`` and ``train_pair`` from ``flatminima.workflows`` instead.
The landscape package itself draws given models and trains none, so this module imports the workflows
layer only on such a look-up (``tests/test_architecture.py`` allows that one lazy edge, and no other).
"""

from __future__ import annotations

from typing import Any

_MOVED = ("paper_figures", "single_figure", "train_pair", "run_batch")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import warnings

        from ..workflows import figures

        warnings.warn(f"flatminima.landscape.figures.{name} moved to flatminima.workflows.figures.{name}; "
                      "the old path will go away.", DeprecationWarning, stacklevel=2)
        return getattr(figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
