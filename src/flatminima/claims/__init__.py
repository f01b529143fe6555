"""``flatminima claims``: one experiment per claim C1–C17 of the seed documents, with a measured verdict.

    flatminima.claims.run(quick=True, out="claims_report") -> list[ClaimRow]

Writes ``claims.md``, ``claims.html`` and ``claims.json`` (one row per claim: the claim, the experiment, the
measured numbers with intervals, the verdict and why) plus every experiment's figure and data.
"""

from .report import CLAIMS, ClaimRow, run, write_reports

__all__ = ["CLAIMS", "ClaimRow", "run", "write_reports"]
