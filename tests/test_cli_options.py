"""One option vocabulary: every command's --help shows the shared options, the app has --version, and the
one output root is flatminima-out/."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from flatminima import __version__
from flatminima.cli import app

runner = CliRunner()

SHARED = {
    "curvature": ["--seed", "--out", "--device", "--dtype", "--model-arg", "--data-arg", "--json", "--progress",
                  "--compute"],
    "sharpness": ["--seed", "--out", "--device", "--dtype", "--model-arg", "--data-arg", "--json", "--progress"],
    "landscape": ["--seed", "--out", "--device", "--dtype", "--model-arg", "--data-arg", "--json", "--progress"],
    "train": ["--seed", "--out", "--device", "--model-arg", "--data-arg", "--json", "--progress"],
    "study run": ["--seed", "--out", "--workers", "--json", "--progress", "--report", "--no-report"],
    "study status": ["--json"],
}


def _help(command: str) -> str:
    res = runner.invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    return re.sub(r"\x1b\[[0-9;]*m", "", res.output)


@pytest.mark.parametrize("command", sorted(SHARED))
def test_help_shows_the_shared_options(command):
    text = _help(command)
    for option in SHARED[command]:
        assert re.search(rf"{re.escape(option)}\b", text), f"{command} --help lacks {option}"
    assert "--no-no-" not in text


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"flatminima {__version__}"


def test_device_auto_and_output_folders():
    from flatminima.cli.common import OUT_ROOT, out_folder, resolve_device, run_name

    assert resolve_device("auto") in ("cpu", "cuda", "mps") and resolve_device("cpu") == "cpu"
    assert OUT_ROOT == "flatminima-out"
    assert out_folder("train", None, "x") == "flatminima-out/train/x"
    assert out_folder("train", "mine", "x") == "mine"
    a, b = run_name("mypkg.nets:make", "data.npz", w=1), run_name("mypkg.nets:make", "data.npz", w=2)
    assert a.startswith("make-data.npz-") and a != b and "/" not in a


def test_plain_progress_lines_off_a_terminal():
    import io

    from flatminima.progress import count_products, is_terminal, plain_progress, progress_bar

    now = [0.0]
    stream = io.StringIO()
    p = plain_progress(100, "training " + "x" * 100, stream=stream, every=10, clock=lambda: now[0])
    p.emit()
    for _ in range(100):
        now[0] += 0.5
        p.advance(loss=0.25)
    p.emit(final=True)
    lines = stream.getvalue().splitlines()
    # start, every 10 s (20 steps) or 10% (10 steps), whichever first, and the end: whole lines, never cut
    assert len(lines) == 11 and all(line.startswith("training " + "x" * 100) for line in lines)
    assert "10/100 (10%)" in lines[1] and "ETA" in lines[1] and "loss=0.25" in lines[1] and "2 it/s" in lines[1]
    assert lines[-1].endswith("done, loss=0.25") or "done" in lines[-1]
    assert not is_terminal(io.StringIO())

    class Obj:  # the products an algorithm asks of an Objective are counted, then the method is restored
        def hvp(self, v, theta=None):
            return 2 * v

    obj = Obj()
    with count_products(obj, 3, "products") as _:
        assert [obj.hvp(1) for _ in range(3)] == [2, 2, 2]
    assert "hvp" not in obj.__dict__
    with progress_bar(0, "nothing") as advance:  # no work: no line
        advance()


def test_plain_progress_keeps_printing_during_a_long_step(monkeypatch, capsys):
    import time

    from flatminima.progress import progress_bar

    monkeypatch.setenv("FLATMINIMA_PROGRESS", "plain")
    monkeypatch.setenv("FLATMINIMA_PROGRESS_EVERY", "0.05")
    with progress_bar(2, "claims") as advance:
        time.sleep(0.4)  # one long step: no advance for 8 periods
        advance()
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("claims: 0/2")]
    assert len(lines) >= 3  # the start and at least two heartbeat lines before the first step ended
