"""The worker's journal transactions as fixed SQL (:mod:`multibackend.journal.drain_sql` on
SQLite, :mod:`multibackend.journal.drain_pg` on PostgreSQL) do what the store's Core statements
do: the same claims and settles, both ways, leave identical journals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from multibackend.journal import drain_pg, drain_sql
from multibackend.journal.schema import id_map, queue, targets
from multibackend.journal.store import Done, JournalStore, Outcome, Park, Reschedule

from .conftest import Clock, enqueue, fanout

needs_json_each = pytest.mark.skipif(not drain_sql.AVAILABLE, reason="SQLite older than 3.38")


async def _dump(store: JournalStore) -> dict[str, list[Any]]:
    async with store.engine.connect() as conn:
        return {
            "queue": [tuple(r) for r in await conn.execute(select(queue).order_by(queue.c.id))],
            "id_map": [
                tuple(r)
                for r in await conn.execute(
                    select(id_map).order_by(id_map.c.entity_key, id_map.c.backend)
                )
            ],
            "targets": [
                tuple(r) for r in await conn.execute(select(targets).order_by(targets.c.target))
            ],
        }


async def _scenario(store: JournalStore, clock: Clock) -> list[Any]:
    """Claims and settles covering every outcome; returns what the calls answered."""
    seen: list[Any] = []
    await enqueue(store, fanout("dead-1"), fanout("dead-2"), fanout("gone", op="delete"))
    seen.append(await store.claim("dead", targets_=["t1"], limit=10, lease_seconds=30))
    clock.advance(10)
    await enqueue(store, *(fanout(k) for k in ("a", "b", "c", "d", "e", "g")), fanout("f", "t2"))
    # b is mapped already (an update); 12 on t1 belongs to another entity (a clash below).
    async with store.begin() as conn:
        await store.map_id(conn, "stream", "b", "t1", 5)
        await store.map_id(conn, "stream", "gone", "t1", 6)
        await store.map_id(conn, "stream", "other", "t1", 12)
    await enqueue(store, fanout("b", title="newer", op="update"))
    await store.set_target_state(
        "t2", paused_until=clock() + 100, reason="rate limited", consecutive_failures=0
    )
    clock.advance(25)  # the dead worker's leases expired
    states, rows, native = await store.claim_batch(
        "w", targets_=["t1", "t2"], limit=9, lease_seconds=30
    )
    seen.append((states, rows, native))
    by_key = {r.entity_key: r for r in rows}
    # Written again while leased: c and g.
    await enqueue(store, fanout("c", title="later", op="update"))
    await enqueue(store, fanout("g", title="later", op="update"))
    clock.advance(1)
    outcomes: list[Outcome] = [
        Done(row=by_key["a"], mapped=10),
        Done(row=by_key["b"], mapped=7),  # replaces its mapping (5)
        Done(row=by_key["c"], mapped="c-11"),
        Reschedule(row=by_key["d"], at=clock() + 7.25, error="boom", maybe_created=True),
        Park(row=by_key["e"], error="bad"),
        Park(row=by_key["g"], error="bad"),  # written again: pending, not parked
        Done(row=by_key["dead-1"], mapped=12),  # clashes with "other"
        Reschedule(row=by_key["dead-2"], at=clock() + 3, error="slow down", count_attempt=False),
        Done(row=by_key["gone"], unmapped=True),
    ]
    await store.settle("w", outcomes)
    seen.append(await _dump(store))
    # A parked row written again is retried; a second worker cannot settle w's rows.
    await enqueue(store, fanout("e", title="fixed", op="update"))
    clock.advance(100)
    states, rows, native = await store.claim_batch(
        "w2", targets_=["t1", "t2"], limit=100, lease_seconds=30
    )
    seen.append((states, rows, native))
    await store.settle("w", [Done(row=r) for r in rows])
    seen.append(await _dump(store))
    await store.settle("w2", [Park(row=r, error="no") for r in rows if r.entity_key != "e"])
    seen.append(await _dump(store))
    # A worker's step: settle, record target states, claim the next batch (t2 just paused).
    await enqueue(store, fanout("h"), fanout("i", "t2"), fanout("j"))
    clock.advance(1)
    _, rows, _ = await store.claim_batch("w3", targets_=["t1", "t2"], limit=2, lease_seconds=30)
    seen.append(
        await store.settle_and_claim(
            "w3",
            [Done(row=r, mapped=f"n-{r.entity_key}") for r in rows],
            {"t2": (clock() + 50, "circuit open", 3), "t1": (None, None, 0)},
            targets_=["t1", "t2"],
            limit=10,
            lease_seconds=30,
        )
    )
    seen.append(await _dump(store))
    return seen


@needs_json_each
async def test_driver_statements_leave_the_journal_as_core_statements_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[bool] = []
    run = drain_sql.run

    async def spy(*args: Any) -> Any:
        used.append(driver_sql)
        return await run(*args)

    monkeypatch.setattr(drain_sql, "run", spy)
    answers = []
    for driver_sql in (True, False):
        clock = Clock(1_800_000_000.0)
        store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/{driver_sql}.db", clock=clock)
        store.driver_sql = driver_sql
        await store.open()
        try:
            answers.append(await _scenario(store, clock))
        finally:
            await store.close()
    fast, core = answers
    # The driver statements ran, in the first run only.
    assert used
    assert all(used)
    assert fast == core
    # And the scenario did what it says (so that equality is not about nothing).
    dump = fast[2]
    statuses = {r[2]: (r[8], r[9]) for r in dump["queue"]}
    assert statuses == {
        "dead-1": ("pending", 0),
        "dead-2": ("pending", 0),
        "c": ("pending", 0),
        "d": ("pending", 1),
        "e": ("parked", 1),
        "f": ("pending", 0),
        "g": ("pending", 1),
    }
    assert {(r[1], r[3]) for r in dump["id_map"]} == {
        ("a", "10"),
        ("b", "7"),
        ("c", "c-11"),
        ("other", "12"),
    }
    states, rows, native = fast[1]
    assert states["t2"][1] == "rate limited"
    assert [(r.entity_key, r.taken_over) for r in rows][:3] == [
        ("dead-1", True),
        ("dead-2", True),
        ("gone", True),
    ]
    assert native == {("stream", "b", "t1"): 5, ("stream", "gone", "t1"): 6}
    assert "f" not in {r.entity_key for r in rows}  # t2 is paused
    states, rows, _ = fast[-2]
    assert states["t2"][1:] == ("circuit open", 3)
    assert [r.entity_key for r in rows] == ["j"]


async def pg_both_ways(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    prepare: Callable[[JournalStore], None] | None = None,
) -> list[list[Any]]:
    """:func:`_scenario` on an emptied PostgreSQL journal, first with the worker's steps as
    drain_pg's server-side function, then as Core statements; what each run answered.
    ``prepare`` is called on each store before its run."""
    used: list[bool] = []
    step = drain_pg.step

    async def spy(*args: Any) -> Any:
        used.append(driver_sql)
        return await step(*args)

    monkeypatch.setattr(drain_pg, "step", spy)
    answers = []
    for driver_sql in (True, False):
        clock = Clock(1_800_000_000.0)
        store = JournalStore(pg_url, clock=clock)
        store.driver_sql = driver_sql
        await store.open()
        try:
            async with store.begin() as conn:
                await conn.exec_driver_sql(
                    f"TRUNCATE {queue.name}, {id_map.name}, {targets.name} RESTART IDENTITY"
                )
            if prepare is not None:
                prepare(store)
            answers.append(await _scenario(store, clock))
        finally:
            await store.close()
    # The function was used, and only on the first run.
    assert used
    assert all(used)
    return answers


async def test_postgresql_claims_leave_the_journal_as_core_statements_do(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same scenario on PostgreSQL, a worker's claims and steps as drain_pg's server-side
    function, then as Core."""
    fast, core = await pg_both_ways(pg_url, monkeypatch)
    assert fast == core
    states, rows, native = fast[1]
    assert [(r.entity_key, r.taken_over) for r in rows][:3] == [
        ("dead-1", True),
        ("dead-2", True),
        ("gone", True),
    ]
    assert native == {("stream", "b", "t1"): 5, ("stream", "gone", "t1"): 6}
    assert states["t2"][1] == "rate limited"
    assert [r.entity_key for r in fast[-2][1]] == ["j"]


