"""Optimisers and learning-rate schedules from ``torch.optim`` for a :class:`Recipe`.

Schedules are stepped once per epoch:
- constant: η_t = η;  step: η_t = η·γ^⌊t/step_size⌋;
- cosine (Loshchilov & Hutter 2017, no restart): η_t = η_min + ½(η − η_min)(1 + cos(π t / T)), T = epochs;
- warm_restarts (SGDR, Loshchilov & Hutter 2017): η_t = η_min + ½(η − η_min)(1 + cos(π T_cur / T_i)),
  T_cur epochs since the last restart, T_i = t0·t_mult^i the length of cycle i.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import lr_scheduler

from .recipes import Recipe


def make_optimizer(params, r: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params`` (a model's parameters or parameter groups)."""
    params = list(params.parameters()) if isinstance(params, nn.Module) else list(params)
    if r.optimizer == "sgd":
        return torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov,
                               weight_decay=r.weight_decay)
    if r.optimizer == "adam":
        return torch.optim.Adam(params, lr=r.lr, betas=r.betas, weight_decay=r.weight_decay)
    if r.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=r.lr, betas=r.betas, weight_decay=r.weight_decay)
    if r.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
    return torch.optim.Adagrad(params, lr=r.lr, weight_decay=r.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, r: Recipe) -> lr_scheduler.LRScheduler:
    """The recipe's per-epoch schedule (``LambdaLR`` ≡ 1 for a constant rate, so every run has one)."""
    if r.schedule == "step":
        return lr_scheduler.StepLR(opt, step_size=r.step_size, gamma=r.gamma)
    if r.schedule == "cosine":
        return lr_scheduler.CosineAnnealingLR(opt, T_max=r.epochs, eta_min=r.eta_min)
    if r.schedule == "warm_restarts":
        return lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=r.t0, T_mult=r.t_mult, eta_min=r.eta_min)
    return lr_scheduler.LambdaLR(opt, lambda _epoch: 1.0)


def warm_restart_lr(epoch: int, lr: float, t0: int, t_mult: int = 1, eta_min: float = 0.0) -> float:
    """SGDR's closed form η(epoch) (Loshchilov & Hutter 2017, eq. 5), for checking and plotting."""
    import math

    t_cur, t_i = epoch, t0
    while t_cur >= t_i:
        t_cur, t_i = t_cur - t_i, t_i * t_mult
    return eta_min + 0.5 * (lr - eta_min) * (1 + math.cos(math.pi * t_cur / t_i))
