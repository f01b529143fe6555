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


def test_fit_takes_a_dataset_or_a_dataloader():
    from torch.utils.data import DataLoader, TensorDataset

    from flatminima.train import fit

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 3, generator=g), torch.randint(0, 2, (40,), generator=g)
    weights = []
    for data in ((X, y), TensorDataset(X, y), DataLoader(TensorDataset(X, y), batch_size=7)):
        torch.manual_seed(0)
        net = build("mlp", (3,), 2, width=4)
        fit(net, data, {"epochs": 2, "batch_size": 8}, progress=False, eval_data=data)
        weights.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])


def test_hwc_uint8_images_and_factories_from_the_current_folder(tmp_path, monkeypatch):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 8, 8, 3), dtype=np.uint8)  # channels-last uint8 pixels
    y = rng.integers(0, 2, size=30)
    np.savez(tmp_path / "imgs.npz", x_train=x[:24], y_train=y[:24], x_test=x[24:], y_test=y[24:])
    (tmp_path / "mynets.py").write_text(
        "import torch\n\n"
        "def make(width=4):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.Flatten(),\n"
        "                               torch.nn.Linear(width * 36, 2))\n\n"
        "def data(n=24):\n"
        "    from torch.utils.data import TensorDataset\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    X = torch.rand(n, 3, 8, 8, generator=g)\n"
        "    return TensorDataset(X, (X.mean((1, 2, 3)) > 0.5).long()), TensorDataset(X[:8], torch.zeros(8).long())\n")
    monkeypatch.chdir(tmp_path)  # no PYTHONPATH: the current folder is importable
    from flatminima.data import load_file

    ds = load_file("imgs.npz")
    assert ds.input_shape == (3, 8, 8) and float(ds.x_train.max()) <= 1.0
    assert torch.allclose(ds.x_train[0, :, 1, 2], torch.as_tensor(x[0, 1, 2] / 255.0, dtype=torch.float32))
    for data in ("imgs.npz", "mynets:data"):
        out = str(tmp_path / "out" / data.replace(":", "_"))
        res = CliRunner().invoke(app, ["train", "--model", "mynets:make", "--data", data, "--epochs", "1",
                                       "--no-shifts", "--no-progress", "--json", "--out", out])
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["epochs_run"] == 1
