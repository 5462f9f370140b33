"""Backfill: everything copied once, through the journal, on every path and under live writes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from multibackend.errors import NotFound, Unavailable
from multibackend.journal.store import JournalStore
from multibackend.manager import BackendManager
from multibackend.migrate import Backfill, Progress, Verifier
from multibackend.model import StreamDraft, StreamPatch, StreamQuery

from .conftest import history, legacy, memory, streamsource


async def _all(backend: Any) -> list[Any]:
    return [s async for s in backend.iter_streams(StreamQuery())]


async def test_backfill_copies_every_stream_once_and_skips_mapped(
    tmp_path: Path, journal_url: str
) -> None:
    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    store = JournalStore(journal_url)
    async with src, dst:
        await store.open()
        try:
            await src.bulk_import(history(230))
            first = await Backfill(store, src, dst, batch=64).run()
            assert (first.scanned, first.copied, first.already_present) == (230, 230, 0)
            assert (first.parked, first.left_to_worker) == (0, 0)
            assert len(await _all(dst)) == 230
            result = await Verifier(store, src, dst).run()
            assert result.clean, result.differences[:3]
            # A second run finds everything mapped and copies nothing.
            again = await Backfill(store, src, dst, batch=64).run()
            assert (again.copied, again.enqueued, again.already_present) == (0, 0, 230)
            assert len(await _all(dst)) == 230
        finally:
            await store.close()


async def test_dry_run_counts_and_writes_nothing(tmp_path: Path) -> None:
    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/journal.db")
    async with src, dst:
        await store.open()
        try:
            await src.bulk_import(history(40))
            result = await Backfill(store, src, dst).run(dry_run=True)
            assert (result.scanned, result.enqueued, result.copied) == (40, 40, 0)
            assert await _all(dst) == []
            assert await store.outstanding(None) == 0
            assert await store.native_ids_of("stream", ["x"], "legacy") == {}
        finally:
            await store.close()


async def _broken_rows(db: Path, count: int) -> None:
    """Legacy rows today's rules refuse (a link that is not a URL), written behind the app."""
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        for i in range(count):
            conn.execute(
                sa.text(
                    'INSERT INTO "Streams" (source, link, status, "isPinned", "createdAt", '
                    "\"updatedAt\") VALUES (:s, :l, 'Unknown', 0, '2020-01-01 00:00:00', "
                    "'2020-01-01 00:00:00')"
                ),
                {"s": f"broken{i}", "l": f"not a url {i}"},
            )
    engine.dispose()


async def test_per_item_errors_are_parked_with_the_reason_not_fatal(tmp_path: Path) -> None:
    for use_bulk in (True, False):
        folder = tmp_path / str(use_bulk)
        folder.mkdir()
        src, dst = legacy(folder / "legacy.db"), memory("new")
        store = JournalStore(f"sqlite+aiosqlite:///{folder}/journal.db")
        async with src, dst:
            await store.open()
            try:
                await src.bulk_import(history(30))
                await _broken_rows(folder / "legacy.db", 3)
                result = await Backfill(store, src, dst, use_bulk=use_bulk).run()
                assert (result.copied, result.parked) == (30, 3)
                parked = await store.rows(status="parked")
                assert len(parked) == 3
                assert all("link" in (r.last_error or "") for r in parked)
                assert len(await _all(dst)) == 30
            finally:
                await store.close()


async def test_bulk_import_into_the_emulator_maps_ids_by_natural_key(
    tmp_path: Path, emulator: Any
) -> None:
    src = legacy(tmp_path / "legacy.db")
    dst = streamsource(emulator.base_url)
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/journal.db")
    async with src, dst:
        await store.open()
        try:
            await src.bulk_import(history(260))
            before = emulator.counters().statuses.copy()
            result = await Backfill(store, src, dst, batch=120).run()
            assert (result.copied, result.parked, result.left_to_worker) == (260, 0, 0)
            after = emulator.counters().statuses
            # The bulk endpoint did the creating: far fewer requests than streams.
            assert sum(after.values()) - sum(before.values()) < 100
            assert len(emulator.streams()) == 260
            # Right ids: every mapped pair agrees (titles differ per stream), pins included.
            verified = await Verifier(store, src, dst).run()
            assert verified.clean, verified.differences[:3]
            assert sum(1 for s in emulator.streams() if s["is_pinned"]) == sum(
                1 for i in range(260) if i % 11 == 0
            )
        finally:
            await store.close()


