"""Study reports: rank correlations with bootstrap intervals, granulated τ, figures, verdicts, HTML."""

from .builder import BASELINES, Report, build_report, run_quality, study_rows
from .statistics import (
    Interval,
    bootstrap_ci,
    conditional_mi,
    correlate,
    correlation_table,
    granulated_tau,
    kendall_tau,
    spearman_rho,
)
from .verdict import RULE, TARGETS, Verdict, verdict

__all__ = [
    "RULE",
    "TARGETS",
    "BASELINES",
    "Interval",
    "Report",
    "Verdict",
    "bootstrap_ci",
    "conditional_mi",
    "build_report",
    "correlate",
    "correlation_table",
    "granulated_tau",
    "kendall_tau",
    "run_quality",
    "spearman_rho",
    "study_rows",
    "verdict",
]
