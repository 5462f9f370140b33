"""Commands contributed by plugins through the entry point group ``multibackend.commands``.

Each entry point names a :class:`click.Command` (or group); it is added to ``multibackend``
under the entry point's name. A command that fails to import, is not a click command, or clashes
with another command's name is reported on stderr and left out; the rest of the CLI works::

    [project.entry-points."multibackend.commands"]
    emulator = "multibackend_streamsource.cli:emulator"
"""

from __future__ import annotations

import traceback
from importlib.metadata import EntryPoint, entry_points

import attrs
import click

__all__ = ["COMMAND_GROUP", "CommandExtension", "ExtensibleGroup", "discover_commands"]

COMMAND_GROUP = "multibackend.commands"


@attrs.frozen(kw_only=True)
class CommandExtension:
    """One entry point of ``multibackend.commands``: its command, or why it is left out."""

    name: str
    distribution: str | None
    target: str
    command: click.Command | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.command is not None


def _distribution(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return None if dist is None else str(dist.metadata["Name"])


def discover_commands(builtin: frozenset[str] = frozenset()) -> list[CommandExtension]:
    """Load every command entry point; never raises (failures are recorded in ``error``)."""
    found: list[CommandExtension] = []
    seen: dict[str, CommandExtension] = {}
    unique: dict[tuple[str, str, str | None], EntryPoint] = {}
    for ep in entry_points(group=COMMAND_GROUP):
        unique.setdefault((ep.name, ep.value, _distribution(ep)), ep)
    for (name, target, dist), ep in sorted(
        unique.items(), key=lambda kv: (kv[0][0], kv[0][2] or "")
    ):
        ext = CommandExtension(name=name, distribution=dist, target=target)
        try:
            obj = ep.load()
        except Exception:  # a broken plugin must not break the CLI: keep its traceback
            ext = attrs.evolve(ext, error=traceback.format_exc())
        else:
            if not isinstance(obj, click.Command):
                ext = attrs.evolve(
                    ext, error=f"{target} is a {type(obj).__name__}, not a click command"
                )
            elif name in builtin:
                ext = attrs.evolve(
                    ext, error=f"the name clashes with the built-in command {name!r}"
                )
            elif name in seen:
                other = seen[name].distribution
                ext = attrs.evolve(ext, error=f"the name is also registered by {other}")
            else:
                ext = attrs.evolve(ext, command=obj)
                seen[name] = ext
        found.append(ext)
    return found


def _summary(error: str) -> str:
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"


class ExtensibleGroup(click.Group):
    """A group that adds plugin commands on first use and reports broken ones on stderr."""

    _extensions: list[CommandExtension] | None = None

    def extensions(self) -> list[CommandExtension]:
        if self._extensions is None:
            self._extensions = discover_commands(frozenset(self.commands))
            for ext in self._extensions:
                if ext.error is not None:
                    click.echo(
                        f"multibackend: warning: plugin command {ext.name!r} "
                        f"({ext.distribution or ext.target}) is unavailable: {_summary(ext.error)}",
                        err=True,
                    )
        return self._extensions

    def _plugin_command(self, name: str) -> click.Command | None:
        for ext in self.extensions():
            if ext.name == name and ext.command is not None:
                return ext.command
        return None

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(e.name for e in self.extensions() if e.command is not None)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._plugin_command(cmd_name)
