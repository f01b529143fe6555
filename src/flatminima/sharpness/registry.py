"""The measure registry: ``@register(name, description)`` on a function, ``measure(obj, name, **config)``.

A measure is a plain function ``f(obj, *, key=default, ...) -> Measure`` whose keyword arguments are its
config. The registry checks the config keys against the signature, records every setting (defaults
included) and meters the cost around the call, so a measure never counts its own work by hand.

One call shape: every measure accepts ``seed=`` (as every curvature algorithm does). A measure that
draws random numbers takes it as a keyword and ``.config["seed"]`` records the seed used. A
deterministic measure (no randomness: ``fisher_rao``, ``relative_flatness``) accepts and ignores it, and
says so: ``.config["seed"]`` is ``None`` and ``.config["seed_note"]`` is :data:`DETERMINISTIC`, whether or
not a seed was passed, so a loop ``measure(obj, name, seed=s)`` over :func:`available` works unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import FlatminimaError
from ..objective import Objective
from .result import Measure


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Measure]
    description: str

    def defaults(self) -> dict[str, Any]:
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


_REGISTRY: dict[str, Entry] = {}


def accepted_settings(name: str) -> list[str]:
    """The settings ``name`` takes (its keyword arguments; ``seed`` is accepted by every measure)."""
    return list(entry(name).defaults())


DETERMINISTIC = "ignored: deterministic measure, the seed has no effect"


def register(name: str, description: str) -> Callable[[Callable[..., Measure]], Callable[..., Measure]]:
    """Decorator: make ``fn(obj, **config)`` available as ``measure(obj, name, **config)``."""

    def wrap(fn: Callable[..., Measure]) -> Callable[..., Measure]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise FlatminimaError(f"a sharpness measure named {name!r} is already registered.")
        _REGISTRY[name] = Entry(name, fn, description)
        return fn

    return wrap


def available() -> dict[str, str]:
    """Every registered measure name with its one-line description.

    Examples:
        >>> from flatminima.sharpness import available
        >>> names = available()
        >>> "lambda_max" in names and "worst_case" in names and "pac_bayes" in names
        True
    """
    return {name: entry.description for name, entry in sorted(_REGISTRY.items())}


def entry(name: str) -> Entry:
    if name not in _REGISTRY:
        lines = "\n".join(f"  {n}: {d}" for n, d in available().items())
        raise FlatminimaError(f"unknown sharpness measure {name!r}; available:\n{lines}")
    return _REGISTRY[name]


def check_call(obj: Any, name: Any, config: dict[str, Any], where: str = "flatminima.sharpness.measure") -> None:
    """The arguments of a measure call, before any work: ``obj`` an :class:`~flatminima.Objective` (a model, a
    tensor or a string is named as such, with how to make one), ``name`` a string, and the numeric settings
    finite and in range (:func:`flatminima.validate.check_measure_settings`: inf, nan, a tolerance ≥ 1, a string
    seed, 1e8 samples)."""
    from ..validate import check_measure_settings

    if not isinstance(obj, Objective):
        hint = (" (a model: wrap it first, Objective(model, loss_fn, (x, y)))" if hasattr(obj, "parameters")
                else "")
        raise FlatminimaError(f"{where}: obj must be a flatminima.Objective, got "
                              f"{type(obj).__name__} {_short(obj)}".rstrip() + f"{hint}.")
    if not isinstance(name, str):
        raise FlatminimaError(f"{where}: name must be a measure name (a string, see "
                              f"flatminima.sharpness.available()), got {type(name).__name__} {name!r}.")
    check_measure_settings(name, config)


def _short(value: Any) -> str:
    """``value``'s repr where it is short and one line (a string, a number), else nothing."""
    text = repr(value)
    return text if isinstance(value, (str, int, float)) and len(text) <= 60 and "\n" not in text else ""


def measure(obj: Objective, name: str, **config: Any) -> Measure:
    """Compute the measure ``name`` on ``obj`` with ``config``; see :func:`available` for the names.

    ``seed`` is accepted by every measure; a deterministic one ignores it (recorded in ``.config``).

    Examples:
        >>> import torch
        >>> from flatminima import Objective
        >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        >>> obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.ones(3, dtype=torch.float64))
        >>> from flatminima.sharpness import measure
        >>> m = measure(obj, "lambda_max", seed=0)
        >>> round(m.value, 6), m.cost.hvps > 0
        (3.0, True)
        >>> m = measure(obj, "trace", method="hutchinson", samples=10, seed=0)
        >>> round(m.value, 6), m.config["samples"]
        (6.0, 10)
    """
    check_call(obj, name, config)
    e = entry(name)
    allowed = e.defaults()
    takes_seed = "seed" in allowed
    if not takes_seed:
        seed = config.pop("seed", None)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise FlatminimaError(f"seed must be an integer, got {seed!r}.")
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        allowed_names = sorted(set(allowed) | {"seed"})
        raise FlatminimaError(f"{name} does not take {unknown}; its settings are {allowed_names}.")
    with obj.meter() as cost:
        result = e.fn(obj, **config)
    # Work done on derived objectives (m-sharpness batches, logit-normalised losses) is in result.cost.
    result.cost = cost + result.cost
    result.cost.seconds = cost.seconds
    result.name = name
    result.config = {**allowed, **config, **result.config}
    if not takes_seed:
        result.config |= {"seed": None, "seed_note": DETERMINISTIC}
    return result


def measure_all(obj: Objective, names: list[str] | None = None, *, settings: dict[str, Any] | None = None,
                seed: int | None = None) -> dict[str, Measure]:
    """Several measures at once. ``settings`` maps ``"name.key"`` to a value for one measure, or ``"key"``
    for every chosen measure that takes that key; ``seed`` goes to every measure (see the module docstring)."""
    names = list(available()) if not names else list(names)
    per = settings_per_measure(names, settings, seed)
    return {n: measure(obj, n, **per[n]) for n in names}


def settings_per_measure(names: list[str], settings: dict[str, Any] | None = None,
                         seed: int | None = None) -> dict[str, dict[str, Any]]:
    """Each measure's config from shared ``settings``, as :func:`measure_all` and ``flatminima sharpness
    --set`` read them: ``"name.key"`` sets ``key`` for the measure ``name`` alone, ``"key"`` for every one
    of ``names`` that takes ``key`` (see :func:`accepted_settings`). ``seed``
    (when not None) goes to every measure that was not given one. Checks the names and the settings before
    any work: an unknown measure, a ``"name.key"`` naming a measure not among ``names``, or a ``"key"`` no
    chosen measure takes raises FlatminimaError (unknown keys of one measure are left to :func:`measure`)."""
    names = list(names)
    for n in names:
        entry(n)  # fail on a bad name before any work
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in dict(settings or {}).items():
        target, _, k = key.rpartition(".")
        chosen = [target] if target else [n for n in names if k in accepted_settings(n) or k == "seed"]
        for n in chosen:
            if n not in per:
                raise FlatminimaError(f"setting {key!r} names measure {n!r}, which is not among {names}.")
            per[n][k] = value
        if not chosen:
            raise FlatminimaError(f"no chosen measure takes the setting {k!r}; chosen: {names}.")
    if seed is not None:
        for n in names:  # every measure accepts a seed; the deterministic ones record that they ignore it
            per[n].setdefault("seed", seed)
    return per
