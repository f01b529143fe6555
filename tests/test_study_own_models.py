"""Studies over the user's own models: checkpoints, training function, in-memory models, loss, targets, shifts,
kept weights, added columns, the identity version, the DataFrame, and bad input refused before any work."""

from __future__ import annotations

import csv
import itertools
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import flatminima.study as study
from flatminima import Objective, curvature
from flatminima.data import load as load_data
from flatminima.errors import FlatminimaError
from flatminima.study.runner import weights_path
from flatminima.train.losses import loss_function

NETS = '''
import torch
from torch import nn

def make(width=16):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Tanh(), nn.Linear(width, 10))

def train(model, data, hp, seed):
    x, y = data
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=hp["lr"])
    for step in range(hp.get("steps", 40)):
        i = torch.randint(0, len(x), (64,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
    return model if hp.get("ok", True) else None

def worst_class_acc(model, data):
    x, y = data.test
    pred = model.eval()(x).argmax(1)
    return min(float((pred[y == k] == k).float().mean()) for k in range(10))

def broken(model, data):
    raise RuntimeError("no luck")

def detached_loss(out, y):
    return nn.functional.cross_entropy(out, y).detach()

def my_loss(out, y):
    return nn.functional.cross_entropy(out, y) + 0.0 * out.pow(2).mean()

def blurred(scale=0.5):
    from flatminima.data import load
    d = load("digits")
    return {1: (d.x_test * scale, d.y_test), 2: (d.x_test * scale * 0.5, d.y_test)}
'''

MEASURES = '''
[measures.lambda_max]
[measures.param_norm]
'''


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A module of the user's own (architecture, training loop, targets, loss, shifts) under a unique name."""
    name = f"usernets_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _checkpoints(tmp_path, nets, widths=(8, 16, 24), lrs=(0.05, 0.5), seeds=(0, 1)):
    """A plain-PyTorch loop's checkpoints and the manifest listing them (widths × lrs × seeds)."""
    mod = __import__(nets)
    data = load_data("digits")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    rows = []
    for w, lr, s in itertools.product(widths, lrs, seeds):
        torch.manual_seed(s)
        model = mod.make(width=w)
        mod.train(model, data.train, {"lr": lr, "steps": 30}, s)
        path = folder / f"w{w}_lr{lr}_s{s}.pt"
        torch.save(model.state_dict(), path)
        rows.append({"path": path.name, "seed": s, "width": w, "lr": lr})
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _spec(name, nets, manifest, measures=MEASURES, extra=""):
    return textwrap.dedent(f'''
        name = "{name}"
        [data]
        name = "digits"
        shifts = "none"
        [checkpoints]
        manifest = "{manifest}"
        model = "{nets}:make"
        {extra}
    ''') + measures


def test_a_checkpoint_study_measures_every_checkpoint_without_training_and_reports(tmp_path, nets):
    manifest = _checkpoints(tmp_path, nets)
    spec = tmp_path / "ck.toml"
    spec.write_text(_spec("ck", nets, manifest))
    res = study.run(spec, out=tmp_path / "out", progress=False)
    assert res.counts.done == 12 and res.failed == 0
    df = study.frame(tmp_path / "out")
    assert len(df) == 12 and {"width", "lr", "seed", "lambda_max", "lambda_max_stderr", "gap", "test_acc",
                              "final_train_loss", "loss"} <= set(df.columns)
    assert set(df["width"]) == {8, 16, 24} and (df["loss"] == "cross_entropy").all()
    # one checkpoint's λmax equals curvature.eigenvalues on the same checkpoint and loss
    row = df.iloc[0]
    model = __import__(nets).make(width=int(row["width"]))
    model.load_state_dict(torch.load(row["weights"], weights_only=True))
    obj = Objective(model, "cross_entropy", load_data("digits").train, dtype=torch.float32)
    ref = curvature.eigenvalues(obj, k=1).values[0]
    assert row["lambda_max"] == pytest.approx(float(ref), rel=1e-3)
    assert row["final_train_loss"] == pytest.approx(float(obj.loss(obj.params)), rel=1e-5)
    with study.Store(tmp_path / "out") as store:
        axes = store.get_meta("axes")
    assert set(axes) == {"width", "lr"}  # the manifest's columns are the hyperparameter axes
    rep = study.report(tmp_path / "out", samples=500, max_samples=1000)
    assert {r["target"] for r in rep.table} >= {"gap", "test_acc", "ece"}
    assert not (tmp_path / "out" / "weights").exists()  # a checkpoint is its own weights: nothing copied


