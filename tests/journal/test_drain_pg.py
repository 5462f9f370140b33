"""A worker's step on PostgreSQL as one call of a server-side function (drain_pg.step) leaves the
journal as the store's Core statements do, for every kind of outcome; the function is created
with the journal's tables, by concurrent openers too, and without it the store still works."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.exc import ProgrammingError

from multibackend.journal import drain_pg
from multibackend.journal.store import Done, JournalStore, Outcome

from .conftest import enqueue, fanout
from .test_drain_sql import pg_both_ways

pytestmark = pytest.mark.postgres


def _settle_by_step(store: JournalStore) -> None:
    """Route the store's settles through settle_and_claim (claiming nothing), so that the
    scenario's settles of every outcome run inside drain_pg.step on the fast path."""

    async def settle(owner: str, outcomes: Any) -> None:
        await store.settle_and_claim(
            owner, outcomes, {}, targets_=["t1", "t2"], limit=0, lease_seconds=30
        )

    store.settle = settle  # type: ignore[method-assign]


async def test_steps_settle_every_outcome_as_core_statements_do(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, core = await pg_both_ways(pg_url, monkeypatch, prepare=_settle_by_step)
    assert fast == core
    # The clash (dead-1 adopted native id 12, which "other" owns) was rescheduled, not done;
    # g, written again while leased, is pending instead of parked.
    dump = fast[2]
    rows = {r[2]: r for r in dump["queue"]}
    assert rows["dead-1"][8] == "pending"
    assert rows["dead-1"][11] == "the adopted copy belongs to another entity"
    assert rows["g"][8] == "pending"
    assert rows["e"][8] == "parked"
    assert ("stream", "b", "t1", "7") in {r[:4] for r in dump["id_map"]}


async def test_concurrent_openers_create_the_function_once(pg_url: str) -> None:
    stores = [JournalStore(pg_url) for _ in range(4)]
    try:
        # The tables first (concurrent CREATE TABLEs are another matter), then the function
        # by four openers at once.
        await stores[0].open()
        async with stores[0].begin() as conn:
            await conn.exec_driver_sql(f"DROP FUNCTION {drain_pg.STEP_FUNCTION}")
        await asyncio.gather(*(s.open() for s in stores))
        assert all(s._on_step() for s in stores)
        await enqueue(stores[0], fanout("a"), fanout("b"))
        results = await asyncio.gather(
            *(
                s.claim_batch(f"w{i}", targets_=["t1"], limit=1, lease_seconds=30)
                for i, s in enumerate(stores)
            )
        )
        claimed = sorted(r.entity_key for _, rows, _ in results for r in rows)
        assert claimed == ["a", "b"]  # each row leased once, by one of them
    finally:
        for s in stores:
            await s.close()


async def test_without_the_function_workers_claim_statement_by_statement(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database where the function cannot be created (here: a body PostgreSQL rejects)."""
    monkeypatch.setattr(drain_pg, "STEP_FUNCTION", "mb_drain_step_broken")
    monkeypatch.setattr(drain_pg, "_STEP_SQL", "CREATE FUNCTION mb_drain_step_broken() nonsense")
    store = JournalStore(pg_url)
    await store.open()
    try:
        assert not store._on_step()
        await enqueue(store, fanout("a"), fanout("b"))
        _, rows, _ = await store.claim_batch("w", targets_=["t1"], limit=1, lease_seconds=30)
        outcomes: list[Outcome] = [Done(row=r, mapped=1) for r in rows]
        _, rows, native = await store.settle_and_claim(
            "w", outcomes, {}, targets_=["t1"], limit=5, lease_seconds=30
        )
        assert [r.entity_key for r in rows] == ["b"]
        assert native == {}
        assert await store.native_ids_of("stream", ["a"], "t1") == {"a": 1}
        async with store.engine.connect() as conn:
            with pytest.raises(ProgrammingError):
                await conn.exec_driver_sql("SELECT mb_drain_step_broken()")
    finally:
        await store.close()
