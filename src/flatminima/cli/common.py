"""Options and printing shared by the commands."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

# Off a terminal (a log file, nohup, SLURM) Rich would wrap every line at 80 columns: lines are left whole and
# tables get a wide page instead.
_TTY = sys.stdout.isatty()
console = Console(width=None if _TTY or "COLUMNS" in os.environ else 160, soft_wrap=not _TTY)


def fmt(value: float, err: float | None = None) -> str:
    return f"{value:.6g}" if err is None or err != err else f"{value:.6g} ± {err:.2g}"


def fmt_cost(cost: Any) -> str:
    d = cost.to_dict() if hasattr(cost, "to_dict") else dict(cost)
    parts = [f"{int(d['hvps'])} HVP"] if d.get("hvps") else []
    parts += [f"{int(d[k])} {k}" for k in ("grads", "losses", "batched_points") if d.get(k)]
    parts += [f"{d['data_passes']:.0f} passes", f"{d['seconds']:.2f}s"]
    return ", ".join(parts)


def esc(value: Any) -> str:
    """``value`` as text Rich prints verbatim: every user value (a path, a name, a label, an error) goes through
    this before it reaches a Rich string, so ``[bold]`` or ``[/red]`` in it is shown, never read as markup."""
    from rich.markup import escape

    return escape(str(value))


def say(text: Any) -> None:
    """Print a library's own message (it knows no markup: any ``[...]`` in it is the user's, shown verbatim)."""
    console.print(str(text), markup=False)


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
        table.add_row(esc(name), esc(desc))
    console.print(table)


# ---- option checks shared by the commands (each refuses before any data is loaded or model trained) ----
SPLITS = ("train", "test")
DTYPES = ("float32", "float64")
MIN_BOOT = 20


def check_positive(option: str, value: int) -> None:
    """A positive integer option, and within its range where :mod:`flatminima.validate` knows the name
    (``--epochs``, ``--steps``, ``--samples``...: 1e8 epochs is refused, not started)."""
    from ..errors import FlatminimaError
    from ..validate import check_number

    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FlatminimaError(f"{option} must be a positive integer, got {value!r}.")
    check_number(option, value)


def check_options(**values: Any) -> None:
    """Numeric options by name (``check_options(span=..., lr=...)``, reported as ``--span``, ``--lr``) through the
    shared table of :mod:`flatminima.validate`: finite, in range; None (an option not given) passes."""
    from ..validate import check_numbers

    check_numbers({"--" + k.replace("_", "-"): v for k, v in values.items()})


def checked_seed(value: int | None) -> int | None:
    """``--seed`` (a Typer callback): an integer in [0, 2**32 - 1], checked as the option is parsed."""
    from ..validate import check_seed

    return value if value is None else check_seed("--seed", value)


def check_workers(option: str, value: int | None) -> int | None:
    """A count of local worker processes, against this machine's cores and memory (the limit is named)."""
    from ..validate import check_workers as check

    return value if value is None else check(option, value)


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

    if device is None or device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise FlatminimaError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps, auto): "
                              f"{err}") from None
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


def check_recipe_file(path: str | None) -> None:
    """``--recipe``: an existing, readable TOML file whose fields make a valid recipe (checked before training)."""
    from pathlib import Path

    from ..errors import FlatminimaError

    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise FlatminimaError(f"--recipe {path!r} does not exist; give a TOML recipe file.")
    if p.is_dir():
        raise FlatminimaError(f"--recipe {path!r} is a folder; give a TOML recipe file.")
    import tomllib

    try:
        tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise FlatminimaError(f"--recipe {path!r} is not a valid TOML file: {err}.") from None


# ---- the shared option vocabulary (one name, one meaning, on every command that takes it) --------------------
OUT_ROOT = "flatminima-out"
DEVICES = ("cpu", "cuda", "mps", "auto")


def opt_seed(default: int | None = 0, what: str = "training and every random probe") -> Any:
    import typer

    return typer.Option(default, "--seed", help=f"seed for {what}", callback=checked_seed)


def opt_out(command: str, what: str = "results") -> Any:
    import typer

    return typer.Option(None, "--out", help=f"folder for {what} (default {OUT_ROOT}/{command}/<run>; "
                                            "created if missing, reused when rerun)")


def opt_device(what: str = "training and measuring") -> Any:
    import typer

    return typer.Option("cpu", "--device", help=f"device for {what}: cpu, cuda, cuda:N, mps or auto "
                                                "(checked before any work)")


def opt_dtype() -> Any:
    import typer

    return typer.Option("float32", "--dtype", help="float32 or float64 (float64 for reference-grade numbers)")


def opt_model_arg() -> Any:
    import typer

    return typer.Option(None, "--model-arg", help="model keyword KEY=VALUE (repeatable), e.g. width=32")