async def test_per_item_creates_into_the_emulator(tmp_path: Path, emulator: Any) -> None:
    src = legacy(tmp_path / "legacy.db")
    dst = streamsource(emulator.base_url)
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/journal.db")
    async with src, dst:
        await store.open()
        try:
            await src.bulk_import(history(60))
            result = await Backfill(store, src, dst, use_bulk=False, concurrency=8).run()
            assert (result.copied, result.parked) == (60, 0)
            assert len(emulator.streams()) == 60
            assert (await Verifier(store, src, dst).run()).clean
        finally:
            await store.close()


async def test_backfill_racing_live_updates_and_deletes_ends_with_the_latest_state(
    tmp_path: Path, journal_url: str
) -> None:
    """Streams written before dual writes began are copied while the app keeps updating,
    deleting and creating through the manager: the target ends equal to the source, with no
    stale copy, no resurrected delete and no duplicate."""
    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    manager = BackendManager([src, dst], primary="legacy", journal_url=journal_url)
    async with manager:
        await src.bulk_import(history(300))
        assert manager.store is not None
        ids = [s.id for s in await _all(src)]
        rng = random.Random(7)
        deleted: set[Any] = set()
        created: set[Any] = set()
        stop = asyncio.Event()
        progress = Progress("backfill", enabled=False)

        async def app() -> None:
            n = 0
            while not stop.is_set() or n < 60:
                n += 1
                roll = rng.random()
                # Aim at the streams the backfill is about to read or has just read.
                near = ids[max(0, progress.done - 10) : progress.done + 30]
                live = [i for i in near if i not in deleted] or [i for i in ids if i not in deleted]
                target = rng.choice(live)
                if roll < 0.6:
                    await manager.update_stream(target, StreamPatch(title=f"live {n}"))
                elif roll < 0.8:
                    deleted.add(target)
                    await manager.delete_stream(target)
                else:
                    made = await manager.create_stream(
                        StreamDraft(source="app", link=f"https://x.test/app{n}", title=f"a{n}")
                    )
                    created.add(made.id)  # SQLite may reuse the id of a deleted last row
                await asyncio.sleep(0)

        writer = asyncio.create_task(app())
        result = await Backfill(
            manager.store, src, dst, batch=20, use_bulk=False, progress=progress
        ).run()
        stop.set()
        await writer
        assert result.scanned >= 250
        assert await manager.drain(timeout=30)
        verified = await Verifier(manager.store, src, dst).run()
        assert verified.clean, verified.differences[:5]
        source_rows = await _all(src)
        target_rows = await _all(dst)
        assert len(target_rows) == len(source_rows)
        resurrected = {str(i) for i in deleted - created} & {str(s.id) for s in source_rows}
        assert not resurrected, sorted(resurrected)


