"""Study reports: rank correlations with bootstrap intervals, granulated τ, figures, verdicts, HTML."""

from .builder import Report, build_report, study_rows
from .statistics import Interval, bootstrap_ci, correlate, granulated_tau, kendall_tau, spearman_rho
from .verdict import TARGETS, Verdict, verdict

__all__ = [
    "TARGETS",
    "Interval",
    "Report",
    "Verdict",
    "bootstrap_ci",
    "build_report",
    "correlate",
    "granulated_tau",
    "kendall_tau",
    "spearman_rho",
    "study_rows",
    "verdict",
]
