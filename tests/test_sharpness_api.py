"""Registry, results, bad input and the `flatminima sharpness` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cases import tiny_mlp
from flatminima import FlatminimaError, Objective
from flatminima.sharpness import Measure, available, measure, measure_all, register
from flatminima.sharpness import registry as reg

DT = torch.float64
NAMES = ["average_case", "fisher_rao", "frobenius", "keskar", "lambda_max", "pac_bayes", "relative_flatness",
         "trace", "worst_case"]



def bowl(scale=1.0):
    return Objective.from_function(lambda x: 0.5 * scale * (x ** 2).sum(), torch.zeros(4, dtype=DT), dtype=DT)


def mlp_objective():
    model = tiny_mlp(3, 4, 2, act=nn.ReLU)
    X = torch.randn(16, 3, dtype=DT)  # the global RNG, right after the model's initialisation
    return Objective(model, "cross_entropy", (X, (X[:, 0] > 0).long()), dtype=DT)


def test_available_lists_every_issue_name_with_a_description():
    names = available()
    assert set(NAMES) <= set(names)
    assert all(isinstance(d, str) and d for d in names.values())


def test_config_defaults_cost_and_json():
    r = measure(bowl(), "average_case", sigma=0.1, samples=8, seed=4)
    assert isinstance(r, Measure) and r.name == "average_case"
    assert r.config["sigma"] == 0.1 and r.config["seed"] == 4 and r.config["adaptive"] is False
    assert r.cost.batched_points == 17 and r.cost.seconds > 0
    d = json.loads(json.dumps(r.to_dict()))
    assert d["value"] == pytest.approx(r.value) and d["cost"]["hvps"] == r.cost.hvps
    assert d["estimate"]["low"] <= d["value"] <= d["estimate"]["high"]


def test_same_seed_same_value_other_seed_other_value():
    a = measure(bowl(), "average_case", sigma=0.1, samples=8, seed=1, second_order_samples=0).value
    b = measure(bowl(), "average_case", sigma=0.1, samples=8, seed=1, second_order_samples=0).value
    c = measure(bowl(), "average_case", sigma=0.1, samples=8, seed=2, second_order_samples=0).value
    assert a == b and a != c


def test_adding_a_measure_is_one_decorated_function():
    @register("test_norm", "‖θ‖₂ (a test measure)")
    def test_norm(obj, *, power: int = 1, seed: int = 0) -> Measure:
        return Measure("test_norm", float(obj.params.norm()) ** power)

    try:
        obj = Objective.from_function(lambda x: (x ** 2).sum(), torch.tensor([3.0, 4.0], dtype=DT), dtype=DT)
        assert "test_norm" in available()
        r = measure(obj, "test_norm", power=2)
        assert r.value == pytest.approx(25.0) and r.config == {"power": 2, "seed": 0}
    finally:
        reg._REGISTRY.pop("test_norm")


def test_measure_all_routes_settings():
    res = measure_all(bowl(2.0), ["worst_case", "lambda_max"], settings={"rho": 0.2, "worst_case.steps": 5},
                      seed=3)
    assert res["worst_case"].config["rho"] == 0.2 and res["worst_case"].config["steps"] == 5
    assert res["worst_case"].config["seed"] == 3
    assert res["worst_case"].value == pytest.approx(0.5 * 2.0 * 0.2 ** 2, rel=1e-6)
    assert res["lambda_max"].value == pytest.approx(2.0)
    with pytest.raises(FlatminimaError, match="no chosen measure takes"):
        measure_all(bowl(), ["lambda_max"], settings={"rho": 0.1})


# ------------------------------------------------------------------ bad input
def test_unknown_name_lists_the_available_ones():
    with pytest.raises(FlatminimaError) as err:
        measure(bowl(), "sharpest")
    assert "sharpest" in str(err.value)
    for name in NAMES:
        assert name in str(err.value)


def test_unknown_setting_lists_the_allowed_ones():
    with pytest.raises(FlatminimaError, match="rho"):
        measure(bowl(), "worst_case", radius=0.1)


@pytest.mark.parametrize("name,config,word", [
    ("worst_case", {"rho": 0.0}, "rho"), ("worst_case", {"rho": -1.0}, "rho"),
    ("worst_case", {"norm": "l1"}, "norm"), ("keskar", {"epsilon": 0}, "epsilon"),
    ("average_case", {"sigma": 0.0}, "sigma"), ("average_case", {"sigma": -0.1}, "sigma"),
    ("average_case", {"sigma": float("nan")}, "sigma"), ("pac_bayes", {"target": 0.0}, "target"),
    ("pac_bayes", {"target": -0.1}, "target"), ("lambda_max", {"operator": "fisher"}, "operator"),
    ("worst_case", {"m": 0}, "m"), ("average_case", {"samples": 0}, "samples"),
])
def test_non_positive_or_invalid_settings_are_refused(name, config, word):
    with pytest.raises(FlatminimaError, match=word):
        measure(bowl(), name, **config)


def test_unreachable_pac_bayes_target_is_a_clear_error():
    bounded = Objective.from_function(lambda x: 0.5 * torch.tanh((x ** 2).sum()), torch.zeros(3, dtype=DT),
                                      dtype=DT)  # the loss can never rise by more than 0.5
    with pytest.raises(FlatminimaError, match="never reached"):
        measure(bounded, "pac_bayes", target=1.0, samples=4)


def test_pac_bayes_target_exceeded_at_smallest_sigma_is_a_clear_error():
    with pytest.raises(FlatminimaError, match="sigma_min"):
        measure(bowl(1e12), "pac_bayes", target=1e-3, samples=4, sigma_min=1e-6, sigma_init=1e-3)


NEEDS_OUTPUTS = [("fisher_rao", {}), ("relative_flatness", {}), ("worst_case", {"m": 2}),
                 ("average_case", {"logit_normalize": True})]


@pytest.mark.parametrize("name,config", NEEDS_OUTPUTS)
def test_measures_needing_model_outputs_refuse_analytic_objectives(name, config):
    with pytest.raises(FlatminimaError, match="loss="):
        measure(bowl(), name, **config)


def test_m_larger_than_data_and_bad_layer_are_refused():
    obj = mlp_objective()
    with pytest.raises(FlatminimaError, match="m=100"):
        measure(obj, "worst_case", m=100)
    with pytest.raises(FlatminimaError, match="layer"):
        measure(obj, "relative_flatness", layer="0.bias")


# ------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=x[:48], y_train=y[:48], x_test=x[48:], y_test=y[48:])
    return str(path)


def test_cli_json_and_table(tiny_npz):
    from flatminima.cli import app

    runner = CliRunner()
    args = ["sharpness", "--data", tiny_npz, "--epochs", "1",
            "--measures", "lambda_max,average_case,worst_case",
            "--set", "samples=8", "--set", "worst_case.steps=3", "--set", "rho=0.02", "--seed", "1"]
    res = runner.invoke(app, args + ["--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    m = out["measures"]
    assert set(m) == {"lambda_max", "average_case", "worst_case"}
    assert m["worst_case"]["config"]["rho"] == 0.02 and m["worst_case"]["config"]["steps"] == 3
    assert m["average_case"]["config"]["seed"] == 1 and m["average_case"]["stderr"] > 0
    assert m["lambda_max"]["cost"]["hvps"] > 0
    res = runner.invoke(app, args + ["--split", "test"])
    assert res.exit_code == 0, res.output
    assert "worst_case" in res.output and "test split" in res.output


def test_cli_list_and_unknown_name(tiny_npz):
    from flatminima.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["sharpness", "--list", "--json"])
    assert res.exit_code == 0 and set(NAMES) <= set(json.loads(res.output))
    res = runner.invoke(app, ["sharpness", "--data", tiny_npz, "--measures", "nope"])
    assert isinstance(res.exception, FlatminimaError) and "pac_bayes" in str(res.exception)


def test_pac_bayes_on_the_training_error_and_held_out_data():
    obj = mlp_objective()
    r = measure(obj, "pac_bayes", metric="error", target=0.01, samples=8)  # untrained: error ≈ 0.5
    assert r.extra["metric"] == "error" and 0 <= r.extra["base"] <= 1 and r.extra["sigma"] > 0
    # A held-out set is just another Objective: the measures take whatever data it holds.
    torch.manual_seed(1)
    X = torch.randn(12, 3, dtype=DT)
    held = Objective(obj.model_at(), "cross_entropy", (X, (X[:, 0] > 0).long()), dtype=DT)
    assert measure(held, "fisher_rao").extra["samples"] == 12


def test_one_by_one_evaluation_equals_vmap():
    obj = mlp_objective()
    for name, config in [("average_case", {"sigma": 0.05, "samples": 6, "second_order_samples": 0}),
                         ("worst_case", {"rho": 0.05, "steps": 3, "restarts": 1})]:
        a = measure(obj, name, **config)
        b = measure(obj, name, chunk_size=1, **config)
        assert b.value == pytest.approx(a.value, rel=1e-9, abs=1e-12)
        assert b.cost.batched_points == 0 and b.cost.losses > a.cost.losses


# ------------------------------------------------------------------ one call shape: seed= everywhere
FAST = {"average_case": {"samples": 4, "second_order_samples": 0}, "frobenius": {"samples": 4},
        "keskar": {"steps": 2, "restarts": 1}, "pac_bayes": {"samples": 4}, "trace": {"samples": 6},
        "worst_case": {"steps": 2, "restarts": 1}, "pac_bayes_mag": {"samples": 4, "iterations": 5}}


def _fast_settings(name, obj):
    if name == "distance_from_init":  # the one measure with a required setting: the initial parameters
        return {"init": torch.zeros_like(obj.params)}
    return FAST.get(name, {})


def test_every_measure_accepts_a_seed():
    obj = mlp_objective()
    for name in available():
        try:
            r = measure(obj, name, seed=7, **_fast_settings(name, obj))
        except FlatminimaError as err:  # refused on this untrained model's data (pac_bayes_mag), never the seed
            assert "seed" not in str(err) and "does not take" not in str(err), name
            continue
        assert not np.isnan(r.value), name  # output_margin is +inf when the margin percentile is negative
        if "seed" in reg.entry(name).defaults():
            assert r.config["seed"] == 7, name
        else:  # deterministic: accepted, ignored, and recorded as ignored
            assert r.config["seed"] is None and r.config["seed_note"] == reg.DETERMINISTIC, name
            assert measure(obj, name, seed=8, **_fast_settings(name, obj)).value == r.value
    with pytest.raises(FlatminimaError, match="seed must be an integer"):
        measure(obj, "fisher_rao", seed="one")
    res = measure_all(obj, ["fisher_rao", "trace"], settings={"trace.samples": 6}, seed=5)
    assert res["fisher_rao"].config["seed"] is None and res["trace"].config["seed"] == 5


def test_every_curvature_function_takes_a_seed():
    import inspect

    from flatminima import curvature

    for fn in (curvature.eigenvalues, curvature.power_iteration, curvature.trace, curvature.spectral_density):
        assert inspect.signature(fn).parameters["seed"].default == 0, fn.__name__