class _WritesAfterRead:
    """The source as the backfill reads it; after handing out stream ``at`` it lets the app
    write through the manager — between the backfill's read and its journal transaction."""

    def __init__(self, inner: Any, at: int, write: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.fields = inner.fields
        self.capabilities = inner.capabilities
        self.at = at
        self.write = write

    async def iter_streams(self, query: Any = None) -> Any:
        async for stream in self.inner.iter_streams(query):
            yield stream
            if stream.id == self.at:
                await self.write()

    async def list_streams(self, query: Any) -> Any:
        return await self.inner.list_streams(query)


async def test_writes_between_the_read_and_the_enqueue_win(tmp_path: Path) -> None:
    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    manager = BackendManager(
        [src, dst], primary="legacy", journal_url=f"sqlite+aiosqlite:///{tmp_path}/j.db"
    )
    async with manager:
        await src.bulk_import(history(30))
        rows = await _all(src)
        victim, changed, also = rows[10], rows[11], rows[12]

        async def write() -> None:
            await manager.delete_stream(victim.id)
            await manager.update_stream(changed.id, StreamPatch(title="newer"))
            await manager.update_stream(also.id, StreamPatch(title="newer too"))

        assert manager.store is not None
        source = _WritesAfterRead(src, also.id, write)
        result = await Backfill(manager.store, source, dst, batch=25).run()  # type: ignore[arg-type]
        assert result.skipped_deleted == 1
        assert await manager.drain(timeout=10)
        copied = await _all(dst)
        links = [s.link for s in copied]
        assert len(copied) == 29
        assert victim.link not in links  # not resurrected
        by_link = {s.link: s.title for s in copied}
        assert by_link[changed.link] == "newer"  # not overwritten by the older copy
        assert by_link[also.link] == "newer too"
        assert (await Verifier(manager.store, src, dst).run()).clean


async def test_a_lost_import_is_found_even_when_its_title_changed_since(tmp_path: Path) -> None:
    """The app renamed the stream (merged into the journal row) after an import whose answer
    was lost: the search must still adopt the imported copy, not create a second one."""
    from multibackend.journal.snapshot import encode_fields
    from multibackend.journal.store import Done, FanOut

    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/journal.db")
    async with src, dst:
        await store.open()
        try:
            lost = await dst.create_stream(
                StreamDraft(source="s", link="https://x.test/a", title="before")
            )
            await dst.create_stream(StreamDraft(source="t", link="https://x.test/b", title="x"))
            snapshot = encode_fields({"source": "s", "link": "https://x.test/a", "title": "after"})
            async with store.begin() as conn:
                await store.enqueue(
                    conn,
                    [
                        FanOut(
                            entity_type="stream",
                            entity_key="k1",
                            target="new",
                            op="create",
                            snapshot=snapshot,
                        )
                    ],
                )
            rows = await store.claim("me", targets_=["new"], limit=10, lease_seconds=30)
            outcomes = await Backfill(store, src, dst)._find_created(rows)
            assert len(outcomes) == 1
            assert isinstance(outcomes[0], Done)
            assert outcomes[0].mapped == lost.id
        finally:
            await store.close()


async def test_a_delete_committed_while_the_chunk_is_enqueued_is_not_resurrected(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL (read committed): a delete through the manager commits, and its fan-out is
    applied, after the chunk's first tombstone check and before its create rows are written.
    The copy must not be made (it was, as an 'extra' the cutover test's verify saw now and
    then)."""
    import multibackend.migrate.backfill as backfill_module

    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    manager = BackendManager([src, dst], primary="legacy", journal_url=pg_url)
    async with manager:
        await src.bulk_import(history(30))
        victim = (await _all(src))[10]
        real_adopt = backfill_module.adopt_chunk_keys
        deleted: list[bool] = []

        async def adopt_after_a_delete(*args: Any, **kwargs: Any) -> Any:
            if not deleted:
                deleted.append(True)
                await manager.delete_stream(victim.id)
                assert await manager.drain(timeout=10)  # the delete reached 'new': nothing there
            return await real_adopt(*args, **kwargs)

        monkeypatch.setattr(backfill_module, "adopt_chunk_keys", adopt_after_a_delete)
        assert manager.store is not None
        result = await Backfill(manager.store, src, dst, batch=50).run()
        assert deleted
        assert result.skipped_deleted == 1
        assert await manager.drain(timeout=10)
        copied = await _all(dst)
        assert len(copied) == 29
        assert victim.link not in [s.link for s in copied]  # not resurrected
        assert (await Verifier(manager.store, src, dst).run()).clean


async def _gone(backend: Any, id: Any) -> None:
    """Wait (up to 10 s) until ``backend`` no longer has stream ``id``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while True:
        try:
            await backend.get_stream(id)
        except NotFound:
            return
        assert loop.time() < deadline, f"stream {id} still on {backend.name}"
        await asyncio.sleep(0.01)


class _ReadAhead(_WritesAfterRead):
    """The source read ahead, the way a paged reader does: every stream is read before the
    first is handed out; after handing out stream ``at`` the app writes through the manager."""

    async def iter_streams(self, query: Any = None) -> Any:
        streams = [s async for s in self.inner.iter_streams(query)]
        for stream in streams:
            yield stream
            if stream.id == self.at:
                await self.write()


async def test_a_stream_read_ahead_and_deleted_before_its_chunk_forms_is_not_copied(
    tmp_path: Path,
) -> None:
    """The delete lands while an earlier chunk is formed, after the stream was read from the
    source: the backfill's tombstone check covers every delete since the run began (it used to
    start at the previous chunk: `make demo` copied such a stream about one run in two)."""
    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    manager = BackendManager(
        [src, dst], primary="legacy", journal_url=f"sqlite+aiosqlite:///{tmp_path}/j.db"
    )
    async with manager:
        await src.bulk_import(history(30))
        rows = await _all(src)
        victim = rows[25]  # in the third chunk of 10

        async def write() -> None:
            await manager.delete_stream(victim.id)
            assert await manager.drain(timeout=10)  # the delete reached 'new': nothing there

        assert manager.store is not None
        source = _ReadAhead(src, rows[2].id, write)
        result = await Backfill(manager.store, source, dst, batch=10).run()  # type: ignore[arg-type]
        assert result.skipped_deleted == 1
        assert await manager.drain(timeout=10)
        copied = await _all(dst)
        assert len(copied) == 29
        assert victim.link not in [s.link for s in copied]  # not resurrected
        assert (await Verifier(manager.store, src, dst).run()).clean


async def test_a_pin_that_failed_is_not_retried_for_a_stream_deleted_since(
    tmp_path: Path, journal_url: str
) -> None:
    """A bulk import that does not carry pins is followed by a pin per pinned stream; a pin
    that fails goes to the journal as an update. If the app deleted the stream meanwhile and
    its delete already reached the target, that update used to recreate the copy (an update
    of a missing row recreates it): `make demo` left one such stream on StreamSource about
    one run in ten."""
    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    manager = BackendManager([src, dst], primary="legacy", journal_url=journal_url)
    async with manager:
        await src.bulk_import(history(30))
        rows = await _all(src)
        pinned = [r for r in rows if r.is_pinned]
        assert len(pinned) >= 3
        victim, kept = pinned[1], pinned[2]
        pin = dst.set_pinned

        async def failing_pin(id: Any, pinned: bool) -> Any:
            copy = await dst.get_stream(id)
            if copy.link == victim.link:
                # The app deletes it now; the delete reaches the target (the copy goes). (Not
                # a whole drain: the next chunk's rows, enqueued while this one is copied,
                # wait for this call to return.)
                await manager.delete_stream(victim.id)
                await _gone(dst, id)
            if copy.link in (victim.link, kept.link):
                raise Unavailable("pin refused", backend="new")
            return await pin(id, pinned)

        dst.set_pinned = failing_pin  # type: ignore[method-assign]
        assert manager.store is not None
        await Backfill(manager.store, src, dst, batch=10).run()
        dst.set_pinned = pin  # type: ignore[method-assign]
        assert await manager.drain(timeout=10)
        copies = {s.link: s for s in await _all(dst)}
        assert victim.link not in copies  # not recreated by the retried pin
        assert copies[kept.link].is_pinned  # the other failed pin was retried
        assert len(copies) == 29
        assert (await Verifier(manager.store, src, dst).run()).clean
