"""The study store: one SQLite database (WAL mode) in the study folder, the single source of truth.

It sits below both :mod:`flatminima.study` (which writes it) and :mod:`flatminima.report` (which reads it),
so neither imports the other to reach it; ``flatminima.study.store`` re-exports everything here.

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
from urllib.parse import quote

from .errors import FlatminimaError, StoreError, StudyLockedError

DB_NAME = "study.sqlite"
LOCK_NAME = "study.lock"
FORMAT = 1
UNREADABLE = "unreadable results"  # the error prefix of a done row whose results could not be decoded
RUN_COLUMNS = ("id", "position", "label", "seed", "config", "status", "attempts", "claimed_by", "started",
               "finished", "results", "error")
_HEADER = b"SQLite format 3\x00"

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


def damaged(path: Path, what: str) -> StoreError:
    """The one-line error for a damaged store: the file, what is wrong, how to recover."""
    folder = path.parent
    return StoreError(
        f"the study store {str(path)!r} is damaged: {what}. Nothing was changed. To recover, "
        f"`flatminima study repair {folder}` copies every intact row into a fresh store (the damaged file is "
        f"kept beside it), then `flatminima study run` redoes only what was lost; or run the study into a new "
        "--out folder."
    )


def _read_only(folder: Path) -> StoreError:
    return StoreError(
        f"the study folder {str(folder)!r} is read-only: `flatminima study status` and `flatminima study "
        "report --out <writable folder>` can still read it; to run or resume it, copy it somewhere writable."
    )


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_HEADER))
    except PermissionError:
        raise StoreError(f"the study store {str(path)!r} cannot be read (permission denied).") from None
    if not head:
        raise damaged(path, "the file is empty (0 bytes; a store whose creation was interrupted, or truncated)")
    if head != _HEADER:
        raise damaged(path, "it is not an SQLite database (the file does not start with the SQLite header)")


def _require_writable(folder: Path, path: Path | None) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise _read_only(folder) from None
    if not os.access(folder, os.W_OK) or (path is not None and not os.access(path, os.W_OK)):
        raise _read_only(folder)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that writes nothing: ``mode=ro``, or ``immutable=1`` where the WAL index cannot be made."""
    uri = f"file:{quote(str(path.resolve()))}"
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, isolation_level=None)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=30, isolation_level=None)


def _decode(text: str | None, what: str) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, reason)`` when ``text`` is not readable JSON of a dict."""
    if text is None:
        return None, f"no {what}"
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as err:
        return None, f"{what} are not valid JSON ({err})"
    if not isinstance(value, dict):
        return None, f"{what} are a JSON {type(value).__name__}, not an object"
    return value, None



def recipe_label(model: str, recipe: dict, axes: list[str] | None = None) -> str:
    """A run's label: the model (when it varies, or no axes are given) and the recipe values on the axes."""
    keys = [k for k in (axes or sorted(recipe)) if k != "model" and k in recipe]
    parts = ([model] if axes is None or "model" in axes else []) + [f"{k}={recipe[k]}" for k in keys]
    return " ".join(parts) or model


