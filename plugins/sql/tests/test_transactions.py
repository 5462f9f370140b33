"""The TRANSACTIONS capability: backend calls and the caller's own rows commit or roll back
together (the transactional outbox the sync journal builds on)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from multibackend_sql import SqlBackend
from sqlalchemy.ext.asyncio import create_async_engine

from multibackend.backend import Capability
from multibackend.errors import NotFound
from multibackend.model import StreamDraft, StreamPatch, StreamQuery

JOURNAL = sa.Table(
    "journal",
    sa.MetaData(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.Text, nullable=False),
)


@pytest.fixture
async def tx_backend(
    db_url: str, preset: str, make_backend: Callable[..., SqlBackend]
) -> AsyncIterator[SqlBackend]:
    """A backend on a fresh database, with a journal table next to its streams table."""
    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(JOURNAL.metadata.create_all)
    await engine.dispose()
    async with make_backend(db_url, schema=preset, create_schema=True) as backend:
        yield backend


async def outside_counts(db_url: str, table: str) -> tuple[int, int]:
    """(streams, journal rows) as another connection sees them."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            streams = (await conn.execute(sa.text(f'SELECT count(*) FROM "{table}"'))).scalar_one()
            journal = (await conn.execute(sa.text("SELECT count(*) FROM journal"))).scalar_one()
            return int(streams), int(journal)
    finally:
        await engine.dispose()


async def test_commit_keeps_the_stream_and_the_callers_rows(
    tx_backend: SqlBackend, db_url: str
) -> None:
    assert Capability.TRANSACTIONS in tx_backend.capabilities
    table = tx_backend.mapping.table
    async with tx_backend.transaction() as conn:
        created = await tx_backend.create_stream(StreamDraft(source="a", link="https://a.test"))
        await conn.execute(JOURNAL.insert().values(entity=f"stream:{created.id}"))
        # Inside the block the backend reads its own uncommitted write...
        assert (await tx_backend.get_stream(created.id)).source == "a"
        assert [s.id async for s in tx_backend.iter_streams()] == [created.id]
        updated = await tx_backend.update_stream(created.id, StreamPatch(title="t"))
        assert updated.title == "t"
        # ...and nobody else sees anything yet.
        assert await outside_counts(db_url, table) == (0, 0)
    assert await outside_counts(db_url, table) == (1, 1)
    assert (await tx_backend.get_stream(created.id)).title == "t"


async def test_an_exception_rolls_everything_back(tx_backend: SqlBackend, db_url: str) -> None:
    class Boom(Exception):
        pass

    created_ids = []

    async def write_then_fail() -> None:
        async with tx_backend.transaction() as conn:
            created = await tx_backend.create_stream(StreamDraft(source="a", link="https://a.test"))
            created_ids.append(created.id)
            await conn.execute(JOURNAL.insert().values(entity=f"stream:{created.id}"))
            raise Boom

    with pytest.raises(Boom):
        await write_then_fail()
    assert await outside_counts(db_url, tx_backend.mapping.table) == (0, 0)
    with pytest.raises(NotFound):
        await tx_backend.get_stream(created_ids[0])


async def test_a_backend_error_inside_rolls_back_earlier_writes(
    tx_backend: SqlBackend, db_url: str
) -> None:
    async def create_then_miss() -> None:
        async with tx_backend.transaction():
            await tx_backend.create_stream(StreamDraft(source="a", link="https://a.test"))
            await tx_backend.delete_stream(999_999)

    with pytest.raises(NotFound):
        await create_then_miss()
    assert await outside_counts(db_url, tx_backend.mapping.table) == (0, 0)


async def test_nested_transaction_joins_the_outer_one(tx_backend: SqlBackend, db_url: str) -> None:
    async def nested_then_fail() -> None:
        async with tx_backend.transaction() as outer:
            async with tx_backend.transaction() as inner:
                assert inner is outer
                await tx_backend.bulk_import(
                    [StreamDraft(source=f"s{i}", link="https://b.test") for i in range(3)]
                )
            assert (await tx_backend.list_streams(StreamQuery())).total_count == 3
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError, match="undo"):
        await nested_then_fail()
    assert await outside_counts(db_url, tx_backend.mapping.table) == (0, 0)


async def test_calls_outside_the_block_do_not_use_its_connection(tx_backend: SqlBackend) -> None:
    async with tx_backend.transaction():
        inside = await tx_backend.create_stream(StreamDraft(source="a", link="https://a.test"))
    after = await tx_backend.create_stream(StreamDraft(source="b", link="https://b.test"))
    assert [s.id async for s in tx_backend.iter_streams()] == [inside.id, after.id]


async def test_a_sqlite_transaction_holds_the_write_lock_from_its_start(
    tmp_path: Path, make_backend: Callable[..., SqlBackend]
) -> None:
    # transaction() begins IMMEDIATE before any statement (on aiosqlite's thread in one round
    # trip), so reads inside it see a state no other writer can change until it ends.
    path = tmp_path / "locked.db"
    async with make_backend(
        f"sqlite+aiosqlite:///{path}", schema="streamsource-legacy", create_schema=True
    ) as backend:
        other = sqlite3.connect(path, timeout=0)
        try:
            async with backend.transaction():
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            other.execute("BEGIN IMMEDIATE")  # released at the end of the block
            other.rollback()
        finally:
            other.close()
