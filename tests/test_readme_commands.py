"""The README's commands. Fast: every line of the Commands section parses (run with ``--help``, which fails on an
option the command lacks), and ``lab run`` / ``claims`` refuse a device they cannot use before any work. Slow: on
a fresh copy of the repository, the quick start's two commands (their equivalents with this interpreter) and then
every line of the Commands section in order, with small settings added where a command would train for minutes;
rerunning reuses results, and every output lands under ``flatminima-out/``.

The copy is of the tracked files as they are in the working tree (so uncommitted edits are tested, and a new
file that was never ``git add``-ed is missing, as in a clone); ``FLATMINIMA_TEST_CLONE=git`` makes it a
``git clone`` of HEAD instead. The shared helpers (``shell_commands``, ``invoke``) are also used by
``test_docs_commands.py``."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flatminima.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Extra options that keep a command short (appended after the README's own); a line with no entry is run as
# written. The study lines are handled apart (a tiny spec named `quick` stands in for the preset).
SMALL = {
    "curvature": ["--data", "two_class", "--data-arg", "num_samples=80", "--model-arg", "width=4", "--epochs", "1",
                  "--samples", "6", "--density-steps", "8", "--no-progress"],
    "curvature --compute": ["--data", "two_class", "--data-arg", "num_samples=80", "--model-arg", "width=4",
                            "--epochs", "1", "--samples", "6", "--no-progress"],
    "curvature --model": [],  # the README's own files (made below) are tiny: run as written
    "sharpness --model": [],
    "sharpness": ["--data", "two_class", "--data-arg", "num_samples=80", "--model-arg", "width=4", "--epochs", "1",
                  "--no-progress", "--json"],
    "landscape": ["--data", "two_class", "--data-arg", "num_samples=120", "--model-arg", "width=4", "--epochs", "3",
                  "--batch-size", "16", "--large-batch", "120", "--steps", "5", "--no-progress"],
    "train": ["--epochs", "1", "--model-arg", "width=2", "--model-arg", "stages=1", "--no-shifts", "--no-progress"],
    "claims": ["--only", "C8", "--no-progress"],  # all 17 claims take minutes; C8 (flat_regions) takes seconds
}

# A study named `quick` (so it lands in flatminima-out/quick, as the preset does) of six one-epoch runs.
SPEC = """name = "quick"
seeds = 2
[data]
name = "two_class"
options = { num_samples = 60 }
shifts = "none"
[models.mlp]
width = 4
[recipe]
lr = [0.05, 0.1, 0.2]
epochs = 1
[measures.lambda_max]
"""

PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|…|^[A-Z][A-Z_]+(=[A-Z_]+)?$")


def shell_commands(text: str, langs: tuple[str, ...] = ("", "bash", "sh", "shell", "console")) -> list[str]:
    """Every ``flatminima ...`` command in the fenced code blocks of a Markdown text (blocks in ``langs``): comments
    dropped, ``\\`` continuations joined, ``&&`` chains split, leading ``VAR=value`` assignments removed."""
    out = []
    for m in re.finditer(r"^[ \t]*```([^\n]*)\n(.*?)^[ \t]*```", text, re.S | re.M):
        if m.group(1).strip() not in langs:
            continue
        joined = re.sub(r"\\\n", " ", m.group(2))
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("#"):
                continue
            for part in filter(None, (p.strip() for p in line.split("&&"))):
                part = re.sub(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)+", "", part)
                if part.split(" ", 1)[0] == "flatminima":
                    out.append(part)
    return out


def is_placeholder(command: str) -> bool:
    """An illustrative command, not one to run: a ``<name>``, ``...``/``…`` or an all-caps ``NAME`` word."""
    return any(PLACEHOLDER.search(w) for w in shlex.split(command))


def commands() -> list[list[str]]:
    """The README's Commands section, one argument list (without ``flatminima``) per command, in order."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Commands"):]
    section = section[:section.index("\n## ", 1)]
    return [shlex.split(c)[1:] for c in shell_commands(section)]