def test_a_changed_checkpoint_is_reported_never_mixed(tmp_path, nets):
    manifest = _checkpoints(tmp_path, nets, widths=(8,), lrs=(0.05, 0.5, 0.2), seeds=(0,))
    spec = tmp_path / "ck.toml"
    spec.write_text(_spec("ck", nets, manifest))
    study.run(spec, out=tmp_path / "out", progress=False)
    first = next((tmp_path / "ckpt").glob("*.pt"))
    state = torch.load(first, weights_only=True)
    state["1.bias"] += 1.0
    torch.save(state, first)
    with pytest.raises(FlatminimaError, match="changed since"):
        study.run(spec, out=tmp_path / "out", progress=False)


def test_checkpoint_bad_input_is_refused_before_any_work(tmp_path, nets):
    manifest = _checkpoints(tmp_path, nets, widths=(8,), lrs=(0.05,), seeds=(0, 1))
    text = manifest.read_text()

    def attempt(manifest_text, match, model=f"{nets}:make"):
        m = tmp_path / "ckpt" / "m2.csv"
        m.write_text(manifest_text)
        spec = tmp_path / "bad.toml"
        spec.write_text(_spec("bad", nets, m).replace(f'"{nets}:make"', f'"{model}"'))
        with pytest.raises(FlatminimaError, match=match):
            study.run(spec, out=tmp_path / "bad", progress=False)
        assert not (tmp_path / "bad").exists()

    attempt(text.replace("w8_lr0.05_s1.pt", "missing.pt"), "line 3: checkpoint 'missing.pt' does not exist")
    attempt(text + text.splitlines()[1] + "\n", "listed already on line 2")
    attempt(text.replace(",0.05\n", ",fast\n", 1), "column 'lr' mixes words")
    attempt(text.replace(",0.05\n", ",\n", 1), "column 'lr' is empty")
    attempt(text.replace("path,", "file,"), "no 'path' column")
    attempt(text.replace(",0,8,", ",0,4,"), "line 2.*does not match the architecture.*1.weight: shape")
    # a pickle with code is not loaded
    torch.save({"model": object()}, tmp_path / "ckpt" / "w8_lr0.05_s0.pt", _use_new_zipfile_serialization=True)
    attempt(text, "cannot be loaded safely")


def test_a_study_trained_with_mse_measures_on_mse(tmp_path):
    spec = textwrap.dedent('''
        name = "mse"
        seeds = 1
        [data]
        name = "mnist1d"
        options = { num_samples = 300, seed = 1 }
        shifts = "none"
        [models.mlp]
        width = 8
        [recipe]
        loss = "mse"
        lr = [0.05, 0.1, 0.2]
        epochs = 2
        [measures.lambda_max]
    ''')
    res = study.run(study.validate(__import__("tomllib").loads(spec)), out=tmp_path / "out", progress=False)
    assert res.counts.done == 3
    df = study.frame(tmp_path / "out")
    assert (df["loss"] == "mse").all()
    row = df.iloc[0]
    from flatminima.models import build

    data = load_data("mnist1d", num_samples=300, seed=1)
    model = build("mlp", data.input_shape, data.num_classes, width=8)
    model.load_state_dict(torch.load(weights_path(tmp_path / "out", row["id"]), weights_only=True))
    mse = Objective(model, loss_function("mse"), data.train, dtype=torch.float32)
    ce = Objective(model, "cross_entropy", data.train, dtype=torch.float32)
    lam_mse = float(curvature.eigenvalues(mse, k=1).values[0])
    lam_ce = float(curvature.eigenvalues(ce, k=1).values[0])
    assert row["lambda_max"] == pytest.approx(lam_mse, rel=1e-3)
    assert abs(lam_mse - lam_ce) > 0.05 * lam_mse  # the two losses differ: measuring on CE would be caught
    assert row["final_train_loss"] == pytest.approx(float(mse.loss(mse.params)), rel=1e-5)


