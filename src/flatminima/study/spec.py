"""Study specs: a TOML file validated on load, expanded into a grid of runs.

A spec names the data (and its shifts), the models, the recipe grid (each field a value or a list to
sweep), the seeds, the sharpness measures and the executor. Everything is checked before any run
starts: an unknown key, a bad value, an empty sweep or an impossible combination is refused with the
field's path, the bad value and what is allowed.

Recipe fields are *not* listed here: each grid point is validated against
:class:`flatminima.train.Recipe` itself, so new recipe fields (SAM, SWA, augmentation, ...) work in a spec
as soon as the trainer knows them, and a field the trainer does not know is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import sys
import types
import typing
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import FlatminimaError
from ..store import recipe_label  # the label of a stored run: shared with the report

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
"""A study ``name`` is a folder *name* under the output root, never a path: letters, digits, ``_ . -``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    """Which data set; ``options`` go to its loader (``num_samples``, ``seed``, generator overrides)."""

    name: str = "mnist1d"
    options: dict[str, Any] = Field(default_factory=dict)
    shifts: Literal["all", "none"] | list[str] = "all"


class EvaluateSpec(_Strict):
    """Evaluation settings. ECE uses ``ece_bins`` equal-width confidence bins on [0, 1] (Guo et al. 2017)."""

    ece_bins: int = Field(15, ge=2, le=1000)


class ExecutorSpec(_Strict):
    """Where runs execute: a local process pool (``workers``), Ray (``address`` of a cluster, or local), or
    submitit (``cluster = "slurm"``: a SLURM job array per batch of pending runs; ``"local"`` or ``"debug"``
    try the same set-up on this machine). The SLURM settings are passed to ``submitit.AutoExecutor``;
    ``max_retries`` is how often a run whose job or Ray node died is resubmitted before it is marked failed.
    """

    kind: Literal["local", "ray", "submitit"] = "local"
    workers: int = Field(1, ge=1, le=256)
    address: str | None = None
    max_retries: int = Field(2, ge=0, le=100)
    # submitit (kind = "submitit") only
    cluster: Literal["slurm", "local", "debug"] = "slurm"
    partition: str | None = None
    time_min: int | None = Field(None, ge=1)
    timeout_min: int | None = Field(None, ge=1)
    cpus_per_task: int | None = Field(None, ge=1)
    gpus_per_node: int | None = Field(None, ge=0)
    mem_gb: float | None = Field(None, gt=0)
    array_parallelism: int | None = Field(None, ge=1)
    slurm_additional_parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    folder: str | None = None

    @model_validator(mode="after")
    def _address_needs_ray(self) -> ExecutorSpec:
        if self.address is not None and self.kind != "ray":
            raise ValueError(
                f"address={self.address!r} is only meaningful with kind='ray' (got kind={self.kind!r})"
            )
        return self

    @model_validator(mode="after")
    def _submitit_settings(self) -> ExecutorSpec:
        submitit_only = ("cluster", "partition", "time_min", "timeout_min", "cpus_per_task", "gpus_per_node",
                         "mem_gb", "array_parallelism", "slurm_additional_parameters", "folder")
        # a set value differs from its default (a spec dumped and validated again lists every field as set)
        given = sorted(k for k in submitit_only if getattr(self, k) != type(self).model_fields[k].get_default(
            call_default_factory=True))
        if given and self.kind != "submitit":
            raise ValueError(f"{given[0]} is only meaningful with kind='submitit' (got kind={self.kind!r})")
        if self.max_retries != type(self).model_fields["max_retries"].default and self.kind == "local":
            raise ValueError("max_retries is only meaningful with kind='ray' or 'submitit' (got kind='local')")
        if self.time_min is not None and self.timeout_min is not None:
            raise ValueError(f"give time_min or timeout_min (the same SLURM time limit), not both "
                             f"(got {self.time_min} and {self.timeout_min})")
        return self

    @property
    def time_limit_min(self) -> int:
        """The time limit of each job in minutes: ``time_min`` or ``timeout_min``, else 60."""
        return self.time_min or self.timeout_min or 60


