"""The ``multibackend`` command."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="multibackend")
def main() -> None:
    """multibackend: one interface over a legacy database and StreamSource."""
