"""The first user path end to end: the curvature command, with a user's checkpoint and data file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flatminima.cli import app
from flatminima.models import mlp
from flatminima.train import save_checkpoint

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output root flatminima-out/ lands in the test's folder


def _user_files(tmp_path, width=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "net.pt", mlp((5,), 2, width=width))
    return str(data), ckpt


def test_curvature_json_on_user_checkpoint_and_data(tmp_path):
    data, ckpt = _user_files(tmp_path)
    result = runner.invoke(app, ["curvature", "--model", "mlp", "--model-arg", "width=8", "--checkpoint", ckpt,
                                 "--data", data, "--k", "2", "--samples", "12", "--json", "--dtype", "float64"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    top = report["top"]
    assert len(top["values"]) == 2 and top["values"][0] >= top["values"][1]
    assert all(top["converged"]) and top["cost"]["hvps"] > 0
    assert report["trace"]["stderr"] >= 0 and report["objective"]["mode"] == "eval"
    assert report["objective"]["samples"] == 100


def test_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
    data, ckpt = _user_files(tmp_path, width=8)
    # The default built-in mlp has width 64: the checkpoint's tensors do not fit it.
    proc = subprocess.run([sys.executable, "-m", "flatminima.cli", "curvature", "--checkpoint", ckpt, "--data", data],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "does not fit the model" in proc.stdout + proc.stderr


def test_curvature_table_prints_true_residuals_and_the_floor(tmp_path):
    data, ckpt = _user_files(tmp_path)
    result = runner.invoke(app, ["curvature", "--model", "mlp", "--model-arg", "width=8", "--checkpoint", ckpt,
                                 "--data", data, "--k", "2", "--samples", "12"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "true residual" in result.output and "rounding floor" in result.output
    report = json.loads(runner.invoke(app, ["curvature", "--model", "mlp", "--model-arg", "width=8", "--checkpoint",
                                            ckpt, "--data", data, "--k", "2", "--samples", "12", "--json"]).output)
    top = report["top"]  # float32: every residual and bound at or above the floor, not the recurrence's 1e-20s
    assert top["floor"] > 0 and min(top["residuals"]) >= top["floor"] and min(top["error_bounds"]) >= top["floor"]
