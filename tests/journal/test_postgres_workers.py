"""Several workers drain one PostgreSQL journal concurrently (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from multibackend.journal.store import JournalStore
from multibackend.journal.worker import SyncWorker
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft, StreamPatch, StreamQuery

from .conftest import Scripted, memory

pytestmark = pytest.mark.postgres


class Watched(Scripted):
    """Records every version applied per stream and whether two calls ever overlapped."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.versions: dict[Any, list[int]] = defaultdict(list)
        self.in_flight: set[Any] = set()
        self.overlaps = 0

    async def _apply(self, key: Any, title: Any, fn: Any) -> Any:
        if key in self.in_flight:
            self.overlaps += 1
        self.in_flight.add(key)
        try:
            await asyncio.sleep(0)  # let other workers interleave
            result = await fn()
        finally:
            self.in_flight.discard(key)
        if isinstance(title, str) and title.startswith("v"):
            self.versions[result.source].append(int(title[1:]))
        return result

    async def create_stream(self, draft: Any) -> Any:
        return await self._apply(draft.source, draft.title, lambda: self.inner.create_stream(draft))

    async def update_stream(self, id: Any, patch: Any) -> Any:
        current = await self.inner.get_stream(id)
        return await self._apply(
            current.source, patch.title, lambda: self.inner.update_stream(id, patch)
        )


@pytest.mark.parametrize("workers", [2, 4])
async def test_workers_share_a_journal_keeping_per_entity_order(pg_url: str, workers: int) -> None:
    targets = {"t1": Watched(memory("t1")), "t2": Watched(memory("t2"))}
    manager = BackendManager(
        [memory("primary"), *targets.values()],
        primary="primary",
        worker="external",
        journal_url=pg_url,
        batch_size=20,
    )
    async with manager:
        ids = [
            (
                await manager.create_stream(
                    StreamDraft(source=f"e{i}", link=f"https://x.com/{i}", title="v0")
                )
            ).id
            for i in range(40)
        ]
        stores = [JournalStore(pg_url) for _ in range(workers)]
        for store in stores:
            await store.open()
        pool = [
            SyncWorker(store, targets, targets=list(targets), batch_size=15, owner=f"w{n}")
            for n, store in enumerate(stores)
        ]
        running = [asyncio.create_task(w.run()) for w in pool]

        async def writer() -> None:
            for version in range(1, 6):
                for i in ids:
                    await manager.update_stream(i, StreamPatch(title=f"v{version}"))
                await asyncio.sleep(0.01)

        await writer()
        deadline = asyncio.get_running_loop().time() + 60
        while (await manager.sync_status()).outstanding:
            assert asyncio.get_running_loop().time() < deadline, "workers did not drain"
            await asyncio.sleep(0.05)
        for w in pool:
            w.stop()
        await asyncio.gather(*running)
        for store in stores:
            await store.close()

        assert all(w.stats.applied > 0 for w in pool), [w.stats for w in pool]
        for target in targets.values():
            assert target.overlaps == 0
            streams = {s.source: s async for s in target.inner.iter_streams(StreamQuery())}
            assert len(streams) == 40
            for source, applied in target.versions.items():
                assert applied == sorted(applied), (source, applied)  # never went back
                assert streams[source].title == "v5"


async def test_journal_connections_plan_each_statement_for_its_parameters(pg_url: str) -> None:
    """A fresh journal has no planner statistics: a generic plan chosen after five executions
    of a prepared statement made the batch id-map look-up 20x slower. Every connection of the
    store plans for the actual parameters, including ones opened later."""
    store = JournalStore(pg_url)
    await store.open()
    try:
        async with store.engine.connect() as first, store.engine.connect() as second:
            for conn in (first, second):
                mode = (await conn.exec_driver_sql("SHOW plan_cache_mode")).scalar()
                assert mode == "force_custom_plan"
        keys = [f"k{i}" for i in range(300)]
        async with store.begin() as conn:
            for i, key in enumerate(keys):
                await store.map_id(conn, "stream", key, "t1", i + 1)
        for _ in range(7):  # past the switch to generic plans: still right
            found = await store.native_ids_of("stream", keys[100:300], "t1")
            assert found == {key: i + 1 for i, key in enumerate(keys) if i >= 100}
    finally:
        await store.close()
