"""Training: ``fit(model, data, recipe)`` with validated recipes, progress, checkpoints and snapshots."""

from .checkpoint import load_checkpoint, save_checkpoint
from .recipes import Recipe
from .trainer import TrainResult, fit

__all__ = ["Recipe", "TrainResult", "fit", "load_checkpoint", "save_checkpoint"]
