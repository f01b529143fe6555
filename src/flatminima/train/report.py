"""What a training run writes: final metrics (train, test, each shift) as JSON and the training curve
(PNG + SVG + CSV via ``flatminima.plotting``)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from .evaluation import evaluate, evaluate_shifts


def run_metrics(model: nn.Module, dataset, *, loss: str = "cross_entropy", device: str = "cpu") -> dict:
    """Train/test metrics, the generalisation gap and, when the data set has shifts, each shift's metrics."""
    train = evaluate(model, dataset.train, loss=loss, device=device)
    test = evaluate(model, dataset.test, loss=loss, device=device)
    out = {"train": train, "test": test, "gap_loss": test["loss"] - train["loss"]}
    if "accuracy" in train:
        out["gap_accuracy"] = train["accuracy"] - test["accuracy"]
    if dataset.shifts:
        shifted = evaluate_shifts(model, dataset.shifts, loss=loss, device=device)
        out["shifts"] = {n: {str(s): m for s, m in sev.items()} for n, sev in shifted.items()}
    return out


def save_curve(history: list[dict], stem: str | Path) -> list[str]:
    """Training curve (train loss, test loss and accuracy when recorded) as PNG, SVG and CSV."""
    import matplotlib.pyplot as plt

    from ..plotting import save_figure, save_table

    keys = [k for k in history[0] if all(k in row for row in history)]
    csv_path = save_table(f"{stem}.csv", {k: [row[k] for row in history] for k in keys})
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [row["train_loss"] for row in history], label="train loss (running)")
    if "test_loss" in keys:
        ax.plot(epochs, [row["test_loss"] for row in history], label="test loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    if "test_accuracy" in keys:
        ax2 = ax.twinx()
        ax2.plot(epochs, [row["test_accuracy"] for row in history], color="tab:green", ls="--",
                 label="test accuracy")
        ax2.set_ylabel("test accuracy")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    return [*save_figure(fig, stem), csv_path]


def write_json(path: str | Path, obj: dict) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=float))
    return str(path)
