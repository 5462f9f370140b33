"""``multibackend plugins``: what is installed, and what failed to load (with its traceback)."""

from __future__ import annotations

from typing import Any

import click

from multibackend.cli.extensions import CommandExtension, discover_commands
from multibackend.cli.output import echo_json, format_table
from multibackend.registry import PluginInfo, available_plugins

__all__ = ["plugins"]


def _capabilities(info: PluginInfo) -> list[str]:
    return sorted(str(getattr(c, "value", c)) for c in info.capabilities) if info.ok else []


def _plugin_dict(info: PluginInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "distribution": info.distribution,
        "version": info.version,
        "target": info.target,
        "ok": info.ok,
        "capabilities": _capabilities(info),
        "error": info.error,
    }


def _command_dict(ext: CommandExtension) -> dict[str, Any]:
    return {
        "name": ext.name,
        "distribution": ext.distribution,
        "target": ext.target,
        "ok": ext.ok,
        "error": ext.error,
    }


@click.command(short_help="List plugins and those that failed to load.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List backend plugins (and plugin commands), with each failure's traceback.

    A plugin that fails to load is listed with its error; the command still exits 0.
    """
    infos = available_plugins()
    builtin = frozenset(ctx.parent.command.commands) if ctx.parent is not None else frozenset()  # type: ignore[attr-defined]
    commands = discover_commands(builtin)
    if as_json:
        echo_json(
            {
                "backends": [_plugin_dict(i) for i in infos],
                "commands": [_command_dict(c) for c in commands],
            }
        )
        return
    ok = [i for i in infos if i.ok]
    if ok:
        rows = [[i.name, i.distribution, i.version, ", ".join(_capabilities(i)) or "-"] for i in ok]
        click.echo("Backend plugins (entry point group multibackend.backends):")
        click.echo(format_table(("plugin", "distribution", "version", "capabilities"), rows))
    else:
        click.echo("No backend plugins installed.")
    good_commands = [c for c in commands if c.ok]
    if good_commands:
        click.echo("\nCommands from plugins (entry point group multibackend.commands):")
        click.echo(
            format_table(
                ("command", "distribution", "target"),
                [[c.name, c.distribution, c.target] for c in good_commands],
            )
        )
    for info in (i for i in infos if not i.ok):
        click.echo(
            f"\nFAILED backend plugin {info.name!r} ({info.distribution} {info.version}, "
            f"{info.target}):"
        )
        click.echo((info.error or "no details").rstrip())
    for ext in (c for c in commands if not c.ok):
        click.echo(f"\nFAILED plugin command {ext.name!r} ({ext.distribution}, {ext.target}):")
        click.echo((ext.error or "no details").rstrip())
