"""Record curvature and sharpness measures every N steps inside a user's own training loop.

    tracker = track(model, (X_probe, y_probe), loss="cross_entropy", measures=["loss", "lambda_max"],
                    every=100, store="runs/track.sqlite", tensorboard="runs/tb")
    for step, (x, y) in enumerate(loader):
        ...  # the user's forward, backward, optimizer step
        tracker.step(step)
    tracker.close()

At each recorded step the tracker builds an :class:`~flatminima.Objective` on a copy of the model's
current weights over a *fixed* probe data set (so values are comparable across steps), computes each
measure, and logs one row per value: to ``tracker.history``, to a SQLite table ``track`` (its own table,
in a file of its own or in a study folder's ``study.sqlite``), to TensorBoard when asked, and to the user's
own logger (``logger=``: a SummaryWriter, a Lightning logger, a W&B run, or a function), each value tagged
``flatminima/<run>/<measure>``. It never
touches the model's ``.grad``, its train/eval flag, its weights or the global random state: the user's
training runs exactly as it would without it.

Measures: ``"loss"`` (the objective's own value, not a measure of it) and every name in
:func:`flatminima.sharpness.available` (``grad_norm``, ``lambda_max``, ``trace``, ``worst_case``, ...), each
with its config: ``measures={"trace": {"probes": 30}}``. Every measure is computed by the registry,
``flatminima.sharpness.measure``; the tracker has no measure code of its own. One alias:
``"eigenvalues"`` is the registry's ``top_eigenvalues`` (the ``k`` largest Hessian eigenvalues by Lanczos,
``k=3`` by default), logged as ``eigenvalues[i]`` with each error bound as its ``stderr``. A row's
``converged`` is the measure's own flag (False when an iteration stopped before its tolerance; None for
a measure with nothing to converge).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import sharpness
from .errors import FlatminimaError, require_positive_int
from .objective import Objective

__all__ = ["ALIASES", "BUILTIN", "Tracker", "load", "track"]

ALIASES = {"eigenvalues": "top_eigenvalues"}  # a tracker name -> the registry measure it resolves to
BUILTIN = ("loss", *ALIASES)  # names beyond the registry's: the loss itself, and the aliases

_SCHEMA = """
CREATE TABLE IF NOT EXISTS track (
    run TEXT NOT NULL, step INTEGER NOT NULL, measure TEXT NOT NULL,
    value REAL, stderr REAL, hvps INTEGER, data_passes REAL, seconds REAL, wall REAL, converged INTEGER,
    PRIMARY KEY (run, step, measure)
);
"""
_COLUMNS = ("run", "step", "measure", "value", "stderr", "hvps", "data_passes", "seconds", "wall", "converged")


def _db_path(store: str | Path) -> Path:
    # A folder (a study folder) gets the study store's file, in a table of its own; else a file path.
    path = Path(store)
    return path / "study.sqlite" if path.is_dir() else path


def _normalise(measures: str | Iterable[str] | Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    if isinstance(measures, str):
        measures = [measures]
    chosen = {m: dict(c or {}) for m, c in measures.items()} if isinstance(measures, Mapping) else {
        m: {} for m in measures}
    if not chosen:
        raise FlatminimaError("measures is empty; name at least one, e.g. ['loss', 'lambda_max'].")
    known = set(BUILTIN) | set(sharpness.available())
    unknown = sorted(set(chosen) - known)
    if unknown:
        raise FlatminimaError(f"unknown measures {unknown}; available: {sorted(known)}.")
    return chosen


class Tracker:
    """Computes the chosen measures every ``every`` steps on a fixed probe data set; see the module doc.

    Args:
        model: the user's model (read, never changed); the weights at each recorded step are used.
        data, loss, loss_fn, params, mode, dtype, batch_size, memory_mb, distributed: as for
            :class:`~flatminima.Objective` (the probe set: keep it small, it is evaluated every record).
        measures: names, or ``{name: config}``; see the module doc.
        every: record when ``step % every == 0``.
        store: a SQLite file (or a study folder) for the ``track`` table; ``None`` keeps rows in memory only.
        tensorboard: a log directory for ``torch.utils.tensorboard`` (needs the ``tensorboard`` package).
        run: the run name the rows are keyed by, and part of every logged tag: ``flatminima/<run>/<measure>``,
            so two runs in one log directory (or one logger) stay two series.
        logger: the user's own logger (or a list of them), sent every recorded value under the same tags:
            a TensorBoard ``SummaryWriter`` (``add_scalar``), a Lightning logger (``log_metrics``), a W&B run or
            the ``wandb`` module (``log(dict, step=)``), or a function ``f(metrics: dict, step: int)``.
    """

    def __init__(self, model: nn.Module, data: Any, *, loss: str | Callable | None = None,
                 loss_fn: Callable | None = None, measures: Any = ("loss", "lambda_max"), every: int = 100,
                 store: str | Path | None = None, tensorboard: str | Path | None = None, run: str = "run",
                 params: Any = None, mode: str = "eval", dtype: torch.dtype | None = None,
                 batch_size: int = 1024, memory_mb: float | None = None, distributed: bool = False,
                 logger: Any = None):
        require_positive_int("every", every)
        if not isinstance(model, nn.Module):
            raise FlatminimaError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        self.model, self.every, self.run = model, every, run
        self.measures = _normalise(measures)
        self._objective_kw = dict(loss=loss, data=data, loss_fn=loss_fn, params=params, mode=mode,
                                  dtype=dtype, batch_size=batch_size, memory_mb=memory_mb,
                                  distributed=distributed)
        Objective(model, **self._objective_kw)  # fail now, not at step N, on bad data/loss settings
        self.history: list[dict[str, Any]] = []
        self._calls = 0
        self._db = self._open_store(store) if store is not None else None
        self._writer = self._open_tensorboard(tensorboard) if tensorboard is not None else None
        self._loggers: list[Any] = []
        for one in logger if isinstance(logger, (list, tuple)) else [logger] if logger is not None else []:
            self.add_logger(one)

    def add_logger(self, logger: Any) -> None:
        """Also send every recorded value to ``logger`` (see the class doc for the kinds taken)."""
        if not (hasattr(logger, "add_scalar") or hasattr(logger, "log_metrics") or hasattr(logger, "log")
                or callable(logger)):
            raise FlatminimaError(f"logger must be a SummaryWriter, a Lightning logger, a W&B run or a function "
                                  f"f(metrics, step), got {type(logger).__name__}.")
        if getattr(self, "_loggers", None) is None:
            self._loggers = []
        self._loggers.append(logger)

    def tag(self, measure: str) -> str:
        """The name a value is logged under: ``flatminima/<run>/<measure>``."""
        return f"flatminima/{self.run}/{measure}"

    # --------------------------------------------------------------------------------- sinks
    @staticmethod
    def _open_store(store: str | Path) -> sqlite3.Connection:
        path = _db_path(store)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
        db.executescript(_SCHEMA)
        if "converged" not in {r[1] for r in db.execute("PRAGMA table_info(track)")}:  # a table from before it
            with db:
                db.execute("ALTER TABLE track ADD COLUMN converged INTEGER")
        return db

    @staticmethod
    def _open_tensorboard(logdir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # the tensorboard package is an optional extra
            raise FlatminimaError(
                "tensorboard=... needs the `tensorboard` package: pip install tensorboard.") from err
        return SummaryWriter(str(logdir))

    # --------------------------------------------------------------------------------- recording
    def step(self, step: int | None = None) -> list[dict[str, Any]]:
        """Call once per training step; records (and returns the new rows) when ``step % every == 0``.

        Without ``step`` the tracker counts its own calls from 0.
        """
        if step is None:
            step = self._calls
        self._calls += 1
        if int(step) % self.every != 0:
            return []
        return self.record(int(step))

    def record(self, step: int) -> list[dict[str, Any]]:
        """Compute every measure at the model's current weights now, whatever the step."""
        obj = Objective(self.model, **self._objective_kw)
        rows = []
        for name, config in self.measures.items():
            start = time.perf_counter()
            with obj.meter() as cost:
                values = self._compute(obj, name, config)
            for key, value, stderr, converged in values:
                rows.append({"run": self.run, "step": step, "measure": key, "value": value, "stderr": stderr,
                             "hvps": cost.hvps, "data_passes": cost.data_passes,
                             "seconds": time.perf_counter() - start, "wall": time.time(), "converged": converged})
        self._log(rows)
        return rows

    @staticmethod
    def _compute(obj: Objective, name: str,
                 config: dict[str, Any]) -> list[tuple[str, float, float | None, bool | None]]:
        if name == "loss":  # the objective's value itself, not a measure of its landscape
            return [("loss", obj.loss(), None, None)]
        m = sharpness.measure(obj, ALIASES.get(name, name), **config)
        converged = m.extra.get("converged")
        converged = None if converged is None else bool(converged)
        if name == "eigenvalues":
            each = m.extra.get("converged_each") or [converged] * len(m.extra["values"])
            return [(f"eigenvalues[{i}]", float(v), float(b), bool(c)) for i, (v, b, c) in
                    enumerate(zip(m.extra["values"], m.extra["error_bounds"], each, strict=True))]
        err = m.stderr if m.stderr is not None and math.isfinite(m.stderr) else None
        return [(name, float(m.value), err, converged)]

    def _log(self, rows: list[dict[str, Any]]) -> None:
        self.history.extend(rows)
        if self._db is not None:
            with self._db:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO track ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join(':' + c for c in _COLUMNS)})", rows)
        if self._writer is not None:
            for r in rows:
                self._writer.add_scalar(self.tag(r["measure"]), r["value"], r["step"])
            self._writer.flush()
        by_step: dict[int, dict[str, float]] = {}
        for r in rows:
            by_step.setdefault(r["step"], {})[self.tag(r["measure"])] = r["value"]
        for logger in getattr(self, "_loggers", []):
            for step, metrics in by_step.items():
                _send(logger, metrics, step)

    def series(self, measure: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one measure recorded so far."""
        rows = [r for r in self.history if r["measure"] == measure]
        return [r["step"] for r in rows], [r["value"] for r in rows]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _send(logger: Any, metrics: dict[str, float], step: int) -> None:
    if hasattr(logger, "add_scalar"):  # a TensorBoard SummaryWriter
        for key, value in metrics.items():
            logger.add_scalar(key, value, step)
    elif hasattr(logger, "log_metrics"):  # a Lightning logger (TensorBoardLogger, CSVLogger, WandbLogger, ...)
        logger.log_metrics(metrics, step=step)
    elif hasattr(logger, "log"):  # a W&B run, or the wandb module itself
        logger.log(metrics, step=step)
    else:
        logger(metrics, step)


def track(model: nn.Module, data: Any, **kwargs: Any) -> Tracker:
    """A :class:`Tracker` for ``model`` on the probe ``data``; call ``.step(step)`` in the training loop."""
    return Tracker(model, data, **kwargs)


def load(store: str | Path, run: str | None = None) -> list[dict[str, Any]]:
    """The rows of the ``track`` table (of one run, or all), ordered by run, step and measure."""
    path = _db_path(store)
    if not path.exists():
        raise FlatminimaError(f"no tracking store at {path}.")
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        where = " WHERE run = ?" if run is not None else ""
        query = f"SELECT * FROM track{where} ORDER BY run, step, measure"
        rows = [dict(r) for r in db.execute(query, (run,) if run is not None else ())]
    for r in rows:  # SQLite keeps the flag as 0/1; a table from before the column has none
        if r.get("converged") is not None:
            r["converged"] = bool(r["converged"])
    return rows
