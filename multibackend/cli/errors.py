"""Turning multibackend errors into one line on stderr and an exit status."""

from __future__ import annotations

from typing import Any

import click

from multibackend.errors import (
    BackendError,
    ConfigError,
    MultibackendError,
    PluginError,
    ValidationFailed,
)

__all__ = ["EXIT_BACKEND", "EXIT_USAGE", "CliGroup", "exit_code", "report"]

EXIT_BACKEND = 1
EXIT_USAGE = 2


def exit_code(error: MultibackendError) -> int:
    """2 when the user's input is wrong (usage, configuration, plugin choice, a value the model
    refuses before any backend is called), 1 when a backend reported the failure."""
    if isinstance(error, ConfigError | PluginError):
        return EXIT_USAGE
    if isinstance(error, ValidationFailed) and error.backend is None:
        return EXIT_USAGE
    if isinstance(error, BackendError):
        return EXIT_BACKEND
    return EXIT_BACKEND


def report(error: MultibackendError) -> None:
    """Print ``error`` as one line on stderr (the first line of its message)."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    click.echo(f"multibackend: error: {lines[0]}", err=True)


class CliGroup(click.Group):
    """A group that reports MultibackendError as one line and exits with :func:`exit_code`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MultibackendError as exc:
            report(exc)
            raise click.exceptions.Exit(exit_code(exc)) from None
