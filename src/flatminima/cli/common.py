"""Options and printing shared by the commands."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

console = Console()


def fmt(value: float, err: float | None = None) -> str:
    return f"{value:.6g}" if err is None or err != err else f"{value:.6g} ± {err:.2g}"


def fmt_cost(cost: Any) -> str:
    d = cost.as_dict() if hasattr(cost, "as_dict") else dict(cost)
    parts = [f"{int(d['hvps'])} HVP"] if d.get("hvps") else []
    parts += [f"{int(d[k])} {k}" for k in ("grads", "losses", "batched_points") if d.get(k)]
    parts += [f"{d['data_passes']:.0f} passes", f"{d['seconds']:.2f}s"]
    return ", ".join(parts)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=float))


def parse_kv(pairs: list[str] | None) -> dict[str, Any]:
    """``["width=8", "batchnorm=true"]`` → ``{"width": 8, "batchnorm": True}`` (JSON values, else strings)."""
    from ..errors import FlatminimaError

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise FlatminimaError(f"expected KEY=VALUE, got {pair!r}.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def print_names(names: dict[str, str], title: str, header: str, json_out: bool) -> None:
    """A registry listing (name → one-line description) as a Rich table, or JSON."""
    from rich.table import Table

    if json_out:
        print_json(names)
        return
    table = Table(title=title)
    table.add_column("name")
    table.add_column(header)
    for name, desc in names.items():
        table.add_row(name, desc)
    console.print(table)
