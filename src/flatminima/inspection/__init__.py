"""One page for one trained model: ``flatminima.inspect(model, data, loss=...)``.

    ins = flatminima.inspect(model, (X, y), loss="cross_entropy", others=["seed1.pt"], lr=0.1, optimizer="sgd")
    ins.html          # flatminima-out/inspect/<name>/page.html (self-contained), with inspection.json and CSVs
    ins.to_dict()     # every number with its error and cost, the plan, the warnings

The parts, their budget and the warnings' rules: :mod:`.core`, :mod:`.budget`, :mod:`.rules`; docs/inspect.md.
"""

from .budget import BUDGETS, Plan, lanczos_bound, measure_hvp_bound, plan_budget
from .core import OPTIMIZERS, Inspection, check_compatible, check_optimizer, inspect, objective, sharpness_names
from .rules import RULES

__all__ = ["BUDGETS", "OPTIMIZERS", "RULES", "Inspection", "Plan", "check_compatible", "check_optimizer", "inspect",
           "lanczos_bound", "measure_hvp_bound", "objective", "plan_budget", "sharpness_names"]
