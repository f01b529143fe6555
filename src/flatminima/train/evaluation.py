"""Evaluation of a model (or an ensemble) on a data split: loss, accuracy, calibration.

The one classifier evaluation is :func:`classification_scores`: accuracy, NLL, Brier score and ECE of a
classifier's outputs against class labels. :func:`evaluate` (training, ``flatminima train``) reports three of
them beside the loss, and a study's evaluation (:func:`flatminima.workflows.pipeline.evaluate_model`) calls it
for the train and test sets and every shift.

* ECE (expected calibration error, Guo et al. 2017): Σ_b (|b|/n)·|acc(b) − conf(b)| over equal-width bins of
  the top-class confidence (15 by default; :func:`flatminima.statistics.ece`).
* NLL: mean −log p(y|x), the cross-entropy of the predicted probabilities.
* Brier (Brier 1950, multi-class): (1/n) Σ_i Σ_k (p_ik − 1[y_i = k])².

The probabilities are softmax(outputs), computed in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FlatminimaError
from ..statistics import ece as _ece
from .losses import loss_function

__all__ = ["classification_scores", "evaluate", "evaluate_shifts", "predict"]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024, device: str | torch.device = "cpu"
            ) -> torch.Tensor:
    """Model outputs on ``x`` in eval mode (the model's train/eval mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


@torch.no_grad()
def classification_scores(outputs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """``{"accuracy", "nll", "brier", "ece"}`` of a classifier's ``outputs`` (logits or log-probabilities, one
    row per sample) against the class labels ``y``; ``bins`` equal-width confidence bins for the ECE."""
    logp = F.log_softmax(outputs.double(), dim=1)
    probs = logp.exp()
    y = y.to(logp.device)
    onehot = F.one_hot(y, probs.shape[1]).double()
    return {
        "accuracy": float((logp.argmax(1) == y).double().mean()),
        "nll": float(F.nll_loss(logp, y)),
        "brier": float(((probs - onehot) ** 2).sum(1).mean()),
        "ece": float(_ece(probs, y, bins)),  # the one ECE: equal-width bins, right-closed
    }


def evaluate(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *,
             loss: str | Callable = "cross_entropy", batch_size: int = 1024,
             device: str | torch.device = "cpu", bins: int = 15) -> dict[str, float]:
    """``{"loss", "accuracy", "nll", "ece", "n"}`` of ``model`` on ``data = (X, y)`` in eval mode.

    ``loss`` is the training loss (cross-entropy by default); accuracy, NLL and ECE
    (:func:`classification_scores`) are reported when the targets are class labels.
    """
    x, y = data
    if len(x) == 0 or len(x) != len(y):
        raise FlatminimaError(f"evaluate needs as many labels as inputs (≥ 1), got {len(x)} and {len(y)}.")
    out = predict(model, x, batch_size=batch_size, device=device).float()
    result = {"loss": float(loss_function(loss)(out, y)), "n": len(x)}
    if y.is_floating_point() or out.dim() != 2:
        return result
    scores = classification_scores(out, y, bins)
    return result | {"accuracy": scores["accuracy"], "nll": scores["nll"], "ece": scores["ece"]}


def evaluate_shifts(model: nn.Module, shifts: dict, **kw) -> dict[str, dict[int, dict[str, float]]]:
    """:func:`evaluate` on every shifted test set ``shifts[name][severity] = (x, y)`` of a Dataset."""
    return {name: {s: evaluate(model, xy, **kw) for s, xy in sev.items()} for name, sev in shifts.items()}
