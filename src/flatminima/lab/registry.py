"""The lab's registry: one :class:`ClaimSpec` per claim — statement, experiment, hypothesis, measured quantity,
pre-registered rule, power note — is the single source of truth for the lab, the claims report, the docs
table and the tests.

An experiment is ``fn(ctx: Context) -> Outcome`` registered with ``@experiment(ClaimSpec(...))``. The
registry decides the verdict from the outcome's sub-tests (:func:`flatminima.lab.rules.combine`); the
experiment never writes a verdict itself.
"""

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
from . import rules
from .rules import Outcome, seed_set


@dataclass(frozen=True)
class ClaimSpec:
    """A claim and its pre-registered test, written before any data.

    ``kind`` is ``"test"`` (three-valued verdict) or ``"demonstration"`` (a definition or constructed
    mechanism: numbers and a figure, no verdict). ``n_full`` / ``n_quick``: seeds (or configurations) per
    seed set; ``quick_powered`` says whether the quick run has the power of the full one (otherwise quick
    reports ``inconclusive (quick)``). ``bench_group``: claims that share trained models (one process runs
    them in a parallel claims run); ``cost_s``: CPU seconds of one full-mode seed set on one core,
    extrapolated from a measured quick run (balances the parallel claims run; 0 = unknown)."""

    claim: str
    experiment: str
    statement: str
    hypothesis: str
    quantity: str
    rule: str
    power: str
    n_full: int
    n_quick: int
    kind: str = "test"
    quick_powered: bool = False
    bench_group: str = ""
    cost_s: float = 0.0

    @property
    def number(self) -> int:
        return int(self.claim[1:])


@dataclass
class Context:
    """What an experiment gets: its output folder, quick or full, its (disjoint) seeds and a bench that
    shares trained models between experiments of one claims run."""

    out: Path
    quick: bool
    seeds: list[int]
    index: int = 0
    bench: Any = None

    def workbench(self):
        if self.bench is None:
            from .bench import Bench

            self.bench = Bench()
        return self.bench


@dataclass
class LabResult:
    """One experiment's outcome on one seed set: sub-tests with intervals, the combined verdict, files."""

    name: str
    claim: str
    title: str
    summary: str
    verdict: str
    subtests: list[dict]
    numbers: dict[str, Any]
    seeds: list[int]
    n: int
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Experiment:
    spec: ClaimSpec
    fn: Callable[[Context], Outcome]

    @property
    def name(self) -> str:
        return self.spec.experiment

    @property
    def claim(self) -> str:
        return self.spec.claim

    @property
    def title(self) -> str:
        return self.spec.statement


_REGISTRY: dict[str, Experiment] = {}


def experiment(spec: ClaimSpec) -> Callable:
    """Register ``fn(ctx) -> Outcome`` as the experiment of ``spec``."""
    if spec.kind not in ("test", "demonstration"):
        raise FlatminimaError(f"{spec.claim}: kind must be 'test' or 'demonstration', got {spec.kind!r}.")

    def wrap(fn: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        _REGISTRY[spec.experiment] = Experiment(spec, fn)
        return fn

    return wrap


def specs() -> list[ClaimSpec]:
    """Every registered claim, in claim order (C1, C2, …)."""
    return sorted((e.spec for e in _REGISTRY.values()), key=lambda s: s.number)


def available() -> dict[str, str]:
    """Every experiment name with its claim and statement."""
    return {n: f"{e.claim}: {e.title}" for n, e in sorted(_REGISTRY.items())}


def get(name: str) -> Experiment:
    if name not in _REGISTRY:
        raise FlatminimaError(
            f"unknown experiment {name!r}; known experiments: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def run(name: str, *, out: str | Path | None = None, quick: bool = True, seed: int = 0,
        bench: Any = None) -> LabResult:
    """Run experiment ``name`` on seed set ``seed`` (seeds seed·n … seed·n + n − 1, disjoint for distinct
    ``seed``); its figure (PNG + SVG), CSV data and ``result.json`` go to ``out/name/seed<k>/``."""
    exp = get(name)
    spec = exp.spec
    n = spec.n_quick if quick else spec.n_full
    folder = Path(out or "lab_out") / name / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(folder, quick, seed_set(seed, n), seed, bench)
    t0, c0 = time.perf_counter(), time.process_time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the lab's models are tiny: one thread avoids contention (and is deterministic)
    try:
        res = exp.fn(ctx)
    finally:
        torch.set_num_threads(threads)
    if not isinstance(res, Outcome):
        raise FlatminimaError(f"experiment {name} returned {type(res).__name__}, expected lab.rules.Outcome.")
    verdict = res.verdict
    if spec.kind == "demonstration":
        verdict = rules.DEMONSTRATION
    elif quick and not spec.quick_powered:
        verdict = rules.QUICK
    result = LabResult(
        name, spec.claim, spec.statement, res.summary, verdict,
        # "interval" stays the (estimate, low, high) list the claims report reads; "estimate" is the same
        # interval as the library's one uncertainty record (flatminima.results.Estimate.to_dict)
        [_plain(asdict(s)) | {"interval": list(s.interval.triple()), "estimate": _plain(s.estimate.to_dict())}
         for s in res.subtests],
        _plain(res.numbers) | {"raw_verdict": res.verdict}, ctx.seeds, res.n or n, list(res.files),
        time.perf_counter() - t0, time.process_time() - c0,
    )
    path = folder / "result.json"
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    result.files.append(str(path))
    return result
