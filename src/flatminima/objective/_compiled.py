"""Compiled models: curvature of a ``torch.compile``d module is computed on its original eager module.

``torch.compile(model)`` returns an ``OptimizedModule`` wrapping the user's module as ``_orig_mod`` (the same
parameter tensors, named with a ``_orig_mod.`` prefix); ``model.compile()`` compiles a module in place
(``_compiled_call_impl``). Hessian products through a compiled graph fail: AOTAutograd compiles the backward
for first derivatives only ("This backward function was compiled with non-empty donated buffers which
requires create_graph=False..."), and a graph compiled for one set of parameter tensors is re-traced for the
``functional_call`` every evaluation makes. The compiled and the eager module compute the same function of
the same parameters, so the Objective evaluates the eager one (its own copy, as always) and says so in
``describe()`` and in every curvature result; the user's compiled model is not touched.

A ``DistributedDataParallel`` wrapper is taken off the same way: the Objective evaluates its ``.module`` (same
parameters, named without the ``module.`` prefix), since DDP's forward broadcasts buffers and prepares its
gradient all-reduce at every call, collectives a functional evaluation on unequal shards must not make; with
``distributed=True`` the Objective sums over the ranks itself.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch import nn

__all__ = ["COMPILED_PREFIX", "eager_module", "eager_patterns"]

COMPILED_PREFIX = "_orig_mod."


def _is_optimized(m: nn.Module) -> bool:
    """Whether ``m`` is torch.compile's wrapper (checked by name: importing torch._dynamo is slow)."""
    return type(m).__name__ == "OptimizedModule" and isinstance(getattr(m, "_orig_mod", None), nn.Module)


def _compiled_inside(model: nn.Module) -> bool:
    return any(_is_optimized(m) or getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())


def eager_module(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """(the eager module behind ``model``, the note for ``describe()``; empty when nothing was compiled or
    wrapped in ``DistributedDataParallel``).

    A top-level ``OptimizedModule`` gives its ``_orig_mod`` (the same module, not a copy: the Objective
    copies it). Compiled submodules, or modules compiled in place, are replaced in a copy of the model, so the
    user's model keeps its compiled parts.
    """
    compiled, notes = False, {}
    while isinstance(model, nn.parallel.DistributedDataParallel) or _is_optimized(model):
        if _is_optimized(model):
            model, compiled = model._orig_mod, True
        else:
            model = model.module
            notes["wrapper"] = ("DistributedDataParallel: curvature computed on its .module, same parameters "
                                "(named without the module. prefix); distributed=True sums over the ranks")
    if _compiled_inside(model):
        model, compiled = copy.deepcopy(model), True
        _uncompile(model)
    if not compiled:
        return model, notes
    return model, notes | {"compiled": "torch.compile'd model: curvature computed on its original eager module "
                                       "(_orig_mod), same parameters (compiled graphs have no second derivatives)"}


def _uncompile(model: nn.Module) -> None:
    """Replace every compiled submodule of ``model`` (a copy) by its eager module, in place."""
    if getattr(model, "_compiled_call_impl", None) is not None:
        model._compiled_call_impl = None
    for name, child in list(model.named_children()):
        eager = child
        while _is_optimized(eager):
            eager = eager._orig_mod
        if eager is not child:
            setattr(model, name, eager)
        _uncompile(eager)


def eager_patterns(patterns: str | Sequence[str] | None) -> str | Sequence[str] | None:
    """Parameter-name patterns of the compiled model (``_orig_mod.layer.*``) as the eager module names them."""
    if patterns is None:
        return None
    if isinstance(patterns, str):
        return patterns.replace(COMPILED_PREFIX, "")
    return [p.replace(COMPILED_PREFIX, "") if isinstance(p, str) else p for p in patterns]