class StudySpec(_Strict):
    """A whole study. ``recipe`` values that are lists are swept; ``seeds`` is a count or a list.

    ``dtype`` is the precision the sharpness measures run in (the Objective's parameters and data):
    ``"float32"`` by default (a float64 CNN Hessian-vector product costs several times a float32 one; the
    Objective's reductions and the Lanczos tridiagonal problem are kept in float64 regardless), or
    ``"float64"`` for reference-grade numbers. Training always runs in the model's own dtype.
    """

    name: str = "study"
    data: DataSpec = Field(default_factory=DataSpec)
    models: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"mlp": {}})
    recipe: dict[str, Any] = Field(default_factory=dict)
    seeds: int | list[int] = 2
    measures: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"lambda_max": {}})
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    dtype: Literal["float32", "float64"] = "float32"

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not re.fullmatch(NAME_PATTERN, v) or ".." in v:
            raise ValueError(
                "a study name is a folder name under the output root, not a path: up to 100 letters, digits, "
                "'_', '.' or '-', starting with a letter or digit, no '..' (choose the folder with --out)"
            )
        return v

    @field_validator("models", "measures")
    @classmethod
    def _non_empty_table(cls, v: dict) -> dict:
        if not v:
            raise ValueError("must name at least one entry")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds_valid(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"seeds = {v}: give a positive count or a non-empty list of integers")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"seeds = {v}: give a non-empty list of distinct integers")
        return v

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    @property
    def axes(self) -> dict[str, list[Any]]:
        """The swept hyperparameters: ``model`` (if several) and every list-valued recipe field."""
        axes: dict[str, list[Any]] = {}
        if len(self.models) > 1:
            axes["model"] = list(self.models)
        axes.update({k: v for k, v in self.recipe.items() if is_sweep(k, v) and len(v) > 1})
        return axes


