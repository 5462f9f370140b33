"""``multibackend sync`` (run the sync worker) and ``multibackend journal`` (inspect and fix it).

``sync run`` drains the journal until interrupted: Ctrl-C or SIGTERM stops it cleanly after the
batch in flight. It logs progress every ``--progress`` seconds. On PostgreSQL any number of
``sync run`` processes, on any number of machines, may drain one journal.

``journal`` commands work on the journal database alone: they do not open any backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click

from multibackend.cli.output import echo_json, format_table
from multibackend.config import Config, load_config
from multibackend.errors import ConfigError, MultibackendError
from multibackend.journal.store import JournalStore, QueueRow, TargetStatus
from multibackend.manager import BackendManager

__all__ = ["journal", "sync"]

T = TypeVar("T")
log = logging.getLogger("multibackend.sync")

_config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MULTIBACKEND_CONFIG",
    help="Configuration file (or $MULTIBACKEND_CONFIG).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@attrs.frozen
class _Opts:
    config_path: Path | None
    as_json: bool


def _opts(ctx: click.Context, as_json: bool = False) -> tuple[Path, bool]:
    """The group's -c and --json (``--json`` is also accepted after the subcommand)."""
    opts = ctx.find_object(_Opts)
    if opts is None or opts.config_path is None:
        raise ConfigError("no configuration: pass -c CONFIG or set MULTIBACKEND_CONFIG")
    return opts.config_path, opts.as_json or as_json


def _run(coro: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro())  # type: ignore[arg-type]


def _load(config_path: Path) -> Config:
    config = load_config(config_path)
    if config.manager is None:
        raise ConfigError("a [manager] section is required for sync and journal", key="manager")
    return config


def _targets(config: Config) -> list[str]:
    assert config.manager is not None
    return list(config.manager.secondaries)


async def _with_store(config: Config, work: Callable[[JournalStore], Awaitable[T]]) -> T:
    store = JournalStore(config.journal.url)
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _status_dict(status: TargetStatus) -> dict[str, Any]:
    return {
        "target": status.target,
        "pending": status.pending,
        "in_flight": status.leased,
        "parked": status.parked,
        "oldest_pending_age_seconds": status.oldest_pending_age,
        "paused_until": status.paused_until,
        "pause_reason": status.pause_reason,
        "consecutive_failures": status.consecutive_failures,
    }


def _print_status(statuses: dict[str, TargetStatus], as_json: bool) -> None:
    if as_json:
        echo_json({"targets": [_status_dict(s) for s in statuses.values()]})
        return
    rows = [
        (
            s.target,
            s.pending,
            s.leased,
            s.parked,
            _age(s.oldest_pending_age),
            _when(s.paused_until),
            s.pause_reason or "",
        )
        for s in statuses.values()
    ]
    click.echo(
        format_table(
            ("target", "pending", "in flight", "parked", "oldest", "paused until", "why"), rows
        )
    )


@click.group()
@_config_option
@_json_option
@click.pass_context
def sync(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """Run and watch the sync worker that fans writes out to the secondaries."""
    ctx.obj = _Opts(config_path, as_json)


@sync.command("status")
@_json_option
@click.pass_context
def sync_status(ctx: click.Context, as_json: bool) -> None:
    """Pending, in-flight and parked work per secondary, and paused targets."""
    config_path, as_json = _opts(ctx, as_json)
    config = _load(config_path)
    statuses = _run(lambda: _with_store(config, lambda s: s.status(_targets(config))))
    _print_status(statuses, as_json)


@sync.command("once")
@_json_option
@click.pass_context
def sync_once(ctx: click.Context, as_json: bool) -> None:
    """Apply everything that is due now, then exit (parked and backing-off rows stay)."""
    config_path, as_json = _opts(ctx, as_json)

    async def work() -> dict[str, Any]:
        manager = BackendManager.from_config(_load(config_path), worker="external")
        async with manager:
            assert manager.worker is not None
            while await manager.worker.run_once():
                pass
            status = await manager.sync_status()
            stats = manager.worker.stats
            return {
                "applied": stats.applied,
                "retries": stats.retries,
                "rate_limited": stats.rate_limited,
                "parked": stats.parked,
                "outstanding": status.outstanding,
                "targets": [_status_dict(s) for s in status.targets.values()],
            }

    result = _run(work)
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"applied {result['applied']}, retries {result['retries']}, rate limited "
            f"{result['rate_limited']}, parked {result['parked']}; "
            f"{result['outstanding']} still outstanding"
        )


