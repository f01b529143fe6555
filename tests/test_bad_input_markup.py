"""Rich markup in user values: every message shows the value verbatim (escaped), never rendered as markup and
never a MarkupError from the error printer."""

from __future__ import annotations

import sys

import pytest

from flatminima.cli import main
from flatminima.cli.common import data_line, esc

NASTY = ["[/red]", "[bold]x[/bold]", "[/]", "a[link=x]b", "[red]unclosed"]


def _main(monkeypatch, capsys, args: list[str]) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["flatminima", *args])
    with pytest.raises(SystemExit) as ex:
        main()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "MarkupError" not in err, err
    return ex.value.code, err


@pytest.mark.parametrize("value", NASTY)
def test_a_spec_path_with_markup_is_shown_verbatim(monkeypatch, capsys, tmp_path, value):
    code, err = _main(monkeypatch, capsys, ["study", "run", str(tmp_path / f"{value}.toml")])
    assert code == 2 and value in err, err


@pytest.mark.parametrize("args,value", [
    (["train", "--data", "[/red]x.npz", "--epochs", "1"], "[/red]x.npz"),
    (["train", "--device", "[bold]gpu[/bold]"], "[bold]gpu[/bold]"),
    (["sharpness", "--checkpoint", "[/]ck.pt"], "[/]ck.pt"),
    (["curvature", "--compute", "[red]eig"], "[red]eig"),
    (["train", "--recipe", "[bold]r.toml"], "[bold]r.toml"),
    (["landscape", "--mode", "[/red]"], "[/red]"),
    (["sharpness", "--loss", "[/x]"], "[/x]"),
])
def test_command_errors_show_the_value_verbatim(monkeypatch, capsys, tmp_path, args, value):
    monkeypatch.chdir(tmp_path)
    code, err = _main(monkeypatch, capsys, args)
    assert code == 2 and value in err, err


def test_esc_and_the_data_line_keep_brackets():
    from rich.console import Console

    console = Console(record=True, width=200)
    for value in NASTY:
        console.print(f"[bold]name[/bold]: {esc(value)}")
    text = console.export_text()
    assert all(v in text for v in NASTY), text
    line = data_line({"name": "[/red]d", "task": "classification", "outputs": 2, "task_from": "given"}, "mse")
    console.print(line)
    assert "[/red]d" in console.export_text()


def test_a_table_of_names_with_markup_prints(capsys):
    from flatminima.cli.common import print_names

    print_names({"[/red]m": "[bold]desc"}, "t", "what", False)
    out = capsys.readouterr().out
    assert "[/red]m" in out and "[bold]desc" in out
