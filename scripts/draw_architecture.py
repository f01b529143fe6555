"""Redraw the layer picture in docs/architecture.md from the import contract in .importlinter.

    python scripts/draw_architecture.py          # rewrite the picture between the markers
    python scripts/draw_architecture.py --check  # exit 1 when the page's picture differs from the contract

The picture is the ``layers`` contract, top first, numbered from the bottom (the core is layer 0), with
each layer's parts; the table of parts on that page must give every part this number (the architecture
test checks both). So the page cannot drift from what ``lint-imports`` enforces.
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / ".importlinter"
PAGE = REPO / "docs" / "architecture.md"
BEGIN = "<!-- layers: drawn from .importlinter by scripts/draw_architecture.py; do not edit by hand -->"
END = "<!-- end of layers -->"
WORKFLOWS = {"workflows", "study", "lab", "claims"}


def layers(config_path: Path = CONFIG) -> list[list[str]]:
    """The ``layers`` contract's layers, top first, each a list of its parts."""
    config = configparser.ConfigParser()
    config.read(config_path)
    lines = [x.strip() for x in config["importlinter:contract:layers"]["layers"].splitlines() if x.strip()]
    return [[p.strip() for p in re.split(r"[|:]", line)] for line in lines]


def layer_numbers(config_path: Path = CONFIG) -> dict[str, int]:
    """Part -> its layer number, counted from the bottom (the core is 0)."""
    found = layers(config_path)
    return {part: len(found) - 1 - i for i, layer in enumerate(found) for part in layer}


def picture(config_path: Path = CONFIG) -> str:
    """The fenced picture: one line per layer, top first; a rule where the library ends."""
    found = layers(config_path)
    lines = ["```"]
    for i, layer in enumerate(found):
        number = len(found) - 1 - i
        lines.append(f" layer {number:>2}  " + "   ".join(layer))
        below = found[i + 1] if i + 1 < len(found) else []
        if set(layer) & WORKFLOWS and below and not set(below) & WORKFLOWS:
            lines.append(" ╌╌╌╌╌╌╌╌ above: the workflows (train models to measure them); below: the library ╌╌╌╌╌╌╌╌")
    lines.append("```")
    return "\n".join(lines)


def redrawn(page: str, config_path: Path = CONFIG) -> str:
    """``page`` with the text between the markers replaced by the picture of the contract."""
    if BEGIN not in page or END not in page:
        raise SystemExit(f"{PAGE} has no markers {BEGIN!r} ... {END!r}: put them where the picture goes")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{picture(config_path)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the page differs")
    args = parser.parse_args(argv)
    page = PAGE.read_text()
    new = redrawn(page)
    if args.check:
        if new != page:
            print(f"{PAGE} differs from .importlinter: run python scripts/draw_architecture.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
