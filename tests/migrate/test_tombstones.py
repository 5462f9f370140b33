"""Tombstones (deletes through the manager, which a running backfill must honour) are pruned once
no backfill can ask for them: the table no longer grows with every delete forever."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from multibackend.journal.schema import meta, tombstones
from multibackend.journal.store import JournalStore
from multibackend.manager import BackendManager
from multibackend.migrate import Backfill
from multibackend.migrate.ledger import PRUNE_EVERY, prune_tombstones, record_tombstone
from multibackend.model import StreamQuery

from .conftest import history, legacy, memory


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _left(store: JournalStore) -> set[str]:
    async with store.engine.connect() as conn:
        return {r[0] for r in await conn.execute(sa.select(tombstones.c.native_id))}


async def _tombstone(store: JournalStore, native_id: str, at: float) -> None:
    async with store.begin() as conn:
        await conn.execute(
            tombstones.insert().values(
                entity_type="stream", backend="legacy", native_id=native_id, deleted_at=at
            )
        )


async def _checkpoint(store: JournalStore, value: dict[str, Any]) -> None:
    async with store.begin() as conn:
        await conn.execute(meta.delete().where(meta.c.key == "backfill:legacy->new"))
        await conn.execute(
            meta.insert().values(key="backfill:legacy->new", value=json.dumps(value))
        )


class _ReadAhead:
    """The source read ahead like a paged reader; after handing out stream ``at``, ``write``."""

    def __init__(self, inner: Any, at: Any, write: Any) -> None:
        self.inner, self.at, self.write = inner, at, write
        self.name, self.fields, self.capabilities = inner.name, inner.fields, inner.capabilities

    async def iter_streams(self, query: Any = None) -> Any:
        streams = [s async for s in self.inner.iter_streams(query)]
        for stream in streams:
            yield stream
            if stream.id == self.at:
                await self.write()

    async def list_streams(self, query: Any) -> Any:
        return await self.inner.list_streams(query)


async def test_a_running_backfill_keeps_the_tombstones_it_needs_and_old_ones_go(
    tmp_path: Path,
) -> None:
    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    manager = BackendManager(
        [src, dst], primary="legacy", journal_url=f"sqlite+aiosqlite:///{tmp_path}/j.db"
    )
    async with manager:
        store = manager.store
        assert store is not None
        await src.bulk_import(history(30))
        rows = [s async for s in src.iter_streams(StreamQuery())]
        victim = rows[25]  # read ahead, deleted before its chunk (the third of 10) forms
        await _tombstone(store, "deleted-two-hours-ago", time.time() - 7200)
        mid_run: list[Any] = []

        async def write() -> None:
            await manager.delete_stream(victim.id)
            assert await manager.drain(timeout=10)
            # Recording the delete pruned what no backfill needs (older than the run).
            mid_run.append(await _left(store))
            # Even with no margin at all, the running backfill's tombstone stays.
            mid_run.append(await prune_tombstones(store, margin=0))

        result = await Backfill(store, _ReadAhead(src, rows[2].id, write), dst, batch=10).run()  # type: ignore[arg-type]
        assert mid_run == [{str(victim.id)}, 0]
        # The kept tombstone was needed: the deleted stream was not copied (resurrected).
        assert result.skipped_deleted == 1
        assert victim.link not in [s.link async for s in dst.iter_streams(StreamQuery())]
        # The run pruned when it finished; a recent delete stays for the margin (clock skew)...
        assert await _left(store) == {str(victim.id)}
        # ...and goes once it is older than the margin and no backfill runs.
        assert await prune_tombstones(store, margin=0) == 1
        assert await _left(store) == set()


async def test_the_oldest_live_run_bounds_pruning_and_dead_runs_do_not(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/j.db", clock=clock)
    await store.open()
    try:

        async def fill() -> None:
            async with store.begin() as conn:
                await conn.execute(tombstones.delete())
            for name, age in (("a", 500), ("b", 150), ("c", 50)):
                await _tombstone(store, name, clock.now - age)

        await fill()
        # A run that began 200 s ago and checkpointed 10 s ago needs 'b' and 'c'.
        await _checkpoint(store, {"done": False, "since": clock.now - 200, "at": clock.now - 10})
        assert await prune_tombstones(store, margin=0) == 1
        assert await _left(store) == {"b", "c"}
        # The margin keeps what is younger than it, whatever runs.
        await _checkpoint(store, {"done": True, "since": clock.now - 200})
        assert await prune_tombstones(store, margin=100) == 1
        assert await _left(store) == {"c"}
        # A run silent for longer than ``stale`` is dead: a resumed run asks only for deletes
        # since it resumed, so it holds nothing back.
        await fill()
        await _checkpoint(store, {"done": False, "since": clock.now - 900, "at": clock.now - 800})
        assert await prune_tombstones(store, margin=0, stale=600) == 3
        # A live run whose start is unknown (a checkpoint of an older version): keep all.
        await fill()
        await _checkpoint(store, {"done": False, "at": clock.now - 5})
        assert await prune_tombstones(store, margin=0) == 0
        assert await _left(store) == {"a", "b", "c"}
        # ``limit`` drops the oldest first.
        await _checkpoint(store, {"done": True})
        assert await prune_tombstones(store, margin=0, limit=2) == 2
        assert await _left(store) == {"c"}
    finally:
        await store.close()


async def test_recording_a_delete_prunes_at_most_every_so_often(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/j.db", clock=clock)
    await store.open()
    try:

        async def record(native_id: str) -> None:
            async with store.begin() as conn:
                await record_tombstone(store, conn, "stream", "legacy", native_id)

        await record("first")  # prunes (nothing to drop)
        clock.now += 4000  # older than the margin now
        await record("second")  # prunes again (PRUNE_EVERY passed): 'first' goes
        assert await _left(store) == {"second"}
        clock.now += 4000
        await record("third")
        assert await _left(store) == {"third"}
        clock.now += PRUNE_EVERY / 2  # too soon to prune again: 'third' stays for now
        async with store.begin() as conn:
            await conn.execute(
                tombstones.update().where(tombstones.c.native_id == "third").values(deleted_at=0)
            )
        await record("fourth")
        assert await _left(store) == {"third", "fourth"}
    finally:
        await store.close()
