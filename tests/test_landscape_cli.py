"""`flatminima landscape` end to end on a tiny user data file: every figure and its data are written."""

from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from flatminima.cli import app
from flatminima.errors import FlatminimaError
from flatminima.models import mlp
from flatminima.train import save_checkpoint

runner = CliRunner()


def _data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    return str(path)


def test_paper_mode_writes_every_figure(tmp_path):
    out = tmp_path / "figs"
    args = [
        "landscape",
        "--mode",
        "paper",
        "--data",
        _data(tmp_path),
        "--model-arg",
        "width=6",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--large-batch",
        "120",
        "--steps",
        "5",
        "--out",
        str(out),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    for stem in (
        "slice1d_filter",
        "slice2d_filter",
        "slice2d_filter_3d",
        "pca_contour",
        "interpolation_lb_sb",
    ):
        assert (out / f"{stem}.png").exists() and (out / f"{stem}.svg").exists(), stem
    for stem in ("slice2d_filter", "pca_contour", "interpolation_lb_sb", "slice1d_filter_small-batch"):
        assert (out / f"{stem}.csv").exists() and (out / f"{stem}.json").exists(), stem
    assert set(summary["barrier"]) == {"train_loss", "train_error", "test_loss", "test_error"}
    assert 0 < summary["pca_explained_variance"][1] <= summary["pca_explained_variance"][0] <= 1
    meta = json.loads((out / "interpolation_lb_sb.json").read_text())
    assert meta["barrier_definition"].startswith("max_{0<=t<=1}")


def test_slice_from_user_checkpoint(tmp_path):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "net.pt", mlp((5,), 2, width=6))
    out = tmp_path / "one"
    args = [
        "landscape",
        "--mode",
        "slice",
        "--dims",
        "1",
        "--kind",
        "layer",
        "--checkpoint",
        str(ckpt),
        "--model-arg",
        "width=6",
        "--data",
        _data(tmp_path),
        "--steps",
        "7",
        "--out",
        str(out),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["directions"]["kind"] == "layer"
    rows = (out / "slice1d_layer.csv").read_text().strip().splitlines()
    assert rows[0].split(",") == ["alpha", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert len(rows) == 8


def test_bad_choice_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["landscape", "--mode", "sideways", "--data", _data(tmp_path)])
    assert result.exit_code != 0
    assert "mode must be one of" in str(result.exception)


def test_paper_mode_pairs_models_at_a_matched_train_loss(tmp_path):
    out = tmp_path / "matched"
    args = ["landscape", "--mode", "paper", "--data", _data(tmp_path), "--model-arg", "width=6", "--epochs", "60",
            "--batch-size", "16", "--large-batch", "120", "--steps", "5", "--target-train-loss", "0.6",
            "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["matched_train_loss"] is True, summary["pairing"]
    bad_args = [a if a != "0.6" else "0" for a in args]
    bad_args[bad_args.index(str(out))] = str(tmp_path / "bad")
    bad = runner.invoke(app, bad_args)
    assert isinstance(bad.exception, FlatminimaError) and "target-train-loss" in str(bad.exception)


def _slice_args(tmp_path, device, out):
    return ["landscape", "--mode", "slice", "--dims", "1", "--kind", "random", "--data", _data(tmp_path),
            "--model-arg", "width=6", "--epochs", "1", "--batch-size", "32", "--steps", "3", "--no-test",
            "--device", device, "--out", str(out), "--json"]


def test_device_cpu_and_auto_run(tmp_path, monkeypatch):
    import flatminima.workflows.landscape_figures as figures

    seen = []
    real = figures.fit
    monkeypatch.setattr(figures, "fit", lambda *a, **kw: seen.append(kw.get("device")) or real(*a, **kw))
    for device in ("cpu", "auto"):
        result = runner.invoke(app, _slice_args(tmp_path, device, tmp_path / device))
        assert result.exit_code == 0, result.output
        assert (tmp_path / device / "slice1d_random.csv").exists()
    # auto resolves to whatever this machine has; the workflow gets the resolved name, never "auto"
    assert seen[0] == "cpu" and seen[1] in ("cpu", "cuda", "mps"), seen


def test_cuda_without_cuda_is_refused_before_any_work(tmp_path):
    if torch.cuda.is_available():
        return
    result = runner.invoke(app, _slice_args(tmp_path, "cuda", tmp_path / "cuda"))
    assert isinstance(result.exception, FlatminimaError) and "CUDA is not available" in str(result.exception)
    assert not (tmp_path / "cuda").exists()
