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


LOSS_HELP = "'cross_entropy', 'mse' or a loss function of your own as 'module:function'"


def _check_loss_name(v: str | None) -> str | None:
    if v is None or v in ("cross_entropy", "mse"):
        return v
    if isinstance(v, str) and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", v):
        return v
    raise ValueError(f"loss must be {LOSS_HELP}")


class CheckpointsSpec(_Strict):
    """Models the user already trained: a CSV ``manifest`` (a ``path`` column relative to the manifest, an
    optional ``seed`` column, every other column a hyperparameter) and the ``model`` factory
    (``module:function``) that builds their architecture. The factory is called with ``options`` and with
    every manifest column its signature names (so a width or depth column builds the right network).
    ``target_train_loss``: checkpoints whose exact training loss is above it are flagged and left out of
    the correlations, as runs that missed the target are (Jiang et al. 2020)."""

    manifest: str
    model: str
    options: dict[str, Any] = Field(default_factory=dict)
    target_train_loss: float | None = Field(None, gt=0)

    @field_validator("model")
    @classmethod
    def _factory(cls, v: str) -> str:
        if ":" not in v:
            raise ValueError("the architecture of the checkpoints is a factory of your own, 'module:function'")
        return v


class TrainSpec(_Strict):
    """The user's own training: ``function = "module:function"`` called once per run as
    ``function(model, data, hyperparameters, seed)`` with the built model, the training data ``(x, y)``, the
    grid point's ``[recipe]`` values (any keys: they are the user's hyperparameters) and the seed; it returns
    the trained model. flatminima then computes the exact final training loss itself."""

    function: str
    target_train_loss: float | None = Field(None, gt=0)

    @field_validator("function")
    @classmethod
    def _function(cls, v: str) -> str:
        if ":" not in v:
            raise ValueError("the training function is a function of your own, 'module:function'")
        return v


class ShiftSpec(_Strict):
    """A shifted test set of the user's: a ``file`` (.npz/.pt with x_test, y_test — or x, y — arrays) or a
    ``factory`` (``module:function`` returning ``(x, y)`` or ``{severity: (x, y)}``) called with ``options``."""

    file: str | None = None
    factory: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> ShiftSpec:
        if (self.file is None) == (self.factory is None):
            raise ValueError("give exactly one of file = '<path>' or factory = 'module:function'")
        return self


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
    loss: str | None = None
    checkpoints: CheckpointsSpec | None = None
    train: TrainSpec | None = None
    targets: dict[str, dict[str, Any]] | None = None
    shifts: dict[str, ShiftSpec] = Field(default_factory=dict)

    @field_validator("loss")
    @classmethod
    def _loss_name(cls, v: str | None) -> str | None:
        return _check_loss_name(v)

    @model_validator(mode="after")
    def _one_source(self) -> StudySpec:
        if self.checkpoints is not None:
            if self.train is not None:
                raise ValueError("[checkpoints] measures models already trained: it cannot have a [train] table")
            if self.recipe:
                raise ValueError("[checkpoints] trains nothing: its hyperparameters are the manifest's columns, "
                                 "so leave out [recipe]")
            if "models" in self.model_fields_set:
                raise ValueError("[checkpoints] names its architecture in checkpoints.model: leave out [models]")
        return self

    @property
    def source(self) -> str:
        """Where the runs' models come from: ``"checkpoints"``, ``"train"`` (the user's function) or
        ``"recipe"`` (flatminima's trainer)."""
        return "checkpoints" if self.checkpoints else "train" if self.train else "recipe"

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
        from ..validate import MAX_SEEDS, SEED_MAX

        if isinstance(v, int) and v < 1:
            raise ValueError(f"seeds = {v}: give a positive count or a non-empty list of integers")
        if isinstance(v, int) and v > MAX_SEEDS:
            raise ValueError(f"seeds = {v}: at most {MAX_SEEDS} seeds per grid point; give a smaller count")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"seeds = {v}: give a non-empty list of distinct integers")
        if isinstance(v, list) and any(not 0 <= s <= SEED_MAX for s in v):
            bad = next(s for s in v if not 0 <= s <= SEED_MAX)
            raise ValueError(f"seed {bad} is out of range: seeds are integers in [0, {SEED_MAX}] (2**32 - 1)")
        return v

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    @property
    def axes(self) -> dict[str, list[Any]]:
        """The swept hyperparameters: ``model`` (if several) and every list-valued recipe field (a
        checkpoint study's axes are its manifest's columns: :func:`axes_of` its runs)."""
        axes: dict[str, list[Any]] = {}
        if len(self.models) > 1:
            axes["model"] = list(self.models)
        axes.update({k: v for k, v in self.recipe.items() if is_sweep(k, v, self.train is None) and len(v) > 1})
        return axes


IDENTITY_VERSION = 2
"""What makes two runs the same run. Version 2: a run's id hashes what trains (or loads) and evaluates its
model — model, options, recipe or hyperparameters, seed, data, shifts, source, loss, dtype, evaluation
settings — and *not* its measures or targets, so adding a measure or a target to a finished study computes
only the new columns from the kept weights. Version 1 (stores without the version) hashed the measures too."""


