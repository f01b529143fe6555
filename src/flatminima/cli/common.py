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


# ---- option checks shared by the commands (each refuses before any data is loaded or model trained) ----
SPLITS = ("train", "test")
DTYPES = ("float32", "float64")
MIN_BOOT = 20


def check_positive(option: str, value: int) -> None:
    from ..errors import FlatminimaError

    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FlatminimaError(f"{option} must be a positive integer, got {value!r}.")


def check_boot(n_boot: int, max_boot: int | None = None) -> None:
    """``--n-boot`` (and ``--max-boot``): enough cluster-bootstrap resamples for a 95% interval."""
    from ..errors import FlatminimaError

    if n_boot < MIN_BOOT:
        raise FlatminimaError(f"--n-boot must be at least {MIN_BOOT} cluster-bootstrap resamples (4000 is the "
                              f"default), got {n_boot}.")
    if max_boot is not None and max_boot < n_boot:
        raise FlatminimaError(f"--max-boot ({max_boot}) must be at least --n-boot ({n_boot}).")


def check_out_folder(option: str, path: str | None) -> None:
    """An output folder option must not name an existing file."""
    from pathlib import Path

    from ..errors import FlatminimaError

    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise FlatminimaError(f"{option} {path!r} is a file; give a folder (it is created if missing).")


def check_split(split: str) -> None:
    from ..errors import require_choice

    require_choice("--split", split, SPLITS)


def check_dtype(dtype: str) -> None:
    from ..errors import FlatminimaError

    if dtype not in DTYPES:
        extra = " (half precision is not supported: curvature needs float32 or better)" if "16" in dtype else ""
        raise FlatminimaError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}{extra}.")


def check_device(device: str | None) -> None:
    """``--device``: a device torch knows and this machine has, checked before any training."""
    import torch

    from ..errors import FlatminimaError

    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise FlatminimaError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps): {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FlatminimaError(f"--device {device!r}: CUDA is not available on this machine; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FlatminimaError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
                                  "device(s).")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise FlatminimaError(f"--device {device!r}: MPS is not available on this machine; use --device cpu.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise FlatminimaError(f"--device {device!r}: use cpu, cuda[:N] or mps.")


def check_measure_options(*, split: str = "train", dtype: str = "float32", device: str | None = None,
                          epochs: int | None = None) -> None:
    """The options ``curvature``, ``sharpness`` and ``landscape`` share, checked before any training."""
    check_split(split)
    check_dtype(dtype)
    check_device(device)
    if epochs is not None:
        check_positive("--epochs", epochs)
