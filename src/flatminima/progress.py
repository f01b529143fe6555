"""Progress for every long-running loop: a Rich bar with rate and ETA in a terminal, plain lines otherwise.

When stderr is a terminal, :func:`progress_bar` draws a Rich bar (rate, elapsed, ETA, the latest values).
When it is not (``nohup``, SLURM, a pipe, a log file), it prints one plain, complete line (never cut to a
terminal width) at the start, every ``FLATMINIMA_PROGRESS_EVERY`` seconds (default 10) or 10% of the work,
whichever comes first, and at the end; a heartbeat thread keeps the lines coming every that many seconds
while one long step runs (a claim, an epoch), so a log never falls silent::

    training: 30/100 (30%), 2.14 it/s, 14s elapsed, ETA 33s, loss=0.1234

Algorithms that do not take a ``progress`` argument (Lanczos, Hutch++, SLQ) are followed through the products
they ask of an Objective: :func:`count_products` subscribes to the objective's cost meter for the length of a
``with`` block, and advances a bar by one per Hessian- or GGN-vector product recorded.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["count_products", "is_terminal", "plain_progress", "progress_bar"]


def is_terminal(stream: Any = None) -> bool:
    """Whether progress goes to an interactive terminal (``FLATMINIMA_PROGRESS=plain|rich`` overrides)."""
    forced = os.environ.get("FLATMINIMA_PROGRESS", "").lower()
    if forced in ("plain", "rich"):
        return forced == "rich"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _seconds(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class plain_progress:  # noqa: N801 - used like a function, as progress_bar is
    """Plain progress lines on ``stream`` (default stderr): at the start, every ``every`` seconds or ``step``
    fraction of the total, and at the end. ``total=None`` counts without a percentage or ETA."""

    def __init__(self, total: float | None, description: str, *, stream: Any = None, every: float | None = None,
                 step: float = 0.1, clock: Callable[[], float] = time.monotonic):
        self.total, self.description, self.stream = total, description, stream
        self.every = float(os.environ.get("FLATMINIMA_PROGRESS_EVERY", 10)) if every is None else every
        self.step, self.clock = step, clock
        self.done, self.info = 0.0, ""
        self.start = self.last_time = clock()
        self.last_done = 0.0

    def line(self, final: bool = False) -> str:
        elapsed = self.clock() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.description}: {self.done:g}" + (f"/{self.total:g}" if self.total else "")]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts.append(f"{rate:.3g} it/s" if rate else "")
        parts.append(f"{_seconds(elapsed)} elapsed")
        if self.total and not final:
            parts.append(f"ETA {_seconds((self.total - self.done) / rate) if rate else '?'}")
        if final:
            parts.append("done")
        return ", ".join(p for p in parts if p) + (f", {self.info}" if self.info else "")

    def emit(self, final: bool = False) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        print(self.line(final), file=stream, flush=True)
        self.last_time, self.last_done = self.clock(), self.done

    def heartbeat(self) -> Callable[[], None]:
        """Emit a line every ``every`` seconds from a daemon thread, also while no step finishes; returns
        the function that stops it."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(max(self.every, 0.01)):
                if self.clock() - self.last_time >= self.every:
                    self.emit()

        threading.Thread(target=beat, daemon=True, name="flatminima-progress").start()
        return stop.set

    def advance(self, by: float = 1.0, **info: float) -> None:
        self.done += by
        if info:
            self.info = " ".join(f"{k}={v:.4g}" for k, v in info.items())
        due = self.clock() - self.last_time >= self.every
        if self.total:
            due = due or self.done - self.last_done >= self.step * self.total
        if due and not (self.total and self.done >= self.total):
            self.emit()


@contextmanager
def progress_bar(total: int | None, description: str, *, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """``with progress_bar(n, "what") as advance: ... advance(loss=0.1)`` shows rate and ETA on stderr.

    ``advance(by)`` moves the bar by ``by`` steps (default 1; fractions allowed, for work inside a step).
    ``total=None``: the amount of work is not known in advance (a count and a rate, no ETA). Off a terminal
    the progress is plain lines (see the module doc).
    """
    if not enabled or total == 0:
        yield lambda *_, **__: None
        return
    if not is_terminal():
        plain = plain_progress(total, description)
        plain.emit()
        stop = plain.heartbeat()
        try:
            yield plain.advance
        finally:
            stop()
            plain.emit(final=True)
        return
    from rich.console import Console

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total, info="", rate="")

        def advance(by: float = 1.0, **info: float) -> None:
            bar.advance(task, by)
            speed = bar.tasks[0].speed
            text = " ".join(f"{k}={v:.4g}" for k, v in info.items())
            bar.update(task, info=text, rate=f"{speed:.2f} it/s" if speed else "")

        yield advance


@contextmanager
def count_products(obj: Any, total: int | None, description: str, *, enabled: bool = True
                   ) -> Iterator[Callable[..., None]]:
    """Progress of an algorithm run on ``obj``: one step per Hessian/GGN-vector product it asks for.

    The bar subscribes to the objective's cost meter (``obj.subscribe``) for the ``with`` block, so every
    product recorded there moves it, and the objective itself is left as it is (its methods are never
    wrapped); ``total`` is the expected number of products (``None`` if unknown, e.g. Lanczos stopping at
    convergence). An object without a meter gets the bar without per-product steps."""
    with progress_bar(total, description, enabled=enabled) as advance:
        subscribe = getattr(obj, "subscribe", None)
        if not enabled or subscribe is None:
            yield advance
            return

        def on_record(kind: str | None, points: int) -> None:
            if kind == "hvps":  # Hessian- and GGN-vector products are both recorded as "hvps"
                advance(points)

        with subscribe(on_record):
            yield advance
