"""Bad input, tried as a careless user would: every case is refused with exit code 2 (the CLI) or a
FlatminimaError (the library), and a message naming the problem. Nothing here trains for more than a moment.

``_cli`` invokes the Typer app in-process; the real entry point ``flatminima.cli.main`` turns a
FlatminimaError into one line and exit code 2, which ``test_entry_point_prints_one_line_and_exits_2``
checks in a real subprocess, so here a FlatminimaError counts as exit code 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import flatminima.study as study
from flatminima.cli import app
from flatminima.data import load, load_file
from flatminima.errors import FlatminimaError, StoreError
from flatminima.models import build
from flatminima.study.store import DB_NAME, Store
from helpers import refused

SPEC = """
name = "{name}"
seeds = 1
[data]
name = "two_class"
options = {{ num_samples = 40 }}
shifts = "none"
[models.{model}]
{model_body}
[recipe]
lr = [0.05, 0.1, 0.2]
epochs = 1
[measures.{measure}]
{measure_body}
"""


def _spec(tmp_path, name="t", model="mlp", model_body="width = 4", measure="lambda_max", measure_body=""):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(name=name, model=model, model_body=model_body, measure=measure,
                                measure_body=measure_body))
    return path


def _cli(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, args)
    if isinstance(res.exception, FlatminimaError):
        return 2, str(res.exception)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def _refused_cli(args, *fragments):
    code, msg = _cli(args)
    assert code == 2, msg
    for f in fragments:
        assert f in msg, msg




# ---- study specs: every value checked on load --------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "", ".hidden", "x" * 101, "a..b"])
def test_study_name_is_a_name_not_a_path(tmp_path, name):
    refused(lambda: study.load(_spec(tmp_path, name=name)), "study name is a folder name")


@pytest.mark.parametrize("measure,body,fragment", [
    ("worst_case", "rho = -0.05", "rho must be a positive"),
    ("trace", "samples = 0", "samples must be a positive integer"),
    ("lambda_max", "tol = -1", "tol must be a positive"),
    ("average_case", 'sigma = "a"', "sigma must be a positive"),
    ("worst_case", 'norm = "l3"', "norm must be one of"),
    ("worst_case", "rhoo = 0.1", "unknown setting"),
    ("nosuch_measure", "", "unknown measure"),
])
def test_measure_settings_are_checked_when_the_spec_is_loaded(tmp_path, measure, body, fragment):
    refused(lambda: study.load(_spec(tmp_path, measure=measure, measure_body=body)), f"measures.{measure}",
             fragment)


@pytest.mark.parametrize("edit,fragment", [
    ({"seeds": 0}, "seeds"),
    ({"executor": {"workers": 0}}, "executor.workers"),
    ({"recipe": {"lr": []}}, "empty sweep"),
    ({"recipe": {"lr": -1.0}}, "recipe.lr"),
    ({"models": {}}, "models"),
    ({"dtype": "float16"}, "dtype"),
])
def test_bad_spec_values_are_refused_with_their_path(edit, fragment):
    spec = {"name": "t", "data": {"name": "two_class"}, "models": {"mlp": {}}, "recipe": {"epochs": 1},
            "measures": {"lambda_max": {}}, **edit}
    refused(lambda: study.validate(spec), fragment)


def test_an_empty_spec_file_is_refused(tmp_path):
    (tmp_path / "e.toml").write_text("# nothing\n")
    refused(lambda: study.load(tmp_path / "e.toml"), "is empty")


@pytest.mark.parametrize("factory", ["os:system", "subprocess:run", "builtins:eval", "shutil:rmtree",
                                     "os.path:join", "sys:exit"])
def test_a_spec_cannot_call_the_standard_library(tmp_path, factory):
    marker = tmp_path / "pwned"
    path = _spec(tmp_path, model=f'"{factory}"', model_body=f'command = "touch {marker}"')
    refused(lambda: study.run(path, out=tmp_path / "s", progress=False), factory, "standard library")
    assert not marker.exists() and not (tmp_path / "s").exists()


def test_study_run_out_naming_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    refused(lambda: study.run(_spec(tmp_path), out=tmp_path / "f", progress=False), "is a file")


@pytest.mark.parametrize("workers", [0, -3])
def test_study_run_workers_must_be_positive(tmp_path, workers):
    refused(lambda: study.run(_spec(tmp_path), out=tmp_path / "s", workers=workers, progress=False), "workers")


def test_data_options_beside_a_file_are_used_and_checked(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 3))
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(30) % 2)
    spec = {"name": "t", "data": {"name": str(tmp_path / "d.npz"), "options": {"test_fration": 0.5}},
            "models": {"mlp": {"width": 4}}, "recipe": {"epochs": 1, "lr": [0.1, 0.2, 0.3]}, "seeds": 1,
            "measures": {"lambda_max": {}}}
    refused(lambda: study.run(spec, out=tmp_path / "s", progress=False), "test_fration")
    spec["data"]["options"] = {"test_fraction": 0.5}
    info = study.runner.preflight(study.validate(spec))
    assert info["test_size"] == 15  # the option is applied, not silently ignored


# ---- model factories ---------------------------------------------------------------------------------------
@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        import torch
        def five():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 5))
        def one():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 1))
        def broken():
            raise RuntimeError("my factory is broken")
        def not_a_model():
            return 42
        def good():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 3))
        VALUE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models"
    sys.modules.pop("my_models", None)


@pytest.mark.parametrize("attr,fragment", [
    ("five", "outputs (5,) per sample"),
    ("one", "outputs (1,) per sample"),
    ("broken", "my factory is broken"),
    ("not_a_model", "not a torch.nn.Module"),
    ("VALUE", "not a torch.nn.Module class"),
    ("nothing_here", "cannot load model factory"),
])
def test_user_factories_are_checked(user_module, attr, fragment):
    refused(lambda: build(f"{user_module}:{attr}", (2,), 3), fragment)


def test_a_good_user_factory_builds(user_module):
    assert build(f"{user_module}:good", (2,), 3)(torch.zeros(1, 2)).shape == (1, 3)


@pytest.mark.parametrize("name,fragment", [
    ("os:system", "standard library"),
    ("numpy:array", "not a torch.nn.Module class"),
    ("torch:zeros", "not a torch.nn.Module class"),
    ("no_such_module_xyz:f", "no module named"),
    ("mod:", "must look like"),
    ("a b:c", "must look like"),
])
def test_factory_names_the_library_refuses(name, fragment):
    refused(lambda: build(name, (2,), 3), fragment)


# ---- data files --------------------------------------------------------------------------------------------
def _csv(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return str(path)


@pytest.mark.parametrize("text,fragment", [
    ("a,b,label\n1,2,0\n3,4,5,1\n", "line 3: 4 values but the header has 3"),
    ("a,b,label\n1,2,0\n3,1\n", "line 3: 2 values"),
    ("a,a,label\n1,2,0\n3,4,1\n", "more than once"),
    ("a,b,label\n1,x,0\n3,4,1\n", "needs a number"),
    ("a,b,c\n1,2,0\n3,4,1\n", "no label column"),
    ("a,b,label\n1,2,nan\n3,4,1\n", "targets contain NaN"),  # fractions are regression targets now
    ("a,b,label\n1,2,-1\n3,4,1\n5,6,0\n7,8,1\n9,1,0\n", "≥ 0"),
    ("a,b,label,split\n1,2,0,train\n3,4,1,trian\n", "'train' or 'test'"),
    ("a,b,label\n", "at least one data row"),
])
def test_csv_files_are_read_strictly(tmp_path, text, fragment):
    refused(lambda: load_file(_csv(tmp_path, text)), fragment)


def test_test_labels_beyond_the_training_labels_are_refused(tmp_path):
    path = _csv(tmp_path, "a,label,split\n1,0,train\n2,1,train\n3,0,test\n4,2,test\n")
    refused(lambda: load_file(path), "class(es) [2]", "num_classes")
    assert load_file(path, num_classes=3).num_classes == 3  # said explicitly: accepted


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_damaged_npz_files_are_refused(tmp_path, damage):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((20, 3)), y_train=np.zeros(20, dtype=int))
    blob = path.read_bytes()
    path.write_bytes({"truncated": blob[: len(blob) // 2], "random": os.urandom(300), "empty": b""}[damage])
    refused(lambda: load_file(str(path)), "d.npz")


@pytest.mark.parametrize("arrays,fragment", [
    ({"x": np.zeros((4, 2)), "y_train": np.zeros(4, dtype=int)}, "no array 'x_train'"),
    ({"x_train": np.full((4, 2), np.nan), "y_train": np.zeros(4, dtype=int)}, "NaN"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(3, dtype=int)}, "4 inputs but 3 labels"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.full(4, np.nan)}, "targets contain NaN"),  # floats: regression
])
def test_npz_content_is_checked(tmp_path, arrays, fragment):
    np.savez(tmp_path / "d.npz", **arrays)
    refused(lambda: load_file(str(tmp_path / "d.npz")), fragment)


@pytest.mark.parametrize("name,kw,fragment", [
    ("mnist1d", {"num_samples": 0}, "num_samples"),
    ("two_class", {"num_samples": -1}, "num_samples"),
    ("nosuch", {}, "unknown data set"),
    ("digits", {"test_fraction": 1.5}, "test_fraction"),
])
def test_builtin_data_options_are_checked(name, kw, fragment):
    refused(lambda: load(name, **kw), fragment)


# ---- the sharpness command: options checked before any training --------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["--split", "trian"], "--split must be one of"),
    (["--dtype", "float16"], "--dtype must be one of"),
    (["--device", "nonsense"], "--device 'nonsense'"),
    (["--epochs", "0"], "--epochs must be a positive"),
    (["--model", "os:system"], "standard library"),
    (["--data", "missing.npz"], "does not exist"),
    (["--measures", "no_such"], "unknown sharpness measure"),
    (["--set", "novalue"], "KEY=VALUE"),
])
def test_sharpness_refuses_bad_options(args, fragment):
    _refused_cli(["sharpness", "--data", "two_class", *args], fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_sharpness_device_cuda_without_cuda_is_refused_before_training():
    _refused_cli(["sharpness", "--device", "cuda"], "CUDA is not available")


def test_sharpness_out_naming_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    _refused_cli(["sharpness", "--out", str(tmp_path / "f")], "is a file")


# ---- the study command -------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["--workers", "0"], "--workers must be a positive"),
    (["--workers", "-2"], "--workers must be a positive"),
    (["--samples", "0"], "--samples must be at least"),
    (["--samples", "-5"], "--samples must be at least"),
    (["--n-boot", "0"], "No such option: --n-boot"),  # renamed --samples before the release
])
def test_study_run_refuses_bad_options(tmp_path, args, fragment):
    _refused_cli(["study", "run", str(_spec(tmp_path)), "--out", str(tmp_path / "s"), *args], fragment)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--samples", "0"], "--samples must be at least"),
    (["--samples", "-5"], "--samples must be at least"),
    (["--n-boot", "0"], "No such option: --n-boot"),  # renamed --samples before the release
    (["--max-samples", "10", "--samples", "100"], "--max-samples (10) must be at least --samples"),
    (["--max-boot", "10", "--samples", "100"], "No such option: --max-boot"),  # now --max-samples
    (["--alpha", "1.5"], "--alpha"),
])
def test_study_report_refuses_bad_options(tmp_path, args, fragment):
    _refused_cli(["study", "report", str(tmp_path), *args], fragment)


def test_study_cli_misc_refusals(tmp_path):
    (tmp_path / "f").write_text("x")
    _refused_cli(["study", "run", str(_spec(tmp_path)), "--out", str(tmp_path / "f")], "is a file")
    _refused_cli(["study", "report", str(tmp_path), "--out", str(tmp_path / "f")], "is a file")
    _refused_cli(["study", "run"], "give a spec file or --preset")
    _refused_cli(["study", "run", "--preset", "nope"], "unknown preset")
    _refused_cli(["study", "status", str(tmp_path / "nothing")], "no study store")
    (tmp_path / "e.toml").write_text("")
    _refused_cli(["study", "run", str(tmp_path / "e.toml")], "is empty")
    _refused_cli(["study", "run", str(_spec(tmp_path, name="../../x"))], "study name is a folder name")


# ---- damaged stores ----------------------------------------------------------------------------------------
def _store(folder):
    with Store(folder) as s:
        s.set_meta("spec", {"name": "t"})
        s.add_runs([("r1", "lr=0.1", 0, {"seed": 0})])
    return folder / DB_NAME


def _damage(db, how):
    blob = db.read_bytes()
    for side in ("-wal", "-shm"):
        (db.parent / (db.name + side)).unlink(missing_ok=True)
    if how == "empty":
        db.write_bytes(b"")
    elif how == "random":
        db.write_bytes(os.urandom(len(blob)))
    elif how == "zeroed_header":
        db.write_bytes(b"\0" * 100 + blob[100:])
    elif how == "truncated":
        db.write_bytes(blob[: len(blob) // 3 + 1])
    elif how == "no_runs_table":
        import sqlite3

        con = sqlite3.connect(db)
        con.execute("DROP TABLE runs")
        con.commit()
        con.close()
    elif how == "no_meta":
        import sqlite3

        con = sqlite3.connect(db)
        con.execute("DELETE FROM meta")
        con.commit()
        con.close()


@pytest.mark.parametrize("how", ["empty", "random", "zeroed_header", "truncated", "no_runs_table", "no_meta"])
@pytest.mark.parametrize("command", ["status", "report", "run"])
def test_a_damaged_store_is_named_never_restarted(tmp_path, how, command):
    folder = tmp_path / "s"
    db = _store(folder)
    _damage(db, how)
    before = db.read_bytes()
    args = {"status": ["study", "status", str(folder)], "report": ["study", "report", str(folder)],
            "run": ["study", "run", str(_spec(tmp_path)), "--out", str(folder)]}[command]
    code, msg = _cli(args)
    assert code == 2 and "is damaged" in msg and DB_NAME in msg and "study repair" in msg, msg
    assert db.read_bytes() == before  # not silently started afresh
    with pytest.raises(StoreError):
        Store(folder)


def test_status_opens_the_store_read_only(tmp_path):
    folder = tmp_path / "s"
    db = _store(folder)
    before = db.read_bytes()
    code, out = _cli(["study", "status", str(folder)])
    assert code == 0 and "1 left" in out
    assert db.read_bytes() == before


def test_a_read_only_folder_is_refused_by_run_in_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "s"
    _store(folder)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real(p, mode, **kw))
    refused(lambda: Store(folder), "is read-only", "study status")
    with Store(folder, create=False, readonly=True) as s:  # inspection still works
        assert s.counts().pending == 1


# ---- library calls ----------------------------------------------------------------------------------------
def test_require_int_names_the_parameter():
    from flatminima.errors import require_int

    refused(lambda: require_int("batch_size", 0, low=1), "batch_size must be an integer ≥ 1, got 0")
    refused(lambda: require_int("batch_size", True), "batch_size")


# ---- the real entry point ---------------------------------------------------------------------------------
def test_entry_point_prints_one_line_and_exits_2(tmp_path):
    code = ("import sys; from flatminima.cli import main; "
            f"sys.argv = ['flatminima', 'study', 'report', {str(tmp_path)!r}, '--samples', '-5']; main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "--samples" in res.stderr


# ---- train, curvature and landscape: every option checked before any data is loaded or model trained ---------
@pytest.mark.parametrize("command", ["curvature", "landscape", "train"])
def test_measuring_and_training_commands_refuse_an_out_that_is_a_file(tmp_path, command):
    (tmp_path / "f").write_text("x")
    _refused_cli([command, "--data", "two_class", "--out", str(tmp_path / "f")], "is a file")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["curvature", "landscape", "train", "sharpness"])
def test_device_cuda_without_cuda_is_refused_before_training(tmp_path, command):
    _refused_cli([command, "--data", "two_class", "--device", "cuda", "--out", str(tmp_path / "o")],
                 "CUDA is not available")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["curvature", "landscape"])
@pytest.mark.parametrize("args,fragment", [
    (["--dtype", "float16"], "--dtype must be one of"),
    (["--device", "nonsense"], "--device 'nonsense'"),
    (["--epochs", "0"], "--epochs must be a positive"),
])
def test_curvature_and_landscape_refuse_bad_options(tmp_path, command, args, fragment):
    _refused_cli([command, "--data", "two_class", "--out", str(tmp_path / "o"), *args], fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--split", "trian"], "--split must be one of"),
    (["--compute", "eigenvalues,nope"], "--compute: unknown"),
    (["--compute", ""], "--compute is empty"),
    (["--k", "0"], "--k must be a positive"),
    (["--operator", "fisher"], "--operator must be one of"),
])
def test_curvature_refuses_bad_options(tmp_path, args, fragment):
    _refused_cli(["curvature", "--data", "two_class", "--out", str(tmp_path / "o"), *args], fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--mode", "slise"], "--mode must be one of"),
    (["--dims", "3"], "--dims must be 1 or 2"),
    (["--kind", "filtr"], "--kind must be one of"),
])
def test_landscape_refuses_bad_options(tmp_path, args, fragment):
    _refused_cli(["landscape", "--data", "two_class", "--out", str(tmp_path / "o"), *args], fragment)
    assert not (tmp_path / "o").exists()


def test_split_typo_is_not_read_as_the_test_split():
    from flatminima.workflows import get_data, objective_for

    with pytest.raises(FlatminimaError, match="split must be one of"):
        objective_for(torch.nn.Linear(2, 2), get_data("two_class", num_samples=20), split="trian")


@pytest.mark.parametrize("recipe,fragment", [
    (None, "does not exist"),
    ("lr = [", "not a valid TOML file"),
    ("[recipe]\nlr = -1\n", "lr"),
    ("[recipe]\nno_such_field = 1\n", "no_such_field"),
])
def test_train_refuses_a_missing_or_invalid_recipe(tmp_path, recipe, fragment):
    path = tmp_path / "r.toml"
    if recipe is not None:
        path.write_text(recipe)
    _refused_cli(["train", "--data", "two_class", "--recipe", str(path), "--out", str(tmp_path / "o")], fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--ensemble", "0"], "--ensemble must be a positive"),
    (["--ensemble", "-1"], "--ensemble must be a positive"),
    (["--epochs", "0"], "--epochs must be a positive"),
    (["--device", "nonsense"], "--device 'nonsense'"),
])
def test_train_refuses_bad_options(tmp_path, args, fragment):
    _refused_cli(["train", "--data", "two_class", "--out", str(tmp_path / "o"), *args], fragment)
    assert not (tmp_path / "o").exists()


# ---- the Objective's own construction and data checks (library, not CLI) ---------------------------------
def _linear_objective(y=None, **options):
    from flatminima import Objective

    gen = torch.Generator().manual_seed(0)
    X = torch.randn(12, 4, generator=gen)
    y = torch.randint(0, 3, (12,), generator=gen) if y is None else y
    return Objective(torch.nn.Linear(4, 3), "cross_entropy", (X, y), **options)


@pytest.mark.parametrize("options,fragment", [
    ({"batch_size": 0}, "batch_size must be a positive"),
    ({"batch_size": -4}, "batch_size must be a positive"),
    ({"batch_size": 2.5}, "batch_size must be a positive"),
    ({"dtype": "float16"}, "dtype='float16' is not supported"),
    ({"dtype": "double precision"}, "pass 'float32' or 'float64'"),
    ({"dtype": torch.int64}, "floating torch dtype"),
    ({"device": "nonsense"}, "device='nonsense' is not a device name"),
    pytest.param({"device": "cuda"}, "CUDA is not available on this machine; available here: cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_objective_refuses_bad_construction_options(options, fragment):
    with pytest.raises(FlatminimaError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        _linear_objective(**options)


@pytest.mark.parametrize("dtype,expected", [("float64", torch.float64), ("float32", torch.float32),
                                            ("torch.float64", torch.float64)])
def test_objective_accepts_float_dtype_strings(dtype, expected):
    obj = _linear_objective(dtype=dtype)
    assert obj.dtype == expected and obj.params.dtype == expected


@pytest.mark.parametrize("labels,fragment", [
    ([0, 1, 2, 5] * 3, "class labels 0..5, but the model has 3 outputs"),
    ([0, 1, -1, 2] * 3, "class labels -1..2, but the model has 3 outputs"),
])
@pytest.mark.parametrize("options", [{}, {"batch_size": 4}, {"memory_mb": 4.0}])
@pytest.mark.parametrize("call", ["loss", "grad", "hvp"])
def test_objective_names_out_of_range_class_labels(labels, fragment, options, call):
    obj = _linear_objective(torch.tensor(labels), **options)
    with pytest.raises(FlatminimaError, match=fragment):
        obj.hvp(obj.params) if call == "hvp" else getattr(obj, call)()


def test_objective_names_out_of_range_labels_in_a_later_batch():
    obj = _linear_objective(torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 9]), batch_size=4)
    with pytest.raises(FlatminimaError, match="class labels 0..9, but the model has 3 outputs"):
        obj.loss()


def test_ignored_labels_are_not_out_of_range():
    from flatminima import Objective

    X, y = torch.randn(8, 4), torch.tensor([0, 1, 2, -100] * 2)
    obj = Objective(torch.nn.Linear(4, 3), torch.nn.CrossEntropyLoss(ignore_index=-100), (X, y))
    assert np.isfinite(obj.loss())


def test_fit_batch_size_zero_is_full_batch_as_documented():
    from flatminima.train.recipes import Recipe

    assert "0 both mean full-batch" in Recipe.model_fields["batch_size"].description
    with pytest.raises(Exception, match="batch_size must be a positive integer"):
        Recipe(batch_size=-1)


@pytest.mark.parametrize(("option", "fragment"), [
    ("--samples", "--samples must be at least 6"),
    ("--probes", "No such option: --probes"),  # renamed --samples before the release
])
def test_curvature_refuses_too_few_trace_probes_before_training(tmp_path, option, fragment):
    _refused_cli(["curvature", "--data", "two_class", option, "4", "--out", str(tmp_path / "o")], fragment)
    assert not (tmp_path / "o").exists()
