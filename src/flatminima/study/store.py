"""The study store: one SQLite database (WAL mode) in the study folder, the single source of truth.

Each run is a row keyed by ``id = hash(config, seed)``. Its life: ``pending`` → ``running`` (claimed
when handed to an executor) → ``done`` (results JSON written in the same transaction that sets the
status, so a row is never half-done) or ``failed`` (with the error message). Only the coordinating
process writes, so workers on a Ray cluster never need to reach the file.

After a crash (even ``kill -9``) a row can be left ``running``; :meth:`Store.recover` turns those back
into ``pending`` before the next study starts. ``done`` rows are never rewritten: ``add_runs`` uses
``INSERT OR IGNORE`` and ``finish`` only updates rows that are ``running``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FlatminimaError

DB_NAME = "study.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    started REAL,
    finished REAL,
    results TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class Counts:
    done: int = 0
    running: int = 0
    failed: int = 0
    pending: int = 0

    @property
    def total(self) -> int:
        return self.done + self.running + self.failed + self.pending


class Store:
    """The runs table of one study folder (created on first use)."""

    def __init__(self, folder: str | Path, *, create: bool = True):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        if not create and not self.path.exists():
            raise FlatminimaError(f"no study store at {str(self.path)!r}; run `flatminima study run` first.")
        self.folder.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so each change is one explicit transaction
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "PRAGMA synchronous=FULL"
        )  # a 'done' row survives power loss, not only a killed process
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _tx(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- meta ---------------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # ---- runs ---------------------------------------------------------------------------------------
    def add_runs(self, runs: Iterable[tuple[str, str, int, dict]]) -> int:
        """Register ``(id, label, seed, config)`` rows as pending; existing ids are left untouched."""
        with self._tx() as db:
            before = db.total_changes
            start = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM runs").fetchone()[0]
            for i, (rid, label, seed, config) in enumerate(runs):
                db.execute(
                    "INSERT OR IGNORE INTO runs (id, position, label, seed, config, status) "
                    "VALUES (?, ?, ?, ?, ?, 'pending')",
                    (rid, start + i, label, seed, json.dumps(config, sort_keys=True)),
                )
            return db.total_changes - before

    def recover(self, *, retry_failed: bool = False) -> dict[str, int]:
        """Before a (re)start: runs left 'running' by a dead process become pending again."""
        states = "'running', 'failed'" if retry_failed else "'running'"
        with self._tx() as db:
            counts = dict(
                db.execute(
                    f"SELECT status, COUNT(*) FROM runs WHERE status IN ({states}) GROUP BY status"
                ).fetchall()
            )
            db.execute(f"UPDATE runs SET status = 'pending', claimed_by = NULL WHERE status IN ({states})")
        return {"interrupted": counts.get("running", 0), "failed_retried": counts.get("failed", 0)}

    def pending(self, ids: Iterable[str] | None = None) -> list[tuple[str, dict]]:
        rows = self._db.execute(
            "SELECT id, config FROM runs WHERE status = 'pending' ORDER BY position"
        ).fetchall()
        wanted = None if ids is None else set(ids)
        return [(rid, json.loads(cfg)) for rid, cfg in rows if wanted is None or rid in wanted]

    def claim(self, run_id: str) -> bool:
        """Mark a pending run as running (by this host and process); False if it was not pending."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE runs SET status = 'running', attempts = attempts + 1, claimed_by = ?, "
                "started = ? WHERE id = ? AND status = 'pending'",
                (f"{socket.gethostname()}:{os.getpid()}", time.time(), run_id),
            )
            return cur.rowcount == 1

    def finish(self, run_id: str, results: dict[str, Any]) -> bool:
        """Atomically store the results and mark the run done (only a running row can become done)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE runs SET status = 'done', results = ?, finished = ?, error = NULL "
                "WHERE id = ? AND status = 'running'",
                (json.dumps(results, sort_keys=True), time.time(), run_id),
            )
            return cur.rowcount == 1

    def fail(self, run_id: str, message: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status = 'failed', error = ?, finished = ? "
                "WHERE id = ? AND status = 'running'",
                (message, time.time(), run_id),
            )

    def counts(self) -> Counts:
        c = dict(self._db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
        return Counts(c.get("done", 0), c.get("running", 0), c.get("failed", 0), c.get("pending", 0))

    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        """Runs as dicts (config and results decoded), in grid order."""
        q = ("SELECT id, label, seed, status, attempts, claimed_by, started, finished, config, results, "
             "error FROM runs")
        args: tuple = ()
        if status:
            q, args = q + " WHERE status = ?", (status,)
        out = []
        for r in self._db.execute(q + " ORDER BY position", args).fetchall():
            keys = ("id", "label", "seed", "status", "attempts", "claimed_by", "started", "finished")
            row = dict(zip(keys, r[:8], strict=False))
            row["config"] = json.loads(r[8])
            row["results"] = json.loads(r[9]) if r[9] else None
            row["error"] = r[10]
            out.append(row)
        return out
