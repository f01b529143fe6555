"""`--set key=value` overrides: TOML values on dotted keys, applied before validation, and spec.toml."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

import flatminima.study as study
from flatminima.cli import app
from flatminima.errors import FlatminimaError
from flatminima.study.overrides import apply_overrides, resolve_with_overrides, spec_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPEC = """
name = "over"
seeds = 1
[data]
name = "two_class"
options = { num_samples = 200 }
shifts = "none"
[models.mlp]
width = 8
[recipe]
lr = 0.05
batch_size = 32
epochs = 1
[measures.lambda_max]
"""


def test_values_are_toml_and_keys_are_dotted():
    raw = {"recipe": {"lr": 0.1}, "models": {"mlp": {}}}
    out = apply_overrides(raw, ["recipe.lr=[0.01, 0.1]", "executor.workers=2", "models.mlp.width=32", "seeds=3",
                                "data.name=two_class", "recipe.nesterov=true", "recipe.weight_decay=1e-4",
                                'models."pkg.nets:build".depth=4', "data.options={ num_samples = 200 }",
                                'name="quoted"'])
    assert out == {"recipe": {"lr": [0.01, 0.1], "nesterov": True, "weight_decay": 1e-4},
                   "models": {"mlp": {"width": 32}, "pkg.nets:build": {"depth": 4}},
                   "executor": {"workers": 2}, "seeds": 3,
                   "data": {"name": "two_class", "options": {"num_samples": 200}}, "name": "quoted"}
    assert raw == {"recipe": {"lr": 0.1}, "models": {"mlp": {}}}, "the input is not changed"


@pytest.mark.parametrize("item, words", [
    ("recipe.lr", "key=value"),
    ("=3", "empty"),
    ("seeds.first=1", "not a table"),
    ("recipe..lr=1", "dotted key"),
])
def test_malformed_overrides_are_named(item, words):
    with pytest.raises(FlatminimaError, match=words):
        apply_overrides({"seeds": 2}, [item])


def test_validation_is_the_files(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SPEC)
    spec = resolve_with_overrides(path, None, ["recipe.lr=[0.01,0.1]", "seeds=2"])
    assert spec.recipe["lr"] == [0.01, 0.1] and spec.seed_list == [0, 1] and spec.axes == {"lr": [0.01, 0.1]}
    with pytest.raises(FlatminimaError) as err:  # an unknown key: the same message as in a file
        resolve_with_overrides(path, None, ["executor.wrokers=2"])
    (tmp_path / "bad.toml").write_text(SPEC + "[executor]\nwrokers = 2\n")
    with pytest.raises(FlatminimaError) as in_file:
        study.load(tmp_path / "bad.toml")
    assert err.value.args[0].splitlines()[1:] == in_file.value.args[0].splitlines()[1:]
    assert "unknown key" in str(err.value)
    with pytest.raises(FlatminimaError, match="recipe.lr"):
        resolve_with_overrides(path, None, ["recipe.lr=-1"])
    spec = resolve_with_overrides(None, "quick", ["seeds=1", "recipe.lr=0.01"])  # works with a preset too
    assert spec.seed_list == [0] and spec.recipe["lr"] == 0.01 and spec.name == "quick"


def test_spec_toml_round_trips():
    spec = resolve_with_overrides(None, "quick", ["executor.kind='submitit'", "executor.partition='gpu'"])
    assert study.validate(tomllib.loads(spec_toml(spec))) == spec


def test_cli_set_runs_the_overridden_spec_and_writes_spec_toml(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SPEC)
    out = tmp_path / "study"
    res = CliRunner().invoke(app, ["study", "run", str(path), "--out", str(out), "--no-report", "--no-progress",
                                   "--set", "recipe.lr=[0.02,0.05]", "--set", "models.mlp.width=4"])
    assert res.exit_code == 0, res.output
    with study.Store(out) as store:
        rows = store.rows()
    assert sorted(r["config"]["recipe"]["lr"] for r in rows) == [0.02, 0.05]
    assert {r["config"]["model_options"]["width"] for r in rows} == {4}
    written = tomllib.loads((out / "spec.toml").read_text())
    assert written["recipe"]["lr"] == [0.02, 0.05] and written["models"]["mlp"]["width"] == 4
    assert study.validate(written) == resolve_with_overrides(path, None, ["recipe.lr=[0.02,0.05]",
                                                                          "models.mlp.width=4"])
