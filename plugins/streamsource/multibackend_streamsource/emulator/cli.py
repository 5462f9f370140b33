"""The ``multibackend emulator`` command."""

from __future__ import annotations

import click


@click.command()
def emulator() -> None:
    """Serve a local StreamSource emulator."""
    raise click.ClickException("not implemented yet")