@dataclass(frozen=True)
class RunConfig:
    """One run: everything that determines its result. ``id`` hashes (config, seed)."""

    model: str
    model_options: dict
    recipe: dict
    seed: int
    data: dict
    measures: dict
    evaluate: dict
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_options": self.model_options,
            "recipe": self.recipe,
            "seed": self.seed,
            "data": self.data,
            "measures": self.measures,
            "evaluate": self.evaluate,
            "dtype": self.dtype,
        }

    def as_dict(self) -> dict[str, Any]:
        """Deprecated name of :meth:`to_dict`."""
        warnings.warn("RunConfig.as_dict() is deprecated; use RunConfig.to_dict().", DeprecationWarning,
                      stacklevel=2)
        return self.to_dict()

    @property
    def id(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """The recipe (no seed) as a short string: the colour key of the report's scatter plots."""
        return recipe_label(self.model, self.recipe)


def _format_errors(err: ValidationError, source: str, prefix: str = "") -> FlatminimaError:
    lines = []
    for e in err.errors():
        path = prefix + ".".join(str(p) for p in e["loc"] if p not in ("function-after",))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (a typo?)"
        lines.append(f"  {path or '(top level)'} = {e.get('input')!r}: {msg}")
    return FlatminimaError(f"invalid study spec {source}:\n" + "\n".join(lines))


def validate(spec: StudySpec | dict[str, Any], source: str = "(dict)") -> StudySpec:
    """A :class:`StudySpec` whose every grid point is a valid ``Recipe`` and every measure is known."""
    if not isinstance(spec, StudySpec):
        try:
            spec = StudySpec.model_validate(spec)
        except ValidationError as err:
            raise _format_errors(err, source) from None
    _check_recipes(spec, source)
    _check_measures(spec, source)
    return spec


def _sequence_field(name: str) -> bool:
    """Whether a Recipe field itself takes a list/tuple (``augment``, ``betas``): then only a list of
    lists is a sweep."""
    from ..train import Recipe

    field = Recipe.model_fields.get(name)
    if field is None:
        return False
    ann = field.annotation
    kinds = [
        typing.get_origin(a) or a
        for a in (
            typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
        )
    ]
    return any(k in (list, tuple) for k in kinds)


def is_sweep(name: str, value: Any) -> bool:
    """A recipe value is swept when it is a list (for list-valued fields: a list of lists)."""
    if not isinstance(value, list):
        return False
    return not _sequence_field(name) or (bool(value) and all(isinstance(v, list) for v in value))


def _check_recipes(spec: StudySpec, source: str) -> None:
    from ..train import Recipe

    head = f"invalid study spec {source}:\n"
    allowed = sorted(set(Recipe.model_fields) - {"seed"})
    for key, value in spec.recipe.items():
        if key == "seed":
            raise FlatminimaError(
                head + f"  recipe.seed = {value!r}: the seed is set by the study's top-level "
                "`seeds` (a count or a list), not in [recipe]"
            )
        if key not in Recipe.model_fields:
            raise FlatminimaError(
                head + f"  recipe.{key} = {value!r}: unknown recipe field; Recipe accepts {allowed}"
            )
        if isinstance(value, list) and not value:
            raise FlatminimaError(
                head + f"  recipe.{key} = []: an empty sweep; give a value or a non-empty list"
            )
        if is_sweep(key, value) and len(set(map(repr, value))) != len(value):
            raise FlatminimaError(
                head + f"  recipe.{key} = {value!r}: a swept value repeats; list distinct values"
            )
    for point in grid_points(spec):
        try:
            Recipe(**point, seed=spec.seed_list[0])
        except ValidationError as err:
            raise _format_errors(err, source + f" (grid point {point})", prefix="recipe.") from None


def _check_measures(spec: StudySpec, source: str) -> None:
    from .measures import available, check_settings, settings

    known = available()
    for name, config in spec.measures.items():
        if name not in known:
            raise FlatminimaError(
                f"invalid study spec {source}:\n  measures.{name}: unknown measure; available: {known}"
            )
        allowed = settings(name)
        unknown = sorted(set(config) - set(allowed)) if allowed is not None else []
        if unknown:
            raise FlatminimaError(
                f"invalid study spec {source}:\n  measures.{name}.{unknown[0]} = "
                f"{config[unknown[0]]!r}: unknown setting; {name} takes {sorted(allowed)}"
            )
    from ..sharpness.registry import renamed_settings

    for name, config in spec.measures.items():
        renames = renamed_settings(name)
        for old in sorted(set(config) & set(renames)):  # said here: the dry run below is cached
            warnings.warn(f"{source}: measures.{name}: the keyword {old!r} is deprecated; use "
                          f"{renames[old]!r}.", DeprecationWarning, stacklevel=4)
        try:
            check_settings(name, config)
        except FlatminimaError as err:
            raise FlatminimaError(f"invalid study spec {source}:\n  {err}") from None


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """The product of list-valued recipe fields (scalars held fixed), in spec order."""
    keys = list(spec.recipe)
    values = [v if is_sweep(k, v) else [v] for k, v in spec.recipe.items()]
    return [dict(zip(keys, combo, strict=False)) for combo in itertools.product(*values)]


def expand(spec: StudySpec) -> list[RunConfig]:
    """Every run of the study: models × recipe grid × seeds."""
    common = {
        "data": spec.data.model_dump(),
        "measures": spec.measures,
        "evaluate": spec.evaluate.model_dump(),
        "dtype": spec.dtype,
    }
    return [
        RunConfig(model=m, model_options=opts, recipe=point, seed=seed, **common)
        for m, opts in spec.models.items()
        for point in grid_points(spec)
        for seed in spec.seed_list
    ]


def load(path: str | Path) -> StudySpec:
    """Read and validate a TOML spec file."""
    path = Path(path)
    if not path.exists():
        raise FlatminimaError(f"study spec {str(path)!r} does not exist; presets: {presets()}.")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise FlatminimaError(f"study spec {str(path)!r} is not valid TOML: {err}") from None
    if not raw:
        raise FlatminimaError(
            f"study spec {str(path)!r} is empty; a spec names at least its models, recipe and measures "
            f"(start from a preset: `flatminima study run --preset quick`, presets: {presets()})."
        )
    return validate(raw, source=repr(str(path)))


def presets() -> list[str]:
    """Names of the specs shipped in the package (``flatminima/study/presets/*.toml``)."""
    folder = resources.files("flatminima.study") / "presets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_text(name: str) -> str:
    if name not in presets():
        raise FlatminimaError(f"unknown preset {name!r}; shipped: {presets()}.")
    return (resources.files("flatminima.study") / "presets" / f"{name}.toml").read_text()


def load_preset(name: str) -> StudySpec:
    """A shipped spec by name, validated like a user's file."""
    return validate(tomllib.loads(preset_text(name)), source=f"preset {name!r}")
