"""`flatminima train`: a TOML recipe plus flags in; checkpoint, metrics JSON and curve (PNG/SVG/CSV) out."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from flatminima.cli import app
from flatminima.errors import FlatminimaError
from flatminima.models import build
from flatminima.train import load_checkpoint


def test_train_command_writes_checkpoint_metrics_and_curve(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[recipe]\noptimizer = "sgd"\nlr = 0.1\nepochs = 2\nschedule = "cosine"\n')
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--model", "mlp", "--data", "two_class",
                                      "--recipe", str(recipe),
                                      "--epochs", "3", "--set", "batch_size=32", "--model-arg", "width=8",
                                      "--data-arg", "num_samples=200", "--out", str(out), "--no-progress",
                                      "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["recipe"]["epochs"] == 3 and summary["recipe"]["lr"] == 0.1  # flag overrides file
    assert summary["recipe"]["batch_size"] == 32 and summary["recipe"]["schedule"] == "cosine"
    for name in ("last.pt", "model.pt", "metrics.json", "curve.png", "curve.svg", "curve.csv"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader((out / "curve.csv").open()))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    torch.manual_seed(0)
    net = build("mlp", (2,), 2, width=8)
    load_checkpoint(out / "model.pt", net)  # the saved weights rebuild the model
    from flatminima.data import load
    from flatminima.train import evaluate

    test = evaluate(net, load("two_class", num_samples=200).test)
    assert test["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-6)


def test_train_command_refuses_bad_recipe_field(tmp_path):
    result = CliRunner().invoke(app, ["train", "--data", "two_class", "--set", "epoch=3",
                                      "--out", str(tmp_path)])
    assert isinstance(result.exception, FlatminimaError)
    assert "epoch: Extra inputs are not permitted" in str(result.exception)


def test_train_command_stops_at_the_target_train_loss(tmp_path):
    args = ["train", "--model", "mlp", "--data", "two_class", "--epochs", "40", "--lr", "0.1",
            "--set", "batch_size=32", "--model-arg", "width=8", "--data-arg", "num_samples=200",
            "--no-progress", "--shifts"]
    free = CliRunner().invoke(app, args + ["--out", str(tmp_path / "a"), "--json"])
    assert free.exit_code == 0, free.output
    first = json.loads(free.output)
    assert first["training"]["reached_target"] is None and first["epochs_run"] == 40
    target = first["training"]["final_train_loss"] * 1.5  # reached before the cap
    res = CliRunner().invoke(app, args + ["--target-train-loss", str(target), "--out", str(tmp_path / "b"),
                                          "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["recipe"]["target_train_loss"] == target
    t = summary["training"]
    assert t["reached_target"] is True and t["final_train_loss"] <= target and t["epochs_run"] < 40
    assert summary["epochs_run"] == t["epochs_run"] == len(summary["history"])
    assert all(r["exact_train_loss"] > target for r in summary["history"][:-1])
    text = CliRunner().invoke(app, args + ["--target-train-loss", "1e-9", "--epochs", "2",
                                           "--out", str(tmp_path / "c")])
    assert text.exit_code == 0 and "not reached within 2 epochs" in text.output
    bad = CliRunner().invoke(app, args + ["--target-train-loss", "0", "--out", str(tmp_path / "d")])
    assert isinstance(bad.exception, FlatminimaError) and "target_train_loss must be" in str(bad.exception)