def _key(args: list[str]) -> str | None:
    for n in (2, 1):
        key = " ".join(args[:n])
        if key in SMALL:
            return key
    return None


def invoke(args: list[str]) -> str:
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.output, res.exception)
    assert res.exit_code == 0, (args, res.output)
    return res.output


def make_user_files(folder: Path) -> set[str]:
    """The files the README names (mypkg.nets:make, net.pt, mydata.npz), in ``folder``; returns their names."""
    (folder / "mypkg").mkdir()
    (folder / "mypkg" / "__init__.py").write_text("")
    (folder / "mypkg" / "nets.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), "
        "torch.nn.Linear(4, 2))\n")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    np.savez(folder / "mydata.npz", x_train=x[:30], y_train=(x[:30, 0] > 0).astype(np.int64), x_test=x[30:],
             y_test=(x[30:, 0] > 0).astype(np.int64))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    torch.save(net.state_dict(), folder / "net.pt")
    torch.save({k: v + 0.1 for k, v in net.state_dict().items()}, folder / "net2.pt")  # a second checkpoint
    return {"mypkg", "mydata.npz", "net.pt", "net2.pt"}


def run_commands(spec: str) -> None:
    """Every README command in order, in the current folder (which holds the user files), with ``spec`` (a study
    named ``quick``, already run once by the quick start) standing in for ``--preset quick``."""
    cmds = commands()
    assert len(cmds) >= 10
    for args in cmds:
        if args[:2] == ["study", "run"]:
            # the quick start ran the study: this reuses all of it (on Ray too), and runs nothing
            rest = [a for a in args[2:] if a not in ("--preset", "quick")]
            again = invoke(["study", "run", spec, *rest, "--no-report", "--no-progress"])
            assert "flatminima-out/quick" in again and "already done" in again, again
            continue
        key = _key(args)
        out = invoke([*args, *SMALL.get(key, [])])
        if args[:1] == ["curvature"] and "--checkpoint" not in args:
            assert "reusing" in invoke([*args, *SMALL[key]])  # a rerun loads the trained model
        if args[:2] == ["study", "status"]:
            assert "6 runs: 6 done" in out, out


# ---- fast ----------------------------------------------------------------------------------------------------


def test_readme_commands_parse():
    """Every option of every README line exists on its command (``--help`` is refused after an unknown one)."""
    cmds = commands()
    assert len(cmds) >= 10 and ["lab", "list"] in cmds and cmds[0] == ["curvature"]
    for args in cmds:
        invoke([*args, "--help"])
        key = _key(args)
        if key is not None and SMALL[key]:
            invoke([*args, *SMALL[key], "--help"])  # and so does every small setting the slow test adds