def test_a_regression_study_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (np.sin(x @ rng.normal(size=6)) + 0.1 * rng.normal(size=300)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    spec = {"name": "reg", "seeds": 2, "data": {"name": str(tmp_path / "reg.npz")}, "models": {"mlp": {"width": 8}},
            "recipe": {"lr": [0.02, 0.05, 0.1], "epochs": 2}, "measures": {"lambda_max": {}, "param_norm": {}}}
    with pytest.raises(FlatminimaError, match='regression task.*recipe.loss = "mse"'):
        study.run(spec, out=tmp_path / "bad", progress=False)
    spec["recipe"]["loss"] = "mse"
    res = study.run(spec, out=tmp_path / "out", progress=False)
    assert res.counts.done == 6 and res.failed == 0
    df = study.frame(tmp_path / "out")
    assert (df["loss"] == "mse").all() and {"test_mse", "mse_gap"} <= set(df.columns)
    assert np.allclose(df["mse_gap"], df["test_mse"] - df["train_loss"], atol=1e-6)
    rep = study.report(tmp_path / "out", samples=500, max_samples=1000)
    assert {r["target"] for r in rep.table} == {"test_mse", "mse_gap"}
    assert "Robustness beyond clean accuracy" not in rep.html.read_text()


def _train_spec(nets, targets="", measures=MEASURES, extra=""):
    return textwrap.dedent(f'''
        name = "own"
        seeds = 2
        [data]
        name = "digits"
        shifts = "none"
        [models."{nets}:make"]
        width = 8
        [train]
        function = "{nets}:train"
        [recipe]
        lr = [0.05, 0.2, 0.5]
        steps = 20
        {extra}
    ''') + targets + measures


def test_the_users_training_function_targets_shifts_and_added_columns(tmp_path, nets):
    targets = textwrap.dedent(f'''
        [targets.gap]
        [targets.worst_class]
        function = "{nets}:worst_class_acc"
        higher_is_better = true
        [targets.flaky]
        function = "{nets}:broken"
        higher_is_better = false
        [shifts.dim]
        factory = "{nets}:blurred"
        options = {{ scale = 0.5 }}
        [targets.shift_drop]
        [targets.effective_robustness]
    ''')
    spec = tmp_path / "own.toml"
    spec.write_text(_train_spec(nets, targets))
    res = study.run(spec, out=tmp_path / "out", progress=False)
    assert res.counts.done == 6 and res.failed == 0
    with study.Store(tmp_path / "out") as store:
        rows = store.rows("done")
    r = rows[0]["results"]
    assert r["targets"]["flaky"] is None and "no luck" in r["target_errors"]["flaky"]  # recorded, run kept
    assert 0 <= r["targets"]["worst_class"] <= 1 and set(r["metrics"]["shifts"]) == {"dim@1", "dim@2"}
    assert r["training"]["epochs_run"] is None and r["training"]["final_train_loss"] > 0
    assert all(weights_path(tmp_path / "out", row["id"]).exists() for row in rows)
    # add a measure: only that column, from the kept weights, no training
    spec.write_text(_train_spec(nets, targets, MEASURES + "[measures.trace]\nmethod = \"hutchinson\"\nsamples = 4\n"))
    again = study.run(spec, out=tmp_path / "out", progress=False)
    assert again.executed == 6 and again.resumed["columns_added"] == 6 and "kept weights" in again.resumed_message
    with study.Store(tmp_path / "out") as store:
        after = {row["id"]: row for row in store.rows("done")}
    for row in rows:
        new = after[row["id"]]
        assert new["attempts"] == row["attempts"] and new["finished"] == row["finished"]  # not retrained
        assert new["results"]["measures"]["lambda_max"] == row["results"]["measures"]["lambda_max"]
        assert "trace" in new["results"]["measures"]
    assert study.run(spec, out=tmp_path / "out", progress=False).executed == 0
    rep = study.report(tmp_path / "out", samples=500, max_samples=1000)
    assert "effective_robustness" in {t["target"] for t in rep.table}
    assert "Robustness beyond clean accuracy" in rep.html.read_text()
    # the study's identity: changing training is another study, with what changed named
    spec.write_text(_train_spec(nets, targets).replace("steps = 20", "steps = 21"))
    with pytest.raises(FlatminimaError, match="changed: recipe"):
        study.run(spec, out=tmp_path / "out", progress=False)


def test_a_training_function_returning_nothing_fails_that_run_with_the_reason(tmp_path, nets):
    spec = tmp_path / "own.toml"
    spec.write_text(_train_spec(nets, extra="ok = [true, false]").replace("lr = [0.05, 0.2, 0.5]", "lr = 0.1"))
    res = study.run(spec, out=tmp_path / "out", progress=False)
    assert res.counts.done == 2 and res.counts.failed == 2
    with study.Store(tmp_path / "out") as store:
        errors = [r["error"] for r in store.rows("failed")]
    assert all("returned NoneType" in e for e in errors)


def test_a_non_differentiable_loss_is_refused_before_any_work(tmp_path, nets):
    spec = tmp_path / "own.toml"
    spec.write_text(f'loss = "{nets}:detached_loss"\n' + _train_spec(nets))
    with pytest.raises(FlatminimaError, match="not differentiable"):
        study.run(spec, out=tmp_path / "out", progress=False)
    spec.write_text(f'loss = "{nets}:my_loss"\n' + _train_spec(nets).replace("seeds = 2", "seeds = 1"))
    study.run(spec, out=tmp_path / "ok", progress=False)
    assert set(study.frame(tmp_path / "ok")["loss"]) == {f"{nets}:my_loss"}


def test_in_memory_models_from_python(tmp_path, nets):
    mod = __import__(nets)
    data = load_data("digits")
    models = []
    for lr, s in itertools.product((0.05, 0.2, 0.5), (0, 1)):
        torch.manual_seed(s)
        m = mod.make(width=8)
        mod.train(m, data.train, {"lr": lr, "steps": 20}, s)
        models.append({"model": m, "hyperparameters": {"lr": lr}, "seed": s})
    spec = {"name": "mem", "data": {"name": "digits", "shifts": "none"}, "measures": {"lambda_max": {}}}
    res = study.run(spec, models=models, out=tmp_path / "out", progress=False)
    assert res.counts.done == 6
    df = study.frame(tmp_path / "out")
    assert sorted(df["lr"].unique()) == [0.05, 0.2, 0.5]
    with pytest.raises(FlatminimaError, match="models\\[0\\] must be a dict"):
        study.run(spec, models=[object()], out=tmp_path / "bad", progress=False)


V1 = Path(__file__).parent / "data" / "study_v1"


def test_a_version_1_store_resumes_unchanged_or_is_refused_with_what_to_do(tmp_path):
    """A store written by the previous version of flatminima (tests/data/study_v1: 3 runs; its run ids hashed
    the measures, it has no identity version and kept no weights)."""
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(V1 / "study.sqlite", folder / "study.sqlite")
    spec = V1 / "v1.toml"
    again = study.run(spec, out=folder, progress=False)
    assert again.executed == 0 and again.counts.done == 3  # resumed as it was: nothing redone
    df = study.frame(folder)
    assert len(df) == 3 and {"lambda_max", "gap", "test_acc"} <= set(df.columns)
    assert study.report(folder, samples=200, max_samples=400).html.exists()
    more = study.load(spec).model_dump()
    more["measures"]["trace"] = {"method": "hutchinson", "samples": 4}
    with pytest.raises(FlatminimaError, match="earlier flatminima.*identity version 1.*new folder"):
        study.run(more, out=folder, progress=False)


def test_the_design_check_warns_when_no_interval_can_exclude_zero(tmp_path, capsys):
    spec = {"name": "small", "seeds": 1, "data": {"name": "mnist1d", "options": {"num_samples": 200},
                                                  "shifts": "none"},
            "models": {"mlp": {"width": 4}}, "recipe": {"lr": [0.05, 0.1, 0.2], "epochs": 1},
            "measures": {"param_norm": {}}}
    study.run(spec, out=tmp_path / "s", progress=False)
    err = capsys.readouterr().err
    assert "3 configuration(s)" in err and "10 distinct resamples" in err and "single seed" in err
    rep = study.report(tmp_path / "s", samples=200, max_samples=400)
    assert any("Design:" in n for n in rep.notes)


def test_target_registry():
    from flatminima.study import targets

    assert {"gap", "test_acc", "ece", "shift_drop", "effective_robustness", "test_mse", "mse_gap"} <= set(
        targets.available())
    assert set(targets.available("regression")) >= {"test_mse", "mse_gap", "test_loss"}
    assert "gap" not in targets.available("regression")
    t = targets.register("margin_sq", lambda model, data, metrics: 1.0, higher_is_better=True)
    assert targets.get("margin_sq") is t and t.to_meta()["lower_is_better"] is False
    with pytest.raises(FlatminimaError, match="higher_is_better"):
        targets.register("bad", lambda *a: 0, higher_is_better="yes")
    with pytest.raises(FlatminimaError, match="applies to regression"):
        targets.resolve({"test_mse": {}}, "classification", False)
    values, errors = targets.compute({"nan": targets.Target("nan", lambda *a: float("nan"), True, "nan")},
                                     None, None, {})
    assert values["nan"] is None and "non-finite" in errors["nan"]
    assert np.isnan(float("nan"))
