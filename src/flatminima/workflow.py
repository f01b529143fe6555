"""The first steps every command shares: get data, get a (trained) model, build the Objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import Dataset, load, load_file
from .models import build
from .objective import Objective
from .train import Recipe, fit, load_checkpoint


def get_data(data: str = "mnist1d", **kwargs: Any) -> Dataset:
    """A built-in data set by name, or a user's ``.npz`` file by path."""
    if data.endswith(".npz") or Path(data).suffix:
        return load_file(data)
    return load(data, **kwargs)


def get_model(model: str, dataset: Dataset, *, checkpoint: str | None = None, recipe: Recipe | dict | None = None,
              out_dir: str | None = None, progress: bool = True, **model_kwargs: Any) -> tuple[nn.Module, dict]:
    """Build ``model`` (built-in name or ``module:factory``); load ``checkpoint`` or else train it."""
    torch.manual_seed(recipe.seed if isinstance(recipe, Recipe) else (recipe or {}).get("seed", 0))
    net = build(model, dataset.input_shape, dataset.num_classes, **model_kwargs)
    if checkpoint:
        load_checkpoint(checkpoint, net)
        return net.eval(), {"checkpoint": checkpoint}
    result = fit(net, dataset.train, recipe, checkpoint_dir=out_dir, progress=progress)
    return net.eval(), {"trained": True, "history": result.history[-1], "seconds": result.seconds,
                        "checkpoint": result.checkpoint}


def objective_for(model: nn.Module, dataset: Dataset, *, split: str = "train", dtype: str = "float32",
                  device: str | None = None, params: list[str] | None = None, batch_size: int = 1024) -> Objective:
    """The full-data cross-entropy objective of ``model`` on the chosen split."""
    data = dataset.train if split == "train" else dataset.test
    return Objective(model, "cross_entropy", data, dtype=getattr(torch, dtype), device=device, params=params,
                     batch_size=batch_size)
