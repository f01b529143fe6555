"""Write each example's notebook (``name.ipynb``) from its ``.py`` twin, so the two always say the same thing.

    python examples/make_notebooks.py          # (re)write every notebook
    python examples/make_notebooks.py --check  # exit 1 if a notebook differs from what its .py gives

The ``.py`` files are the source: cells start at ``# %%`` lines; a ``# %% [markdown]`` cell's lines are
comments whose ``# `` prefix is dropped. Notebooks are written without outputs. Plain JSON (nbformat 4.5),
so this script needs nothing beyond the standard library.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = ["curvature_of_your_model", "landscape_slices", "small_study", "huggingface_model", "your_own_checkpoints",
            "regression_study"]


def cells(source: str) -> list[tuple[str, str]]:
    """``(kind, text)`` for each ``# %%`` cell of a .py twin (kind ``code`` or ``markdown``)."""
    out: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        if line.startswith("# %%"):
            out.append(("markdown" if "[markdown]" in line else "code", []))
        elif out:
            kind, lines = out[-1]
            lines.append((line[2:] if line.startswith("# ") else line.lstrip("#")) if kind == "markdown" else line)
        elif line.strip():
            raise ValueError(f"text before the first '# %%' line: {line!r}")
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in out]


def notebook(source: str, name: str) -> dict:
    body = []
    for i, (kind, text) in enumerate(cells(source)):
        cell = {"cell_type": kind, "id": f"{name[:40]}-{i}", "metadata": {}, "source": text.splitlines(True)}
        if kind == "code":
            cell |= {"execution_count": None, "outputs": []}
        body.append(cell)
    return {
        "cells": body,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render(name: str) -> str:
    return json.dumps(notebook((HERE / f"{name}.py").read_text(), name), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name in EXAMPLES:
        path, text = HERE / f"{name}.ipynb", render(name)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run python examples/make_notebooks.py): {', '.join(stale)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
