"""Training recipes as validated configs: a bad field is refused with its name, value and what is allowed.

One :class:`Recipe` covers every recipe ``fit`` knows: the optimiser (SGD with momentum/Nesterov,
full-batch GD via ``batch_size="full"``, Adam, AdamW, RMSProp, AdaGrad), the learning-rate schedule,
weight-noise injection, SAM/ASAM, SWA, label smoothing, augmentation and matched-loss stopping
(``target_train_loss``). Dropout and BatchNorm belong to
the model (``flatminima.models``); deep ensembles are :func:`flatminima.train.train_ensemble`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..errors import FlatminimaError
from ..validate import SEED_MAX, bound_for

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "cosine", "warm_restarts")
NOISES = ("none", "gaussian", "pgd", "anticorrelated")
SAMS = ("none", "sam", "asam")
AUGMENTS = ("shift", "noise", "flip")


class Recipe(BaseModel):
    """How to train. Unknown fields are refused (a typo must not silently train something else)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # optimiser
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"] = "sgd"
    lr: float = Field(0.05, gt=0, description="learning rate (the peak rate under a schedule)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD and RMSProp momentum")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD, needs momentum > 0)")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for AdamW)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam/AdamW moment decay rates")
    batch_size: int | Literal["full"] = Field(
        64, description="mini-batch size, a positive integer (capped at the number of samples); 'full' or 0 both "
        "mean full-batch gradient descent: every step uses all the training data in one batch")
    epochs: int = Field(20, ge=1, description="epochs to train (the cap when target_train_loss is set)")
    target_train_loss: float | None = Field(
        None, description="stop at the first epoch end where the exact train loss (eval mode, all training "
                          "data, no smoothing) is <= this; epochs is then the cap")
    seed: int = 0
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1,
                                   description="cross-entropy label smoothing (Szegedy 2016)")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    # schedule (stepped once per epoch)
    schedule: Literal["constant", "step", "cosine", "warm_restarts"] = "constant"
    step_size: int = Field(10, ge=1, description="step schedule: epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="step schedule: decay factor")
    t0: int = Field(10, ge=1,
                    description="warm restarts: epochs of the first cycle (Loshchilov & Hutter 2017)")
    t_mult: int = Field(1, ge=1, description="warm restarts: cycle length multiplier")
    eta_min: float = Field(0.0, ge=0, description="cosine schedules: the lowest learning rate")
    # weight noise
    noise: Literal["none", "gaussian", "pgd", "anticorrelated"] = "none"
    noise_std: float = Field(0.01, ge=0, description="σ of the injected weight noise N(0, σ²I)")
    # SAM / ASAM
    sam: Literal["none", "sam", "asam"] = "none"
    rho: float = Field(0.05, gt=0, description="SAM neighbourhood radius ρ")
    sam_m: int | None = Field(None, ge=1, description="m-sharpness: perturb per chunk of m samples")
    asam_eta: float = Field(0.01, ge=0, description="ASAM's η in T_w = |w| + η")
    # SWA
    swa: bool = False
    swa_start: int = Field(1, ge=0, description="SWA: average the weights after each epoch > swa_start")
    swa_lr: float | None = Field(None, gt=0, description="SWA: constant learning rate (SWALR) from swa_start")
    swa_anneal_epochs: int = Field(1, ge=1)
    # augmentation
    augment: list[Literal["shift", "noise", "flip"]] = Field(default_factory=list)
    augment_shift: int = Field(2, ge=0, description="largest random shift (samples or pixels)")
    augment_noise: float = Field(0.05, ge=0, description="σ of additive input noise")
    # bookkeeping
    checkpoint_every: int = Field(1, ge=1, description="write a checkpoint every N epochs (and at the end)")
    snapshot_every: int = Field(1, ge=1, description="keep a flat weight snapshot every N epochs")

    @field_validator("*", mode="before")
    @classmethod
    def _in_range(cls, v: object, info: object) -> object:
        """Every numeric field through the shared table (flatminima.validate): finite, in range, a number and
        not a string or a bool; the seed an integer in [0, 2**32 - 1]; Adam's betas each in [0, 1)."""
        name = getattr(info, "field_name", "")
        if name == "seed":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= SEED_MAX:
                raise PydanticCustomError("seed", "{text}", {"text": f"must be an integer in [0, {SEED_MAX}] "
                                                                    "(2**32 - 1), e.g. 0"})
            return v
        if name == "betas" and isinstance(v, (list, tuple)):
            for b in v:
                if isinstance(b, bool) or not isinstance(b, (int, float)) or not (0 <= b < 1):
                    raise PydanticCustomError("betas", "{text}", {"text": "must be two numbers in [0, 1) "
                                                                          "such as (0.9, 0.999)"})
            return v
        bound = bound_for(name) if name != "target_train_loss" else None  # its own validator below says it
        if bound is not None and v is not None:  # below the range: the field's own rule says it (Field(gt=0)...)
            problem = bound.problem(v, low=False)
            if problem:
                hint = f" ({bound.hint})" if bound.hint else ""
                raise PydanticCustomError("out_of_range", "{text}", {"text": problem + hint})
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("batch_size must be a positive integer, or 'full' / 0 for full-batch GD")
        return v

    @field_validator("target_train_loss")
    @classmethod
    def _target(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError("target_train_loss must be a finite training loss > 0 to stop at; "
                             "leave it unset to train for exactly `epochs` epochs")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov=True needs optimizer='sgd' and momentum > 0")
        if self.swa and self.swa_start >= self.epochs:
            raise ValueError(f"swa_start={self.swa_start} must be below epochs={self.epochs} "
                             "(SWA averages the epochs after swa_start)")
        if self.swa and self.target_train_loss is not None:
            raise ValueError("target_train_loss cannot be combined with swa=True: the stopping test would "
                             "judge the SGD iterate, not the SWA average the run returns; use one or the other")
        if self.sam != "none" and self.noise != "none":
            raise ValueError("combine SAM with weight noise is not supported; choose one of sam or noise")
        if self.label_smoothing and self.loss != "cross_entropy":
            raise ValueError("label_smoothing applies to loss='cross_entropy' only")
        return self

    def batch_for(self, n: int) -> int:
        """The mini-batch size on ``n`` samples (``n`` for full-batch GD)."""
        return n if self.batch_size in ("full", 0) else min(int(self.batch_size), n)

    @classmethod
    def from_toml(cls, path: str) -> Recipe:
        """A recipe from a TOML file (top-level keys, or a ``[recipe]`` table)."""
        import tomllib

        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        return make_recipe(raw.get("recipe", raw))


def make_recipe(recipe: Recipe | dict | None = None, **overrides) -> Recipe:
    """A validated :class:`Recipe` from a recipe, a dict or keywords; errors become :class:`FlatminimaError`
    naming each bad field, its value and the rule it broke."""
    if isinstance(recipe, Recipe) and not overrides:
        return recipe
    if recipe is not None and not isinstance(recipe, (Recipe, dict)):
        raise FlatminimaError(f"recipe must be a flatminima.train.Recipe, a dict of its fields or None, got "
                              f"{type(recipe).__name__} {recipe!r:.60}; e.g. Recipe(optimizer='sgd', lr=0.1).")
    base = recipe.model_dump() if isinstance(recipe, Recipe) else dict(recipe or {})
    try:
        return Recipe(**{**base, **overrides})
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"]) or "recipe"
            shown = "input" in e and e["type"] != "missing" and where != "recipe"
            got = f" (got {e['input']!r})" if shown else ""
            lines.append(f"{where}: {e['msg']}{got}")
        extra = any(e["type"] == "extra_forbidden" for e in err.errors())
        known = f" Known fields: {sorted(Recipe.model_fields)}." if extra else ""
        raise FlatminimaError("invalid training recipe: " + "; ".join(lines) + "." + known) from None
