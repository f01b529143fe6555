"""``flatminima claims``: one pre-registered experiment per claim of the seed documents, three-valued verdicts.

    flatminima.claims.run(quick=True, out="claims_report", seed=0) -> list[ClaimRow]

The claims, their experiments and decision rules come from the lab's registry (``flatminima.lab.specs()``).
Writes ``claims.md``, ``claims.html`` and ``claims.json`` plus every experiment's figure and CSV data.
"""

from .report import ClaimRow, claim_ids, run, write_reports

__all__ = ["ClaimRow", "claim_ids", "run", "write_reports"]
