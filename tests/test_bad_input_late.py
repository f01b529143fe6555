"""Late failures: a combination or a missing dependency the code would refuse later is refused at validation,
before any data is loaded, model trained or measure computed."""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

import flatminima.study as study
from flatminima.cli import app
from flatminima.errors import FlatminimaError
from flatminima.study.spec import validate
from flatminima.train import make_recipe

SPEC = {"name": "late", "seeds": 1, "data": {"name": "two_class", "options": {"num_samples": 40}, "shifts": "none"},
        "models": {"mlp": {"width": 4}}, "recipe": {"epochs": 1}}


def _refused(fn, *fragments):
    with pytest.raises(FlatminimaError) as err:
        fn()
    for f in fragments:
        assert f in str(err.value), str(err.value)


def _cli(args):
    res = CliRunner().invoke(app, args)
    assert isinstance(res.exception, FlatminimaError), res.output
    return str(res.exception)


@pytest.mark.parametrize("recipe,fragment", [
    ({"swa": True, "epochs": 3, "target_train_loss": 0.1}, "cannot be combined with swa"),
    ({"swa": True, "epochs": 2, "swa_start": 5}, "swa_start=5 must be below epochs=2"),
    ({"nesterov": True, "optimizer": "adam"}, "nesterov=True needs optimizer='sgd'"),
    ({"sam": "sam", "noise": "gaussian"}, "choose one of sam or noise"),
    ({"label_smoothing": 0.1, "loss": "mse"}, "label_smoothing applies to loss='cross_entropy'"),
])
def test_recipe_combinations_are_refused_when_made(recipe, fragment):
    _refused(lambda: make_recipe(recipe), fragment)


def test_a_spec_with_swa_and_a_target_is_refused_on_load():
    _refused(lambda: validate(SPEC | {"recipe": {"epochs": 3, "swa": True, "target_train_loss": [0.1, 0.2]}}),
             "recipe", "swa")


def test_ray_not_installed_is_refused_before_any_work(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    _refused(lambda: study.run(SPEC | {"executor": {"kind": "ray"}}, out=tmp_path / "s", progress=False),
             "needs Ray", "pip install")
    assert not (tmp_path / "s").exists()
    assert "needs Ray" in _cli(["study", "run", "--preset", "quick", "--executor", "ray", "--out",
                                str(tmp_path / "q"), "--no-report"])
    assert not (tmp_path / "q").exists()


def test_submitit_not_installed_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "submitit", None)  # `import submitit` raises ImportError
    _refused(lambda: study.run(SPEC | {"executor": {"kind": "submitit", "cluster": "local"}}, out=tmp_path / "s",
                               progress=False), "needs submitit")
    assert not (tmp_path / "s").exists()


def test_an_unknown_executor_is_refused_before_any_work(tmp_path):
    _refused(lambda: study.run(SPEC, executor="dask", out=tmp_path / "s", progress=False), "'dask'")
    assert not (tmp_path / "s").exists()


def test_address_without_ray_is_refused_on_load():
    _refused(lambda: validate(SPEC | {"executor": {"kind": "local", "address": "ray://x:1"}}), "address")


def test_sharpness_settings_are_refused_before_training(tmp_path):
    msg = _cli(["sharpness", "--data", "two_class", "--measures", "lambda_max", "--set", "tol=5",
                "--out", str(tmp_path / "o")])
    assert "lambda_max.tol" in msg and not (tmp_path / "o").exists()


def test_landscape_grid_is_refused_before_training(tmp_path):
    msg = _cli(["landscape", "--data", "two_class", "--mode", "slice", "--steps", "2000", "--out", str(tmp_path / "o")])
    assert "2000 × 2000" in msg and not (tmp_path / "o").exists()


def test_a_study_measure_setting_is_refused_on_load():
    _refused(lambda: validate(SPEC | {"measures": {"average_case": {"samples": 10**9}}}),
             "measures.average_case.samples")
