"""A running worker claims its next batch in the transaction that settles the last one: target
states the last batch changed are recorded first (a target just paused is left out, failures
keep counting), and rows claimed for a step that never comes are given back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from multibackend.errors import RateLimited, Unavailable
from multibackend.journal.retry import BreakerPolicy
from multibackend.journal.store import FanOut, JournalStore
from multibackend.journal.worker import SyncWorker
from multibackend.model import StreamQuery

from .conftest import Clock, Scripted, memory


def _fanouts(n: int, target: str, prefix: str = "e") -> list[FanOut]:
    return [
        FanOut(
            entity_type="stream",
            entity_key=f"{prefix}{i:03d}",
            target=target,
            op="create",
            snapshot={"source": [f"s{i}"], "link": [f"https://x.com/{i}"], "title": [f"t{i}"]},
        )
        for i in range(n)
    ]


async def _open(
    journal_url: str, clock: Clock, *items: FanOut, cls: type[JournalStore] = JournalStore
) -> Any:
    store = cls(journal_url, clock=clock)
    await store.open()
    async with store.begin() as conn:
        await store.enqueue(conn, list(items))
    return store


class Counting(JournalStore):
    """Counts the worker's journal transactions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def claim_batch(self, *args: Any, **kwargs: Any) -> Any:
        self._count("claim_batch")
        return await super().claim_batch(*args, **kwargs)

    async def settle(self, *args: Any, **kwargs: Any) -> Any:
        self._count("settle")
        return await super().settle(*args, **kwargs)

    async def settle_and_claim(self, *args: Any, **kwargs: Any) -> Any:
        self._count("settle_and_claim")
        return await super().settle_and_claim(*args, **kwargs)


async def test_a_drain_takes_one_transaction_per_batch(journal_url: str, clock: Clock) -> None:
    store = await _open(journal_url, clock, *_fanouts(7, "s1"), cls=Counting)
    try:
        target = Scripted(memory("s1"))
        async with target:
            worker = SyncWorker(store, {"s1": target}, targets=["s1"], batch_size=3)
            assert await worker.drain(timeout=30)
            assert target.calls == {"create": 7}
            assert (await target.list_streams(StreamQuery())).total_count == 7
        # A claim to start, then each batch settled with the next one's claim (the last
        # finding nothing).
        assert store.calls == {"claim_batch": 1, "settle_and_claim": 3}
        assert worker.stats.batches == 3
        assert await store.rows() == []
    finally:
        await store.close()


async def test_a_target_paused_by_a_batch_is_left_out_of_the_next_claim(
    journal_url: str, clock: Clock
) -> None:
    store = await _open(journal_url, clock, *_fanouts(3, "s1"), *_fanouts(3, "s2", "f"))
    try:
        limited, other = Scripted(memory("s1")), Scripted(memory("s2"))
        reset = datetime.fromtimestamp(clock.now + 30, UTC)
        limited.fail_next("create", RateLimited("429", retry_at=reset, backend="s1"))
        async with limited, other:
            worker = SyncWorker(
                store,
                {"s1": limited, "s2": other},
                targets=["s1", "s2"],
                batch_size=2,
                poll_interval=0.01,
            )
            # The first batch holds s1's two oldest rows: the first call answers 429, the
            # second row is not tried. s1's third row is never claimed while it is paused
            # (a second call would succeed).
            assert not await worker.drain(timeout=0.3)
            assert limited.calls == {"create": 1}
            assert other.calls == {"create": 3}
        left = await store.rows()
        assert [(r.target, r.status, r.attempts, r.lease_owner) for r in left] == [
            ("s1", "pending", 0, None)
        ] * 3
        states = await store.target_states()
        assert states["s1"][0] == pytest.approx(clock.now + 30)
    finally:
        await store.close()


async def test_failures_keep_counting_across_chained_batches(
    journal_url: str, clock: Clock
) -> None:
    store = await _open(journal_url, clock, *_fanouts(4, "s1"))
    try:
        target = Scripted(memory("s1"))
        target.fail_next("create", Unavailable("down", backend="s1"), times=4)
        async with target:
            worker = SyncWorker(
                store,
                {"s1": target},
                targets=["s1"],
                batch_size=2,
                poll_interval=0.01,
                breaker=BreakerPolicy(threshold=3, cooldown=20, cap=60),
            )
            assert not await worker.drain(timeout=0.3)
        # Two failures in the first batch, two in the second (claimed with the first's
        # settle, after its count was recorded): four in a row open the breaker.
        assert target.calls == {"create": 4}
        paused_until, reason, failures = (await store.target_states())["s1"]
        assert failures == 4
        assert paused_until == pytest.approx(clock.now + 20)
        assert "circuit open after 4" in (reason or "")
    finally:
        await store.close()


async def test_rows_claimed_for_the_next_step_are_given_back_when_the_worker_stops(
    journal_url: str, clock: Clock
) -> None:
    store = await _open(journal_url, clock, *_fanouts(5, "s1"), cls=Counting)
    try:
        target = Scripted(memory("s1"))
        async with target:
            worker = SyncWorker(store, {"s1": target}, targets=["s1"], batch_size=2)
            settle_and_claim = store.settle_and_claim

            async def stop_meanwhile(*args: Any, **kwargs: Any) -> Any:
                worker.stop()  # lands while the next batch is being claimed
                return await settle_and_claim(*args, **kwargs)

            store.settle_and_claim = stop_meanwhile
            await worker.run()
            assert target.calls == {"create": 2}
            left = await store.rows()
            # The next batch was claimed, then given back: pending, due, no attempt spent.
            assert [(r.status, r.lease_owner, r.attempts) for r in left] == [
                ("pending", None, 0)
            ] * 3
            assert all(r.next_attempt_at <= clock() for r in left)
            # Another worker takes them at once (no lease to wait out) and applies each once.
            other = SyncWorker(store, {"s1": target}, targets=["s1"], batch_size=2)
            assert await other.drain(timeout=30)
            assert target.calls == {"create": 5}
            assert (await target.list_streams(StreamQuery())).total_count == 5
    finally:
        await store.close()


async def test_a_drain_out_of_time_gives_back_its_next_batch(
    journal_url: str, clock: Clock
) -> None:
    store = await _open(journal_url, clock, *_fanouts(5, "s1"))
    try:
        target = Scripted(memory("s1"))
        async with target:
            worker = SyncWorker(store, {"s1": target}, targets=["s1"], batch_size=2)
            assert not await worker.drain(timeout=0)
            assert target.calls == {"create": 2}
        assert [(r.status, r.lease_owner) for r in await store.rows()] == [("pending", None)] * 3
    finally:
        await store.close()


async def test_a_failed_settle_and_claim_still_settles_the_batch(
    journal_url: str, clock: Clock
) -> None:
    store = await _open(journal_url, clock, *_fanouts(4, "s1"), cls=Counting)
    try:
        target = Scripted(memory("s1"))
        async with target:
            worker = SyncWorker(store, {"s1": target}, targets=["s1"], batch_size=2)
            settle_and_claim = store.settle_and_claim
            failures = [OperationalError("claim", {}, Exception("database is locked"))]

            async def flaky(*args: Any, **kwargs: Any) -> Any:
                if failures:
                    raise failures.pop()
                return await settle_and_claim(*args, **kwargs)

            store.settle_and_claim = flaky
            assert await worker.drain(timeout=30)
            # Settled alone after the failure, then claimed afresh: each row applied once.
            assert target.calls == {"create": 4}
            assert store.calls["settle"] == 1
            assert await store.rows() == []
    finally:
        await store.close()
