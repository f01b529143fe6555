"""A study run's outcomes, what its targets read: loss, accuracy, calibration (ECE, NLL, Brier) and shifts; MSE
for regression.

* ECE (Guo et al. 2017): with B equal-width bins of the top-class confidence p̂ on [0, 1],
  ECE = Σ_b (|S_b|/n) · |acc(S_b) − conf(S_b)|.  The bin count is stored with the result.
* NLL: mean −log p(y|x) (= cross-entropy).
* Brier (Brier 1950, multi-class): (1/n) Σ_i Σ_k (p_ik − 1[y_i = k])².
* Regression: MSE = mean over samples and outputs of (f(x) − y)²; ``mse_gap`` = test − train MSE; under a
  shift ``drop`` is the rise of the MSE over the clean test MSE.
* ``train_loss``/``test_loss`` are the study's loss (``loss_fn``) when one is given, else NLL / MSE.

Classifiers are scored by training's evaluation, :func:`flatminima.train.classification_scores` (the one
implementation; ``flatminima.train.evaluate`` calls it too), under the keys stored results have always had
(``acc``, ``nll``, ``brier``, ``ece``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..statistics import ece as _ece
from ..train.evaluation import classification_scores, predict


def _scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bins: int) -> dict[str, float]:
    """The study's names for :func:`flatminima.train.classification_scores` of ``model`` on ``(x, y)``."""
    model.eval()  # the study leaves its model in eval mode, as it always did
    return _study_keys(classification_scores(predict(model, x, batch_size=4096, device=x.device), y, bins))


def _study_keys(scores: dict[str, float]) -> dict[str, float]:
    return {"acc": scores["accuracy"], "nll": scores["nll"], "brier": scores["brier"], "ece": scores["ece"]}


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error with ``bins`` equal-width confidence bins (right-closed, first closed);
    the one implementation is :func:`flatminima.statistics.ece`."""
    return _ece(probs, y, bins)


def classification_metrics(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """Accuracy (``acc``), NLL (mean cross-entropy), Brier score and ECE of predicted probabilities: a thin
    call of :func:`flatminima.train.classification_scores` on their logarithms (a probability of 0 counts as
    1e-300, as before)."""
    return _study_keys(classification_scores(probs.double().clamp_min(1e-300).log(), y, bins))


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]).double() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Any) -> float:
    """The study's loss over all of ``(x, y)`` (a row-weighted mean of batch means: exact for mean losses)."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(x), 4096):
        xb, yb = x[i : i + 4096], y[i : i + 4096]
        total += float(loss_fn(model(xb), yb)) * len(xb)
        n += len(xb)
    return total / max(n, 1)


def _mse(out: torch.Tensor, y: torch.Tensor) -> float:
    return float(((out - y.double().reshape(out.shape)) ** 2).mean())


def regression_metrics(model: nn.Module, dataset: Any, shifts: list[str]) -> dict[str, Any]:
    """Train/test MSE, the MSE gap, and on every shift the MSE and its rise over the clean test MSE."""
    train = _mse(_outputs(model, dataset.x_train), dataset.y_train)
    test = _mse(_outputs(model, dataset.x_test), dataset.y_test)
    out: dict[str, Any] = {"train_loss": train, "test_loss": test, "train_mse": train, "test_mse": test,
                           "mse_gap": test - train, "shifts": {}}
    rises = []
    for name in shifts:
        for severity, (xs, ys) in sorted(dataset.shifts[name].items()):
            m = _mse(_outputs(model, xs), ys)
            out["shifts"][f"{name}@{severity}"] = {"mse": m, "drop": m - test}
            rises.append(m - test)
    out["shift_drop"] = sum(rises) / len(rises) if rises else None
    return out


def evaluate(model: nn.Module, dataset: Any, shifts: list[str], bins: int = 15, loss_fn: Any = None
             ) -> dict[str, Any]:
    """Train/test loss and accuracy, gaps, calibration on test, and accuracy (and drop) on every shift
    (regression data: :func:`regression_metrics`); ``loss_fn`` gives train/test loss in the study's loss."""
    if getattr(dataset, "task", "classification") == "regression":
        out = regression_metrics(model, dataset, shifts)
    else:
        out = classification_evaluation(model, dataset, shifts, bins)
    if loss_fn is not None:
        out["train_loss"] = _loss(model, dataset.x_train, dataset.y_train, loss_fn)
        out["test_loss"] = _loss(model, dataset.x_test, dataset.y_test, loss_fn)
    return out


def classification_evaluation(model: nn.Module, dataset: Any, shifts: list[str], bins: int = 15) -> dict[str, Any]:
    """Train/test loss (NLL) and accuracy, gaps, calibration on test, accuracy and drop on every shift."""
    train = _scores(model, dataset.x_train, dataset.y_train, bins)
    test = _scores(model, dataset.x_test, dataset.y_test, bins)
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
            m = _scores(model, xs, ys, bins)
            drop = test["acc"] - m["acc"]
            out["shifts"][f"{name}@{severity}"] = {
                "acc": m["acc"],
                "drop": drop,
                "ece": m["ece"],
                "nll": m["nll"],
            }
            drops.append(drop)
    out["shift_drop"] = sum(drops) / len(drops) if drops else None
    accs = [v["acc"] for v in out["shifts"].values()]
    out["shift_acc"] = sum(accs) / len(accs) if accs else None
    return out
