"""Cutover steps that need "the journal drained" take it as a watermark: reached while the app
writes without pause and its worker lingers to batch, where "nothing outstanding" never is."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from multibackend.journal.store import JournalStore
from multibackend.manager import BackendManager
from multibackend.migrate import Backfill, Cutover, CutoverPolicy, Verifier
from multibackend.migrate.phases import load_state
from multibackend.model import StreamDraft, StreamPatch

from .conftest import history, legacy, native_sql


def _cutover(store: JournalStore, ops: tuple[Any, Any], *, fence_timeout: float) -> Cutover:
    """The cutover legacy -> new, run on the operator's own backends ``ops``."""
    return Cutover(
        store,
        {"legacy": ops[0], "new": ops[1]},
        primary="legacy",
        secondaries=["new"],
        policy=CutoverPolicy(fence_timeout=fence_timeout),
    )


async def test_advance_reaches_backfilled_and_verified_under_continuous_writes(
    tmp_path: Path, journal_url: str
) -> None:
    async with legacy(tmp_path / "legacy.db") as seed:
        await seed.bulk_import(history(40))
    app = BackendManager(
        [legacy(tmp_path / "legacy.db"), native_sql(tmp_path / "new.db", "new")],
        primary="legacy",
        secondaries=["new"],
        journal_url=journal_url,
        linger=0.05,
    )
    ops = legacy(tmp_path / "legacy.db"), native_sql(tmp_path / "new.db", "new")
    store = JournalStore(journal_url)
    async with app, ops[0], ops[1]:
        await store.open()
        cutover = _cutover(store, ops, fence_timeout=10)
        stop = asyncio.Event()
        errors: list[BaseException] = []
        written = [0]

        async def writer(w: int) -> None:
            made: list[Any] = []
            while not stop.is_set():
                try:
                    if len(made) < 5 or written[0] % 3 == 0:
                        stream = await app.create_stream(
                            StreamDraft(source="app", link=f"https://x.test/{w}/{written[0]}")
                        )
                        made.append(stream.id)
                    else:
                        await app.update_stream(
                            made[written[0] % len(made)], StreamPatch(title=f"t{written[0]}")
                        )
                    written[0] += 1
                except Exception as exc:  # the test fails below if any write failed
                    errors.append(exc)
                    return

        assert (await cutover.advance()).to_phase == "dual-write"
        await Backfill(store, ops[0], ops[1], batch=32).run()
        tasks = [asyncio.create_task(writer(w)) for w in range(3)]
        try:
            await asyncio.sleep(0.2)
            # The app writes without pause and its worker lingers 50 ms a batch: there is
            # journal work outstanding at (almost) every instant.
            samples = [await store.outstanding(["new"]) for _ in range(5)]
            assert all(samples), samples
            before = written[0]
            outcome = await cutover.advance()  # once: no retrying until a quiet instant
            assert outcome.done, outcome.missing
            assert outcome.to_phase == "backfilled"
            assert written[0] > before  # writes went on during the check
            report = await Verifier(store, ops[0], ops[1]).run()
            assert report.clean, report.differences[:3]
            outcome = await cutover.advance()
            assert outcome.done, outcome.missing
            assert (await load_state(store)).phase == "verified"
            # status answers at once: what is outstanding at this instant, not waited for.
            status = await cutover.status()
            assert status["next"] == "shadow"
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert not errors, errors[:3]
        assert await app.drain(timeout=20)
        assert (await Verifier(store, ops[0], ops[1]).run()).clean
        await store.close()


async def test_advance_reports_what_the_journal_has_not_applied_in_time(
    tmp_path: Path, journal_url: str
) -> None:
    # No worker drains (external mode, none running): the watermark is not reached.
    app = BackendManager(
        [legacy(tmp_path / "legacy.db"), native_sql(tmp_path / "new.db", "new")],
        primary="legacy",
        secondaries=["new"],
        journal_url=journal_url,
        worker="external",
    )
    ops = legacy(tmp_path / "legacy.db"), native_sql(tmp_path / "new.db", "new")
    store = JournalStore(journal_url)
    async with app, ops[0], ops[1]:
        await store.open()
        cutover = _cutover(store, ops, fence_timeout=0.3)
        await cutover.advance()
        await Backfill(store, ops[0], ops[1], batch=32).run()
        for n in range(3):
            await app.create_stream(StreamDraft(source="app", link=f"https://x.test/{n}"))
        outcome = await cutover.advance()
        assert not outcome.done
        assert outcome.missing == (
            "3 journal row(s) for new enqueued before the check still not applied after 0.3s "
            "(is a sync worker running? multibackend sync status)",
        )
        status = await cutover.status()
        assert status["next_missing"] == ["3 journal row(s) still outstanding for new"]
        assert app.worker is not None
        assert await app.worker.drain(timeout=10)
        assert (await cutover.advance()).to_phase == "backfilled"
        await store.close()
