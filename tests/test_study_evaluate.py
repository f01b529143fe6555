"""Evaluation metrics against hand-worked values and scikit-learn."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import log_loss

from flatminima.study.evaluate import classification_metrics, ece


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
    m = classification_metrics(p, y, bins=15)
    assert m["nll"] == pytest.approx(log_loss(y.numpy(), p.numpy(), labels=range(4)), rel=1e-10)
    onehot = torch.eye(4, dtype=torch.float64)[y]
    assert m["brier"] == pytest.approx(((p - onehot) ** 2).sum(1).mean().item())
    assert m["acc"] == pytest.approx((p.argmax(1) == y).double().mean().item())