@needs_json_each
async def test_driver_statements_raise_sqlalchemy_errors(tmp_path: Path) -> None:
    """A failure of the journal database reads as SQLAlchemy's error, as with Core (the
    manager turns those into Unavailable)."""
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/j.db")
    await store.open()
    try:
        await enqueue(store, fanout("a"))
        async with store.begin() as conn:
            await conn.exec_driver_sql(f"DROP TABLE {targets.name}")
        with pytest.raises(OperationalError, match="no such table"):
            await store.claim_batch("w", targets_=["t1"], limit=10, lease_seconds=30)
        # The failed claim's transaction was rolled back: the row is still there, pending.
        (row,) = await store.rows()
        assert (row.entity_key, row.status) == ("a", "pending")
    finally:
        await store.close()


@needs_json_each
async def test_without_aiosqlites_thread_the_store_falls_back_to_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When drain_sql cannot run (another aiosqlite), the store says so once and uses its
    Core statements."""

    async def no_driver(conn: Any) -> Any:
        return None  # what the guard answers for an aiosqlite without _execute

    monkeypatch.setattr(drain_sql, "sqlite_driver", no_driver)
    clock = Clock(1_800_000_000.0)
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/j.db", clock=clock)
    await store.open()
    try:
        await enqueue(store, fanout("a"), fanout("b"))
        (a,) = await store.claim("w", targets_=["t1"], limit=1, lease_seconds=30)
        assert not store.driver_sql
        _, (b,), _ = await store.claim_batch("w", targets_=["t1"], limit=5, lease_seconds=30)
        await store.settle("w", [Done(row=a, mapped=1), Done(row=b, mapped=2)])
        assert await store.rows() == []
        assert await store.native_ids_of("stream", ["a", "b"], "t1") == {"a": 1, "b": 2}
    finally:
        await store.close()
