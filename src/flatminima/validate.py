"""Numbers, seeds and sizes checked at the boundary, in one place: the CLI, the library (``Recipe``, the
sharpness measures' settings) and the study spec all call these checks, so one setting is judged by one rule
wherever it comes from, and always before any data is loaded or model trained.

- :data:`BOUNDS`: every numeric setting the tool knows by name (learning rate, weight decay, SAM's ρ, noise σ,
  span, tolerances, step and sample counts...), with its range. ``inf``, ``nan`` and absurd values (a learning
  rate of 1e300, a tolerance ≥ 1, 1e8 epochs) are refused with the name, the value as given and what to do.
- :func:`check_seed`: seeds are integers in ``[0, 2**32 - 1]`` (what NumPy, scikit-learn and torch all take).
- :func:`check_workers` and :func:`check_grid`: a worker count or a grid size is checked against this machine
  (CPU cores, available memory) and the message says the limit.

The core layer: it imports nothing but :mod:`flatminima.errors`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import FlatminimaError

SEED_MAX = 2**32 - 1
"""The largest seed: NumPy's legacy generators and scikit-learn take seeds below 2**32."""

MAX_SEEDS = 10_000
"""The most seeds per grid point of a study (each one a whole training run)."""

MAX_CLASSES = 100_000
"""The most classes a data set may have (labels 0..K-1): a label of 1e9 is a typo or a regression target."""

MAX_STEPS = 100_000
"""The most epochs, steps or cycles one setting may ask for (1e8 epochs is a typo, not a plan)."""

MAX_SAMPLES = 1_000_000
"""The most random probes, samples or iterations one setting may ask for."""

MAX_GRID_POINTS = 1_000_000
"""The most points of one landscape grid (a 1001 × 1001 plane); each point is a full pass over the data."""

WORKER_MEMORY = 512 * 2**20
"""Memory one worker process needs at least (Python, torch and a small model): workers × this must fit."""


@dataclass(frozen=True)
class Bound:
    """The range of one numeric setting: ``low``/``high`` (None: unbounded on that side, but always finite),
    open or closed ends, integer or real, and a hint saying what a sensible value is."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    hint: str = ""

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '≥'} {_num(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '≤'} {_num(self.high)}"
        return kind

    def problem(self, value: Any, *, low: bool = True) -> str | None:
        """What is wrong with ``value`` (``"must be ..."``), or None when it is in range; ``low=False`` leaves a
        value below the range to its owner's own rule (which says it in its own words)."""
        must = f"must be {self.describe()}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            what = "a string" if isinstance(value, str) else f"a {type(value).__name__}"
            return f"{must}, not {what}"
        if isinstance(value, float) and not math.isfinite(value):
            return must
        if self.integer and not float(value).is_integer():
            return f"{must} (a whole number)"
        if low and self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return must
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return must
        return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e7 else f"{x:g}"


def _steps(hint: str = "") -> Bound:
    return Bound(1, MAX_STEPS, integer=True, hint=hint)


def _samples(hint: str = "") -> Bound:
    return Bound(1, MAX_SAMPLES, integer=True, hint=hint)


_TOL = Bound(0, 1, low_open=True, high_open=True, hint="a relative tolerance is a small fraction such as 1e-4")

