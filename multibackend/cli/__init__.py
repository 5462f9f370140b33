"""The ``multibackend`` command.

Built-in commands live in this package; plugins add commands through the entry point group
``multibackend.commands`` (each entry point a click command, see :mod:`.extensions`).

Errors the user can fix print one line on stderr, never a traceback: exit status 2 for usage,
configuration, plugin and input-validation errors, 1 for errors a backend reported.
"""

from __future__ import annotations

import click

from multibackend.cli.errors import CliGroup
from multibackend.cli.extensions import ExtensibleGroup

__all__ = ["main"]


class MainGroup(ExtensibleGroup, CliGroup):
    """The root group: plugin commands plus one-line error reporting."""


@click.group(cls=MainGroup)
@click.version_option(package_name="multibackend")
def main() -> None:
    """multibackend: one interface over a legacy database and StreamSource."""


def _register() -> None:
    # Imported here so the modules can import ``main``-independent helpers without cycles.
    from multibackend.cli.demo import demo
    from multibackend.cli.migrate import backfill, cutover, shadow, verify
    from multibackend.cli.plugins import plugins
    from multibackend.cli.streams import streams
    from multibackend.cli.sync import journal, sync

    main.add_command(plugins)
    main.add_command(streams)
    main.add_command(demo)
    main.add_command(sync)
    main.add_command(journal)
    main.add_command(backfill)
    main.add_command(verify)
    main.add_command(shadow)
    main.add_command(cutover)


_register()