def measure_record(stored: dict[str, Any]) -> dict[str, Any]:
    """One stored measure with every field present: ``value``, ``stderr``, ``cost``, ``config``, ``converged``
    and ``extra``. Rows written before the store kept ``config``, ``converged`` and ``extra`` load with ``{}``,
    ``None`` (not known) and ``{}``; ``converged`` is also None for a measure with no iteration to converge."""
    converged = stored.get("converged")
    return {
        "value": stored.get("value"),
        "stderr": stored.get("stderr"),
        "cost": stored.get("cost") or {},
        "config": stored.get("config") or {},
        "converged": None if converged is None else bool(converged),
        "extra": stored.get("extra") or {},
    }

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
    """The runs table of one study folder (created on first use).

    Opening checks the file (SQLite header, ``PRAGMA quick_check``, both tables and the study meta): a
    damaged store raises :class:`~flatminima.errors.StoreError` naming the file, what is wrong and how to
    recover, and is never silently started afresh. ``readonly=True`` opens it without writing anything
    (``mode=ro``, or ``immutable=1`` when the folder itself is read-only), for ``study status`` and
    ``study report``.
    """

    def __init__(self, folder: str | Path, *, create: bool = True, readonly: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.readonly = readonly
        self.unreadable: list[dict[str, Any]] = []  # done rows whose results could not be decoded
        exists = self.path.exists()
        if not exists and (not create or readonly):
            raise FlatminimaError(f"no study store at {str(self.path)!r}; run `flatminima study run` first.")
        if exists:
            _check_header(self.path)
        try:
            if readonly:
                self._db = _connect_readonly(self.path)
            else:
                _require_writable(self.folder, self.path if exists else None)
                # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so each change is one transaction
                self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                # a 'done' row survives power loss, not only a killed process
                self._db.execute("PRAGMA synchronous=FULL")
                if not exists:
                    self._create()
            self._check_integrity()
        except sqlite3.OperationalError as err:
            if "readonly" in str(err) or "read-only" in str(err):
                raise _read_only(self.folder) from None
            raise damaged(self.path, str(err)) from None
        except sqlite3.DatabaseError as err:
            raise damaged(self.path, str(err)) from None

    def _create(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (json.dumps(FORMAT),))
        self._db.execute("COMMIT")

    def _check_integrity(self) -> None:
        problems = [r[0] for r in self._db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise damaged(self.path, "PRAGMA quick_check reports " + "; ".join(problems[:3]))
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = sorted({"runs", "meta"} - tables)
        if missing:
            raise damaged(self.path, f"its table(s) {missing} are missing")
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}
        lacking = sorted(set(RUN_COLUMNS) - cols)
        if lacking:
            raise damaged(self.path, f"the runs table lacks the column(s) {lacking}")
        keys = {r[0] for r in self._db.execute("SELECT key FROM meta")}
        if not keys & {"format", "spec"}:
            raise damaged(self.path, "its meta table holds no study description (no 'format' or 'spec' entry)")

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
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except (TypeError, ValueError) as err:
            raise damaged(self.path, f"its meta entry {key!r} is not valid JSON ({err})") from None

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
        unreadable = f"(status = 'failed' AND error LIKE '{UNREADABLE}%')"
        with self._tx() as db:
            counts = dict(
                db.execute(
                    f"SELECT status, COUNT(*) FROM runs WHERE status IN ({states}) AND NOT {unreadable} "
                    "GROUP BY status"
                ).fetchall()
            )
            redo = db.execute(f"SELECT COUNT(*) FROM runs WHERE {unreadable}").fetchone()[0]
            db.execute(
                f"UPDATE runs SET status = 'pending', claimed_by = NULL WHERE status IN ({states}) OR {unreadable}"
            )
        return {"interrupted": counts.get("running", 0), "failed_retried": counts.get("failed", 0),
                "unreadable_redone": redo}

    def mark_unreadable(self) -> list[dict[str, Any]]:
        """Rows whose config or results cannot be decoded: a done row is marked failed with the reason
        (``recover`` then redoes it); a row whose config is unreadable is removed (``add_runs`` re-adds it
        from the spec). Returns ``[{"id", "label", "seed", "reason"}]``."""
        bad = []
        for rid, label, seed, status, cfg, res in self._db.execute(
            "SELECT id, label, seed, status, config, results FROM runs"
        ).fetchall():
            _, why = _decode(cfg, "config")
            if why is None and status == "done":
                results, why = _decode(res, "results")
                if why is None and not isinstance(results.get("measures"), dict):
                    why = "results lack their measures"
            if why is not None:
                bad.append({"id": rid, "label": label, "seed": seed, "reason": why, "config_ok": "config" not in why})
        with self._tx() as db:
            for b in bad:
                if b["config_ok"]:
                    db.execute("UPDATE runs SET status = 'failed', error = ? WHERE id = ?",
                               (f"{UNREADABLE}: {b['reason']}; the next `study run` redoes it", b["id"]))
                else:
                    db.execute("DELETE FROM runs WHERE id = ?", (b["id"],))
        return bad

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

    def extend(self, run_id: str, results: dict[str, Any]) -> bool:
        """Add columns to a done run: the new ``measures``, ``targets`` (with ``target_errors`` and
        ``target_meta``) are merged into its results; what it holds already is never rewritten."""
        with self._tx() as db:
            row = db.execute("SELECT results FROM runs WHERE id = ? AND status = 'done'", (run_id,)).fetchone()
            if row is None:
                return False
            old = json.loads(row[0])
            for key in ("measures", "targets", "target_errors", "target_meta"):
                merged = dict(old.get(key) or {})
                merged.update({k: v for k, v in (results.get(key) or {}).items() if k not in merged})
                old[key] = merged
            metrics = dict(old.get("metrics") or {})
            metrics.update({k: v for k, v in (results.get("metrics") or {}).items() if k not in metrics})
            old["metrics"] = metrics
            db.execute("UPDATE runs SET results = ? WHERE id = ?", (json.dumps(old, sort_keys=True), run_id))
            return True

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
        self.unreadable = []
        for r in self._db.execute(q + " ORDER BY position", args).fetchall():
            keys = ("id", "label", "seed", "status", "attempts", "claimed_by", "started", "finished")
            row = dict(zip(keys, r[:8], strict=False))
            row["config"], why = _decode(r[8], "config")
            row["results"], res_why = _decode(r[9], "results") if r[9] else (None, None)
            row["error"] = r[10]
            why = why or res_why
            if why is None and row["status"] == "done" and not isinstance(row["results"].get("measures"), dict):
                why = "results lack their measures"
            if why is not None:  # a damaged row: listed in .unreadable, never handed out as a result
                self.unreadable.append({"id": row["id"], "label": row["label"], "seed": row["seed"], "reason": why})
                if row["status"] == "done" or row["config"] is None:
                    continue
            out.append(row)
        return out


# ---- one writer per study folder ------------------------------------------------------------------------
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, a single writer is up to the user
    fcntl = None


def _holder_text(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (it has not yet written its details)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"process {info.get('pid')} on host {info.get('host')!r} (since {since}: {info.get('command', '?')})"


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


class WriterLock:
    """An exclusive ``flock`` on ``<folder>/study.lock``, held while a process writes the study.

    The lock file names its holder (pid, host, start time, command). The kernel drops the lock when the
    holder exits, even after ``kill -9``, so a stale file never blocks a resume. ``flock`` is reliable
    on local file systems; on network file systems run one study per folder yourself.
    """

    def __init__(self, folder: str | Path, command: str = "flatminima study run"):
        self.folder, self.command = Path(folder), command
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        if fcntl is None:  # pragma: no cover
            return self
        _require_writable(self.folder, None)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            raise _read_only(self.folder) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StudyLockedError(
                f"the study folder {str(self.folder)!r} is in use by {_holder_text(_read_holder(self.path))}; "
                "one `study run` per folder at a time: wait for it to finish (or stop that process), "
                "or give another --out folder."
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_holder(folder: str | Path) -> dict[str, Any] | None:
    """Who holds the folder's writer lock (``{"pid", "host", "since", "command"}``), or None when nobody does.

    Reads only (a shared, non-blocking lock on the file, released at once), so it works on read-only folders."""
    path = Path(folder) / LOCK_NAME
    if fcntl is None or not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(path) or {}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ---- repair ---------------------------------------------------------------------------------------------
def _salvage(path: Path) -> tuple[list[tuple], dict[str, str], list[str]]:
    """Whatever rows and meta entries of a damaged file can still be read, and what could not."""
    problems: list[str] = []
    rows: list[tuple] = []
    meta: dict[str, str] = {}
    try:
        con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    except sqlite3.DatabaseError as err:
        return rows, meta, [f"cannot open: {err}"]
    try:
        cols = ", ".join(RUN_COLUMNS)
        try:
            top = con.execute("SELECT MAX(rowid) FROM runs").fetchone()[0] or 0
        except sqlite3.DatabaseError as err:  # the b-tree's right edge is damaged: probe until 1000 misses
            top = 0 if "no such table" in str(err) else None
            problems = [f"runs table {'missing' if top == 0 else 'partly unreadable'}: {err}"]
        rowid, misses = 0, 0
        while (rowid < top) if top is not None else (misses < 1000):
            rowid += 1
            try:
                r = con.execute(f"SELECT {cols} FROM runs WHERE rowid = ?", (rowid,)).fetchone()
            except sqlite3.DatabaseError as err:
                problems.append(f"row {rowid}: {err}")
                misses += 1
                continue
            if r is None:
                misses += 1
            else:
                rows.append(r)
                misses = 0
        try:
            for key, value in con.execute("SELECT key, value FROM meta").fetchall():
                meta[key] = value
        except sqlite3.DatabaseError as err:
            problems.append(f"meta table unreadable: {err}")
    finally:
        con.close()
    return rows, meta, problems


def repair(folder: str | Path) -> dict[str, Any]:
    """Copy every intact row of a damaged store into a fresh one; the damaged file is kept beside it.

    Done rows with readable results stay done; rows left running, and done rows whose results cannot be
    read, become pending (the next ``study run`` redoes them); failed rows stay failed. Returns
    ``{"kept", "redo", "lost_rows", "problems", "damaged_copy"}``.
    """
    folder = Path(folder)
    path = folder / DB_NAME
    if not path.exists():
        raise FlatminimaError(f"no study store at {str(path)!r} to repair.")
    with WriterLock(folder, "flatminima study repair"):
        rows, meta, problems = _salvage(path)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        copy = path.with_name(f"{DB_NAME}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            side = path.with_name(DB_NAME + suffix)
            if side.exists():
                os.replace(side, copy.with_name(copy.name + suffix))
        kept = redo = 0
        with Store(folder) as fresh, fresh._tx() as db:
            for key, value in meta.items():
                if _is_json(value):
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            for r in rows:
                row = dict(zip(RUN_COLUMNS, r, strict=True))
                if _decode(row["config"], "config")[1] is not None:
                    problems.append(f"run {row['id']}: unreadable config, dropped (the next run re-adds it)")
                    continue
                if row["status"] == "done":
                    res, why = _decode(row["results"], "results")
                    if why is None and isinstance(res.get("measures"), dict):
                        kept += 1
                    else:
                        row.update(status="pending", results=None, claimed_by=None)
                        redo += 1
                elif row["status"] == "running" or row["status"] not in ("pending", "failed"):
                    row.update(status="pending", claimed_by=None)
                    redo += 1
                try:
                    db.execute(f"INSERT OR IGNORE INTO runs ({', '.join(RUN_COLUMNS)}) VALUES "
                               f"({', '.join('?' * len(RUN_COLUMNS))})", tuple(row[c] for c in RUN_COLUMNS))
                except sqlite3.DatabaseError as err:
                    problems.append(f"run {row['id']}: {err}, dropped")
    return {"kept": kept, "redo": redo, "rows_read": len(rows), "problems": problems, "damaged_copy": copy}


def _is_json(text: Any) -> bool:
    try:
        json.loads(text)
        return True
    except (TypeError, ValueError):
        return False
