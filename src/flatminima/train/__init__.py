"""Training toward (or away from) flat minima: ``fit(model, data, recipe)`` with validated recipes
(SGD/GD/Adam/AdamW/RMSProp/AdaGrad, schedules, weight noise, SAM/ASAM, SWA, label smoothing, augmentation),
progress, resumable checkpoints and trajectory snapshots; deep ensembles; evaluation."""

from .checkpoint import load_checkpoint, save_checkpoint
from .ensemble import Ensemble, train_ensemble
from .evaluation import classification_scores, evaluate, evaluate_shifts, predict
from .losses import loss_function
from .optim import make_optimizer, make_scheduler, warm_restart_lr
from .recipes import Recipe, make_recipe
from .trainer import TrainResult, fit, flat_params

__all__ = ["Ensemble", "Recipe", "TrainResult", "classification_scores", "evaluate", "evaluate_shifts", "fit",
           "flat_params", "load_checkpoint", "loss_function", "make_optimizer", "make_recipe", "make_scheduler",
           "predict", "save_checkpoint", "train_ensemble", "warm_restart_lr"]
