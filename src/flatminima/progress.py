"""A Rich progress bar with rate and ETA, shared by every long-running loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(total: int, description: str, *, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """``with progress_bar(n, "what") as advance: ... advance(loss=0.1)`` shows rate and ETA on stderr.

    ``advance(by)`` moves the bar by ``by`` steps (default 1; fractions allowed, for work inside a step).
    """
    if not enabled:
        yield lambda *_, **__: None
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
