"""A study run's outcomes (the shared pipeline's evaluation): metrics against hand-worked values and scikit-learn,
and the one classifier evaluation."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import log_loss

from flatminima.statistics import ece
from flatminima.train import classification_scores
from flatminima.train import evaluate as train_evaluate
from flatminima.workflows.pipeline import evaluate_model as evaluate


def test_ece_hand_worked():
    # 10 bins: confidences 0.85, 0.85 (one right, one wrong) in (0.8, 0.9];
    # 0.65, 0.62 (both right) in (0.6, 0.7]
    p = torch.tensor([[0.85, 0.15], [0.85, 0.15], [0.35, 0.65], [0.62, 0.38]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    expected = 0.5 * abs(0.5 - 0.85) + 0.5 * abs(1.0 - 0.635)
    assert ece(p, y, bins=10) == pytest.approx(expected)
    # one bin: |accuracy − mean confidence|
    assert ece(p, y, bins=1) == pytest.approx(abs(0.75 - (0.85 + 0.85 + 0.65 + 0.62) / 4))


def test_nll_brier_accuracy_match_references():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(50, 4, generator=g, dtype=torch.float64), 1)
    y = torch.randint(0, 4, (50,), generator=g)
    m = classification_scores(p.log(), y, bins=15)
    assert m["nll"] == pytest.approx(log_loss(y.numpy(), p.numpy(), labels=range(4)), rel=1e-10)
    onehot = torch.eye(4, dtype=torch.float64)[y]
    assert m["brier"] == pytest.approx(((p - onehot) ** 2).sum(1).mean().item())
    assert m["accuracy"] == pytest.approx((p.argmax(1) == y).double().mean().item())


def test_study_and_training_evaluation_agree():
    """The study's outcomes and ``flatminima.train.evaluate`` are one classifier evaluation: on the same model
    and data they give the same accuracy, NLL and ECE (the study under its stored keys ``acc``...)."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x, xt, xs = (torch.randn(n, 5, generator=g) for n in (70, 40, 30))
    y, yt, ys = (torch.randint(0, 3, (n,), generator=g) for n in (70, 40, 30))
    data = SimpleNamespace(x_train=x, y_train=y, x_test=xt, y_test=yt, shifts={"noise": {1: (xs, ys)}})
    model.train()
    study = evaluate(model, data, ["noise"], bins=10)
    train, test, shifted = (train_evaluate(model, xy, bins=10) for xy in ((x, y), (xt, yt), (xs, ys)))
    assert study["train_acc"] == train["accuracy"] and study["test_acc"] == test["accuracy"]
    assert study["train_loss"] == train["nll"] and study["nll"] == test["nll"] and study["ece"] == test["ece"]
    noise = study["shifts"]["noise@1"]
    assert (noise["acc"], noise["nll"], noise["ece"]) == (shifted["accuracy"], shifted["nll"], shifted["ece"])
    assert study["ece_bins"] == 10 and study["gap"] == train["accuracy"] - test["accuracy"]
    # cross-entropy is the NLL: training's loss and the study's NLL agree to float32 rounding
    assert test["loss"] == pytest.approx(test["nll"], rel=1e-5)
    with torch.no_grad():
        logits = model(xt)
    scores = classification_scores(logits, yt, bins=10)
    assert study["brier"] == pytest.approx(scores["brier"], rel=1e-6)
