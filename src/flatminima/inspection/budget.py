"""The budget of one inspection: how many Hessian-vector products (HVPs) each part of the page may spend.

A budget is a name (``fast``, ``standard``, ``full``) or a positive integer (a total number of HVPs, shared
out in the proportions of ``standard``). Each part gets a *cap*, a guaranteed upper bound on the products it
asks for, computed from the settings the part is run with:

    Lanczos (k pairs, at most m Krylov steps)   m + k·(2 + ⌈log(m)/log(1.25)⌉)
        the m steps plus one true-residual product per pair at each check; a check is repeated only
        after ≥ 25% more steps (:func:`flatminima.curvature.eigenvalues`), so there are at most
        2 + ⌈log₁.₂₅ m⌉ checks
    Hutch++ / Hutchinson trace (s samples)      s
    SLQ density (p probes × n steps)            p·min(n, dim)
    per-layer (B blocks)                        Σ_B [Lanczos cap of the block + its trace samples]
    a sharpness measure at its defaults         its own bound (``measure_hvp_bound``)

Slices and interpolations spend loss evaluations, not products (their grid sizes are in the table too);
the gradients and losses of the sharpness measures at their defaults are fixed by those defaults and
reported in each measure's cost. A part whose smallest useful setting does not fit its share is skipped,
and the page says which and why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import FlatminimaError

__all__ = ["BUDGETS", "Plan", "lanczos_bound", "measure_hvp_bound", "plan_budget"]

# Per-part settings of the named budgets. k: top eigenvalues; *_iter: Lanczos steps; trace: Hutch++ samples;
# slq: (probes, steps); per_layer, sharpness: HVP shares; compare_*: per compared model; grids in points.
BUDGETS: dict[str, dict[str, Any]] = {
    "fast": {"k": 3, "top_iter": 60, "bottom_iter": 60, "trace": 30, "slq": (2, 30), "per_layer": 100,
             "sharpness": 150, "compare_iter": 60, "compare_trace": 30, "slice_1d": 21, "slice_2d": 11,
             "interpolation": 11},
    "standard": {"k": 5, "top_iter": 150, "bottom_iter": 140, "trace": 60, "slq": (4, 50), "per_layer": 240,
                 "sharpness": 800, "compare_iter": 150, "compare_trace": 60, "slice_1d": 41, "slice_2d": 21,
                 "interpolation": 21},
    "full": {"k": 10, "top_iter": 500, "bottom_iter": 300, "trace": 150, "slq": (8, 100), "per_layer": 800,
             "sharpness": 1200, "compare_iter": 500, "compare_trace": 150, "slice_1d": 81, "slice_2d": 41,
             "interpolation": 41},
}
MIN_ITER = 10  # fewer Lanczos steps than this cannot certify anything useful on a network
MIN_TRACE = 6  # Hutch++ needs a third each for sketch, exact part and rest
# The parts given up first when an integer budget cannot pay for every cap.
DROP_ORDER = ("compare", "sharpness", "per_layer", "density", "smallest", "trace")


def lanczos_bound(max_iter: int, k: int = 1) -> int:
    """Upper bound on the products of ``eigenvalues(obj, k, max_iter=max_iter)`` (module doc)."""
    m = max(int(max_iter), 1)
    return m + k * (2 + math.ceil(math.log(m) / math.log(1.25)))


def _largest_iter(cap: int, k: int) -> int:
    """The largest m with lanczos_bound(m, k) <= cap (0 if none)."""
    m = max(cap, 0)
    while m > 0 and lanczos_bound(m, k) > cap:
        m -= 1
    return m


def measure_hvp_bound(obj: Any, name: str) -> int:
    """An upper bound on the HVPs of ``flatminima.sharpness.measure(obj, name)`` at its defaults."""
    from ..sharpness import entry

    d = entry(name).defaults()
    if name in ("lambda_max", "top_eigenvalues"):
        k = int(d.get("k", 1))
        return lanczos_bound(min(obj.dim, 40 * k + 100), k)
    if name in ("trace", "frobenius"):
        return int(d["samples"])
    if name == "average_case":
        return int(d["second_order_samples"]) * (2 if d.get("logit_normalize") else 1)
    if name == "relative_flatness":
        from ..sharpness.fisher_rao import last_matrix, output_layer_parts

        try:
            layer = last_matrix(obj)
        except FlatminimaError:
            return 0  # the measure refuses at once (no 2-D weight)
        if output_layer_parts(obj, layer) is not None:
            return 0  # the closed form for the output layer: one pass, no products
        rows, cols = obj.unflatten(obj.params)[layer].shape
        return int(min(rows, cols) * cols)
    return 0  # the rest spend losses and gradients only


@dataclass
class Plan:
    """What each part may spend: its settings, its HVP cap, and the parts skipped with the reason."""

    budget: str
    total: int
    settings: dict[str, Any]
    caps: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    measures: list[str] = field(default_factory=list)
    measures_skipped: dict[str, str] = field(default_factory=dict)
    per_layer: dict[str, int] = field(default_factory=dict)
    seconds_per_hvp: float = float("nan")
    seconds_per_loss: float = float("nan")

    @property
    def cap(self) -> int:
        return int(sum(self.caps.values()))

    def estimated_seconds(self, grid_points: int, fixed_passes: float) -> float:
        """At most: every capped product plus the grid points and the fixed passes (measures' losses and
        gradients, counted as passes over the data) at the timed costs."""
        return self.cap * self.seconds_per_hvp + (grid_points + fixed_passes) * self.seconds_per_loss

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"cap": self.cap}


def budget_settings(budget: str | int) -> tuple[str, dict[str, Any], int | None]:
    """The per-part settings of a named budget, or ``standard``'s scaled to an integer total."""
    if isinstance(budget, str) and budget.strip().isdigit():
        budget = int(budget)
    if isinstance(budget, bool) or not isinstance(budget, (str, int)):
        raise FlatminimaError(f"budget must be one of {list(BUDGETS)} or a positive number of Hessian-vector "
                              f"products, got {budget!r}.")
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise FlatminimaError(f"budget must be one of {list(BUDGETS)} or a positive number of Hessian-vector "
                                  f"products, got {budget!r}.")
        return budget, dict(BUDGETS[budget]), None
    if budget < 1:
        raise FlatminimaError(f"budget must be a positive number of Hessian-vector products, got {budget}.")
    return str(budget), dict(BUDGETS["standard"]), budget


