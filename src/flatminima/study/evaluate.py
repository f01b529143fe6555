"""Evaluation of a trained classifier: loss, accuracy, calibration (ECE, NLL, Brier) and shifts.

* ECE (Guo et al. 2017): with B equal-width bins of the top-class confidence p̂ on [0, 1],
  ECE = Σ_b (|S_b|/n) · |acc(S_b) − conf(S_b)|.  The bin count is stored with the result.
* NLL: mean −log p(y|x) (= cross-entropy).
* Brier (Brier 1950, multi-class): (1/n) Σ_i Σ_k (p_ik − 1[y_i = k])².
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..statistics import ece as _ece


@torch.no_grad()
def _probs(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [torch.softmax(model(x[i : i + batch_size]).double(), dim=1) for i in range(0, len(x), batch_size)]
    )


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error with ``bins`` equal-width confidence bins (right-closed, first closed);
    the one implementation is :func:`flatminima.statistics.ece`."""
    return _ece(probs, y, bins)


def classification_metrics(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL (mean cross-entropy), Brier score and ECE of predicted probabilities."""
    onehot = torch.nn.functional.one_hot(y, probs.shape[1]).double()
    picked = probs.gather(1, y[:, None]).squeeze(1).clamp_min(1e-300)
    return {
        "acc": (probs.argmax(1) == y).double().mean().item(),
        "nll": (-picked.log()).mean().item(),
        "brier": ((probs - onehot) ** 2).sum(1).mean().item(),
        "ece": ece(probs, y, bins),
    }


def evaluate(model: nn.Module, dataset: Any, shifts: list[str], bins: int = 15) -> dict[str, Any]:
    """Train/test loss and accuracy, gaps, calibration on test, and accuracy (and drop) on every shift."""
    train = classification_metrics(_probs(model, dataset.x_train), dataset.y_train, bins)
    test = classification_metrics(_probs(model, dataset.x_test), dataset.y_test, bins)
    out: dict[str, Any] = {
        "train_loss": train["nll"],
        "train_acc": train["acc"],
        "test_loss": test["nll"],
        "test_acc": test["acc"],
        "gap": train["acc"] - test["acc"],
        "loss_gap": test["nll"] - train["nll"],
        "ece": test["ece"],
        "nll": test["nll"],
        "brier": test["brier"],
        "ece_bins": bins,
        "ece_binning": f"{bins} equal-width bins of top-class confidence on [0, 1]",
        "shifts": {},
    }
    drops = []
    for name in shifts:
        for severity, (xs, ys) in sorted(dataset.shifts[name].items()):
            m = classification_metrics(_probs(model, xs), ys, bins)
            drop = test["acc"] - m["acc"]
            out["shifts"][f"{name}@{severity}"] = {
                "acc": m["acc"],
                "drop": drop,
                "ece": m["ece"],
                "nll": m["nll"],
            }
            drops.append(drop)
    out["shift_drop"] = sum(drops) / len(drops) if drops else None
    return out
