"""Non-finite and absurd numbers: refused at the boundary (Recipe, the commands, the spec, the measures'
settings) by the one shared table in flatminima.validate, before any data is loaded or model trained."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from flatminima import validate
from flatminima.cli import app
from flatminima.errors import FlatminimaError
from flatminima.train import make_recipe


def _cli(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, args)
    if isinstance(res.exception, FlatminimaError):
        return 2, str(res.exception)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def _refused_cli(args: list[str], *fragments: str) -> str:
    code, msg = _cli(args)
    assert code == 2, msg
    for f in fragments:
        assert f in msg, msg
    return msg


@pytest.mark.parametrize("field,value,fragment", [
    ("weight_decay", math.inf, "weight_decay: must be a finite number in [0, 10]"),
    ("weight_decay", 1e300, "(got 1e+300)"),
    ("rho", math.inf, "rho: must be a finite number in (0, 10]"),
    ("noise_std", 1e300, "noise_std: must be a finite number"),
    ("augment_noise", math.nan, "augment_noise: must be a finite number"),
    ("lr", math.inf, "lr: must be a finite number in (0, 1000]"),
    ("lr", 1e300, "typical learning rates"),
    ("lr", "0.1", "not a string"),
    ("lr", True, "not a bool"),
    ("seed", 2**70, "seed: must be an integer in [0, 4294967295]"),
    ("seed", -1, "seed: must be an integer in [0, 4294967295]"),
    ("seed", "3", "(got '3')"),
    ("epochs", 10**8, "epochs: must be an integer in [1, 100000]"),
    ("eta_min", math.inf, "eta_min: must be a finite number"),
    ("grad_clip", math.inf, "grad_clip: must be a finite number"),
    ("swa_lr", math.nan, "swa_lr: must be a finite number"),
    ("betas", (math.nan, 0.9), "betas: must be two numbers in [0, 1)"),
    ("t_mult", 10**6, "t_mult: must be an integer in [1, 100]"),
])
def test_recipe_refuses_non_finite_and_absurd_numbers(field, value, fragment):
    with pytest.raises(FlatminimaError) as err:
        make_recipe(**{field: value})
    assert fragment in str(err.value), str(err.value)


def test_a_sensible_recipe_still_passes():
    r = make_recipe(lr=0.1, weight_decay=5e-4, rho=0.05, noise_std=0.01, epochs=200, seed=2**32 - 1)
    assert r.seed == 2**32 - 1 and r.weight_decay == 5e-4


@pytest.mark.parametrize("args,fragments", [
    (["train", "--weight-decay", "inf"], ["weight_decay", "inf"]),
    (["train", "--rho", "1e300", "--sam", "sam"], ["rho", "1e+300"]),
    (["train", "--noise-std", "nan", "--noise", "gaussian"], ["noise_std", "nan"]),
    (["train", "--set", "augment_noise=1e300"], ["augment_noise"]),
    (["train", "--epochs", "100000000"], ["--epochs", "100000000", "[1, 100000]"]),
    (["train", "--seed", str(2**70)], ["--seed", str(2**70)]),
    (["landscape", "--span", "inf"], ["--span", "inf"]),
    (["landscape", "--mode", "slice", "--dims", "2", "--steps", "5000"], ["--steps", "5000 × 5000", "1000000"]),
    (["landscape", "--mode", "connect", "--curve-lr", "nan"], ["--curve-lr", "nan"]),
    (["curvature", "--tol", "1.5"], ["--tol", "1.5", "(0, 1)"]),
    (["curvature", "--density-steps", "100000000"], ["--density-steps", "100000000"]),
    (["sharpness", "--measures", "average_case", "--set", "samples=100000000"], ["samples", "100000000"]),
    (["sharpness", "--measures", "lambda_max", "--set", "tol=2"], ["lambda_max.tol", "2"]),
    (["sharpness", "--measures", "average_case", "--set", "sigma=1e300"], ["sigma", "1e+300"]),
    (["inspect", "--lr", "inf", "--optimizer", "sgd"], ["--lr", "inf"]),
    (["lab", "run", "sgd_noise", "--seed", "-1"], ["--seed", "-1"]),
])
def test_commands_refuse_before_any_work(tmp_path, args, fragments):
    out = tmp_path / "out"
    _refused_cli([*args, "--data", "two_class", "--out", str(out)] if args[0] != "lab" else [*args, "--out", str(out)],
                 *fragments)
    assert not out.exists()  # refused before a folder, a data set or a model was made


def test_workers_beyond_the_machine_are_refused_with_the_limit(tmp_path):
    limit, why = validate.max_workers()
    with pytest.raises(FlatminimaError) as err:
        validate.check_workers("--workers", 100000)
    assert f"the limit here is {limit}" in str(err.value) and why in str(err.value)
    assert validate.check_workers("--workers", 1) == 1


def test_study_run_refuses_100000_workers_before_any_run(tmp_path):
    import flatminima.study as study

    spec = {"name": "w", "seeds": 1, "data": {"name": "two_class", "options": {"num_samples": 40}, "shifts": "none"},
            "models": {"mlp": {"width": 4}}, "recipe": {"epochs": 1}}
    with pytest.raises(FlatminimaError, match="the limit here is"):
        study.run(spec, out=tmp_path / "s", workers=100000, progress=False)
    assert not (tmp_path / "s").exists()
    _refused_cli(["study", "run", "--preset", "quick", "--workers", "100000", "--out", str(tmp_path / "q")],
                 "--workers 100000", "the limit here is")


def test_worker_limit_follows_the_available_memory(monkeypatch):
    monkeypatch.setattr(validate, "available_memory", lambda: 3 * validate.WORKER_MEMORY)
    assert validate.max_workers()[0] == 3
    with pytest.raises(FlatminimaError, match="available memory"):
        validate.check_workers("workers", 4)


def test_grid_sizes_are_checked_against_the_limit_and_memory(monkeypatch):
    with pytest.raises(FlatminimaError, match="1000000 points"):
        validate.check_grid("--steps", 10**8)
    monkeypatch.setattr(validate, "available_memory", lambda: 1000)
    with pytest.raises(FlatminimaError, match="GiB available"):
        validate.check_grid("--steps", 10_000, bytes_per_point=8)


@pytest.mark.parametrize("body,fragment", [
    ("[recipe]\nweight_decay = inf\n", "recipe.weight_decay = inf"),
    ("[recipe]\nlr = [0.1, nan]\n", "recipe.lr = nan"),
    ("seeds = [0, 1099511627776]\n", "seed 1099511627776 is out of range"),
    ("seeds = 100000000\n", "at most 10000 seeds"),
    ("[measures.average_case]\nsigma = inf\n", "measures.average_case.sigma must be a finite number"),
    ("[measures.lambda_max]\ntol = 1.5\n", "measures.lambda_max.tol must be a finite number in (0, 1), got 1.5"),
    ("[measures.average_case]\nsamples = 100000000\n", "measures.average_case.samples"),
])
def test_spec_numbers_are_refused_on_load(tmp_path, body, fragment):
    from flatminima.study.spec import load

    head = 'name = "n"\n[data]\nname = "two_class"\nshifts = "none"\n'
    path = tmp_path / "spec.toml"
    path.write_text(body + head if body.startswith("seeds") else head + body)  # top-level keys first
    with pytest.raises(FlatminimaError) as err:
        load(path)
    assert fragment in str(err.value), str(err.value)


def test_one_table_names_every_option_the_same_way():
    assert validate.bound_for("--weight-decay") is validate.bound_for("weight_decay") is \
        validate.bound_for("recipe.weight_decay")
    with pytest.raises(FlatminimaError, match=r"--span must be a finite number in \(0, 1000\], got inf"):
        validate.check_number("--span", math.inf)
    with pytest.raises(FlatminimaError, match="must be an integer"):
        validate.check_seed("seed", 1.5)