def plan_budget(obj: Any, budget: str | int = "standard", *, blocks: int = 1, others: int = 0,
                measures: list[str] | None = None) -> Plan:
    """Share ``budget`` out over the parts for ``obj`` (``blocks`` per-layer blocks, ``others`` compared
    models, the sharpness ``measures`` in order). Raises :class:`FlatminimaError` when not even the top
    eigenvalue fits; otherwise skips, with the reason, each part that does not fit."""
    name, s, total = budget_settings(budget)
    dim = int(obj.dim)
    k = min(int(s["k"]), dim)
    if total is not None:  # a number: the standard shares, scaled
        base = plan_budget(obj, "standard", blocks=blocks, others=others, measures=measures)
        scale = total / max(base.cap, 1)
        for key in ("top_iter", "bottom_iter", "compare_iter"):
            s[key] = int(s[key] * scale)
        for key in ("trace", "compare_trace", "per_layer", "sharpness"):
            s[key] = int(s[key] * scale)
        s["slq"] = (max(1, min(int(s["slq"][0] * math.sqrt(scale)), 4)), int(s["slq"][1] * math.sqrt(scale)))
    s["k"] = k
    plan = Plan(name, 0, s)
    top_iter = min(int(s["top_iter"]), dim)
    if top_iter < min(MIN_ITER, dim):
        need = lanczos_bound(min(MIN_ITER, dim), 1)
        raise FlatminimaError(f"budget {budget!r} is too small: the top eigenvalue alone needs at least {need} "
                              f"Hessian-vector products (budget 'fast' spends at most "
                              f"{plan_budget(obj, 'fast', blocks=blocks, others=others, measures=measures).cap}).")
    s["k"], s["top_iter"] = k, top_iter
    plan.caps["eigenvalues"] = lanczos_bound(top_iter, k)
    bottom = min(int(s["bottom_iter"]), dim)
    if bottom >= min(MIN_ITER, dim):
        s["bottom_iter"] = bottom
        plan.caps["smallest"] = lanczos_bound(bottom, 1)
    else:
        plan.skipped["smallest"] = f"needs at least {MIN_ITER} Lanczos steps, the budget gives {bottom}"
    if int(s["trace"]) >= MIN_TRACE:
        plan.caps["trace"] = int(s["trace"])
    else:
        plan.skipped["trace"] = f"Hutch++ needs at least {MIN_TRACE} samples, the budget gives {s['trace']}"
    probes, steps = s["slq"]
    steps = min(int(steps), dim)
    if probes >= 1 and steps >= min(MIN_ITER, dim):
        s["slq"] = (int(probes), steps)
        plan.caps["density"] = int(probes) * steps
    else:
        plan.skipped["density"] = f"SLQ needs at least {MIN_ITER} steps per probe, the budget gives {steps}"
    _plan_per_layer(plan, int(s["per_layer"]), blocks)
    _plan_measures(plan, obj, int(s["sharpness"]), measures or [])
    if others:
        it = min(int(s["compare_iter"]), dim)
        tr = int(s["compare_trace"])
        if it >= min(MIN_ITER, dim) and tr >= MIN_TRACE:
            s["compare_iter"] = it
            plan.caps["compare"] = others * (lanczos_bound(it, k) + tr)
        else:
            plan.skipped["compare"] = (f"the compared models' eigenspaces need at least {MIN_ITER} Lanczos steps "
                                       f"and {MIN_TRACE} trace samples each; the budget gives {it} and {tr}")
    if total is not None:  # Lanczos's checks do not scale down: drop the last parts until the caps fit
        for part in DROP_ORDER:
            if plan.cap <= total:
                break
            if part in plan.caps:
                plan.skipped[part] = (f"the budget of {total} products is spent by the parts before it "
                                      f"({plan.cap - plan.caps.pop(part)} of {total})")
                if part == "sharpness":
                    plan.measures_skipped |= {m: "the sharpness part was skipped" for m in plan.measures}
                    plan.measures = []
                if part == "per_layer":
                    plan.per_layer = {}
        if plan.cap > total:
            raise FlatminimaError(f"budget {total} is too small: the top {k} eigenvalue(s) alone may need "
                                  f"{plan.caps['eigenvalues']} Hessian-vector products; give at least that, or "
                                  "'fast'.")
    plan.total = total if total is not None else plan.cap
    return plan


def _plan_per_layer(plan: Plan, share: int, blocks: int) -> None:
    if blocks < 1:
        plan.skipped["per_layer"] = "the model has no parameter blocks"
        return
    each = share // blocks
    samples = max(2, min(30, each // 3))
    max_iter = _largest_iter(each - samples, 1)
    if max_iter < MIN_ITER:
        plan.skipped["per_layer"] = (f"{blocks} blocks at {share} products leave {each} per block; λmax and the "
                                     f"trace of a block need at least {lanczos_bound(MIN_ITER, 1) + 2}")
        return
    plan.per_layer = {"samples": samples, "max_iter": max_iter, "blocks": blocks}
    plan.caps["per_layer"] = blocks * (lanczos_bound(max_iter, 1) + samples)


def _plan_measures(plan: Plan, obj: Any, share: int, names: list[str]) -> None:
    left = share
    spent = 0
    for name in names:
        need = measure_hvp_bound(obj, name)
        if need <= left:
            plan.measures.append(name)
            left -= need
            spent += need
        else:
            plan.measures_skipped[name] = (f"at its defaults it may spend {need} Hessian-vector products; "
                                           f"{left} of the sharpness share ({share}) were left")
    if plan.measures:
        plan.caps["sharpness"] = spent