@sync.command("run")
@click.option(
    "--progress",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between progress lines.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (0: a free one, printed). Needs the 'metrics' "
    "extra.",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
@click.pass_context
def sync_run(
    ctx: click.Context, progress: float, metrics_port: int | None, metrics_host: str
) -> None:
    """Drain the journal until interrupted (Ctrl-C or SIGTERM stop after the batch in flight)."""
    config_path, _ = _opts(ctx)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def work() -> None:
        manager = BackendManager.from_config(_load(config_path), worker="external")
        async with manager:
            worker = manager.worker
            assert worker is not None
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, worker.stop)
            reporter = asyncio.create_task(_report(manager, progress))
            exporter = None
            if metrics_port is not None:
                from multibackend.metrics import MetricsExporter

                exporter = MetricsExporter(manager, metrics_port, host=metrics_host)
                await exporter.__aenter__()
                click.echo(f"metrics on http://{metrics_host}:{exporter.port}/metrics", err=True)
            click.echo(
                f"sync worker {worker.owner} draining into {', '.join(worker.targets)}; "
                "Ctrl-C stops it",
                err=True,
            )
            try:
                await worker.run()
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
                if exporter is not None:
                    await exporter.__aexit__(None, None, None)
            stats = worker.stats
            click.echo(
                f"stopped: applied {stats.applied}, retries {stats.retries}, parked {stats.parked}",
                err=True,
            )

    _run(work)


async def _report(manager: BackendManager, every: float) -> None:
    last_recovery = time.monotonic()
    while True:
        await asyncio.sleep(every)
        try:
            status = await manager.sync_status()
            stats = status.worker
            assert stats is not None
            log.info(
                "applied %d, retries %d, rate limited %d, parked %d; outstanding %d",
                stats.applied,
                stats.retries,
                stats.rate_limited,
                stats.parked,
                status.outstanding,
            )
            if time.monotonic() - last_recovery > manager.intent_grace:
                await manager.recover_intents()
                last_recovery = time.monotonic()
        except MultibackendError as exc:
            log.warning("could not read sync status: %s", exc)


@click.group()
@_config_option
@_json_option
@click.pass_context
def journal(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """Inspect the sync journal; retry or drop parked entries."""
    ctx.obj = _Opts(config_path, as_json)


def _row_dict(row: QueueRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "entity_type": row.entity_type,
        "entity_key": row.entity_key,
        "target": row.target,
        "op": row.op,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at,
        "last_error": row.last_error,
        "writes": row.seq,
        "deleted": row.deleted,
        "snapshot": row.snapshot,
        "enqueued_at": row.enqueued_at,
    }


@journal.command("list")
@click.option("--parked", is_flag=True, help="Only parked entries.")
@click.option("--target", default=None, help="Only entries for this secondary.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@_json_option
@click.pass_context
def journal_list(
    ctx: click.Context, parked: bool, target: str | None, limit: int, as_json: bool
) -> None:
    """Entries waiting to reach a secondary (oldest first)."""
    config_path, as_json = _opts(ctx, as_json)
    config = _load(config_path)
    status = "parked" if parked else None
    rows = _run(
        lambda: _with_store(config, lambda s: s.rows(status=status, target=target, limit=limit))
    )
    if as_json:
        echo_json({"entries": [_row_dict(r) for r in rows]})
        return
    if not rows:
        click.echo("no entries" + (" parked" if parked else ""))
        return
    click.echo(
        format_table(
            ("id", "target", "op", "status", "attempts", "next attempt", "last error"),
            [
                (
                    r.id,
                    r.target,
                    r.op,
                    r.status,
                    r.attempts,
                    _when(r.next_attempt_at),
                    r.last_error or "",
                )
                for r in rows
            ],
        )
    )


@journal.command("show")
@click.argument("entry_id", type=int)
@click.pass_context
def journal_show(ctx: click.Context, entry_id: int) -> None:
    """One entry in full (JSON), including the snapshot it will apply."""
    config_path, _ = _opts(ctx)
    config = _load(config_path)
    row = _run(lambda: _with_store(config, lambda s: s.row(entry_id)))
    if row is None:
        raise ConfigError(f"no journal entry {entry_id}")
    echo_json(_row_dict(row))


@journal.command("retry")
@click.argument("entry_id", type=int, required=False)
@click.option("--all-parked", is_flag=True, help="Retry every parked entry.")
@click.pass_context
def journal_retry(ctx: click.Context, entry_id: int | None, all_parked: bool) -> None:
    """Make a parked entry (or every parked entry) due again with fresh attempts."""
    config_path, _ = _opts(ctx)
    if (entry_id is None) == (not all_parked):
        raise click.UsageError("give an entry ID or --all-parked")
    config = _load(config_path)
    ids = None if all_parked else [entry_id] if entry_id is not None else None
    count = _run(lambda: _with_store(config, lambda s: s.retry(ids)))
    if entry_id is not None and count == 0:
        raise ConfigError(f"entry {entry_id} is not parked (see 'multibackend journal list')")
    click.echo(f"{count} entr{'y' if count == 1 else 'ies'} due again")


@journal.command("drop")
@click.argument("entry_id", type=int)
@click.pass_context
def journal_drop(ctx: click.Context, entry_id: int) -> None:
    """Remove an entry: its secondary will not receive that change."""
    config_path, _ = _opts(ctx)
    config = _load(config_path)
    if not _run(lambda: _with_store(config, lambda s: s.drop(entry_id))):
        raise ConfigError(f"no journal entry {entry_id}")
    click.echo(f"dropped entry {entry_id}")
