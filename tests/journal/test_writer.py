"""The intents committer's held SQLite writer (multibackend.journal.writer): a flush in one call
on the held connection's thread, failures isolated as group commit promises, the connection
replaced after it broke, other writers waited for, and the fallback when it is not available."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from multibackend.errors import Unavailable
from multibackend.journal import writer as writer_module
from multibackend.journal.writer import HeldWriter
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft, StreamQuery

from .conftest import memory


def _manager(tmp_path: Path, primary: Any = None) -> BackendManager:
    return BackendManager(
        [primary or memory("primary"), memory("s1"), memory("s2")],
        primary="primary",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
        worker="external",
    )


def _draft(i: int, source: str | None = None) -> StreamDraft:
    return StreamDraft(source=source or f"src{i}", link=f"https://example.com/{i}")


def _writer(manager: BackendManager) -> HeldWriter:
    assert manager._group is not None
    assert manager._group.writer is not None
    return manager._group.writer


async def test_a_flush_is_one_call_on_the_held_connection_and_commits_its_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = writer_module._transaction

    def counted(db: sqlite3.Connection, work: Any) -> Any:
        calls.append(len(work))
        return original(db, work)

    monkeypatch.setattr(writer_module, "_transaction", counted)
    manager = _manager(tmp_path)
    async with manager:
        created = await asyncio.gather(*(manager.create_stream(_draft(i)) for i in range(8)))
        writer = _writer(manager)
        assert writer._driver is not None
        assert writer.reconnects == 0
        assert manager.store is not None
        rows = await manager.store.rows()
        assert len(rows) == 16  # eight creates, two secondaries
        assert await manager.store.stale_intents(manager.store.clock() + 1e9) == []
        for stream in created:
            assert await manager.translate_id(stream.id, "primary", "primary") == stream.id
    # Eight intents in one call, eight settles in another (each with its own BEGIN/COMMIT).
    assert len(calls) == 2
    assert sum(calls) == 2  # one batched run per flush: the intents, then the settles
    # Closed with the manager: the held connection went back to the pool before disposal
    # (a leaked connection would be a warning, and warnings are errors here).
    assert writer._conn is None
    assert not writer.available


async def test_a_failing_write_is_isolated_and_the_others_commit(tmp_path: Path) -> None:
    primary = memory("primary")
    manager = _manager(tmp_path, primary)
    async with manager:
        assert manager.store is not None
        async with manager.store.begin() as conn:
            await conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON mb_intents WHEN NEW.payload LIKE '%bad%' "
                "BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        outcomes = await asyncio.gather(
            *(manager.create_stream(_draft(i, "bad" if i == 2 else None)) for i in range(5)),
            return_exceptions=True,
        )
        assert isinstance(outcomes[2], Unavailable)
        assert "boom" in str(outcomes[2])
        good = [o for i, o in enumerate(outcomes) if i != 2]
        assert all(not isinstance(o, BaseException) for o in good)
        # The refused write never reached the primary; the others did, and are journaled.
        page = await primary.list_streams(StreamQuery())
        assert sorted(s.source for s in page.items) == ["src0", "src1", "src3", "src4"]
        rows = await manager.store.rows()
        assert len(rows) == 8
        # A statement's error leaves the connection clean: it is kept.
        writer = _writer(manager)
        assert writer.reconnects == 0
        assert writer._driver is not None
        await manager.create_stream(_draft(9))
        assert len(await manager.store.rows()) == 10


async def test_a_broken_held_connection_is_replaced_without_failing_a_write(
    tmp_path: Path,
) -> None:
    manager = _manager(tmp_path)
    async with manager:
        await manager.create_stream(_draft(0))
        writer = _writer(manager)
        broken = writer._driver
        assert broken is not None
        await broken.close()  # the driver's thread is gone under the held connection
        created = await manager.create_stream(_draft(1))
        assert writer.reconnects == 1
        assert writer._driver is not None
        assert writer._driver is not broken
        more = await asyncio.gather(*(manager.create_stream(_draft(i)) for i in range(2, 6)))
        assert writer.reconnects == 1
        assert manager.store is not None
        rows = await manager.store.rows()
        assert len(rows) == 12  # six creates, two secondaries
        assert created.id not in {s.id for s in more}


async def test_a_flush_waits_for_another_connections_write_lock(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    async with manager:
        await manager.create_stream(_draft(0))
        other = sqlite3.connect(tmp_path / "journal.db", isolation_level=None, timeout=5)
        other.execute("BEGIN IMMEDIATE")
        released = threading.Event()
        try:
            write = asyncio.create_task(manager.create_stream(_draft(1)))
            await asyncio.sleep(0.3)
            assert not write.done()  # waiting for the lock (the busy timeout applies)
            other.execute("COMMIT")
            released.set()
            await asyncio.wait_for(write, 10)
        finally:
            if not released.is_set():
                other.execute("ROLLBACK")
            other.close()
        assert manager.store is not None
        assert len(await manager.store.rows()) == 4


async def test_without_the_private_call_the_writer_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_driver(conn: Any) -> None:
        return None

    monkeypatch.setattr(writer_module, "sqlite_driver", no_driver)
    manager = _manager(tmp_path)
    async with manager:
        await asyncio.gather(*(manager.create_stream(_draft(i)) for i in range(3)))
        writer = _writer(manager)
        assert not writer.available
        assert writer._conn is None
        assert manager.store is not None
        assert len(await manager.store.rows()) == 6
        assert manager._group is not None
        assert manager._group.commits >= 2


async def test_no_writer_on_an_in_memory_database() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        # SQLAlchemy gives in-memory SQLite one shared connection: nothing to hold alone.
        writer = HeldWriter(engine)
        assert not writer.available
        with pytest.raises(LookupError):
            await writer.transaction([])
    finally:
        await engine.dispose()


async def test_deletes_beside_creates_are_journaled_with_the_held_writer(tmp_path: Path) -> None:
    primary = memory("primary")
    manager = _manager(tmp_path, primary)
    async with manager:
        first = await asyncio.gather(*(manager.create_stream(_draft(i)) for i in range(3)))
        # Deletes are settled by the SQLAlchemy statements (tombstones, unmapping): a flush
        # holding one runs entirely on that path, creates queued beside it included.
        await asyncio.gather(
            manager.delete_stream(first[0].id),
            *(manager.create_stream(_draft(i)) for i in range(3, 6)),
        )
        assert manager.store is not None
        rows = await manager.store.rows()
        deleted_key = await manager.store.entity_key_of("stream", "primary", first[0].id)
        assert deleted_key is None
        assert sorted((r.target, r.op) for r in rows).count(("s1", "delete")) == 1
        assert len([r for r in rows if r.op == "create"]) == 10  # five live creates x 2
        page = await primary.list_streams(StreamQuery())
        assert len(page.items) == 5