def opt_data_arg() -> Any:
    import typer

    return typer.Option(None, "--data-arg", help="data keyword KEY=VALUE (repeatable), e.g. num_samples=500")


def opt_json() -> Any:
    import typer

    return typer.Option(False, "--json", help="print JSON instead of tables")


def opt_workers(default: int | None = None, what: str = "parallel runs") -> Any:
    import typer

    return typer.Option(default, "--workers", help=what)


def opt_progress() -> Any:
    import typer

    return typer.Option(True, "--progress/--no-progress",
                        help="progress with rate and ETA (plain lines every 10 s when not a terminal)")


def check_cpu_device(device: str | None, command: str) -> str:
    """``--device`` of a command whose work runs on the CPU only (the lab's tiny analytic models and networks):
    ``cpu`` or ``auto`` (which is then ``cpu``); any other device is refused before any work."""
    from ..errors import FlatminimaError

    if device is None or device in ("cpu", "auto"):
        return "cpu"
    raise FlatminimaError(f"--device {device!r}: {command} runs its experiments on the CPU only (tiny models, "
                          "one thread each); use --device cpu or auto.")


def resolve_device(device: str | None) -> str:
    """``--device``: checked (see :func:`check_device`); ``auto`` becomes cuda, mps or cpu, whichever exists."""
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    check_device(device)
    return device


def run_name(*parts: Any, **settings: Any) -> str:
    """A readable folder name for one run: the parts (a model factory's or a file's name shortened) and a short
    hash of every setting, so different settings never share (or clash in) a folder."""
    import hashlib
    import re

    text = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", str(p).rsplit("/", 1)[-1].rsplit(":", 1)[-1]).strip("_.")
                    for p in parts if p not in (None, ""))
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{text or 'run'}-{digest}"


def out_folder(command: str, out: str | None, name: str | None = None) -> str:
    """The output folder of one command's run: ``--out`` as given, else ``flatminima-out/<command>/<name>``."""
    from pathlib import Path

    check_out_folder("--out", out)
    if out is not None:
        return out
    return str(Path(OUT_ROOT) / command / name) if name else str(Path(OUT_ROOT) / command)


def parse_list(option: str, text: str | None, allowed: tuple[str, ...]) -> list[str]:
    """``"a,b"`` → ``["a", "b"]``, each checked against ``allowed``."""
    from ..errors import FlatminimaError

    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise FlatminimaError(f"{option} is empty; give one or more of {list(allowed)}, comma-separated.")
    bad = [t for t in items if t not in allowed]
    if bad:
        raise FlatminimaError(f"{option}: unknown {bad}; choose from {list(allowed)} (comma-separated).")
    return list(dict.fromkeys(items))


# ---- the loss and the checkpoints of the measuring commands (curvature, sharpness) ---------------------------
def opt_loss() -> Any:
    import typer

    return typer.Option(None, "--loss", help="the loss to measure (and train) with: cross_entropy, mse, or a "
                                             "function of your own as 'module:function' (outputs, targets) -> "
                                             "batch mean; default by the data's task (cross_entropy for class "
                                             "labels, mse for regression targets)")


def opt_checkpoints() -> Any:
    import typer

    return typer.Option(None, "--checkpoint", help="state-dict checkpoint (weights_only); repeatable: one row per "
                                                   "checkpoint; without it the model is trained")


def check_checkpoint_paths(checkpoints: list[str] | None, option: str = "--checkpoint") -> list[str]:
    """The checkpoint paths given, each an existing file (checked before any data is loaded or model trained)."""
    from pathlib import Path

    from ..errors import FlatminimaError

    paths = list(checkpoints or [])
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise FlatminimaError(f"{option} {path!r} does not exist; give a state-dict file (torch.save).")
        if p.is_dir():
            raise FlatminimaError(f"{option} {path!r} is a folder; give a state-dict file (torch.save).")
    return paths


def data_line(data: dict, loss: str) -> str:
    """One line naming the data's task, how it was decided, and the loss measured."""
    n = data["outputs"]
    what = "classes" if data["task"] == "classification" else f"output{'s' if n != 1 else ''} per sample"
    return esc(f"data {data['name']}: {data['task']} ({n} {what}; {data['task_from']}); loss {loss}")


def checkpoint_label(path: str, paths: list[str]) -> str:
    """A short name for ``path`` in a table of several checkpoints: the file name, or the whole path where two
    checkpoints share a file name."""
    from pathlib import Path

    name = Path(path).name
    return name if sum(Path(p).name == name for p in paths) == 1 else path


def command_help(fn: Any) -> str:
    """A command's help from its docstring with each paragraph on one line: Rich help keeps single line breaks,
    which would cut the docstring's source-width lines in the middle of a terminal's line."""
    import inspect

    doc = inspect.getdoc(fn) or ""
    return "\n\n".join(" ".join(part.split()) for part in doc.split("\n\n"))
