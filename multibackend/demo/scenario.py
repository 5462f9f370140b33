"""``multibackend demo``: a whole cutover, legacy SQLite to StreamSource, on one machine.

Steps (each prints a phase line; the long ones draw the toolkit's progress):

1. seed      — a legacy database in the ``streamsource-legacy`` schema (:mod:`.seed`).
2. emulator  — StreamSource in-process on 127.0.0.1 (free port, one editor; the seeded flags
               already give editors bulk import); the configuration file is written.
3. dual-write — the app's :class:`~multibackend.manager.BackendManager` opens from that file
               (legacy primary, journal in the legacy database) and starts writing: creates,
               updates, pins, deletes, all through the manager, until the end of the rollback
               rehearsal. The cutover advances to ``dual-write``.
4. backfill  — with faults injected into the emulator (a burst of 429s, one bulk import
               refused with 503, 500s on list reads and updates, 503s on creates, latency),
               the toolkit's Backfill bulk-imports every legacy stream; then the journal
               drains and the cutover advances to ``backfilled``.
5. verify    — a full verify legacy -> StreamSource must be clean; ``verified``.
6. shadow    — the app reads; every read is repeated on StreamSource and compared; the
               mismatch rate is checked by the cutover's ``shadow -> flipped`` step.
7. flip      — the fenced flip: StreamSource becomes primary (the app follows on its next
               write; its writes wait at the fence and none fails).
8. rollback  — the rehearsal: the fenced swap back to legacy, then the flip again.
9. final     — the app stops; the journal drains; verify both ways; counts compared.

Every check lands in the report (``report.json`` in the work folder) and the summary; the
command exits 1 when any fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import attrs

from multibackend.backend import StreamBackend
from multibackend.config import build_backends, load_config
from multibackend.demo.config import DEMO_EMAIL, DEMO_PASSWORD, render_config
from multibackend.demo.report import Check, DemoReport, Phase, render_summary
from multibackend.demo.seed import seed_legacy
from multibackend.demo.traffic import LiveTraffic
from multibackend.journal.retry import RetryPolicy
from multibackend.journal.store import JournalStore
from multibackend.manager import BackendManager
from multibackend.migrate import PHASES, Backfill, Cutover, CutoverPolicy, Progress, Verifier
from multibackend.migrate.scan import count_streams
from multibackend.migrate.shadow import shadow_report
from multibackend.migrate.verify import VerifyResult

__all__ = ["DemoOptions", "run_demo"]

LEGACY = "legacy"
NEW = "streamsource"
CONFIG_NAME = "multibackend.toml"


@attrs.frozen(kw_only=True)
class DemoOptions:
    """How a demo runs. ``streams``: legacy rows to seed; ``shadow_reads``: reads in the shadow
    phase; ``cli``: finish with ``multibackend cutover status`` run as a separate process."""

    workdir: Path
    streams: int = 5000
    shadow_reads: int = 400
    seed: int = 2020
    cli: bool = True
    progress: bool = True


class _Steps:
    """Phase lines, timings and checks, as the run goes."""

    def __init__(self, out: TextIO, total: int) -> None:
        self.out = out
        self.total = total
        self.phases: list[Phase] = []
        self.checks: list[Check] = []
        self._index = 0

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @asynccontextmanager
    async def phase(self, name: str, title: str) -> AsyncIterator[dict[str, Any]]:
        self._index += 1
        self.say(f"\n[{self._index}/{self.total}] {title}")
        detail: dict[str, Any] = {}
        started = time.monotonic()
        try:
            yield detail
        finally:
            seconds = time.monotonic() - started
            self.phases.append(Phase(name=name, seconds=seconds, detail=detail))
            self.say(f"      done in {seconds:.1f}s")

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name=name, ok=ok, detail=detail))
        self.say(f"      {'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return ok


def _clean_workdir(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("legacy.db", "streamsource.json", "report.json", CONFIG_NAME):
        for suffix in ("", "-wal", "-shm", "-journal"):
            (workdir / f"{name}{suffix}").unlink(missing_ok=True)


def _visible_ids(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute('SELECT id FROM "Streams" WHERE NOT "isExpired"')]
    finally:
        db.close()


async def _advance(cutover: Cutover, to: str, within: float = 30.0) -> tuple[bool, str]:
    """Advance to ``to``, retrying while a precondition is only momentarily missing (rows the
    live writes keep adding to the journal). Refuses when the cutover is not one step before
    ``to``, so one failed step is reported as such instead of shifting every later one."""
    deadline = time.monotonic() + within
    while True:
        phase = (await cutover.state()).phase
        if phase == to:
            return True, f"already {to}"
        if PHASES.index(to) != PHASES.index(phase) + 1:
            return False, f"the cutover is in {phase}, not one step before {to}"
        outcome = await cutover.advance()
        if outcome.done:
            return True, f"{outcome.from_phase} -> {outcome.to_phase}"
        if time.monotonic() >= deadline:
            return False, "; ".join(outcome.missing) or "not done"
        await asyncio.sleep(0.05)


def _verify_text(result: VerifyResult) -> str:
    return (
        f"{result.checked:,} checked, {result.matching:,} equal, missing {result.missing}, "
        f"extra {result.extra}, different {result.differing}, in flight {result.in_flight}"
    )


async def run_demo(options: DemoOptions, out: TextIO | None = None) -> DemoReport:
    """Run the demo in ``options.workdir``; return its report (also written as report.json).
    Raises only on errors outside the checks (a missing plugin, an unusable work folder)."""
    from multibackend_streamsource.emulator import run_emulator

    out = out if out is not None else sys.stdout
    workdir = options.workdir.resolve()
    started = time.monotonic()
    steps = _Steps(out, total=9 + (1 if options.cli else 0))
    steps.say(
        f"multibackend demo: {options.streams:,} legacy streams -> StreamSource, in {workdir}"
    )
    _clean_workdir(workdir)
    extra: dict[str, Any] = {}

    async with steps.phase("seed", "seed the legacy database (streamsource-legacy schema)") as d:
        seeded = await asyncio.to_thread(
            seed_legacy, workdir / "legacy.db", options.streams, seed=options.seed
        )
        d.update(attrs.asdict(seeded, filter=lambda a, _: a.name != "path"))
        steps.say(
            f"      {seeded.rows:,} rows in {seeded.elapsed:.2f}s: {seeded.visible:,} visible, "
            f"{seeded.expired} expired (soft-deleted), {seeded.pinned} pinned, "
            f"{seeded.null_pinned} with isPinned NULL"
        )

    async with AsyncExitStack() as stack:
        async with steps.phase("emulator", "start StreamSource (emulator) and write the config"):
            emu = await stack.enter_async_context(run_emulator(rate_limit=20_000, rate_period=60.0))
            config_path = workdir / CONFIG_NAME
            config_path.write_text(render_config(emu.base_url), encoding="utf-8")
            # The editor is whoever the configuration logs in as: the demo's throwaway account,
            # or $STREAMSOURCE_EMAIL / $STREAMSOURCE_PASSWORD when the shell has them set.
            login = load_config(config_path).backends[NEW].options
            await emu.add_user(
                str(login.get("email", DEMO_EMAIL)),
                str(login.get("password", DEMO_PASSWORD)),
                role="editor",
            )
            steps.say(f"      StreamSource at {emu.base_url}; configuration: {config_path}")

        report = await _cutover(options, steps, stack, emu, config_path, seeded.visible, extra)

    if options.cli:
        async with steps.phase("cli", "the CLI on the demo's configuration"):
            await _cli(steps, config_path)

    report = attrs.evolve(
        report,
        phases=tuple(steps.phases),
        checks=tuple(steps.checks),
        elapsed=time.monotonic() - started,
    )
    (workdir / "report.json").write_text(
        json.dumps(report.to_dict(), indent=2, default=str) + "\n", encoding="utf-8"
    )
    steps.say("")
    steps.say(render_summary(report))
    return report


async def _cutover(
    options: DemoOptions,
    steps: _Steps,
    stack: AsyncExitStack,
    emu: Any,
    config_path: Path,
    visible: int,
    extra: dict[str, Any],
) -> DemoReport:
    config = load_config(config_path)
    assert config.manager is not None
    settings = config.section("cutover")
    # The operator's tools (backfill, verify, cutover) use their own connections, as the
    # `multibackend backfill|verify|cutover` commands would from another process.
    ops: dict[str, StreamBackend] = build_backends(config)
    for backend in ops.values():
        await backend.open()
        stack.push_async_callback(backend.close)
    app = BackendManager.from_config(config)
    await app.open()
    stack.push_async_callback(app.close)
    store = JournalStore(config.journal.url)
    await store.open()
    stack.push_async_callback(store.close)
    cutover = Cutover(
        store,
        ops,
        primary=config.manager.primary,
        secondaries=list(config.manager.secondaries),
        legacy=LEGACY,
        new=NEW,
        shadow_backend=NEW,
        policy=CutoverPolicy(
            fence_timeout=settings.fence_timeout,
            fence_grace=settings.fence_grace,
            max_shadow_mismatch_rate=settings.max_shadow_mismatch_rate,
            min_shadow_reads=settings.min_shadow_reads,
        ),
    )

    def progress(label: str) -> Progress:
        return Progress(label, stream=steps.out, interval=1.0, enabled=options.progress)

    known = [
        (LEGACY, i) for i in await asyncio.to_thread(_visible_ids, config_path.parent / "legacy.db")
    ]
    traffic = LiveTraffic(app, known, seed=options.seed)
    results: dict[str, Any] = {}

    async with steps.phase("dual-write", "dual writes on: legacy primary, StreamSource secondary"):
        ok, text = await _advance(cutover, "dual-write")
        steps.check("advance to dual-write", ok, text)
        traffic.start()
        await asyncio.sleep(0.3)
        steps.say(f"      the app is writing through the manager ({traffic.stats.writes} so far)")

    async with steps.phase(
        "backfill", "backfill legacy -> StreamSource, with faults, while the app writes"
    ) as d:
        # Scripted, so every run shows each kind: the clients retry GETs and the worker
        # retries writes; a refused bulk import is rescheduled and its streams are looked for
        # (by natural key) before they are created again, so nothing is duplicated.
        emu.set_faults(latency=0.003)
        emu.fail_next(1, status=503, method="POST", path="/api/v1/streams/bulk_import")
        emu.fail_next(4, status=500, method="GET", path="/api/v1/streams")
        emu.fail_next(4, status=500, method="PATCH", path="/api/v1/streams/*")
        emu.fail_next(2, status=503, method="POST", path="/api/v1/streams")
        emu.set_rate_limit(30, 2.0)  # a burst of 429s at the start
        steps.say(
            "      faults: 3 ms latency on every answer; a bulk import refused with 503; 500s on "
            "4 list reads and 4 updates, 503 on 2 creates; a 429 burst (30 requests / 2 s)"
        )

        async def lift_burst() -> None:
            await asyncio.sleep(3.0)
            emu.set_rate_limit(20_000, 60.0)

        burst = asyncio.create_task(lift_burst())
        writes_before = traffic.stats.writes
        backfill = await Backfill(
            store,
            ops[LEGACY],
            ops[NEW],
            bulk_chunk=100,
            retry=RetryPolicy(
                max_attempts=config.sync.max_attempts,
                base=config.sync.backoff_base,
                cap=config.sync.backoff_cap,
            ),
            progress=progress("      backfill"),
        ).run(finish_timeout=60.0)
        await burst
        emu.clear_faults()
        results["backfill"] = backfill.to_dict()
        d.update(backfill.to_dict())
        d["app_writes_during"] = traffic.stats.writes - writes_before
        # Rows of a refused import are rescheduled and finished by a sync worker (after looking
        # for streams the import may have made): neither copied nor already present.
        retried = max(
            0,
            backfill.scanned
            - backfill.copied
            - backfill.already_present
            - backfill.skipped_deleted
            - backfill.parked,
        )
        d["retried_through_journal"] = retried
        results["backfill"]["retried_through_journal"] = retried
        steps.check(
            "backfill complete, nothing parked",
            backfill.complete and backfill.parked == 0 and backfill.invalid == 0,
            f"{backfill.scanned:,} scanned, {backfill.copied:,} copied by bulk import, "
            f"{retried:,} retried through the journal, {backfill.already_present:,} already "
            f"there (live writes), {backfill.parked} parked, {backfill.rate:,.0f} streams/s; "
            f"the app wrote {d['app_writes_during']} times meanwhile",
        )
        # The sync worker may still be backing off from the injected faults: allow it a minute.
        ok, text = await _advance(cutover, "backfilled", within=60.0)
        steps.check("advance to backfilled", ok, text)

    async with steps.phase("verify", "verify legacy -> StreamSource") as d:
        first = await Verifier(
            store, ops[LEGACY], ops[NEW], progress=progress("      verify")
        ).run()
        results["verify"] = first.to_dict()
        d.update(clean=first.clean, checked=first.checked, in_flight=first.in_flight)
        steps.check("verify clean", first.clean, _verify_text(first))
        for diff in first.differences[:5]:
            steps.say(f"        {diff.to_dict()}")
        ok, text = await _advance(cutover, "verified")
        steps.check("advance to verified", ok, text)

    async with steps.phase("shadow", "shadow reads: every app read repeated on StreamSource") as d:
        ok, text = await _advance(cutover, "shadow")
        steps.check("advance to shadow", ok, text)
        answered = await traffic.read(options.shadow_reads)
        assert app.shadow is not None
        await _settle_shadow(app)
        reports = await shadow_report(store, NEW, latest=5)
        shadow = reports[0] if reports else None
        compared = shadow.compared if shadow else 0
        rate = shadow.mismatch_rate if shadow else 0.0
        d.update(
            reads=answered,
            compared=compared,
            mismatches=shadow.mismatches if shadow else 0,
            mismatch_rate=rate,
            skipped_in_flight=app.shadow.stats.in_flight_skipped,
            timeouts=shadow.timeouts if shadow else 0,
        )
        results["shadow"] = dict(d)
        steps.check(
            "shadow mismatch rate",
            compared >= settings.min_shadow_reads and rate <= settings.max_shadow_mismatch_rate,
            f"{answered} reads, {compared} compared, {d['mismatches']} mismatched "
            f"({rate:.2%}; limit {settings.max_shadow_mismatch_rate:.2%}), "
            f"{d['skipped_in_flight']} skipped while a write was in flight",
        )

    async with steps.phase("flip", "flip: StreamSource becomes primary (fenced)") as d:
        flip_started = time.monotonic()
        ok, text = await _advance(cutover, "flipped")
        d["fenced_seconds"] = round(time.monotonic() - flip_started, 3)
        steps.check("flip to StreamSource", ok, f"{text} in {d['fenced_seconds']:.2f}s")
        await asyncio.sleep(1.0)  # the app writes against the new primary
        steps.check(
            "the app follows the flip",
            app.primary_name == NEW,
            f"the app's manager now writes to {app.primary_name}, and fans out to "
            f"{', '.join(app.secondary_names)}",
        )

    async with steps.phase("rollback", "rollback rehearsal: back to legacy, then flip again") as d:
        phase = (await cutover.state()).phase
        if phase == "flipped":
            back = await cutover.rollback()
            steps.check(
                "rollback to legacy",
                back.done,
                f"{back.from_phase} -> {back.to_phase}" if back.done else "; ".join(back.missing),
            )
        else:
            steps.check(
                "rollback to legacy", False, f"nothing to roll back: the cutover is {phase}"
            )
        await asyncio.sleep(0.7)
        d["primary_after_rollback"] = app.primary_name
        steps.check(
            "the app follows the rollback",
            app.primary_name == LEGACY,
            f"the app's manager writes to {app.primary_name} again",
        )
        ok, text = await _advance(cutover, "flipped")
        steps.check("flip again", ok, text)
        await asyncio.sleep(0.5)

    async with steps.phase("final", "stop the app, drain the journal, verify both ways") as d:
        await traffic.stop()
        stats = traffic.stats
        steps.check(
            "every app write succeeded",
            not stats.errors,
            f"{stats.writes} writes ({stats.creates} creates, {stats.updates} updates, "
            f"{stats.pins} pins, {stats.deletes} deletes) against "
            f"{', '.join(sorted(stats.primaries))}"
            + (f"; {len(stats.errors)} failed, first: {stats.errors[0]}" if stats.errors else ""),
        )
        drained = await app.drain(timeout=60)
        status = await store.status([LEGACY, NEW])
        outstanding = sum(s.outstanding for s in status.values())
        parked = sum(s.parked for s in status.values())
        steps.check(
            "lag zero", drained and outstanding == 0, f"{outstanding} journal rows outstanding"
        )
        steps.check("nothing parked", parked == 0, f"{parked} parked journal rows")
        forward = await Verifier(store, ops[LEGACY], ops[NEW]).run()
        backward = await Verifier(store, ops[NEW], ops[LEGACY]).run()
        results["final_verify"] = {"forward": forward.to_dict(), "backward": backward.to_dict()}
        steps.check("final verify legacy -> StreamSource", forward.clean, _verify_text(forward))
        steps.check("final verify StreamSource -> legacy", backward.clean, _verify_text(backward))
        n_legacy = await count_streams(ops[LEGACY])
        n_new = await count_streams(ops[NEW])
        expected = visible + stats.creates - stats.deletes
        steps.check(
            "counts agree",
            n_legacy == n_new == expected,
            f"legacy {n_legacy}, StreamSource {n_new}, expected {expected} "
            f"({visible} seeded + {stats.creates} created - {stats.deletes} deleted)",
        )
        counters = emu.counters()
        # The emulator keeps its streams in memory (its SQLite persistence would triple the
        # run time): leave them beside the legacy database for inspection.
        (config_path.parent / "streamsource.json").write_text(
            json.dumps(emu.streams(), indent=1, default=str) + "\n", encoding="utf-8"
        )
        steps.check("emulator healthy", counters.errors == 0, f"{counters.errors} internal errors")
        state = await cutover.status()
        d.update(phase=state["phase"], primary=state["primary"])
        worker = app.worker.stats if app.worker is not None else None
        extra.update(
            streams={"legacy": n_legacy, "streamsource": n_new, "expected": expected},
            writes=attrs.asdict(stats, filter=lambda a, _: a.name not in ("errors", "primaries"))
            | {
                "total": stats.writes,
                "errors": stats.errors[:20],
                "primaries": sorted(stats.primaries),
            },
            journal={name: attrs.asdict(s) for name, s in status.items()},
            worker=attrs.asdict(worker) if worker is not None else None,
            emulator=attrs.asdict(counters),
            cutover={
                "phase": state["phase"],
                "primary": state["primary"],
                "history": state["history"],
            },
        )

    return DemoReport(
        workdir=str(options.workdir.resolve()),
        streams_seeded=options.streams,
        config=str(config_path),
        results=results | extra,
        machine={
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "python": sys.version.split()[0],
            "platform": sys.platform,
        },
    )


async def _settle_shadow(app: BackendManager) -> None:
    """Wait for the shadow comparisons still running (each ends by its deadline), then store
    their counts for the cutover's check."""
    assert app.shadow is not None
    await app.shadow.wait_idle()
    await app.shadow.flush()


async def _cli(steps: _Steps, config_path: Path) -> None:
    command = [sys.executable, "-m", "multibackend", "cutover", "-c", str(config_path), "status"]
    steps.say(f"      $ multibackend cutover -c {config_path.name} status")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=config_path.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        steps.check("multibackend cutover status", False, "did not answer within 60 s")
        return
    text = output.decode("utf-8", "replace")
    for line in text.rstrip().splitlines()[:12]:
        steps.say(f"        {line}")
    steps.check(
        "multibackend cutover status",
        proc.returncode == 0 and "flipped" in text,
        f"exit status {proc.returncode}, phase flipped"
        if "flipped" in text
        else f"exit status {proc.returncode}",
    )
