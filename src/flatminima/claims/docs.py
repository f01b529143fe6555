"""Render the claims table of ``docs/claims.md`` from the registry (the one source of truth).

    python -m flatminima.claims.docs docs/claims.md   # rewrites the part between the markers
"""

from __future__ import annotations

import sys
from pathlib import Path

BEGIN, END = "<!-- claims table: generated from flatminima.lab.specs() -->", "<!-- end of generated table -->"


def _cell(t: str) -> str:
    return t.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The generated part: the table (claim, experiment, kind, n) and each claim's pre-registered test."""
    from .. import lab

    specs = lab.specs()
    out = [BEGIN, "", "| claim | experiment | kind | n (full / quick, per seed set) | quick powered |",
           "|---|---|---|---|---|"]
    for s in specs:
        out.append(f"| {s.claim} | `{s.experiment}` | {s.kind} | {s.n_full} / {s.n_quick} | "
                   f"{'yes' if s.quick_powered else 'no'} |")
    for s in specs:
        out += ["", f"### {s.claim} — {_cell(s.statement)}", "",
                f"- **hypothesis**: {s.hypothesis}", f"- **measured**: {s.quantity}",
                f"- **rule**: {s.rule}", f"- **power**: {s.power}"]
    out += ["", END]
    return "\n".join(out)


def update(path: str | Path) -> bool:
    """Replace the generated part of ``path``; True if it changed."""
    p = Path(path)
    text = p.read_text()
    a, b = text.index(BEGIN), text.index(END) + len(END)
    new = text[:a] + render() + text[b:]
    p.write_text(new)
    return new != text


if __name__ == "__main__":  # pragma: no cover
    print("changed" if update(sys.argv[1] if len(sys.argv) > 1 else "docs/claims.md") else "up to date")
