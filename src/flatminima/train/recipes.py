"""Training recipes as validated configs: a bad field is refused with its name, value and what is allowed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Recipe(BaseModel):
    """How to train. Unknown fields are refused (a typo must not silently train something else)."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(20, ge=1)
    seed: int = 0
