"""`flatminima claims`: registered by its issue's module (placeholder until it lands)."""

import typer


def register(app: typer.Typer) -> None:
    """Nothing yet: this command is being built."""
