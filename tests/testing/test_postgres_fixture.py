"""The shared ``pg_url`` fixture: a fresh database per test, skip or fail without a server."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from multibackend.testing import postgres


async def _tables(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    finally:
        await engine.dispose()


async def _make_table(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE leftover (id integer)"))
    finally:
        await engine.dispose()


# Two tests that would collide if the database were shared: each sees an empty one.
@pytest.mark.postgres
@pytest.mark.parametrize("attempt", [1, 2])
async def test_each_test_gets_a_fresh_empty_database(pg_url: str, attempt: int) -> None:
    assert pg_url.startswith("postgresql+asyncpg://")
    assert await _tables(pg_url) == []
    await _make_table(pg_url)
    assert await _tables(pg_url) == ["leftover"]


def test_without_a_server_the_tests_skip_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(postgres.PG_URL_VARIABLE, raising=False)
    monkeypatch.delenv(postgres.REQUIRE_PG_VARIABLE, raising=False)
    with pytest.raises(pytest.skip.Exception, match=postgres.PG_URL_VARIABLE):
        postgres.pg_server_url()


def test_when_required_a_missing_server_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(postgres.PG_URL_VARIABLE, raising=False)
    monkeypatch.setenv(postgres.REQUIRE_PG_VARIABLE, "1")
    with pytest.raises(pytest.fail.Exception, match="MULTIBACKEND_REQUIRE_PG=1"):
        postgres.pg_server_url()
