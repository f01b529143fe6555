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
(``acc``, ``nll``, ``brier``, ``ece``). The evaluation itself (``evaluate``, ``classification_evaluation``,
``regression_metrics``) is the shared pipeline's, :func:`flatminima.workflows.pipeline.evaluate_model`; this
module names it for the study and keeps the study's own helpers.
"""

from __future__ import annotations

import torch

from ..statistics import ece as _ece
from ..train.evaluation import classification_scores
from ..workflows.pipeline import classification_evaluation, evaluate_model, regression_metrics

__all__ = ["classification_evaluation", "classification_metrics", "ece", "evaluate", "regression_metrics"]

evaluate = evaluate_model  # the pipeline's evaluation (flatminima.workflows.pipeline), the one the study runs


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
