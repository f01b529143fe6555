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
