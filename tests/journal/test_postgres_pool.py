"""The PostgreSQL journal's connection pool pings only connections that sat idle: one that died
while idle is replaced before use; one returned moments ago is used without the three round
trips of a ping."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from multibackend.journal import engine as engine_module
from multibackend.journal.store import JournalStore

from .conftest import enqueue, fanout

pytestmark = pytest.mark.postgres


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _kill_pooled_connection(store: JournalStore, url: str) -> None:
    """Terminate, on the server, the connection the store's pool holds."""
    async with store.engine.connect() as conn:
        pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
    admin = await asyncpg.connect(_dsn(url))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_a_connection_that_died_while_idle_is_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE", 0.0)
    store = JournalStore(pg_url)
    await store.open()
    try:
        await _kill_pooled_connection(store, pg_url)
        await enqueue(store, fanout("a"))
        assert [r.entity_key for r in await store.rows()] == ["a"]
    finally:
        await store.close()


async def test_a_connection_returned_moments_ago_is_not_pinged(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a ping, the dead connection fails its first use (and is then discarded): the
    price of skipping pings within PING_AFTER_IDLE, one failed transaction that a worker
    retries."""
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE", 3600.0)
    store = JournalStore(pg_url)
    await store.open()
    try:
        await _kill_pooled_connection(store, pg_url)
        with pytest.raises(DBAPIError):
            await enqueue(store, fanout("a"))
        await enqueue(store, fanout("b"))
        assert [r.entity_key for r in await store.rows()] == ["b"]
    finally:
        await store.close()
