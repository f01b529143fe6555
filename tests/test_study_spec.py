"""Study specs: refused before any run with the field path, the bad value and what is allowed."""

from __future__ import annotations

import pytest

from flatminima.errors import FlatminimaError
from flatminima.study import expand, load, load_preset, presets, validate
from flatminima.study.spec import grid_points, is_sweep


def _spec(**over):
    base = {
        "name": "t",
        "data": {"name": "mnist1d", "options": {"num_samples": 300}},
        "models": {"mlp": {"width": 8}},
        "recipe": {"lr": [0.05, 0.1], "batch_size": 32, "epochs": 2},
        "seeds": 2,
        "measures": {"lambda_max": {}},
    }
    base.update(over)
    return base


def _refused(spec, *fragments):
    with pytest.raises(FlatminimaError) as err:
        validate(spec)
    for f in fragments:
        assert f in str(err.value), str(err.value)
    return str(err.value)


def test_valid_spec_expands_to_product_of_sweeps_and_seeds():
    spec = validate(_spec(recipe={"lr": [0.05, 0.1], "batch_size": [16, 32, 64], "epochs": 2}, seeds=[3, 7]))
    runs = expand(spec)
    assert len(runs) == 2 * 3 * 2
    assert spec.axes == {"lr": [0.05, 0.1], "batch_size": [16, 32, 64]}
    assert {r.seed for r in runs} == {3, 7}
    assert len({r.id for r in runs}) == len(runs)  # the id hashes (config, seed): all distinct
    again = expand(
        validate(_spec(recipe={"lr": [0.05, 0.1], "batch_size": [16, 32, 64], "epochs": 2}, seeds=[3, 7]))
    )
    assert [r.id for r in again] == [r.id for r in runs]  # and stable across loads


def test_unknown_top_level_key_is_refused_with_its_path():
    _refused(_spec(mesures={"trace": {}}), "mesures", "unknown key")


def test_unknown_nested_key_is_refused():
    _refused(_spec(data={"name": "mnist1d", "sifts": "all"}), "data.sifts", "unknown key")


def test_unknown_recipe_field_is_refused_with_allowed_fields():
    msg = _refused(
        _spec(recipe={"lr": 0.1, "learning_rate": [0.1, 0.2]}), "recipe.learning_rate", "Recipe accepts"
    )
    assert "'lr'" in msg


def test_wrong_type_in_a_sweep_is_refused_with_grid_point():
    _refused(_spec(recipe={"lr": [0.1, "fast"]}), "recipe.lr", "'fast'")


def test_bad_value_is_refused_with_rule():
    _refused(_spec(recipe={"lr": [0.1, -1.0]}), "recipe.lr = -1.0", "greater than 0")


def test_empty_sweep_is_refused():
    _refused(_spec(recipe={"lr": [], "epochs": 2}), "recipe.lr = []", "empty sweep")


def test_repeated_sweep_value_is_refused():
    _refused(_spec(recipe={"lr": [0.1, 0.1]}), "recipe.lr", "repeats")


def test_seed_in_recipe_is_refused():
    _refused(_spec(recipe={"lr": 0.1, "seed": 1}), "recipe.seed", "seeds")


@pytest.mark.parametrize("seeds", [0, [], [1, 1], "two"])
def test_bad_seeds_are_refused(seeds):
    _refused(_spec(seeds=seeds), "seeds")


def test_empty_tables_are_refused():
    _refused(_spec(models={}), "models", "at least one")
    _refused(_spec(measures={}), "measures", "at least one")


def test_impossible_executor_combination_is_refused():
    _refused(_spec(executor={"kind": "local", "address": "ray://head:10001"}), "executor", "kind='ray'")
    _refused(_spec(executor={"kind": "slurm"}), "executor.kind", "'slurm'")
    _refused(_spec(executor={"workers": 0}), "executor.workers")


def test_unknown_measure_and_setting_are_refused():
    _refused(_spec(measures={"sharpnes": {}}), "measures.sharpnes", "available")
    _refused(_spec(measures={"trace": {"probs": 3}}), "measures.trace.probs", "samples")


def test_list_valued_recipe_field_sweeps_only_a_list_of_lists():
    # augment takes a list: ["shift"] is one value, [[], ["shift"]] sweeps two
    assert not is_sweep("augment", ["shift"])
    assert is_sweep("augment", [[], ["shift"]])
    assert is_sweep("lr", [0.1, 0.2]) and not is_sweep("lr", 0.1)
    spec = validate(_spec(recipe={"lr": 0.1, "augment": [[], ["shift", "noise"]]}))
    assert [p["augment"] for p in grid_points(spec)] == [[], ["shift", "noise"]]
    assert len(grid_points(validate(_spec(recipe={"lr": 0.1, "augment": ["shift"]})))) == 1


def test_toml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[recipe]\nlr = [0.1, -2]\n')
    with pytest.raises(FlatminimaError, match="bad.toml"):
        load(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(FlatminimaError, match="not valid TOML"):
        load(broken)
    with pytest.raises(FlatminimaError, match="does not exist"):
        load(tmp_path / "missing.toml")


def test_presets_ship_and_validate():
    assert {"quick", "function_centric"} <= set(presets())
    quick = load_preset("quick")
    assert 24 <= len(expand(quick)) <= 120  # a few dozen configurations x 3 seeds
    # hyperparameters and regularisers side by side, every run stopped at a matched train loss
    assert {"batch_size", "lr", "weight_decay", "augment", "sam"} <= set(quick.axes)
    assert quick.recipe["target_train_loss"] > 0 and quick.dtype == "float32"
    fc = load_preset("function_centric")
    assert {"model", "sam", "weight_decay", "augment"} <= set(fc.axes)
    with pytest.raises(FlatminimaError, match="shipped"):
        load_preset("nope")


def test_dtype_is_validated_defaults_to_float32_and_enters_the_run_id():
    spec = validate(_spec())
    assert spec.dtype == "float32" and all(r.dtype == "float32" for r in expand(spec))
    assert expand(spec)[0].to_dict()["dtype"] == "float32"
    wide = expand(validate(_spec(dtype="float64")))
    assert wide[0].dtype == "float64" and wide[0].id != expand(spec)[0].id
    _refused(_spec(dtype="float16"), "dtype", "float16", "float32", "float64")


def test_target_train_loss_in_a_spec_fixed_or_swept_and_refused_when_not_positive():
    spec = validate(_spec(recipe={"lr": 0.05, "epochs": 50, "target_train_loss": [0.5, 0.1]}))
    assert spec.axes == {"target_train_loss": [0.5, 0.1]}
    assert [r.recipe["target_train_loss"] for r in expand(spec)] == [0.5, 0.5, 0.1, 0.1]
    assert validate(_spec(recipe={"epochs": 50, "target_train_loss": 0.05})).axes == {}
    _refused(_spec(recipe={"epochs": 5, "target_train_loss": [0.1, 0.0]}), "recipe.target_train_loss",
             "must be a finite training loss > 0")
    _refused(_spec(recipe={"epochs": 5, "swa": True, "target_train_loss": 0.1}),
             "target_train_loss cannot be combined with swa")


def test_presets_use_the_current_setting_names():
    for name in presets():
        load_preset(name)  # an old setting name would be an unknown setting


def test_old_measure_setting_name_is_an_unknown_setting():
    assert validate(_spec(measures={"trace": {"method": "hutchinson", "samples": 6}})).measures["trace"]["samples"] == 6
    with pytest.raises(FlatminimaError, match="measures.trace.probes = 6: unknown setting"):
        validate(_spec(measures={"trace": {"method": "hutchinson", "probes": 6}}))
