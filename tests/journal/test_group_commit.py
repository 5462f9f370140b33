"""Group commit with deferred row writes, and the worker's linger."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.errors import Conflict
from multibackend.journal.group import GroupCommitter
from multibackend.journal.store import FanOut, JournalStore
from multibackend.journal.worker import SyncWorker
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft

from .conftest import memory


async def test_concurrent_writes_share_commits_and_each_is_journaled(journal_url: str) -> None:
    manager = BackendManager(
        [memory("primary"), memory("s1"), memory("s2")],
        primary="primary",
        journal_url=journal_url,
        worker="external",
    )
    async with manager:
        drafts = [StreamDraft(source=f"u{i}", link=f"https://x.com/{i}") for i in range(40)]
        streams = await asyncio.gather(*(manager.create_stream(d) for d in drafts))
        assert manager._group is not None
        assert manager.store is not None
        # 80 units (intent + settle per write) in fewer commits.
        assert manager._group.commits < manager._group.units == 80
        # Every intent was settled by its own write: none is left to "recover".
        assert await manager.store.stale_intents(older_than=1e12) == []
        rows = await manager.store.rows(limit=1000)
        assert len(rows) == 80
        assert manager.worker is not None
        assert await manager.worker.drain(timeout=30)
        for stream in streams:
            for target in ("s1", "s2"):
                other = await manager.translate_id(stream.id, "primary", target)
                assert other is not None
                copy = await manager.backends[target].get_stream(other)
                assert (copy.source, copy.link) == (stream.source, stream.link)


async def test_a_failing_unit_in_a_shared_flush_fails_only_its_caller(journal_url: str) -> None:
    store = JournalStore(journal_url)
    await store.open()
    group = GroupCommitter(store)
    try:

        def unit(i: int) -> Any:
            async def work(conn: AsyncConnection) -> int:
                await store.enqueue(
                    conn,
                    [
                        FanOut(
                            entity_type="stream",
                            entity_key=f"k{i}",
                            target="t",
                            op="create",
                            snapshot={"source": [f"s{i}"]},
                        )
                    ],
                )
                # Units 3 and 4 claim the same native id for different entities: the second
                # is a Conflict, found only when the deferred id-map rows are written.
                native = 7 if i in (3, 4) else 100 + i
                await store.map_id(conn, "stream", f"k{i}", "t", native, savepoint=False)
                if i == 5:
                    raise ValueError("unit 5 fails")
                return i

            return work

        results = await asyncio.gather(
            *(group.submit(unit(i)) for i in range(8)), return_exceptions=True
        )
        assert [r for r in results if not isinstance(r, BaseException)] == [0, 1, 2, 3, 6, 7]
        assert isinstance(results[4], Conflict)
        assert isinstance(results[5], ValueError)
        keys = sorted(r.entity_key for r in await store.rows())
        assert keys == ["k0", "k1", "k2", "k3", "k6", "k7"]
        assert await store.native_id_of("stream", "k3", "t") == 7
        assert await store.native_id_of("stream", "k4", "t") is None
    finally:
        await group.close()
        await store.close()


@pytest.mark.parametrize("journal_url", ["sqlite"], indirect=True)
async def test_notify_lingers_and_wake_does_not(journal_url: str) -> None:
    store = JournalStore(journal_url)
    await store.open()
    target = memory("t")
    await target.open()
    worker = SyncWorker(store, {"t": target}, targets=["t"], linger=5.0, poll_interval=30.0)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.05)  # idle, waiting for work

        async def write(key: str) -> None:
            async with store.begin() as conn:
                item = FanOut(
                    entity_type="stream",
                    entity_key=key,
                    target="t",
                    op="create",
                    snapshot={"source": ["a"], "link": [f"https://x.com/{key}"]},
                )
                await store.enqueue(conn, [item])

        await write("a")
        worker.notify()
        await asyncio.sleep(0.3)
        assert worker.stats.applied == 0  # gathering more work before claiming
        worker.wake()
        for _ in range(100):
            if worker.stats.applied == 1:
                break
            await asyncio.sleep(0.02)
        assert worker.stats.applied == 1
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
        await target.close()
        await store.close()
