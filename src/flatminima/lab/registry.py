"""The lab's experiment registry: ``@experiment(name, claim, title)`` on ``fn(out, quick, seed) -> dict``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import FlatminimaError
from ..jsonable import plain as _plain

VERDICTS = ("supported", "not supported", "mixed", "not testable here")


@dataclass
class LabResult:
    """One experiment's outcome: measured numbers (with intervals), a verdict on its claim and the reason."""

    name: str
    claim: str
    title: str
    numbers: dict[str, Any]
    summary: str
    verdict: str
    reason: str
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Experiment:
    name: str
    claim: str
    title: str
    fn: Callable[..., dict]


_REGISTRY: dict[str, Experiment] = {}


def experiment(name: str, claim: str, title: str) -> Callable:
    """Register ``fn(out, quick, seed) -> dict(numbers, summary, verdict, reason, files)``."""

    def wrap(fn: Callable[..., dict]) -> Callable[..., dict]:
        _REGISTRY[name] = Experiment(name, claim, title, fn)
        return fn

    return wrap


def available() -> dict[str, str]:
    """Every experiment name with its claim and title."""
    return {n: f"{e.claim}: {e.title}" for n, e in sorted(_REGISTRY.items())}


def get(name: str) -> Experiment:
    if name not in _REGISTRY:
        raise FlatminimaError(
            f"unknown experiment {name!r}; known experiments: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def run(name: str, *, out: str | Path | None = None, quick: bool = True, seed: int = 0) -> LabResult:
    """Run experiment ``name``; its figure (PNG + SVG), CSV data and ``result.json`` go to ``out/name/``."""
    exp = get(name)
    folder = Path(out or "lab_out") / name
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the lab's models are tiny: one thread avoids contention (and is deterministic)
    try:
        res = exp.fn(folder, quick, seed)
    finally:
        torch.set_num_threads(threads)
    if res["verdict"] not in VERDICTS:
        raise FlatminimaError(f"experiment {name} returned verdict {res['verdict']!r}; allowed {VERDICTS}.")
    result = LabResult(
        name,
        exp.claim,
        exp.title,
        _plain(res["numbers"]),
        res["summary"],
        res["verdict"],
        res["reason"],
        list(res.get("files", [])),
        time.perf_counter() - t0,
    )
    path = folder / "result.json"
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    result.files.append(str(path))
    return result
