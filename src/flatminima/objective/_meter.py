"""The cost meter: every loss, gradient, Hessian-/GGN-vector product and batched evaluation an objective or
an operator computes is recorded here, once, by the code that computes it.

A result's cost is read off the meter around the call (``with meter.measure() as cost: ...``), never
counted by hand in each algorithm (DESIGN.md). Progress bars and other observers *subscribe*
(:meth:`Meter.subscribe`): they are told of every record as it happens, instead of wrapping the
objective's methods.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

from ..errors import require_choice

__all__ = ["KINDS", "Cost", "Meter"]

KINDS = ("losses", "grads", "hvps", "batched_points")  # the counts a record may add to


@dataclass
class Cost:
    """Work done by an Objective: full-data evaluations, batch passes and wall time.

    ``data_passes`` counts passes over the whole data set (a batched evaluation of many θ in one pass
    counts once), which is what users pay for when data is streamed.
    """

    losses: int = 0
    grads: int = 0
    hvps: int = 0
    batched_points: int = 0
    data_passes: float = 0.0
    seconds: float = 0.0

    def __sub__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def __add__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# A subscriber is told (kind, points) of every record; kind None means data passes only.
Subscriber = Callable[[str | None, int], None]


class Meter:
    """Running totals of work (a :class:`Cost`) with subscribers.

    ``record(kind, points, passes, seconds)`` adds work; ``measure()`` is a context that fills a
    :class:`Cost` with the work done inside the block (its ``seconds`` are the block's wall time);
    ``subscribe(f)`` calls ``f(kind, points)`` on every record for the length of a ``with`` block.
    """

    def __init__(self) -> None:
        self._total = Cost()
        self._subscribers: list[Subscriber] = []

    @property
    def total(self) -> Cost:
        """All work recorded so far (a copy)."""
        return copy.copy(self._total)

    def record(self, kind: str | None, points: int = 1, passes: float = 1.0, seconds: float = 0.0) -> None:
        """Add ``points`` to the count ``kind`` (one of :data:`KINDS`, or None for data passes only), plus
        ``passes`` over the data and ``seconds`` of compute; then tell every subscriber."""
        if kind is not None:
            require_choice("kind", kind, KINDS)
            setattr(self._total, kind, getattr(self._total, kind) + points)
        self._total.data_passes += passes
        self._total.seconds += seconds
        for f in tuple(self._subscribers):
            f(kind, points)

    def account(self, kind: str, start: float, points: int = 1) -> None:
        """One pass of ``kind`` work that began at ``start`` (``time.perf_counter()``)."""
        self.record(kind, points, 1.0, time.perf_counter() - start)

    @contextmanager
    def measure(self) -> Iterator[Cost]:
        """``with meter.measure() as cost:`` fills ``cost`` with the work done inside the block."""
        before, start, cost = copy.copy(self._total), time.perf_counter(), Cost()
        try:
            yield cost
        finally:
            delta = self._total - before
            delta.seconds = time.perf_counter() - start
            for f in fields(Cost):
                setattr(cost, f.name, getattr(delta, f.name))

    @contextmanager
    def subscribe(self, subscriber: Subscriber) -> Iterator[None]:
        """Call ``subscriber(kind, points)`` on every record made inside the block."""
        self._subscribers.append(subscriber)
        try:
            yield
        finally:
            self._subscribers.remove(subscriber)