BOUNDS: dict[str, Bound] = {
    # ---- training (Recipe fields and the commands' training options)
    "lr": Bound(0, 1000, low_open=True, hint="typical learning rates are 1e-4 to 1"),
    "curve_lr": Bound(0, 1000, low_open=True, hint="typical learning rates are 1e-4 to 1"),
    "swa_lr": Bound(0, 1000, low_open=True, hint="typical learning rates are 1e-4 to 1"),
    "eta_min": Bound(0, 1000, hint="the lowest learning rate of a cosine schedule, below lr"),
    "momentum": Bound(0, 1, high_open=True, hint="typical momentum is 0.9"),
    "beta1": Bound(0, 1, high_open=True, hint="Adam's β₁ is typically 0.9"),
    "weight_decay": Bound(0, 10, hint="typical weight decay is 0 to 1e-2"),
    "rho": Bound(0, 10, low_open=True, hint="SAM radius is typically 0.01 to 0.5, ASAM up to 2"),
    "noise_std": Bound(0, 10, hint="weight noise σ is typically 1e-3 to 1e-1"),
    "augment_noise": Bound(0, 10, hint="input noise σ is typically 0.01 to 0.1 of the input scale"),
    "augment_shift": Bound(0, 10_000, integer=True, hint="a shift of a few samples or pixels"),
    "asam_eta": Bound(0, 10, hint="ASAM's η is typically 0.01"),
    "grad_clip": Bound(0, 1e6, low_open=True, hint="a gradient-norm cap such as 1 or 10"),
    "gamma": Bound(0, 1, low_open=True, hint="a step schedule's decay factor such as 0.1"),
    "label_smoothing": Bound(0, 1, high_open=True, hint="typical label smoothing is 0.1"),
    "target_train_loss": Bound(0, 1e6, low_open=True, hint="a training loss to stop at, such as 0.01"),
    "epochs": _steps("a run of more epochs is a typo; a few hundred is a long run"),
    "curve_epochs": _steps(),
    "step_size": _steps(),
    "t0": _steps(),
    "t_mult": Bound(1, 100, integer=True, hint="a warm-restart cycle multiplier such as 2"),
    "swa_start": Bound(0, MAX_STEPS, integer=True),
    "swa_anneal_epochs": _steps(),
    "checkpoint_every": _steps(),
    "snapshot_every": _steps(),
    "sam_m": Bound(1, 10**9, integer=True),
    "ensemble": Bound(1, 1000, integer=True, hint="a deep ensemble has a handful of members"),
    # ---- landscapes
    "span": Bound(0, 1000, low_open=True, hint="coefficients run over [-span, span]; typical spans are 0.5 to 2"),
    "steps": Bound(1, 100_001, integer=True, hint="grid points per axis; 51 is typical"),
    "plane_steps": Bound(0, 1001, integer=True, hint="grid points per axis of the plane figure; 31 is typical"),
    "memory_mb": Bound(0, 2**30, low_open=True, hint="megabytes for batched evaluation, such as 256"),
    # ---- curvature and the sharpness measures' settings
    "tol": _TOL,
    "rtol": _TOL,
    "k": Bound(1, 10_000, integer=True, hint="how many top eigenvalues; a few to a few dozen"),
    "samples": _samples(),
    "second_order_samples": _samples(),
    "density_samples": _samples(),
    "density_steps": _steps(),
    "iterations": _samples(),
    "max_iter": _samples(),
    "restarts": Bound(1, 10_000, integer=True),
    "chunk_size": Bound(1, 10**9, integer=True),
    "max_batches": Bound(1, 10**9, integer=True),
    "m": Bound(1, 10**9, integer=True),
    "sigma": Bound(0, 1e6, hint="a perturbation scale such as 0.01"),
    "sigma_init": Bound(0, 1e6),
    "sigma_min": Bound(0, 1e6),
    "sigma_max": Bound(0, 1e6),
    "eps": Bound(0, 1e6),
    "epsilon": Bound(0, 1e6),
    "eta": Bound(0, 1e6),
    "target": Bound(-1e12, 1e12),
    "percentile": Bound(0, 100),
}
"""Every numeric setting known by name (CLI options with their dashes as underscores)."""

MEASURE_NUMBERS = ("tol", "rtol", "k", "samples", "second_order_samples", "iterations", "max_iter", "restarts",
                   "chunk_size", "max_batches", "m", "sigma", "sigma_init", "sigma_min", "sigma_max", "eps", "epsilon",
                   "eta", "target", "percentile", "rho", "steps")
"""The sharpness measures' numeric settings checked by :func:`check_measure_settings` (a measure's
``step_size`` is checked as a finite number ≥ 0; ``steps`` is a count)."""

_MEASURE_STEPS = Bound(1, MAX_SAMPLES, integer=True)
_MEASURE_STEP_SIZE = Bound(0, 1e6)


def _key(name: str) -> str:
    """``--weight-decay`` / ``recipe.weight_decay`` → ``weight_decay`` (the table's name)."""
    return name.rsplit(".", 1)[-1].lstrip("-").replace("-", "_")


def bound_for(name: str) -> Bound | None:
    """The range of the setting ``name`` (a CLI option, a field or a dotted spec path), or None if unknown."""
    return BOUNDS.get(_key(name))


def message(name: str, value: Any, problem: str, hint: str = "") -> str:
    """``"<name> <problem>, got <value>. <hint>."``: the name, the value exactly as given, and what to do."""
    tail = f" ({hint})" if hint else ""
    return f"{name} {problem}, got {value!r}{tail}."


