"""The Python API: wrong types and wrong objects are FlatminimaErrors naming the argument, never a frame deep
inside torch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import flatminima.sharpness as sharpness
from flatminima import Objective
from flatminima.train import fit
from helpers import refused

X, Y = torch.randn(16, 4), torch.randint(0, 3, (16,))




@pytest.fixture
def obj():
    torch.manual_seed(0)
    return Objective(nn.Linear(4, 3), nn.CrossEntropyLoss(), (X, Y))


@pytest.mark.parametrize("thing,fragment", [
    (nn.Linear(4, 3), "got Linear (a model: wrap it first"),
    ("obj", "got str 'obj'"),
    (None, "got NoneType"),
    (torch.zeros(3), "got Tensor"),
])
def test_measure_names_a_non_objective(thing, fragment):
    refused(lambda: sharpness.measure(thing, "lambda_max"), "obj must be a flatminima.Objective", fragment)


@pytest.mark.parametrize("name,config,fragment", [
    (3, {}, "name must be a measure name"),
    ("average_case", {"seed": "1"}, "average_case.seed must be an integer"),
    ("average_case", {"seed": 2**70}, "average_case.seed"),
    ("average_case", {"sigma": float("inf")}, "average_case.sigma must be a finite number"),
    ("average_case", {"samples": 10**8}, "average_case.samples"),
    ("lambda_max", {"tol": 1.0}, "lambda_max.tol"),
])
def test_measure_settings_are_checked_at_the_top(obj, name, config, fragment):
    refused(lambda: sharpness.measure(obj, name, **config), fragment)
    assert obj.cost.hvps == 0 and obj.cost.losses == 0  # nothing was computed


@pytest.mark.parametrize("args,kwargs,fragment", [
    ((nn.Linear(4, 3), (X, Y), {"epochs": 1, "seed": "1"}), {}, "seed"),
    ((nn.Linear(4, 3), (X, Y), "sgd"), {}, "recipe must be a flatminima.train.Recipe"),
    ((lambda z: z, (X, Y), {"epochs": 1}), {}, "model must be a torch.nn.Module"),
    ((nn.Linear(4, 3), "data.npz", {"epochs": 1}), {}, "fit needs data=(X, y)"),
    ((nn.Linear(4, 3), (X, Y), {"epochs": 1}), {"loss_fn": lambda o, t: (o.argmax(1) != t).sum()},
     "torch.int64 tensor"),
    ((nn.Linear(4, 3), (X, Y), {"epochs": 1}), {"loss_fn": lambda o, t: float(o.sum())}, "returned a float"),
    ((nn.Linear(4, 3), (X.long(), Y), {"epochs": 1}), {}, "the model cannot take the inputs"),
    ((nn.Linear(4, 3), (X, Y), {"epochs": 1}), {"loss_fn": lambda o, t: o.sum().detach()}, "through autograd"),
])
def test_fit_names_bad_arguments_before_training(args, kwargs, fragment):
    refused(lambda: fit(*args, progress=False, **kwargs), fragment)


class SelfModifying(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.lin.weight.mul_(0.99)
        return self.lin(z)


def test_fit_names_a_model_that_modifies_its_parameters_in_forward():
    model = SelfModifying()
    refused(lambda: fit(model, (X, Y), {"epochs": 1}, progress=False), "changes its own parameters in forward")
    assert model.training


def test_a_good_fit_still_trains():
    res = fit(nn.Linear(4, 3), (X, Y), {"epochs": 1, "batch_size": 8}, progress=False)
    assert res.epochs_run == 1
