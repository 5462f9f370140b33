"""``multibackend backfill``, ``verify``, ``shadow report`` and ``cutover`` (issue 7).

Each opens the journal named by ``[journal] url`` and the backends it needs, does its work and
closes them. ``docs/migration.md`` is the runbook.

Exit statuses: ``verify`` exits 0 when both sides agree, 1 when they differ, 2 on an error;
``cutover advance``/``rollback`` exit 1 when a precondition is missing (it is printed); the
others exit 0, or 1/2 on errors as every command does.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import click

from multibackend.backend import StreamBackend
from multibackend.cli.errors import report
from multibackend.cli.output import echo_json, format_table
from multibackend.config import Config, build_backends, load_config
from multibackend.errors import ConfigError, MultibackendError
from multibackend.journal.store import JournalStore
from multibackend.migrate.backfill import Backfill, BackfillResult
from multibackend.migrate.cutover import Cutover, CutoverOutcome, CutoverPolicy
from multibackend.migrate.progress import Progress
from multibackend.migrate.shadow import shadow_report
from multibackend.migrate.verify import Verifier, VerifyResult

__all__ = ["backfill", "cutover", "shadow", "verify"]

T = TypeVar("T")

_config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MULTIBACKEND_CONFIG",
    help="Configuration file (or $MULTIBACKEND_CONFIG).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _config(config_path: Path | None) -> Config:
    if config_path is None:
        raise ConfigError("no configuration: pass -c CONFIG or set MULTIBACKEND_CONFIG")
    return load_config(config_path)


def _backend_name(config: Config, name: str, option: str) -> str:
    if name not in config.backends:
        known = ", ".join(sorted(config.backends))
        raise ConfigError(f"{option}: {name!r} is not a configured backend (configured: {known})")
    return name


async def _open(
    config: Config, names: Sequence[str], stack: AsyncExitStack
) -> tuple[JournalStore, dict[str, StreamBackend]]:
    store = JournalStore(config.journal.url)
    await store.open()
    stack.push_async_callback(store.close)
    every = build_backends(config)
    opened: dict[str, StreamBackend] = {}
    for name in names:
        backend = every[name]
        await backend.open()
        stack.push_async_callback(backend.close)
        opened[name] = backend
    return store, opened


def _run(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())  # type: ignore[arg-type]


# --- backfill ---------------------------------------------------------------------------------


@click.command()
@_config_option
@click.option("--from", "source", required=True, help="Backend to copy from.")
@click.option("--to", "target", required=True, help="Backend to copy into.")
@click.option("--batch", type=click.IntRange(1), default=500, show_default=True)
@click.option("--resume", is_flag=True, help="Continue after the last run's checkpoint.")
@click.option("--dry-run", is_flag=True, help="Count and check, write nothing.")
@click.option("--no-bulk", is_flag=True, help="Create one by one even if the target can import.")
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Single creates in flight.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@_json_option
def backfill(
    config_path: Path | None,
    source: str,
    target: str,
    batch: int,
    resume: bool,
    dry_run: bool,
    no_bulk: bool,
    concurrency: int,
    progress: bool,
    as_json: bool,
) -> None:
    """Copy every stream of --from into --to and record the id map (resumable, safe while the
    app keeps writing through the manager)."""
    config = _config(config_path)
    _backend_name(config, source, "--from")
    _backend_name(config, target, "--to")
    if source == target:
        raise ConfigError("--from and --to must be different backends")

    async def work() -> BackfillResult:
        async with AsyncExitStack() as stack:
            store, backends = await _open(config, [source, target], stack)
            job = Backfill(
                store,
                backends[source],
                backends[target],
                batch=batch,
                concurrency=concurrency,
                use_bulk=not no_bulk,
                retry=None,
                progress=Progress(
                    "backfill" if not dry_run else "backfill (dry run)", enabled=progress
                ),
            )
            return await job.run(resume=resume, dry_run=dry_run)

    result = _run(work)
    if as_json:
        echo_json(result.to_dict())
        return
    verb = "would copy" if dry_run else "enqueued"
    click.echo(
        f"backfill {source} -> {target}{' (dry run)' if dry_run else ''}: scanned "
        f"{result.scanned:,} in {result.elapsed:.1f}s ({result.rate:,.0f}/s); already there "
        f"{result.already_present:,}; {verb} {result.enqueued:,}"
        + (
            ""
            if dry_run
            else f"; copied {result.copied:,}; parked {result.parked:,}; skipped as deleted "
            f"{result.skipped_deleted:,}; left to the sync worker {result.left_to_worker:,}"
        )
        + (f"; invalid {result.invalid:,}" if dry_run else "")
    )
    for line in result.errors[:10]:
        click.echo(f"  {line}")


# --- verify -----------------------------------------------------------------------------------


@click.command()
@_config_option
@click.option(
    "--between",
    nargs=2,
    metavar="A B",
    default=None,
    help="The two backends (default: the manager's primary and first secondary).",
)
@click.option("--repair", is_flag=True, help="Enqueue journal rows bringing B in line with A.")
@click.option("--sample", type=click.IntRange(1), default=None, help="Check N random entities.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--max-report", type=click.IntRange(0), default=1000, show_default=True)
@_json_option
def verify(
    config_path: Path | None,
    between: tuple[str, str] | None,
    repair: bool,
    sample: int | None,
    progress: bool,
    max_report: int,
    as_json: bool,
) -> None:
    """Compare every entity of A with its copy in B. Exit 0 when clean, 1 when different, 2 on
    an error."""
    try:
        config = _config(config_path)
        if between is None:
            if config.manager is None or not config.manager.secondaries:
                raise ConfigError("pass --between A B (no [manager] primary and secondary)")
            a, b = config.manager.primary, config.manager.secondaries[0]
        else:
            a = _backend_name(config, between[0], "--between")
            b = _backend_name(config, between[1], "--between")

        async def work() -> VerifyResult:
            async with AsyncExitStack() as stack:
                store, backends = await _open(config, [a, b], stack)
                verifier = Verifier(
                    store,
                    backends[a],
                    backends[b],
                    max_report=max_report,
                    progress=Progress("verify", enabled=progress),
                )
                return await verifier.run(repair=repair, sample=sample)

        result = _run(work)
    except MultibackendError as exc:
        report(exc)
        sys.exit(2)
    if as_json:
        echo_json(result.to_dict())
    else:
        _print_verify(result)
    sys.exit(0 if result.clean else 1)


def _print_verify(result: VerifyResult) -> None:
    state = "clean" if result.clean else "DIFFERENT"
    click.echo(
        f"verify {result.a} -> {result.b}: {state}. checked {result.checked:,} in "
        f"{result.elapsed:.1f}s ({result.rate:,.0f}/s): matching {result.matching:,}, missing in "
        f"{result.b} {result.missing:,}, extra in {result.b} {result.extra:,}, different "
        f"{result.differing:,}, in flight {result.in_flight:,}"
        + (f"; repair enqueued for {result.repaired:,}" if result.repaired else "")
    )
    click.echo(f"fields compared: {', '.join(result.fields)}")
    rows = []
    for d in result.differences[:50]:
        detail = "; ".join(f"{f.field}: {f.a!r} != {f.b!r}" for f in d.fields)
        rows.append((d.kind, d.a_id if d.a_id is not None else "-", d.b_id or "-", detail))
    if rows:
        click.echo(format_table(("kind", f"{result.a} id", f"{result.b} id", "fields"), rows))
        if len(result.differences) > 50:
            click.echo(f"... and more (use --json for up to {len(result.differences)})")


# --- shadow -----------------------------------------------------------------------------------


@click.group()
@_config_option
@click.pass_context
def shadow(ctx: click.Context, config_path: Path | None) -> None:
    """Shadow reads: what the candidate backend answered differently."""
    ctx.obj = config_path


@shadow.command("report")
@click.option("--latest", type=click.IntRange(0), default=20, show_default=True)
@_json_option
@click.pass_context
def shadow_report_command(ctx: click.Context, latest: int, as_json: bool) -> None:
    """Comparisons, mismatches and their rate per candidate, and the latest mismatches."""
    config = _config(ctx.obj)

    async def work() -> Any:
        store = JournalStore(config.journal.url)
        await store.open()
        try:
            return await shadow_report(store, latest=latest)
        finally:
            await store.close()

    reports = _run(work)
    if as_json:
        echo_json(
            {
                "candidates": [
                    {
                        "candidate": r.candidate,
                        "compared": r.compared,
                        "mismatches": r.mismatches,
                        "mismatch_rate": r.mismatch_rate,
                        "timeouts": r.timeouts,
                        "errors": r.errors,
                        "latest": [
                            {
                                "entity_key": m.entity_key,
                                "primary": m.primary_backend,
                                "primary_id": m.primary_id,
                                "read": m.read,
                                "kind": m.kind,
                                "primary_value": m.primary_value,
                                "candidate_value": m.candidate_value,
                                "detail": m.detail,
                                "at": m.at,
                            }
                            for m in r.latest
                        ],
                    }
                    for r in reports
                ]
            }
        )
        return
    if not reports:
        click.echo("no shadow reads recorded")
        return
    for r in reports:
        click.echo(
            f"{r.candidate}: {r.compared:,} compared, {r.mismatches:,} mismatches "
            f"({r.mismatch_rate:.3%}), {r.timeouts:,} timeouts, {r.errors:,} errors"
        )
        rows = [
            (m.kind, m.read, m.primary_id or "-", m.detail or "", _diff_text(m)) for m in r.latest
        ]
        if rows:
            click.echo(format_table(("kind", "read", "primary id", "fields", "values"), rows))


def _diff_text(m: Any) -> str:
    a, b = m.primary_value or {}, m.candidate_value or {}
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ""
    return "; ".join(f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in a if a.get(k) != b.get(k))


# --- cutover ----------------------------------------------------------------------------------


@click.group()
@_config_option
@click.pass_context
def cutover(ctx: click.Context, config_path: Path | None) -> None:
    """The cutover: status, advance one phase, roll back one phase."""
    ctx.obj = config_path


def _cutover(config: Config, store: JournalStore, backends: dict[str, StreamBackend]) -> Cutover:
    if config.manager is None:
        raise ConfigError("a [manager] section is required for the cutover", key="manager")
    settings = config.section("cutover")
    shadow_settings = config.section("shadow")
    return Cutover(
        store,
        backends,
        primary=config.manager.primary,
        secondaries=list(config.manager.secondaries),
        legacy=settings.legacy if settings else None,
        new=settings.new if settings else None,
        shadow_backend=shadow_settings.backend if shadow_settings else None,
        policy=CutoverPolicy(
            fence_timeout=settings.fence_timeout,
            fence_grace=settings.fence_grace,
            max_shadow_mismatch_rate=settings.max_shadow_mismatch_rate,
            min_shadow_reads=settings.min_shadow_reads,
        )
        if settings
        else None,
    )


async def _with_cutover(config: Config, opened: bool, work: Callable[[Cutover], Awaitable[T]]) -> T:
    async with AsyncExitStack() as stack:
        names = list(config.backends) if opened else []
        store, backends = await _open(config, names, stack)
        return await work(_cutover(config, store, backends))


@cutover.command("status")
@_json_option
@click.pass_context
def cutover_status(ctx: click.Context, as_json: bool) -> None:
    """The phase, who is primary, the fence, and what the next step still needs."""
    config = _config(ctx.obj)
    status = _run(lambda: _with_cutover(config, False, lambda c: c.status()))
    if as_json:
        echo_json(status)
        return
    click.echo(f"phase: {status['phase']}  (legacy {status['legacy']}, new {status['new']})")
    click.echo(
        f"primary: {status['primary']}; secondaries: {', '.join(status['secondaries']) or 'none'}"
    )
    if status["fenced"]:
        click.echo("writes are FENCED (a flip or rollback is draining the journal)")
    click.echo(f"journal outstanding: {status['outstanding']}")
    if status["next"] is None:
        click.echo("the cutover is complete")
    elif status["next_missing"]:
        click.echo(f"next: {status['next']} — missing:")
        for line in status["next_missing"]:
            click.echo(f"  - {line}")
    else:
        click.echo(f"next: {status['next']} — ready (multibackend cutover advance)")


def _print_outcome(outcome: CutoverOutcome, as_json: bool) -> None:
    if as_json:
        echo_json(outcome.to_dict())
    else:
        head = f"{outcome.action} {outcome.from_phase} -> {outcome.to_phase}"
        if outcome.dry_run:
            click.echo(f"{head} (dry run): " + ("would do:" if not outcome.missing else "blocked:"))
        elif outcome.done:
            click.echo(f"{head}: done")
        else:
            click.echo(f"{head}: not done")
        for line in outcome.missing:
            click.echo(f"  missing: {line}")
        if not outcome.missing or outcome.dry_run:
            for line in outcome.steps:
                click.echo(f"  - {line}")
    if outcome.missing:
        sys.exit(1)


@cutover.command("advance")
@click.option("--dry-run", is_flag=True, help="Check and print what would happen.")
@_json_option
@click.pass_context
def cutover_advance(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Take the next step when its preconditions hold (the flip fences writes and drains)."""
    config = _config(ctx.obj)
    outcome = _run(lambda: _with_cutover(config, True, lambda c: c.advance(dry_run=dry_run)))
    _print_outcome(outcome, as_json)


@cutover.command("rollback")
@click.option("--dry-run", is_flag=True, help="Check and print what would happen.")
@_json_option
@click.pass_context
def cutover_rollback(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Step back one phase (from flipped: fence, drain, swap the primary back)."""
    config = _config(ctx.obj)
    outcome = _run(lambda: _with_cutover(config, True, lambda c: c.rollback(dry_run=dry_run)))
    _print_outcome(outcome, as_json)
