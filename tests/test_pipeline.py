"""The shared train → measure → evaluate pipeline (flatminima.workflows.pipeline)."""

from __future__ import annotations

import torch

from flatminima.data import load
from flatminima.models import build
from flatminima.objective import Objective
from flatminima.train import evaluate
from flatminima.workflows import pipeline


def _tiny():
    ds = load("mnist1d", num_samples=300, seed=1)
    torch.manual_seed(0)
    return ds, build("mlp", ds.input_shape, ds.num_classes, width=8)


def test_train_measure_evaluate_composes_the_three_steps():
    ds, net = _tiny()
    out = pipeline.train_measure_evaluate(net, ds, {"epochs": 2, "seed": 0, "batch_size": 32},
                                          measures={"lambda_max": {"seed": 0}, "distance_from_init": {}},
                                          dtype=torch.float64)
    assert out.model is net and out.training.epochs_run == 2 and out.init is not None
    assert set(out.measures) == {"lambda_max", "distance_from_init"} and out.measures["distance_from_init"].value > 0
    obj = Objective(net, "cross_entropy", ds.train, dtype=torch.float64)
    assert out.train_loss == float(obj.loss(obj.params))
    test = evaluate(net, ds.test)  # training's evaluation of the same model: the one classifier evaluation
    assert out.metrics["test_acc"] == test["accuracy"] and out.metrics["nll"] == test["nll"]
    assert set(out.seconds) == {"train", "measure", "evaluate"}
    assert pipeline.training_record(out.training)["epochs_run"] == 2


def test_measure_keeps_going_past_a_failure_when_asked():
    ds, net = _tiny()
    obj = Objective(net, "cross_entropy", ds.train)
    failed: dict[str, str] = {}
    done = []
    got = pipeline.measure(obj, {"lambda_max": {"tol": -1.0}, "trace": {"samples": 6, "seed": 0}},
                           failed=failed, advance=lambda: done.append(1))
    assert list(got) == ["trace"] and list(failed) == ["lambda_max"] and len(done) == 2
