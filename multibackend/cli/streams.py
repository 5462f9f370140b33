"""``multibackend streams``: create, read, update, delete, list and pin streams on one backend.

Input is turned into a StreamDraft / StreamPatch / StreamQuery first, so a bad value (an unknown
status, a link without http(s), ``--per-page 0``) fails before any backend is opened.

Clearing a nullable field: ``update ID --clear city`` sets it to null. ``--city ''`` sets the
empty string (enum fields such as ``--platform ''`` become null, as on the server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click

from multibackend.backend import StreamBackend
from multibackend.cli.output import echo_json, page_dict, stream_detail, stream_table
from multibackend.config import Config, load_config
from multibackend.errors import ConfigError
from multibackend.model import (
    Kind,
    Orientation,
    Platform,
    Sort,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
    StreamStatus,
)

__all__ = ["NULLABLE_FIELDS", "choose_backend", "parse_id", "streams"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Fields ``update --clear`` may set to null.
NULLABLE_FIELDS = ("platform", "orientation", "city", "state", "notes", "title", "posted_by")

# (field, help) for the plain text options shared by create and update.
_TEXT_FIELDS = (
    ("source", "The streamer's name or handle (1..255 characters)."),
    ("link", "The stream's http(s) URL."),
    ("status", "One of: " + ", ".join(s.value for s in StreamStatus) + "."),
    ("platform", "One of: " + ", ".join(p.value for p in Platform) + "."),
    ("orientation", "One of: " + ", ".join(o.value for o in Orientation) + "."),
    ("kind", "One of: " + ", ".join(k.value for k in Kind) + "."),
    ("city", "City."),
    ("state", "State or region."),
    ("notes", "Free text notes."),
    ("title", "Title."),
    ("posted_by", "Who posted the stream."),
)


@attrs.frozen
class _Target:
    config_path: Path | None
    backend: str | None
    as_json: bool


def parse_id(text: str) -> StreamId:
    """A backend id from the command line: digits become an int, anything else stays a string."""
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else stripped


def choose_backend(config: Config, requested: str | None) -> str:
    """The backend to use: ``requested``, else the manager's primary, else the only one."""
    names = list(config.backends)
    if requested is not None:
        if requested not in config.backends:
            raise ConfigError(
                f"--backend: {requested!r} is not a configured backend "
                f"(configured: {', '.join(names)})"
            )
        return requested
    if config.manager is not None:
        return config.manager.primary
    if len(names) == 1:
        return names[0]
    raise ConfigError(
        f"--backend: several backends are configured ({', '.join(names)}) and no "
        "[manager] primary: choose one with --backend NAME"
    )


def _run(target: _Target, op: Callable[[StreamBackend], Awaitable[T]]) -> T:
    """Load the configuration, open the chosen backend, run ``op`` on it and close it.

    With a ``[manager]`` section and no ``--backend``, ``op`` runs on the manager: writes go to
    the primary and are journaled for the secondaries (the sync worker delivers them), reads
    follow ``read_from``. ``--backend NAME`` talks to that one backend directly.
    """
    from multibackend.manager import BackendManager
    from multibackend.registry import load_backend

    if target.config_path is None:
        raise ConfigError("no configuration: pass -c CONFIG or set MULTIBACKEND_CONFIG")
    config = load_config(target.config_path)
    backend: Any
    if target.backend is None and config.manager is not None:
        backend = BackendManager.from_config(config, worker="external")
    else:
        name = choose_backend(config, target.backend)
        settings = config.backends[name]
        backend = load_backend(settings.plugin, name=name, **settings.options)

    async def go() -> T:
        async with backend:
            return await op(backend)

    return asyncio.run(go())


def _flag(field: str) -> str:
    return field.replace("_", "-")