@pytest.mark.parametrize("args", [["lab", "run", "flat_regions"], ["claims", "--only", "C8"]])
def test_lab_and_claims_take_the_shared_device_and_progress_options(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from flatminima.errors import FlatminimaError

    for device in ("cuda", "cuda:0", "mps", "tpu"):
        res = CliRunner().invoke(app, [*args, "--device", device])
        assert isinstance(res.exception, FlatminimaError), (device, res.output)
        assert "CPU only" in str(res.exception) and "--device cpu or auto" in str(res.exception)
    assert not (tmp_path / "flatminima-out").exists()  # refused before any work
    if args[0] == "claims":
        invoke([*args, "--no-progress", "--help"])
    else:
        bad = CliRunner().invoke(app, ["lab", "run", "no_such_experiment", "--device", "cpu"])
        assert isinstance(bad.exception, FlatminimaError) and "unknown experiment" in str(bad.exception)
        assert not (tmp_path / "flatminima-out").exists()
        invoke([*args, "--device", "auto"])  # auto is the CPU here (seconds)
        assert (tmp_path / "flatminima-out" / "lab" / "flat_regions" / "seed0" / "result.json").is_file()


# ---- slow: a fresh copy of the repository ------------------------------------------------------------------


def _fresh_copy(dest: Path) -> None:
    if os.environ.get("FLATMINIMA_TEST_CLONE") == "git":
        subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
        return
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is left out, as the next commit would
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (cmd, res.stdout[-4000:], res.stderr[-4000:])
    return res.stdout + res.stderr


@pytest.mark.slow
def test_readme_quick_start_and_commands_on_a_fresh_copy(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    repo = tmp_path / "flatminima"
    repo.mkdir()
    _fresh_copy(repo)
    assert (repo / "scripts" / "quickstart.sh").exists() and (repo / "src" / "flatminima").is_dir()
    spec = tmp_path / "quick.toml"  # outside the copy: only the README's user files go in it
    spec.write_text(SPEC)
    before = {p.name for p in repo.iterdir()} | make_user_files(repo)
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "OMP_NUM_THREADS": "1", "COLUMNS": "200",
           "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    py = sys.executable
    where = _run([py, "-c", "import flatminima; print(flatminima.__file__)"], repo, env)
    assert str(repo / "src") in where, where  # the copy's code runs, not this checkout's

    # quick start 1 (scripts/quickstart.sh without its set-up): the study, ending with the report
    text = (repo / "scripts" / "quickstart.sh").read_text()
    assert "flatminima study run --preset quick --workers 2 --out flatminima-out/quick" in text
    out = _run([py, "-m", "flatminima", "study", "run", str(spec), "--workers", "2", "--out", "flatminima-out/quick",
                "--samples", "200", "--no-progress"], repo, env)
    assert "report: flatminima-out/quick/report/report.html" in out, out[-2000:]
    # quick start 2 (scripts/test.sh without its set-up): ruff on the copy, then pytest from the copy (its fast
    # README test: the whole suite would run this test again)
    text = (repo / "scripts" / "test.sh").read_text()
    assert "ruff check src tests" in text and "python -m pytest tests" in text
    if shutil.which("ruff", path=str(Path(py).parent)) or shutil.which("ruff"):
        _run([py, "-m", "ruff", "check", "--no-cache", "src", "tests"], repo, env)
    _run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "tests/test_readme_commands.py"],
         repo, env)

    # the Commands section, in order, in one process of the copy's own code
    driver = ("import sys; sys.path.insert(0, 'tests'); import test_readme_commands as t; "
              f"t.run_commands({str(spec)!r})")
    _run([py, "-c", driver], repo, env, timeout=600)

    written = {p.name for p in repo.iterdir()} - before
    assert written == {"flatminima-out"}, written
    root = repo / "flatminima-out"
    assert {p.name for p in root.iterdir()} >= {"curvature", "sharpness", "landscape", "train", "quick", "lab",
                                                 "claims"}, sorted(p.name for p in root.iterdir())
    for part in ("quick/study.sqlite", "quick/report/report.html", "quick/report/correlations.csv",
                 "lab/flat_regions/seed0/result.json", "lab/flat_regions/seed0/flat_regions.png",
                 "claims/quick/claims.md", "claims/quick/claims.html", "claims/quick/claims.json"):
        assert (root / part).is_file(), part
    for command, n in (("curvature", 2), ("sharpness", 1), ("landscape", 1), ("train", 1)):
        runs = [p.name for p in (root / command).iterdir() if p.is_dir()]
        assert len(runs) == n, (command, runs)  # both built-in curvature lines share one trained model
    for pattern in ("curvature/mlp-*/last.pt", "curvature/mlp-*/spectral_density.png",
                    "curvature/make-mydata.npz-*/spectral_density.csv", "sharpness/mlp-*/last.pt",
                    "landscape/paper-mlp-*/summary.json", "landscape/paper-mlp-*/slice2d_filter.png",
                    "landscape/paper-mlp-*/pca_contour.png", "landscape/paper-mlp-*/interpolation_lb_sb.png",
                    "train/resnet-digits-*/model.pt", "train/resnet-digits-*/metrics.json",
                    "train/resnet-digits-*/curve.png", "quick/report/figures/*.png",
                    "claims/quick/experiments/flat_regions/seed0/result.json"):
        assert list(root.glob(pattern)), pattern
