"""The non-flatness baselines of Jiang et al. 2020 against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import jacrev

from cases import tiny_data, tiny_mlp
from flatminima import FlatminimaError, Objective
from flatminima.sharpness import available, measure
from flatminima.sharpness.baselines import BASELINES

DT = torch.float64


def _mlp(seed=0, bias=True):
    return tiny_mlp(4, 6, 3, act=nn.ReLU, bias=bias, seed=seed)


def _data(n=40, seed=0):
    return tiny_data(n, 4, 3, seed)


def test_every_baseline_is_registered():
    assert set(BASELINES) <= set(available())


def test_param_norm_is_sum_of_squared_frobenius_norms_of_the_weights():
    model = _mlp(1)
    obj = Objective(model, "cross_entropy", _data(seed=1), dtype=DT, batch_size=16)
    exact = sum(float(torch.linalg.matrix_norm(m.weight.detach()) ** 2) for m in (model[0], model[2]))
    r = measure(obj, "param_norm")
    assert r.value == pytest.approx(exact, rel=1e-12)
    assert "biases excluded" in r.config["variant"]
    every = exact + sum(float(m.bias.detach().pow(2).sum()) for m in (model[0], model[2]))
    assert measure(obj, "param_norm", biases=True).value == pytest.approx(every, rel=1e-12)


def test_distance_from_init():
    init_model = _mlp(2)
    X, y = _data(seed=2)
    init = Objective(init_model, "cross_entropy", (X, y), dtype=DT).params
    trained = _mlp(2)
    opt = torch.optim.SGD(trained.parameters(), lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(trained(X), y).backward()
        opt.step()
    obj = Objective(trained, "cross_entropy", (X, y), dtype=DT)
    sq = sum(float((a.weight - b.weight).pow(2).sum()) for a, b in zip((trained[0], trained[2]),
                                                                       (init_model[0], init_model[2]), strict=True))
    r = measure(obj, "distance_from_init", init=init)
    assert r.value == pytest.approx(math.sqrt(sq), rel=1e-12) and r.value > 0
    sq_all = sum(float((a - b).pow(2).sum()) for a, b in zip(trained.parameters(), init_model.parameters(),
                                                             strict=True))
    assert measure(obj, "distance_from_init", init=init, biases=True).value == pytest.approx(math.sqrt(sq_all))
    assert measure(obj, "distance_from_init", init=obj.params).value == 0.0
    assert r.to_dict()["config"]["init"].startswith("<")  # the vector itself is not copied into the record
    with pytest.raises(FlatminimaError, match="init="):
        measure(obj, "distance_from_init")
    with pytest.raises(FlatminimaError, match="shape"):
        measure(obj, "distance_from_init", init=init[:-1])


def test_output_margin_is_inverse_squared_10th_percentile():
    model = _mlp(3)
    X, y = _data(n=57, seed=3)
    # a model that fits most of the data: labels = its own argmax, with 4 flipped
    with torch.no_grad():
        y = model(X).argmax(1)
    y[:4] = (y[:4] + 1) % 3
    obj = Objective(model, "cross_entropy", (X, y), dtype=DT, batch_size=20)
    with torch.no_grad():
        f = model(X).numpy()
    margins = []
    for i in range(len(y)):
        others = [f[i, j] for j in range(3) if j != int(y[i])]
        margins.append(f[i, int(y[i])] - max(others))
    gamma = float(np.percentile(np.array(margins), 10))
    assert gamma > 0
    r = measure(obj, "output_margin")
    assert r.extra["gamma"] == pytest.approx(gamma, rel=1e-12)
    assert r.value == pytest.approx(1 / gamma ** 2, rel=1e-12)
    bad = Objective(model, "cross_entropy", (X, (y + 1) % 3), dtype=DT)  # mostly misclassified
    b = measure(bad, "output_margin")
    assert b.value == math.inf and b.extra["gamma"] <= 0


def _path_norm_mlp(model):
    """Σ over input→output paths of the products of squared weights, bias units as constant-1 inputs."""
    W1, b1, W2, b2 = (p.detach() for p in model.parameters())
    total = 0.0
    for k in range(W2.shape[0]):
        total += float(b2[k] ** 2)
        for j in range(W2.shape[1]):
            into_j = float(b1[j] ** 2) + sum(float(W1[j, i] ** 2) for i in range(W1.shape[1]))
            total += float(W2[k, j] ** 2) * into_j
    return total


def test_path_norm_of_an_mlp_is_the_sum_over_paths():
    model = _mlp(4)
    obj = Objective(model, "cross_entropy", _data(seed=4), dtype=DT)
    r = measure(obj, "path_norm")
    assert r.value == pytest.approx(_path_norm_mlp(model), rel=1e-12)
    assert "biases included" in r.config["variant"]
    before = obj.params
    measure(obj, "path_norm")
    assert torch.equal(obj.params, before)  # the objective's parameters are untouched


def test_path_norm_of_a_conv_net_matches_its_unrolled_dense_layers():
    torch.manual_seed(5)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    lin = nn.Linear(3 * 5 * 5, 4, bias=False)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), lin).to(DT)
    g = torch.Generator().manual_seed(5)
    X = torch.randn(10, 2, 5, 5, generator=g, dtype=DT)
    obj = Objective(model, "cross_entropy", (X, torch.randint(0, 4, (10,), generator=g)), dtype=DT)
    # the conv is linear in its input: its dense matrix, whose entries are single kernel weights
    A = jacrev(lambda x: model[0](x[None]).reshape(-1))(torch.zeros(2, 5, 5, dtype=DT)).reshape(75, 50)
    B = model[3].weight.detach()
    exact = float((B ** 2 @ (A ** 2 @ torch.ones(50, dtype=DT))).sum())
    assert measure(obj, "path_norm").value == pytest.approx(exact, rel=1e-12)


def test_path_norm_refuses_normalisation_layers():
    model = tiny_mlp(4, 6, 3, act=nn.ReLU, norm=nn.BatchNorm1d, seed=6)
    obj = Objective(model, "cross_entropy", _data(seed=6), dtype=DT)
    with pytest.raises(FlatminimaError, match="normalisation"):
        measure(obj, "path_norm")
