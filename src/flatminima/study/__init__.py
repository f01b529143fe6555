"""Studies: does flatness predict generalisation, shift robustness and calibration on this task?

``run(spec)`` expands a validated TOML spec into runs (recipe grid × seeds), trains, measures and
evaluates each, and writes one row per run to a SQLite store; ``report(folder)`` turns the store into
rank correlations with bootstrap intervals, plots and a plain-language verdict (one HTML page).
"""

from . import targets
from .overrides import apply_overrides
from .runner import StudyRun, run
from .spec import StudySpec, expand, load, load_preset, presets, validate
from .store import Store, WriterLock, lock_holder, repair


def report(store, **kwargs):
    """The study's HTML report (see :func:`flatminima.report.build_report`).

    The study sits above the report (the report reads the store, never the study); the import is made
    here, on call, so running a study (and every pool worker) does not load the plotting stack."""
    from ..report import build_report
    from .targets import table_targets

    kwargs.setdefault("table_targets", table_targets())
    return build_report(store, **kwargs)


def frame(store):
    """The study as a pandas DataFrame, one row per finished run (see :func:`flatminima.study.frames.frame`)."""
    from .frames import frame as _frame

    return _frame(store)


__all__ = [
    "Store",
    "apply_overrides",
    "StudyRun",
    "WriterLock",
    "StudySpec",
    "expand",
    "frame",
    "targets",
    "load",
    "load_preset",
    "lock_holder",
    "presets",
    "repair",
    "report",
    "run",
    "validate",
]
