"""The transactional outbox: a SQL primary and the journal in one database commit together."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from multibackend.errors import Unavailable
from multibackend.manager import BackendManager
from multibackend.model import Kind, Orientation, StreamDraft, StreamPatch, StreamQuery
from multibackend.registry import load_backend

from .conftest import memory


def legacy(url: str) -> Any:
    return load_backend(
        "sql", name="legacy", url=url, schema="streamsource-legacy", create_schema=True
    )


async def test_primary_write_and_journal_rows_share_one_transaction(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/legacy.db"
    manager = BackendManager(
        [legacy(url), memory("s1")], primary="legacy", journal_url=url, worker="external"
    )
    async with manager:
        assert manager._outbox  # the journal lives in the legacy database
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert manager.store is not None
        (row,) = await manager.store.rows()
        assert row.target == "s1"
        assert await manager.translate_id(s.id, "legacy", "legacy") == s.id

        # A failure after the primary statement (the journal's fan-out insert fails in the
        # database) rolls back the row and its journal entries, whichever path wrote them.
        async with manager.store.begin() as conn:
            await conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON mb_queue "
                "BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        with pytest.raises(Unavailable, match="boom"):
            await manager.create_stream(StreamDraft(source="b", link="https://b.com"))
        async with manager.store.begin() as conn:
            await conn.exec_driver_sql("DROP TRIGGER boom")
        page = await manager.primary.list_streams(StreamQuery())
        assert [x.source for x in page.items] == ["a"]
        assert len(await manager.store.rows()) == 1
    engine = sa.create_engine(f"sqlite:///{tmp_path}/legacy.db")
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert {"Streams", "mb_queue", "mb_id_map"} <= tables


async def test_fields_the_primary_cannot_store_reach_the_secondary(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/legacy.db"
    manager = BackendManager([legacy(url), memory("s1")], primary="legacy", journal_url=url)
    async with manager:
        assert "notes" not in manager.primary.fields
        s = await manager.create_stream(
            StreamDraft(
                source="a",
                link="https://a.com",
                notes="from the app",
                kind=Kind.OVERLAY,
                orientation=Orientation.VERTICAL,
            )
        )
        await manager.update_stream(s.id, StreamPatch(city="Austin"))
        assert await manager.drain(timeout=10)
        other = await manager.translate_id(s.id, "legacy", "s1")
        assert other is not None
        copy = await manager.backends["s1"].get_stream(other)
        assert (copy.notes, copy.kind, copy.orientation, copy.city) == (
            "from the app",
            Kind.OVERLAY,
            Orientation.VERTICAL,
            "Austin",
        )
        await manager.update_stream(s.id, StreamPatch(notes=None))
        assert await manager.drain(timeout=10)
        assert (await manager.backends["s1"].get_stream(other)).notes is None


async def test_separate_journal_uses_intents(tmp_path: Any) -> None:
    manager = BackendManager(
        [legacy(f"sqlite+aiosqlite:///{tmp_path}/legacy.db"), memory("s1")],
        primary="legacy",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
    )
    async with manager:
        assert not manager._outbox
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert await manager.drain(timeout=10)
        assert await manager.translate_id(s.id, "legacy", "s1") is not None
        assert manager.store is not None
        assert await manager.store.stale_intents(older_than=1e12) == []


async def test_refused_primary_write_leaves_no_intent(tmp_path: Any) -> None:
    manager = BackendManager(
        [memory("p"), memory("s1")],
        primary="p",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
    )
    async with manager:
        with pytest.raises(Exception, match="not found"):
            await manager.update_stream(42, StreamPatch(city="x"))
        assert manager.store is not None
        assert await manager.store.stale_intents(older_than=1e12) == []
        # A transient failure may or may not have happened: its intent stays for recovery.
        original = manager.primary.create_stream

        async def flaky(draft: Any) -> Any:
            raise Unavailable("timeout", backend="p")

        manager.primary.create_stream = flaky  # type: ignore[method-assign]
        with pytest.raises(Unavailable):
            await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        manager.primary.create_stream = original  # type: ignore[method-assign]
        assert len(await manager.store.stale_intents(older_than=1e12)) == 1
        assert await manager.recover_intents(older_than=0) == 1
        assert await manager.store.stale_intents(older_than=1e12) == []
