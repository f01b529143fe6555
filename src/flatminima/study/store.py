"""The study store, as :mod:`flatminima.store` (it lives below both the study and the report)."""

from ..store import (  # noqa: F401 - re-exported: the store's public names, kept where they always were
    DB_NAME,
    FORMAT,
    LOCK_NAME,
    RUN_COLUMNS,
    UNREADABLE,
    Counts,
    Store,
    WriterLock,
    damaged,
    lock_holder,
    measure_record,
    recipe_label,
    repair,
)