def _hash(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunConfig:
    """One run: everything that determines its result. ``id`` hashes :meth:`identity` (not the measures or
    targets: see :data:`IDENTITY_VERSION`)."""

    model: str
    model_options: dict
    recipe: dict
    seed: int
    data: dict
    measures: dict
    evaluate: dict
    dtype: str = "float32"
    loss: str | None = None
    source: dict | None = None  # {"kind": "recipe" | "train" | "checkpoint" | "memory", ...}
    targets: dict | None = None
    shifts: dict | None = None

    def identity(self) -> dict[str, Any]:
        """The config that determines the trained model and its evaluation (see :data:`IDENTITY_VERSION`)."""
        out = {"model": self.model, "model_options": self.model_options, "recipe": self.recipe, "seed": self.seed,
               "data": self.data, "evaluate": self.evaluate, "dtype": self.dtype}
        out.update({k: v for k, v in (("loss", self.loss), ("source", self.source), ("shifts", self.shifts))
                    if v})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The whole config a worker gets: :meth:`identity` with the measures and targets to compute."""
        return {**self.identity(), "measures": self.measures, "targets": self.targets}

    @property
    def id(self) -> str:
        return _hash(self.identity())

    @property
    def legacy_id(self) -> str:
        """The id a version-1 store gave this run (it hashed the measures): to resume such a store."""
        return _hash({"model": self.model, "model_options": self.model_options, "recipe": self.recipe,
                      "seed": self.seed, "data": self.data, "measures": self.measures, "evaluate": self.evaluate,
                      "dtype": self.dtype})

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
    if spec.train is None:  # with a training function of the user's, [recipe] holds their own hyperparameters
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


def is_sweep(name: str, value: Any, recipe: bool = True) -> bool:
    """A recipe value is swept when it is a list (for list-valued Recipe fields: a list of lists; with a
    training function of the user's, ``recipe=False``, any list)."""
    if not isinstance(value, list):
        return False
    if not recipe:
        return True
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
    from ..validate import check_measure_settings

    for name, config in spec.measures.items():
        try:  # inf, nan, a tolerance ≥ 1, 1e8 samples: refused by the shared table, before any dry run
            check_measure_settings(name, config)
        except FlatminimaError as err:
            raise FlatminimaError(f"invalid study spec {source}:\n  measures.{err}") from None
    for name, config in spec.measures.items():
        try:
            check_settings(name, config)
        except FlatminimaError as err:
            raise FlatminimaError(f"invalid study spec {source}:\n  {err}") from None


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """The product of list-valued recipe fields (scalars held fixed), in spec order."""
    keys = list(spec.recipe)
    values = [v if is_sweep(k, v, spec.train is None) else [v] for k, v in spec.recipe.items()]
    return [dict(zip(keys, combo, strict=False)) for combo in itertools.product(*values)]


def common_config(spec: StudySpec) -> dict[str, Any]:
    """The parts of every run's config that the spec sets once."""
    return {
        "data": spec.data.model_dump(),
        "measures": spec.measures,
        "evaluate": spec.evaluate.model_dump(),
        "dtype": spec.dtype,
        "loss": spec.loss,
        "targets": spec.targets,
        "shifts": {k: v.model_dump() for k, v in spec.shifts.items()} or None,
    }


def expand(spec: StudySpec) -> list[RunConfig]:
    """Every run of the study: models × recipe grid × seeds (a checkpoint study: one run per manifest row,
    :func:`flatminima.study.sources.checkpoint_runs`)."""
    if spec.checkpoints is not None:
        from .sources import checkpoint_runs

        return checkpoint_runs(spec, RunConfig, common_config(spec))
    source = {"kind": "train", "function": spec.train.model_dump()} if spec.train else None
    return [
        RunConfig(model=m, model_options=opts, recipe=point, seed=seed, source=source, **common_config(spec))
        for m, opts in spec.models.items()
        for point in grid_points(spec)
        for seed in spec.seed_list
    ]


def axes_of(configs: list[RunConfig]) -> dict[str, list[Any]]:
    """The hyperparameters that vary across the runs (``model`` first when several), each with its values in
    order of first appearance."""
    axes: dict[str, list[Any]] = {}
    models = list(dict.fromkeys(c.model for c in configs))
    if len(models) > 1:
        axes["model"] = models
    keys = list(dict.fromkeys(k for c in configs for k in c.recipe))
    for k in keys:
        values = list(dict.fromkeys(json.dumps(c.recipe.get(k), sort_keys=True) for c in configs))
        if len(values) > 1:
            axes[k] = [json.loads(v) for v in values]
    return axes


def load(path: str | Path) -> StudySpec:
    """Read and validate a TOML spec file."""
    path = Path(path)
    if not path.exists():
        raise FlatminimaError(f"study spec {str(path)!r} does not exist; presets: {presets()}.")
    if path.is_dir():
        raise FlatminimaError(f"study spec {str(path)!r} is a folder; give a TOML spec file (or --preset).")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FlatminimaError(f"study spec {str(path)!r} cannot be read ({err.strerror or err}).") from None
    if b"\x00" in data:
        raise FlatminimaError(f"study spec {str(path)!r} is a binary file, not a TOML text file; give the spec "
                              "(.toml) itself.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FlatminimaError(f"study spec {str(path)!r} is not UTF-8 text (byte {data[err.start]:#04x} at "
                              f"offset {err.start}); TOML files are UTF-8: save it again as UTF-8 (e.g. `iconv -f "
                              "latin1 -t utf-8`).") from None
    try:
        raw = tomllib.loads(text)
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
