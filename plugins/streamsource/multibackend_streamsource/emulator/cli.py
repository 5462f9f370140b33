"""The ``multibackend emulator`` command (also ``python -m multibackend_streamsource.emulator``).

Prints the base URL on its own line on stdout once listening (so scripts can read it), details
on stderr, and serves until interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import click

from multibackend_streamsource.emulator.config import (
    EmulatorConfig,
    UserSpec,
    parse_flag,
    parse_rate_limit,
    parse_user,
)
from multibackend_streamsource.emulator.flags import FlagSetting, check_name
from multibackend_streamsource.emulator.server import Emulator

__all__ = ["emulator"]


def _users(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[UserSpec]:
    try:
        return [parse_user(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _flags(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for text in values:
            name, value = parse_flag(text)
            check_name(name)
            FlagSetting.parse(value)
            out[name] = value
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return out


def _rate(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, float] | None:
    if value is None:
        return None
    try:
        return parse_rate_limit(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=3000, show_default=True, type=int, help="0 picks a free port.")
@click.option(
    "--user",
    "users",
    multiple=True,
    callback=_users,
    metavar="EMAIL:PASSWORD:ROLE[:service]",
    help="Create a user (role default, editor or admin). Repeatable.",
)
@click.option(
    "--flag",
    "flags",
    multiple=True,
    callback=_flags,
    metavar="NAME=all|editors|admins|off",
    help="Override a seeded feature flag. Repeatable.",
)
@click.option(
    "--rate-limit",
    callback=_rate,
    metavar="N[/SECONDS]",
    help="Requests per client IP per window (default 1000/60).",
)
@click.option(
    "--localhost-exempt",
    is_flag=True,
    help="Never throttle 127.0.0.1 and ::1, like the real server.",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep state in this SQLite file between runs.",
)
@click.option(
    "--signup-500/--no-signup-500",
    default=True,
    show_default=True,
    help="Reproduce the server's 500 answer after a successful signup.",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds added to every API answer (a fault for tests).",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of API answers replaced by 500 or 503 (a fault for tests).",
)
def emulator(
    host: str,
    port: int,
    users: list[UserSpec],
    flags: dict[str, str],
    rate_limit: tuple[int, float] | None,
    localhost_exempt: bool,
    db: Path | None,
    signup_500: bool,
    latency: float,
    error_rate: float,
) -> None:
    """Serve a local emulator of the StreamSource API, for tests, demos and development.

    The control endpoint /__emulator__ changes users, flags, faults and limits while it runs;
    it is unprotected: keep the emulator on loopback.
    """
    limit, period = rate_limit or (1000, 60.0)
    config = EmulatorConfig(
        host=host,
        port=port,
        users=users,
        flags=flags,
        rate_limit=limit,
        rate_period=period,
        localhost_exempt=localhost_exempt,
        signup_500=signup_500,
        db_path=db,
        latency=latency,
        error_rate=error_rate,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))


async def _serve(config: EmulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Emulator(config) as emu:
            click.echo(emu.base_url)
            sys.stdout.flush()
            click.echo(
                f"StreamSource emulator on {emu.base_url} "
                f"(users: {', '.join(u.email + ' ' + u.role for u in emu.users()) or 'none'}; "
                f"control: {emu.base_url}/__emulator__). Ctrl-C stops it.",
                err=True,
            )
            await stop.wait()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
