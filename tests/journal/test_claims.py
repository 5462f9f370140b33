"""The drain's journal operations on their own: claims (expired leases and due rows, in order,
every field intact) and settles (batched deletes that keep rows written again meanwhile)."""

from __future__ import annotations

import gc
import json
from typing import Any

from multibackend.journal.store import Done, JournalStore, Park, QueueRow, Reschedule

from .conftest import Clock, enqueue, fanout


async def test_a_claim_takes_expired_leases_and_due_rows_oldest_first_with_every_field(
    journal_url: str, clock: Clock
) -> None:
    store = JournalStore(journal_url, clock=clock)
    await store.open()
    try:
        await enqueue(store, fanout("dead-1"), fanout("dead-2"))
        dead = await store.claim("dead", targets_=["t1"], limit=10, lease_seconds=30)
        assert [r.entity_key for r in dead] == ["dead-1", "dead-2"]
        clock.advance(10)
        await enqueue(store, fanout("a", title="first"), fanout("other", target="t2"))
        clock.advance(10)
        await enqueue(store, fanout("b"), fanout("c", op="delete"))
        await enqueue(store, fanout("b", title="newer", op="update"))
        clock.advance(15)  # the dead worker's leases (30 s) expired 5 s ago

        first = await store.claim("w", targets_=["t1"], limit=3, lease_seconds=30)
        # Takeovers first (their rows are the oldest), then pending rows oldest due first.
        assert [r.entity_key for r in first] == ["dead-1", "dead-2", "a"]
        assert [r.taken_over for r in first] == [True, True, False]
        assert all(r.status == "leased" and r.lease_owner == "w" for r in first)
        assert all(r.lease_until == clock() + 30 for r in first)
        assert [r.maybe_created for r in first] == [True, True, False]
        a = first[2]
        assert (a.entity_type, a.target, a.op, a.seq, a.deleted, a.attempts) == (
            "stream",
            "t1",
            "create",
            1,
            False,
            0,
        )
        assert a.snapshot == {"title": ["first"], "source": ["s"]}
        assert a.last_error is None

        rest = await store.claim("w", targets_=["t1"], limit=10, lease_seconds=30)
        assert [(r.entity_key, r.seq, r.deleted) for r in rest] == [
            ("b", 2, False),
            ("c", 1, True),
        ]
        assert rest[0].snapshot == {"title": ["newer"], "source": ["s"]}
        assert await store.claim("w", targets_=["t1"], limit=10, lease_seconds=30) == []
        # The other target's row was never in reach of a claim for t1.
        (other,) = await store.claim("w", targets_=["t2"], limit=10, lease_seconds=30)
        assert other.entity_key == "other"
    finally:
        await store.close()


async def test_a_settle_removes_done_rows_and_keeps_those_written_again(
    journal_url: str, clock: Clock
) -> None:
    store = JournalStore(journal_url, clock=clock)
    await store.open()
    try:
        keys = [f"k{i}" for i in range(7)]
        await enqueue(store, *(fanout(k) for k in keys))
        await enqueue(store, fanout("k1", op="update"), fanout("k2", op="update"))
        claimed = {
            r.entity_key: r
            for r in await store.claim("w", targets_=["t1"], limit=10, lease_seconds=30)
        }
        assert {k: r.seq for k, r in claimed.items() if r.seq != 1} == {"k1": 2, "k2": 2}
        # Written again while applied: k1 (claimed at seq 2) and k3 (claimed at seq 1).
        await enqueue(store, fanout("k1", title="later", op="update"))
        await enqueue(store, fanout("k3", title="later", op="update"))
        clock.advance(1)
        await store.settle(
            "w",
            [
                *(Done(row=claimed[k], mapped=i + 1) for i, k in enumerate(keys[:5])),
                Reschedule(row=claimed["k5"], at=clock() + 60, error="boom"),
                Park(row=claimed["k6"], error="bad"),
            ],
        )
        left = {r.entity_key: r for r in await store.rows()}
        assert sorted(left) == ["k1", "k3", "k5", "k6"]
        for key in ("k1", "k3"):
            assert left[key].status == "pending"
            assert left[key].lease_owner is None
            snapshot = left[key].snapshot
            assert snapshot is not None
            assert snapshot["title"] == ["later"]
            assert left[key].next_attempt_at == clock()
        assert (left["k5"].status, left["k5"].attempts, left["k5"].last_error) == (
            "pending",
            1,
            "boom",
        )
        assert (left["k6"].status, left["k6"].last_error) == ("parked", "bad")
        # Every done row's mapping was recorded, also for the rows written again.
        mapped = await store.native_ids_of("stream", keys, "t1")
        assert mapped == {k: i + 1 for i, k in enumerate(keys[:5])}
    finally:
        await store.close()


