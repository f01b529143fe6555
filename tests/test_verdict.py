"""Verdict wording: flatness measures are read as sharpness, baselines by their own name."""

from flatminima.report.verdict import TARGETS, verdict
from flatminima.statistics import Interval


def _iv(low: float, high: float) -> Interval:
    return Interval((low + high) / 2, low, high, 0.95, 4000, 0.001, 0.001)


def test_flatness_measure_three_outcomes():
    gap = TARGETS["gap"]
    assert verdict("lambda_max", gap, _iv(-0.6, -0.2), 20, mc_k=3).kind == "sharper-better"
    assert verdict("lambda_max", gap, _iv(0.2, 0.6), 20, mc_k=3).kind == "flatter-better"
    assert verdict("lambda_max", gap, _iv(-0.2, 0.3), 20, mc_k=3).kind == "inconclusive"


def test_baseline_is_not_called_sharper():
    acc = TARGETS["test_acc"]
    up = verdict("param_norm", acc, _iv(0.2, 0.6), 20, mc_k=3, baseline=True)
    down = verdict("param_norm", acc, _iv(-0.6, -0.2), 20, mc_k=3, baseline=True)
    assert (up.kind, down.kind) == ("complex-better", "simpler-better")
    assert up.headline == "higher param_norm went with higher test accuracy"
    assert "sharper" not in up.text and "flatter" not in down.text
    assert verdict("param_norm", acc, _iv(-0.2, 0.3), 20, mc_k=3, baseline=True).kind == "inconclusive"
