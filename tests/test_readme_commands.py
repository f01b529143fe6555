"""The README's Commands section, in order, on a fresh folder: every command's options parse (each line is
also run with ``--help``, which fails on an option the command lacks), the cheap ones run (with small
settings added where a command would train for minutes), rerunning reuses results, and every output lands
under ``flatminima-out/``."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flatminima.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"

# Extra options that keep a command short (appended after the README's own); None: parse only (--help).
SMALL = {
    "curvature": ["--data", "two_class", "--data-arg", "num_samples=80", "--model-arg", "width=4", "--epochs", "1",
                  "--probes", "6", "--density-steps", "8", "--no-progress"],
    "curvature --compute": ["--data", "two_class", "--data-arg", "num_samples=80", "--model-arg", "width=4",
                            "--epochs", "1", "--probes", "6", "--no-progress"],
    "curvature --model": [],  # the README's own files (made below) are tiny: run as written
    "sharpness": ["--data", "two_class", "--data-arg", "num_samples=80", "--model-arg", "width=4", "--epochs", "1",
                  "--no-progress", "--json"],
    "lab list": [],
    "study status": [],
}

SPEC = """name = "quick"
seeds = 1
[data]
name = "two_class"
options = { num_samples = 60 }
shifts = "none"
[models.mlp]
width = 4
[recipe]
lr = [0.05, 0.1]
epochs = 1
[measures.lambda_max]
"""


def commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Commands"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    out = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        for part in filter(None, (p.strip() for p in line.split("&&"))):
            words = shlex.split(part)
            assert words[0] == "flatminima", part
            out.append(words[1:])
    return out


def _key(args: list[str]) -> str | None:
    for n in (2, 1):
        key = " ".join(args[:n])
        if key in SMALL:
            return key
    return None


def _invoke(args: list[str]):
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.output, res.exception)
    assert res.exit_code == 0, (args, res.output)
    return res.output


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    """The files the README names (mypkg.nets:make, net.pt, mydata.npz), in a fresh current folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), "
        "torch.nn.Linear(4, 2))\n")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    np.savez("mydata.npz", x_train=x[:30], y_train=(x[:30, 0] > 0).astype(np.int64), x_test=x[30:],
             y_test=(x[30:, 0] > 0).astype(np.int64))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    torch.save(net.state_dict(), "net.pt")
    Path("spec.toml").write_text(SPEC)
    return {p.name for p in tmp_path.iterdir()}


def test_readme_commands_in_order(user_files, tmp_path):
    cmds = commands()
    assert len(cmds) >= 10
    for args in cmds:
        _invoke([*args, "--help"])  # every option of the README's line exists on the command
        key = _key(args)
        if args[:2] == ["study", "run"] and "--executor" not in args:
            # the quick study itself takes minutes: a two-run study of the same name lands in the same folder
            rest = [a for a in args[2:] if a not in ("--preset", "quick")]
            first = _invoke(["study", "run", "spec.toml", *rest, "--no-report", "--no-progress"])
            assert "flatminima-out/quick" in first
            again = _invoke(["study", "run", "spec.toml", *rest, "--no-report", "--no-progress"])
            assert "already done" in again and "ran 0 run(s)" in again
        elif key is not None:
            _invoke([*args, *SMALL[key]])
            if args[:1] == ["curvature"] and "--checkpoint" not in args:
                assert "reusing" in _invoke([*args, *SMALL[key]])  # a rerun loads the trained model
    written = {p.name for p in tmp_path.iterdir()} - user_files
    assert written == {"flatminima-out"}, written
    tree = {p.relative_to(tmp_path / "flatminima-out").parts[0] for p in (tmp_path / "flatminima-out").iterdir()}
    assert {"curvature", "sharpness", "quick"} <= tree, tree