def check_number(name: str, value: Any, bound: Bound | None = None, *, low: bool = True) -> Any:
    """``value`` if it is within ``bound`` (by default the table's bound for ``name``); else a
    :class:`FlatminimaError` naming ``name`` and the value. ``None`` passes (an unset optional setting);
    ``low=False``: see :meth:`Bound.problem`."""
    bound = bound or bound_for(name)
    if value is None or bound is None:
        return value
    problem = bound.problem(value, low=low)
    if problem:
        raise FlatminimaError(message(name, value, problem, bound.hint))
    return value


def check_numbers(values: Mapping[str, Any], prefix: str = "") -> None:
    """Every entry of ``values`` whose name has a bound in :data:`BOUNDS` (others are left to their owner);
    errors name ``prefix + key``."""
    for key, value in values.items():
        if isinstance(key, str) and _key(key) in BOUNDS:
            check_number(prefix + key, value)


def check_seed(name: str, value: Any) -> int:
    """A seed: an integer (not a bool, not a string) in ``[0, 2**32 - 1]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise FlatminimaError(message(name, value, f"must be an integer in [0, {SEED_MAX}] (2**32 - 1)",
                                      "NumPy, scikit-learn and torch all take such seeds; e.g. 0"))
    return value


def check_measure_settings(measure: str, config: Mapping[str, Any]) -> None:
    """The numeric settings of one sharpness measure (numbers, finite, not above their range: counts not absurd,
    tolerances below 1) and its seed, before the measure runs. The lower end of each range, and settings the
    table does not know, are left to the measure itself (its own message says what it needs)."""
    for key, value in config.items():
        where = f"{measure}.{key}"
        if key == "seed":
            if value is not None:
                check_seed(where, value)
        elif key == "step_size" and _is_number(value):
            check_number(where, value, _MEASURE_STEP_SIZE, low=False)
        elif key == "steps" and _is_number(value):
            check_number(where, value, _MEASURE_STEPS, low=False)
        elif key in MEASURE_NUMBERS and _is_number(value):  # a string or None: the measure's own check names it
            check_number(where, value, BOUNDS[key], low=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- the machine ---------------------------------------------------------------------------------------------
def cpu_count() -> int:
    """CPU cores this process may use (its affinity where the OS says, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory available to new work (``MemAvailable`` on Linux, psutil where installed, else free
    pages), or None when the machine does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # optional

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unable to read: fall back to sysconf
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def max_workers() -> tuple[int, str]:
    """The most local worker processes this machine can hold, and why: two per CPU core (at least 4), and no
    more than fit in the available memory at :data:`WORKER_MEMORY` each."""
    cores = cpu_count()
    limit, why = max(4, 2 * cores), f"{cores} CPU core(s): at most max(4, 2 × cores)"
    memory = available_memory()
    if memory is not None and memory // WORKER_MEMORY < limit:
        limit = max(1, memory // WORKER_MEMORY)
        why = f"{memory / 2**30:.1f} GiB available memory at {WORKER_MEMORY // 2**20} MiB per worker"
    return int(limit), why


def check_workers(name: str, workers: Any) -> int:
    """A count of local worker processes: a positive integer this machine can hold (:func:`max_workers`)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise FlatminimaError(message(name, workers, "must be a positive integer", "e.g. 1 or the number of CPU "
                                                                                     "cores"))
    limit, why = max_workers()
    if workers > limit:
        raise FlatminimaError(f"{name} {workers!r} would start more worker processes than this machine can hold: "
                              f"the limit here is {limit} ({why}); give {name} {limit} or fewer.")
    return workers


def check_grid(name: str, points: int, *, bytes_per_point: int = 8, shape: str = "") -> int:
    """A landscape grid of ``points`` evaluations (each a full pass over the data): at most
    :data:`MAX_GRID_POINTS`, and its values must fit in the available memory."""
    shown = f" ({shape})" if shape else ""
    if points > MAX_GRID_POINTS:
        raise FlatminimaError(f"{name} asks for a grid of {points} points{shown}, each a full pass over the data; "
                              f"the limit is {MAX_GRID_POINTS} points (e.g. 1001 × 1001): give fewer {name}.")
    memory = available_memory()
    if memory is not None and points * bytes_per_point > memory // 2:
        raise FlatminimaError(f"{name} asks for a grid of {points} points{shown} needing "
                              f"{points * bytes_per_point / 2**30:.1f} GiB; this machine has "
                              f"{memory / 2**30:.1f} GiB available (the limit is half of it): give fewer {name}.")
    return points
