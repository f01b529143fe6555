"""``flatminima <command>``: a thin layer that parses options, calls the library and prints.

Each command lives in its own module with a ``register(app)`` function, so commands can be added without
touching the others.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="flatminima: how flat is this minimum, what does the landscape look like, and does "
                       "flatness predict generalisation here?")



def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"flatminima {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """flatminima: loss-landscape geometry with error bars and costs.

    Every command writes under flatminima-out/ (one folder per command and run) unless given --out.
    """


COMMANDS = ("curvature", "sharpness", "landscape", "train", "study", "lab", "claims", "inspect")

for _name in COMMANDS:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    """Entry point: turn flatminima's own errors into one clear line and exit code 2."""
    from rich.console import Console
    from rich.markup import escape

    from ..errors import FlatminimaError

    try:
        app()
    except FlatminimaError as err:  # the message holds the user's values: escaped, so shown verbatim
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(err))}", markup=True,
                                                   highlight=False)
        raise SystemExit(2) from None