def _clear_fields(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    """Accept ``posted-by`` and ``posted_by`` alike; refuse fields that cannot be null."""
    fields = []
    for value in values:
        field = value.strip().replace("-", "_")
        if field not in NULLABLE_FIELDS:
            allowed = ", ".join(_flag(f) for f in NULLABLE_FIELDS)
            raise click.BadParameter(f"{value!r} cannot be cleared (nullable: {allowed})")
        fields.append(field)
    return tuple(fields)


def _json_flag(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def _target(ctx: click.Context, as_json: bool) -> _Target:
    base: _Target = ctx.find_object(_Target)  # type: ignore[assignment]
    return attrs.evolve(base, as_json=base.as_json or as_json)


def _field_options(required: tuple[str, ...]) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        func = click.option(
            "--pinned/--not-pinned", "is_pinned", default=None, help="Pinned or not."
        )(func)
        for field, help_text in reversed(_TEXT_FIELDS):
            func = click.option(
                "--" + _flag(field), field, required=field in required, help=help_text
            )(func)
        return func

    return decorate


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _show_stream(target: _Target, stream: Any) -> None:
    if target.as_json:
        echo_json(stream.to_dict())
    else:
        click.echo(stream_detail(stream))


@click.group()
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MULTIBACKEND_CONFIG",
    help="Configuration file (default: $MULTIBACKEND_CONFIG).",
)
@click.option(
    "--backend",
    help="Configured backend to use (default: the manager's primary, else the only one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (also accepted per command).")
@click.pass_context
def streams(
    ctx: click.Context, config_path: Path | None, backend: str | None, as_json: bool
) -> None:
    """Work with streams: through the manager (dual writes) when the configuration has a
    [manager] section, else on one backend (--backend NAME talks to it directly)."""
    ctx.obj = _Target(config_path=config_path, backend=backend, as_json=as_json)


@streams.command("list")
@click.option("--status", help="Only streams with this status.")
@click.option("--not-status", help="Only streams without this status.")
@click.option("--pinned/--unpinned", "is_pinned", default=None, help="Only pinned / unpinned.")
@click.option("--user-id", help="Only streams of this owner.")
@click.option(
    "--sort",
    type=click.Choice([s.value for s in Sort]),
    help="Explicit order (default: pinned first, then newest).",
)
@click.option("--page", type=int, default=1, show_default=True, help="Page number (>= 1).")
@click.option(
    "--per-page", type=int, default=25, show_default=True, help="Streams a page (1..100)."
)
@_json_flag
@click.pass_context
def list_(
    ctx: click.Context,
    status: str | None,
    not_status: str | None,
    is_pinned: bool | None,
    user_id: str | None,
    sort: str | None,
    page: int,
    per_page: int,
    as_json: bool,
) -> None:
    """List streams, one page at a time."""
    query = StreamQuery(
        status=status,
        not_status=not_status,
        is_pinned=is_pinned,
        user_id=None if user_id is None else parse_id(user_id),
        sort=sort,
        page=page,
        per_page=per_page,
    )
    target = _target(ctx, as_json)
    result = _run(target, lambda b: b.list_streams(query))
    if target.as_json:
        echo_json(page_dict(result))
    else:
        click.echo(stream_table(result))


@streams.command()
@click.argument("stream_id")
@_json_flag
@click.pass_context
def get(ctx: click.Context, stream_id: str, as_json: bool) -> None:
    """Show one stream."""
    target = _target(ctx, as_json)
    sid = parse_id(stream_id)
    _show_stream(target, _run(target, lambda b: b.get_stream(sid)))


@streams.command()
@_field_options(required=("source", "link"))
@_json_flag
@click.pass_context
def create(ctx: click.Context, /, as_json: bool, **fields: Any) -> None:
    """Create a stream (--source and --link are required)."""
    draft = StreamDraft(**_given(fields))
    target = _target(ctx, as_json)
    _show_stream(target, _run(target, lambda b: b.create_stream(draft)))


@streams.command(short_help="Change fields of a stream.")
@click.argument("stream_id")
@_field_options(required=())
@click.option(
    "--clear",
    "clear",
    multiple=True,
    metavar="FIELD",
    callback=_clear_fields,
    help="Set FIELD to null (repeatable): " + ", ".join(_flag(f) for f in NULLABLE_FIELDS) + ".",
)
@_json_flag
@click.pass_context
def update(
    ctx: click.Context, /, stream_id: str, clear: tuple[str, ...], as_json: bool, **fields: Any
) -> None:
    """Change the given fields of a stream; --clear FIELD sets a field to null."""
    values = _given(fields)
    for field in clear:
        if field in values:
            raise click.UsageError(
                f"--{_flag(field)} and --clear {_flag(field)} contradict each other"
            )
        values[field] = None
    if not values:
        raise click.UsageError("nothing to update: give a field option or --clear FIELD")
    patch = StreamPatch(**values)
    target = _target(ctx, as_json)
    sid = parse_id(stream_id)
    _show_stream(target, _run(target, lambda b: b.update_stream(sid, patch)))


@streams.command()
@click.argument("stream_id")
@_json_flag
@click.pass_context
def delete(ctx: click.Context, stream_id: str, as_json: bool) -> None:
    """Delete a stream."""
    target = _target(ctx, as_json)
    sid = parse_id(stream_id)
    _run(target, lambda b: b.delete_stream(sid))
    if target.as_json:
        echo_json({"deleted": True, "id": sid})
    else:
        click.echo(f"deleted stream {sid}")


@streams.command()
@click.argument("stream_id")
@_json_flag
@click.pass_context
def pin(ctx: click.Context, stream_id: str, as_json: bool) -> None:
    """Pin a stream (pinned streams list first)."""
    target = _target(ctx, as_json)
    sid = parse_id(stream_id)
    _show_stream(target, _run(target, lambda b: b.set_pinned(sid, True)))


@streams.command()
@click.argument("stream_id")
@_json_flag
@click.pass_context
def unpin(ctx: click.Context, stream_id: str, as_json: bool) -> None:
    """Unpin a stream."""
    target = _target(ctx, as_json)
    sid = parse_id(stream_id)
    _show_stream(target, _run(target, lambda b: b.set_pinned(sid, False)))
