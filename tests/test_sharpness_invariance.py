"""Rescaling invariance (Dinh et al. 2017): W1, b1 → αW1, αb1 and W2 → W2/α leave a ReLU net's function
unchanged. The adaptive measures, the Fisher-Rao norm and relative flatness must not move; the plain ones
must (that is the point Dinh et al. make)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cases import tiny_mlp, tiny_problem
from flatminima import Objective
from flatminima.sharpness import measure

DT = torch.float64
ALPHA = 5.0



def _pair():
    model, X, y = tiny_problem(4, 6, 3, n=40, act=nn.ReLU)
    scaled = tiny_mlp(4, 6, 3, act=nn.ReLU, seed=None)  # its own initialisation is overwritten just below
    scaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        scaled[0].weight.mul_(ALPHA)
        scaled[0].bias.mul_(ALPHA)
        scaled[2].weight.div_(ALPHA)
    assert torch.allclose(model(X), scaled(X), rtol=1e-12, atol=1e-12)  # same function
    return (Objective(model, "cross_entropy", (X, y), dtype=DT),
            Objective(scaled, "cross_entropy", (X, y), dtype=DT))


PAIR = None


def objectives():
    global PAIR
    if PAIR is None:
        PAIR = _pair()
    return PAIR


INVARIANT = [
    ("worst_case", dict(rho=0.1, adaptive=True, steps=10, restarts=2)),
    ("worst_case", dict(rho=0.1, adaptive=True, norm="linf", steps=10, restarts=2)),
    ("average_case", dict(sigma=0.1, adaptive=True, samples=16, second_order_samples=8)),
    ("pac_bayes", dict(target=0.05, magnitude_aware=True, eps=0.0, samples=8, rtol=1e-3)),
    ("fisher_rao", {}),
    ("relative_flatness", {}),
]

PLAIN = [
    ("lambda_max", {}),
    ("trace", dict(samples=30)),
    ("frobenius", dict(samples=10)),
    ("worst_case", dict(rho=0.1, steps=10, restarts=2)),
    ("keskar", dict(epsilon=0.01, steps=10, restarts=2)),
    ("average_case", dict(sigma=0.1, samples=16, second_order_samples=0)),
    ("pac_bayes", dict(target=0.05, samples=8, rtol=1e-3)),
]


@pytest.mark.parametrize("name,config", INVARIANT, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INVARIANT)])
def test_invariant_measures_do_not_move(name, config):
    a, b = objectives()
    ra, rb = measure(a, name, **config), measure(b, name, **config)
    assert ra.value != 0
    assert rb.value == pytest.approx(ra.value, rel=1e-6)
    if name == "average_case":  # the adaptive second-order prediction ½σ²Σθ_i²H_ii is invariant too
        assert rb.extra["second_order"] == pytest.approx(ra.extra["second_order"], rel=1e-6)


@pytest.mark.parametrize("name,config", PLAIN, ids=[n for n, _ in PLAIN])
def test_plain_measures_move(name, config):
    a, b = objectives()
    ra, rb = measure(a, name, **config), measure(b, name, **config)
    change = abs(rb.value - ra.value) / abs(ra.value)
    assert change > 0.2, f"{name} moved by only {change:.3g} under an α={ALPHA} rescaling"