async def test_claimed_rows_hold_snapshots_as_text_until_applied(
    journal_url: str, clock: Clock
) -> None:
    """A claimed batch keeps each snapshot as the stored text (no dict and list per field for
    the garbage collector to walk while the batch runs); ``snapshot`` decodes it on access.
    (On PostgreSQL the worker's step function answers it as ``::text``, so asyncpg's JSON
    codec does not decode it at the claim.)"""
    store = JournalStore(journal_url, clock=clock)
    await store.open()
    try:
        await enqueue(store, *(fanout(f"k{i}", title=f"t{i}") for i in range(50)))
        await enqueue(store, fanout("k0", title="newer", op="update"))
        _, rows, _ = await store.claim_batch("w", targets_=["t1"], limit=100, lease_seconds=30)
        assert len(rows) == 50
        held = [v for row in rows for v in gc.get_referents(row) if v is not QueueRow]
        assert not [v for v in held if gc.is_tracked(v)]
        by_key = {r.entity_key: r for r in rows}
        assert by_key["k0"].snapshot == {"title": ["newer"], "source": ["s"]}
        assert by_key["k7"].snapshot == {"title": ["t7"], "source": ["s"]}
    finally:
        await store.close()


def test_a_queue_row_given_text_equals_one_given_the_decoded_snapshot() -> None:
    snapshot: dict[str, list[Any]] = {"title": ["x"], "notes": [None]}
    fields: dict[str, Any] = {
        "id": 1,
        "entity_type": "stream",
        "entity_key": "k",
        "target": "t1",
        "op": "create",
        "seq": 1,
        "deleted": False,
        "status": "leased",
        "attempts": 0,
        "next_attempt_at": 1.0,
        "last_error": None,
        "lease_owner": "w",
        "lease_until": 2.0,
        "maybe_created": False,
        "enqueued_at": 1.0,
        "updated_at": 1.0,
    }
    text = QueueRow(snapshot=json.dumps(snapshot), **fields)
    decoded = QueueRow(snapshot=snapshot, **fields)
    assert text.snapshot == decoded.snapshot == snapshot
    assert text == decoded
    assert text != QueueRow(snapshot=json.dumps({"title": ["y"]}), **fields)
    assert QueueRow(snapshot=None, **fields).snapshot is None


async def test_renew_extends_only_the_owners_leases(journal_url: str, clock: Clock) -> None:
    store = JournalStore(journal_url, clock=clock)
    await store.open()
    try:
        await enqueue(store, fanout("a"), fanout("b"))
        (a,) = await store.claim("w1", targets_=["t1"], limit=1, lease_seconds=30)
        (b,) = await store.claim("w2", targets_=["t1"], limit=1, lease_seconds=30)
        clock.advance(20)
        await store.renew("w1", [a.id, b.id], 30)
        until = {r.entity_key: r.lease_until for r in await store.rows()}
        assert until == {a.entity_key: clock() + 30, b.entity_key: b.lease_until}
        clock.advance(15)  # w2's lease expired, w1's did not
        (taken,) = await store.claim("w3", targets_=["t1"], limit=10, lease_seconds=30)
        assert (taken.entity_key, taken.taken_over) == (b.entity_key, True)
    finally:
        await store.close()


async def test_concurrent_claims_on_postgresql_take_disjoint_rows(
    pg_url: str, clock: Clock
) -> None:
    """A claim whose transaction is still open holds its rows (expired leases included): a
    second claim meanwhile skips them and takes the next ones, and nothing is taken twice."""
    store = JournalStore(pg_url, clock=clock)
    await store.open()
    try:
        await enqueue(store, fanout("dead-1"), fanout("dead-2"))
        await store.claim("dead", targets_=["t1"], limit=10, lease_seconds=30)
        clock.advance(1)
        await enqueue(store, *(fanout(f"k{i}") for i in range(6)))
        clock.advance(40)  # the dead worker's leases expired
        async with store.begin() as held:
            first = await store._claim_in(held, "w1", ["t1"], 3, 30)
            assert [(r.entity_key, r.taken_over) for r in first] == [
                ("dead-1", True),
                ("dead-2", True),
                ("k0", False),
            ]
            second = await store.claim("w2", targets_=["t1"], limit=3, lease_seconds=30)
            assert [(r.entity_key, r.taken_over) for r in second] == [
                ("k1", False),
                ("k2", False),
                ("k3", False),
            ]
        rest = await store.claim("w3", targets_=["t1"], limit=10, lease_seconds=30)
        assert [r.entity_key for r in rest] == ["k4", "k5"]
        assert await store.claim("w3", targets_=["t1"], limit=10, lease_seconds=30) == []
    finally:
        await store.close()
