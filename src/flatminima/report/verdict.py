"""Plain-language verdicts that never claim more than the interval allows.

A verdict names a direction only when the bootstrap interval of Kendall's τ excludes 0, and then says
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
    kind: str  # "flatter-better" | "sharper-better" | "none" | "undefined"
    headline: str
    text: str


def verdict(measure: str, target: Target, tau: Interval, n: int, granulated: float = math.nan) -> Verdict:
    """The verdict for one measure × target from τ's interval (and a caveat from the granulated τ)."""
    ci = f"τ = {tau.estimate:+.2f}, {tau.level:.0%} CI [{tau.low:+.2f}, {tau.high:+.2f}], n = {n} runs"
    if math.isnan(tau.estimate) or math.isnan(tau.low):
        return Verdict(
            measure,
            target.key,
            "undefined",
            "not enough variation to tell",
            f"{measure} vs {target.title}: τ is undefined or its interval cannot be estimated "
            f"(n = {n}; constant values or too few runs).",
        )
    if not tau.excludes_zero():
        return Verdict(
            measure,
            target.key,
            "none",
            "no reliable relation",
            f"No reliable relation between {measure} and {target.title} ({ci} includes 0): "
            "these runs support neither the classic nor the function-centric view for this target.",
        )
    # τ > 0: higher measure (sharper) goes with a higher target value
    sharper_higher = tau.low > 0
    sharper_better = sharper_higher != target.lower_is_better
    if sharper_better:
        kind, headline, view = "sharper-better", f"sharper went with {target.good}", FUNCTION_CENTRIC
    else:
        kind, headline, view = "flatter-better", f"flatter went with {target.good}", CLASSIC
    text = (
        f"{headline[0].upper()}{headline[1:]} ({ci}): consistent with the {view}. This is a rank "
        "correlation across this study's recipes and seeds, not evidence that changing sharpness alone "
        "would change the outcome."
    )
    if not math.isnan(granulated) and granulated * tau.estimate < 0:
        text += (
            f" Caveat: the granulated τ (one hyperparameter moved at a time) is {granulated:+.2f}, of the "
            "opposite sign, so the pooled relation may come from which recipes were compared rather than "
            "from sharpness tracking the target within each knob."
        )
    return Verdict(measure, target.key, kind, headline, text)
