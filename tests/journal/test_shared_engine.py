"""A journal in the primary's SQLite database (the transactional outbox) shares the sql plugin's
engine, whose connections let the sqlite3 module begin a transaction only before the first
INSERT, UPDATE or DELETE. The journal's write transactions must still hold the write lock from
their start: a claim reads the due rows and then leases them, and a claim that read outside the
lock leased rows another worker had just leased. Both workers then applied them: ``make demo``
found a whole bulk-import chunk copied twice to StreamSource (the manager's embedded worker
and the backfill's finishing worker drained the chunk's rescheduled rows together)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from multibackend.journal.store import FanOut, JournalStore
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft
from multibackend.registry import load_backend

from .conftest import memory


def _legacy(url: str) -> Any:
    return load_backend(
        "sql", name="legacy", url=url, schema="streamsource-legacy", create_schema=True
    )


def _manager(tmp_path: Path, *secondaries: Any) -> tuple[BackendManager, str]:
    url = f"sqlite+aiosqlite:///{tmp_path}/legacy.db"
    manager = BackendManager(
        [_legacy(url), *secondaries], primary="legacy", journal_url=url, worker="external"
    )
    return manager, url


async def test_a_write_transaction_holds_the_lock_from_its_start(tmp_path: Path) -> None:
    manager, _ = _manager(tmp_path, memory("s1"))
    async with manager:
        assert manager._outbox  # the journal shares the legacy backend's engine
        store = manager.store
        assert store is not None
        async with store.begin() as conn:
            await conn.execute(sa.text("SELECT count(*) FROM mb_queue"))
            # Another connection cannot write now (it would wait; with no timeout it fails).
            other = sqlite3.connect(tmp_path / "legacy.db", timeout=0)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("INSERT INTO mb_meta (key, value) VALUES ('probe', '1')")
            finally:
                other.close()
        # Reads do not take the lock: they answer while another connection holds it.
        holder = sqlite3.connect(tmp_path / "legacy.db")
        holder.execute("BEGIN IMMEDIATE")
        try:
            async with store.engine.connect() as conn:
                count = await conn.execute(sa.text("SELECT count(*) FROM mb_queue"))
                assert count.scalar() == 0
        finally:
            holder.rollback()
            holder.close()
        # The legacy backend's own transactions begin as before (an explicit BEGIN IMMEDIATE).
        made = await manager.create_stream(StreamDraft(source="a", link="https://a.example"))
        assert (await manager.get_stream(made.id)).source == "a"


async def test_concurrent_claims_never_lease_one_row_twice(tmp_path: Path) -> None:
    manager, url = _manager(tmp_path, memory("s1"))
    async with manager:
        shared = manager.store
        assert shared is not None
        own = JournalStore(url)  # another process's worker: its own engine on the same file
        await own.open()
        try:
            doubled = 0  # rows leased by both claims, over all rounds
            for round_ in range(20):
                async with own.begin() as conn:
                    await own.enqueue(
                        conn,
                        [
                            FanOut(
                                entity_type="stream",
                                entity_key=f"k{round_}-{i}",
                                target="s1",
                                op="create",
                                snapshot={"source": [f"s{i}"], "link": [f"https://{i}.example"]},
                            )
                            for i in range(10)
                        ],
                    )
                a, b = await asyncio.gather(
                    shared.claim("a", targets_=["s1"], limit=10, lease_seconds=60),
                    own.claim("b", targets_=["s1"], limit=10, lease_seconds=60),
                )
                ids_a, ids_b = {r.id for r in a}, {r.id for r in b}
                assert len(ids_a | ids_b) == 10  # every due row was claimed
                doubled += len(ids_a & ids_b)
                async with own.begin() as conn:
                    await conn.execute(sa.text("DELETE FROM mb_queue"))
            assert doubled == 0
        finally:
            await own.close()
