"""Workflows: what trains models in order to measure them, draw a figure or demonstrate a launch.

The layer above the library and below the CLI. The library packages (``landscape``, ``curvature``,
``sharpness``, ``data``, ``models``, ``report``, ``store``, ``statistics``...) take a model, an Objective or
parameter vectors and train nothing (only ``flatminima.train`` trains); a workflow puts data, model,
training and those functions together in one call, for the CLI and for scripts:

    train_model, evaluate_model, train_measure_evaluate
                                          the one train → measure → evaluate pipeline (``pipeline``): the
                                          study worker, the CLI and the claims' bench all go through it
    get_data, get_model, objective_for    the first steps every command shares
    paper_figures, single_figure, train_pair
                                          ``flatminima landscape``: train, then draw the landscape
    connect_models                        ``flatminima landscape --mode connect``: two solutions and the curve
    distributed_demo                      ``python -m flatminima.workflows.distributed_demo``: curvature over
                                          sharded data

``flatminima.lab`` and ``flatminima.claims`` (experiments that train their own models) and ``flatminima.study``
sit in this layer too (``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule; imported on first use, so ``flatminima curvature`` does not load the figure code
_WHERE = {
    "SPLITS": "common",
    "data_from_factory": "common",
    "get_data": "common",
    "get_model": "common",
    "objective_for": "common",
    "evaluate_model": "pipeline",
    "train_measure_evaluate": "pipeline",
    "train_model": "pipeline",
    "connect_models": "connect",
    "paper_figures": "landscape_figures",
    "single_figure": "landscape_figures",
    "train_pair": "landscape_figures",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
