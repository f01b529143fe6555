"""A plain, reproducible training loop with progress, checkpoints and trajectory snapshots."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import NonFiniteLossError
from ..progress import progress_bar
from .checkpoint import load_checkpoint, save_checkpoint
from .recipes import Recipe


@dataclass
class TrainResult:
    """The trained model, per-epoch history, parameter snapshots (flat vectors) and cost."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    snapshots: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0
    checkpoint: str | None = None


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).clone()


def _optimizer(model: nn.Module, r: Recipe) -> torch.optim.Optimizer:
    if r.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)


def fit(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], recipe: Recipe | dict | None = None, *,
        checkpoint_dir: str | Path | None = None, progress: bool = True,
        device: str | torch.device = "cpu") -> TrainResult:
    """Train ``model`` in place on ``data = (X, y)`` with cross-entropy; the same seed gives the same weights.

    With ``checkpoint_dir``, a checkpoint is written after every epoch and an interrupted run resumes from
    the last finished epoch.
    """
    recipe = recipe if isinstance(recipe, Recipe) else Recipe(**(recipe or {}))
    X, y = data
    model.to(device)
    opt = _optimizer(model, recipe)
    result, start_epoch = TrainResult(model), 0
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if ckpt and ckpt.exists():
        blob = load_checkpoint(ckpt, model)
        opt.load_state_dict(blob["optimizer"])
        start_epoch, result.history = int(blob["epoch"]), list(blob.get("history", []))
    gen = torch.Generator().manual_seed(recipe.seed)
    for _ in range(start_epoch):  # advance the shuffling RNG as the finished epochs did
        torch.randperm(len(X), generator=gen)
    t0 = time.perf_counter()
    with progress_bar(recipe.epochs - start_epoch, "training", enabled=progress) as advance:
        for epoch in range(start_epoch, recipe.epochs):
            model.train()
            order, total, count = torch.randperm(len(X), generator=gen), 0.0, 0
            for i in range(0, len(X), recipe.batch_size):
                idx = order[i:i + recipe.batch_size]
                xb, yb = X[idx].to(device), y[idx].to(device)
                loss = nn.functional.cross_entropy(model(xb), yb)
                if not math.isfinite(loss.item()):
                    raise NonFiniteLossError(
                        f"training loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate "
                        f"(now {recipe.lr}) or check the data for NaN/inf.")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + loss.item() * len(idx), count + len(idx)
            result.history.append({"epoch": epoch + 1, "train_loss": total / count})
            result.snapshots.append(_flat(model))
            if ckpt:
                save_checkpoint(ckpt, model, optimizer=opt.state_dict(), epoch=epoch + 1, history=result.history)
            advance(loss=total / count)
    model.eval()
    result.seconds, result.checkpoint = time.perf_counter() - t0, str(ckpt) if ckpt else None
    return result
