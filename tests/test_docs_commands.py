"""Every ``flatminima ...`` command in the fenced shell code blocks of docs/*.md parses: it is run through the CLI
with ``--help`` appended, which click refuses after an option or a subcommand the command lacks, so a renamed
option breaks this test. Commands that are illustrative placeholders (a ``<name>`` or ``...``/``…`` word, or an
all-caps ``NAME``; see ``test_readme_commands.is_placeholder``) are left out, and so is inline code in prose."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from test_readme_commands import invoke, is_placeholder, shell_commands

DOCS = Path(__file__).resolve().parents[1] / "docs"

# Commands known to be broken in the docs, with the reason (the docs are fixed elsewhere): none at present.
BROKEN: dict[str, str] = {}


def docs_commands() -> list[tuple[str, str]]:
    out = []
    for path in sorted(DOCS.glob("*.md")):
        for command in shell_commands(path.read_text(encoding="utf-8")):
            if not is_placeholder(command):
                out.append((path.name, command))
    return out


COMMANDS = docs_commands()


def test_the_docs_have_commands_to_check():
    names = {doc for doc, _ in COMMANDS}
    assert len(COMMANDS) >= 25 and {"guide.md", "landscape.md", "training.md", "lab.md", "claims.md",
                                    "study.md", "measures.md", "dynamics.md"} <= names, names
    assert not is_placeholder("flatminima train --data mnist1d") and is_placeholder("flatminima study report <dir>")


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c[11:60]}" for d, c in COMMANDS])
def test_docs_command_parses(doc, command):
    if command in BROKEN:
        pytest.skip(f"{doc}: {BROKEN[command]}")
    invoke([*shlex.split(command)[1:], "--help"])
