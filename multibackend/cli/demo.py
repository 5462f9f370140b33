"""``multibackend demo``: run a whole cutover, legacy SQLite to StreamSource, on this machine.

The work is :mod:`multibackend.demo`; this is its command line. Exit status 0 when every check
passed, 1 when any failed (the summary lists them).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from multibackend.demo import DemoOptions, run_demo

__all__ = ["demo"]


@click.command(short_help="Run a whole cutover, legacy SQLite to StreamSource, locally.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-work"),
    show_default=True,
    help="Folder for the databases, the configuration and report.json (emptied of them first).",
)
@click.option(
    "--streams",
    type=click.IntRange(10),
    default=5000,
    show_default=True,
    help="Legacy streams to seed.",
)
@click.option(
    "--cli/--no-cli",
    default=True,
    show_default=True,
    help="Finish with `multibackend cutover status` on the demo's configuration.",
)
def demo(workdir: Path, streams: int, cli: bool) -> None:
    """Seed a legacy database, start a StreamSource emulator and move every stream across while
    an app keeps writing: dual writes, a backfill under injected faults, verify, shadow reads,
    the flip, a rollback rehearsal and a final verify. Ends with a summary; leaves the databases,
    the configuration and report.json in --workdir."""
    if not logging.getLogger().handlers:
        # The library's warnings (a phase change the app's manager follows, a shadow mismatch)
        # are part of the story: show them indented under the phase they happen in.
        logging.basicConfig(level=logging.WARNING, format="      log %(name)s: %(message)s")
    report = asyncio.run(run_demo(DemoOptions(workdir=workdir, streams=streams, cli=cli)))
    if not report.passed:
        raise click.exceptions.Exit(1)
