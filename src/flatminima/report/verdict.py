"""Plain-language verdicts that never claim more than the interval allows.

A verdict names a direction only when the (multiplicity-adjusted) interval of Kendall's τ excludes 0
(rule: :data:`RULE` and :mod:`flatminima.statistics`), and then says
which view of the literature the direction agrees with: the classic view (flatter minima generalise
and resist shift better: Hochreiter & Schmidhuber 1997; Keskar et al. 2017; Jiang et al. 2020) or the
function-centric view (with regularisation, sharper minima are often the more accurate, robust and
calibrated ones: Mason-Williams et al. 2026). It is a rank correlation across the recipes of this study,
not a cause, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .statistics import Interval

CLASSIC = "classic view (flatter is better)"
FUNCTION_CENTRIC = "function-centric view (sharper can be better; Mason-Williams et al. 2026)"


@dataclass(frozen=True)
class Target:
    """A quantity a measure is correlated with; ``lower_is_better`` fixes what 'better' means."""

    key: str
    title: str
    lower_is_better: bool
    good: str  # phrase for the better end, e.g. "smaller gaps"
    bad: str


TARGETS = {
    "gap": Target("gap", "generalisation gap (train − test accuracy)", True, "smaller gaps", "larger gaps"),
    "shift_drop": Target(
        "shift_drop",
        "accuracy drop under shift (test − shifted accuracy)",
        True,
        "smaller accuracy drops under shift",
        "larger accuracy drops under shift",
    ),
    "ece": Target(
        "ece",
        "calibration error (ECE, test set)",
        True,
        "better calibration (lower ECE)",
        "worse calibration (higher ECE)",
    ),
    "test_acc": Target("test_acc", "test accuracy", False, "higher test accuracy", "lower test accuracy"),
}


@dataclass
class Verdict:
    measure: str
    target: str
    kind: str  # "flatter-better" | "sharper-better" | "inconclusive"
    headline: str
    text: str


RULE = (
    "Pre-registered rule: for each measure × target, Kendall τ_b across runs with a cluster-bootstrap "
    "percentile interval (configurations resampled with all their seeds). All measure × target tests form "
    "one family under Holm–Bonferroni: the k-th smallest bootstrap p-value of m tests is judged on its "
    "interval at level 1 − α/(m − k + 1), α = {alpha:g}. The verdict names a direction (flatter-better or "
    "sharper-better) only when that adjusted interval excludes 0 by more than {mc_k:g} Monte-Carlo errors "
    "of its nearer bound and every earlier Holm step did too; otherwise it is inconclusive."
)


def verdict(
    measure: str,
    target: Target,
    tau: Interval,
    n: int,
    granulated: float = math.nan,
    *,
    mc_k: float = 0.0,
    holm_stopped: bool = False,
    what: str = "runs",
    baseline: bool = False,
) -> Verdict:
    """The verdict for one measure × target from τ's (adjusted) interval, and a caveat from the granulated τ.

    ``tau`` is the interval the rule judges (the Holm-level interval in the report); ``mc_k`` the margin
    in Monte-Carlo errors; ``holm_stopped`` that Holm's step-down stopped before this test. A ``baseline``
    (a complexity measure that is not about flatness: norms, margin) is read as "higher = more complex",
    not as sharpness, and its verdict says so (kinds ``simpler-better`` / ``complex-better``).
    """
    ci = f"τ = {tau.estimate:+.2f}, {tau.level:.2%} CI [{tau.low:+.2f}, {tau.high:+.2f}], n = {n} {what}"
    if math.isnan(tau.estimate) or math.isnan(tau.low):
        return Verdict(
            measure,
            target.key,
            "inconclusive",
            "inconclusive (τ undefined)",
            f"{measure} vs {target.title}: τ is undefined or its interval cannot be estimated "
            f"(n = {n}; constant values or too few configurations).",
        )
    d = tau.direction(mc_k)
    if d == 0 or holm_stopped:
        if holm_stopped:
            why = "Holm's step-down stopped at an earlier test, so this one is not rejected"
        elif tau.excludes_zero():
            why = f"the interval excludes 0 by less than {mc_k:g} Monte-Carlo errors of its bound"
        else:
            why = "the interval includes 0"
        return Verdict(
            measure,
            target.key,
            "inconclusive",
            "inconclusive",
            f"Inconclusive for {measure} and {target.title} ({ci}; {why}): these runs support neither "
            "the classic nor the function-centric view for this target.",
        )
    # τ > 0: higher measure (sharper) goes with a higher target value
    sharper_better = (d > 0) != target.lower_is_better
    if baseline:
        return _baseline_verdict(measure, target, sharper_better, ci)
    if sharper_better:
        kind, headline, view = "sharper-better", f"sharper went with {target.good}", FUNCTION_CENTRIC
    else:
        kind, headline, view = "flatter-better", f"flatter went with {target.good}", CLASSIC
    text = (
        f"{headline[0].upper()}{headline[1:]} ({ci}): consistent with the {view}. This is a rank "
        "correlation across this study's configurations and seeds, not evidence that changing sharpness "
        "alone would change the outcome."
    )
    if not math.isnan(granulated) and granulated * tau.estimate < 0:
        text += (
            f" Caveat: the granulated τ (one hyperparameter moved at a time) is {granulated:+.2f}, of the "
            "opposite sign, so the pooled relation may come from which recipes were compared rather than "
            "from sharpness tracking the target within each knob."
        )
    return Verdict(measure, target.key, kind, headline, text)


def _baseline_verdict(measure: str, target: Target, higher_better: bool, ci: str) -> Verdict:
    """A resolved direction for a non-flatness baseline: named by the measure, not by sharpness."""
    if higher_better:
        kind, headline = "complex-better", f"higher {measure} went with {target.good}"
    else:
        kind, headline = "simpler-better", f"lower {measure} went with {target.good}"
    text = (
        f"{headline[0].upper()}{headline[1:]} ({ci}). {measure} is a baseline that is not about flatness "
        "(Jiang et al. 2020's comparison); a rank correlation across this study's configurations and seeds."
    )
    return Verdict(measure, target.key, kind, headline, text)
