"""Retry, parking, rate limits, the circuit breaker, self-healing and lost creates — driven by a
hand-moved clock and scripted failures, so no test sleeps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from multibackend.errors import (
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
    ValidationFailed,
)
from multibackend.journal.retry import BreakerPolicy, RetryPolicy
from multibackend.manager import BackendManager, DualWriteFailed
from multibackend.model import StreamDraft, StreamPatch, StreamQuery

from .conftest import Clock, Scripted, memory


def build(journal_url: str, clock: Clock, **kwargs: Any) -> tuple[BackendManager, Scripted]:
    target = Scripted(memory("s1"))
    manager = BackendManager(
        [memory("primary"), target],
        primary="primary",
        worker=kwargs.pop("worker", "external"),
        journal_url=journal_url,
        clock=clock,
        **kwargs,
    )
    return manager, target


async def rows(manager: BackendManager, status: str | None = None) -> list[Any]:
    assert manager.store is not None
    return await manager.store.rows(status=status)


async def test_updates_compact_into_one_row_and_one_call(journal_url: str, clock: Clock) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        for city in ("A", "B", "C"):
            await manager.update_stream(s.id, StreamPatch(city=city))
        pending = await rows(manager)
        assert len(pending) == 1
        assert pending[0].seq == 4
        assert manager.worker is not None
        assert await manager.worker.run_once() == 1
        assert target.calls == {"create": 1}
        copy = (await target.list_streams(StreamQuery())).items[0]
        assert copy.city == "C"


async def test_create_then_delete_before_sync_cancels_out(journal_url: str, clock: Clock) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        await manager.delete_stream(s.id)
        assert manager.worker is not None
        await manager.worker.run_once()
        assert target.calls == {}
        assert await rows(manager) == []


async def test_retry_schedule_backs_off_then_parks(journal_url: str, clock: Clock) -> None:
    policy = RetryPolicy(max_attempts=4, base=1.0, cap=300.0)
    manager, target = build(journal_url, clock, retry=policy, breaker=BreakerPolicy(threshold=99))
    async with manager:
        await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        target.fail_next("create", Unavailable("boom", backend="s1"), times=10)
        assert manager.worker is not None
        delays = []
        for _ in range(3):
            assert await manager.worker.run_once() == 1
            (row,) = await rows(manager, "pending")
            delays.append(row.next_attempt_at - clock.now)
            assert await manager.worker.run_once() == 0  # not due yet: nothing claimed
            clock.advance(row.next_attempt_at - clock.now)
        # Equal jitter: each delay lies in [d/2, d] for d = 1, 2, 4.
        for delay, ceiling in zip(delays, (1, 2, 4), strict=True):
            assert ceiling / 2 <= delay <= ceiling
        assert await manager.worker.run_once() == 1
        (parked,) = await rows(manager, "parked")
        assert parked.attempts == 4
        assert "gave up after 4 attempts" in (parked.last_error or "")
        assert "Unavailable" in (parked.last_error or "")
        # An operator retries it once the target is healthy again.
        target._script.clear()
        assert manager.store is not None
        assert await manager.store.retry([parked.id]) == 1
        assert await manager.worker.run_once() == 1
        assert await rows(manager) == []
        assert (await target.list_streams(StreamQuery())).total_count == 1


async def test_permanent_error_parks_at_once_and_others_flow(
    journal_url: str, clock: Clock
) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        await manager.create_stream(StreamDraft(source="bad", link="https://bad.com"))
        await manager.create_stream(StreamDraft(source="good", link="https://good.com"))
        target.fail_next("create", PermissionDenied("not yours", backend="s1"))
        assert manager.worker is not None
        await manager.worker.run_once()
        (parked,) = await rows(manager, "parked")
        assert parked.attempts == 1
        assert "PermissionDenied" in (parked.last_error or "")
        assert (await target.list_streams(StreamQuery())).total_count == 1
        status = await manager.sync_status()
        assert status.targets["s1"].parked == 1
        assert status.outstanding == 0


async def test_a_newer_write_retries_a_parked_row(journal_url: str, clock: Clock) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        target.fail_next("create", ValidationFailed("nope", backend="s1"))
        assert manager.worker is not None
        await manager.worker.run_once()
        assert len(await rows(manager, "parked")) == 1
        await manager.update_stream(s.id, StreamPatch(title="fixed"))
        assert await manager.worker.run_once() == 1
        copy = (await target.list_streams(StreamQuery())).items[0]
        assert copy.title == "fixed"


async def test_rate_limit_pauses_target_without_spending_attempts(
    journal_url: str, clock: Clock
) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        for i in range(5):
            await manager.create_stream(StreamDraft(source=f"s{i}", link="https://x.com"))
        reset = datetime.fromtimestamp(clock.now + 30, UTC)
        target.fail_next("create", RateLimited("429", retry_at=reset, backend="s1"))
        assert manager.worker is not None
        await manager.worker.run_once()
        # One call hit the limit; the rest of the batch was not attempted.
        assert target.calls["create"] == 1
        pending = await rows(manager, "pending")
        assert len(pending) == 5
        assert all(r.attempts == 0 for r in pending)
        status = await manager.sync_status()
        assert status.targets["s1"].paused_until == pytest.approx(clock.now + 30)
        assert "rate limited" in (status.targets["s1"].pause_reason or "")
        clock.advance(10)
        assert await manager.worker.run_once() == 0  # still paused
        clock.advance(21)
        assert await manager.worker.run_once() == 5
        assert (await target.list_streams(StreamQuery())).total_count == 5


async def test_circuit_breaker_pauses_a_failing_target(journal_url: str, clock: Clock) -> None:
    manager, target = build(
        journal_url, clock, breaker=BreakerPolicy(threshold=3, cooldown=20, cap=60)
    )
    async with manager:
        for i in range(3):
            await manager.create_stream(StreamDraft(source=f"s{i}", link="https://x.com"))
        target.fail_next("create", Unavailable("down", backend="s1"), times=3)
        assert manager.worker is not None
        await manager.worker.run_once()
        status = await manager.sync_status()
        assert status.targets["s1"].paused_until == pytest.approx(clock.now + 20)
        assert "circuit open" in (status.targets["s1"].pause_reason or "")
        clock.advance(25)  # past the cool-down and every row's backoff
        assert await manager.worker.run_once() == 3
        status = await manager.sync_status()
        assert status.targets["s1"].consecutive_failures == 0
        assert status.outstanding == 0


async def test_update_of_a_row_deleted_behind_our_back_recreates_it(
    journal_url: str, clock: Clock
) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com", city="X"))
        assert manager.worker is not None
        await manager.worker.run_once()
        old = await manager.translate_id(s.id, "primary", "s1")
        assert old is not None
        await target.inner.delete_stream(old)
        await manager.update_stream(s.id, StreamPatch(title="t"))
        await manager.worker.run_once()
        new = await manager.translate_id(s.id, "primary", "s1")
        assert new is not None
        assert new != old
        copy = await target.get_stream(new)
        assert (copy.source, copy.city, copy.title) == ("a", "X", "t")


async def test_delete_of_a_row_already_gone_is_done(journal_url: str, clock: Clock) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert manager.worker is not None
        await manager.worker.run_once()
        other = await manager.translate_id(s.id, "primary", "s1")
        assert other is not None
        await target.inner.delete_stream(other)
        await manager.delete_stream(s.id)
        await manager.worker.run_once()
        assert await rows(manager) == []


async def test_a_create_with_unknown_outcome_is_not_duplicated(
    journal_url: str, clock: Clock
) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        # The target creates the stream, but the answer is lost (a timeout).
        target.fail_next("create", Unavailable("timed out", backend="s1"), after=True)
        assert manager.worker is not None
        await manager.worker.run_once()
        (row,) = await rows(manager, "pending")
        assert row.maybe_created
        clock.advance(5)
        await manager.worker.run_once()
        page = await target.list_streams(StreamQuery())
        assert page.total_count == 1  # adopted, not created again
        assert await manager.translate_id(s.id, "primary", "s1") == page.items[0].id
        # A retried row that merely may have been created is no takeover of a dead worker's.
        assert manager.worker.stats.takeovers == 0


async def test_a_dead_workers_lease_is_taken_over(journal_url: str, clock: Clock) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert manager.store is not None
        claimed = await manager.store.claim("dead", targets_=["s1"], limit=10, lease_seconds=30)
        # The dead worker had created the stream on the target before dying.
        await target.inner.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert manager.worker is not None
        assert await manager.worker.run_once() == 0  # lease still valid
        clock.advance(31)
        assert await manager.worker.run_once() == 1
        assert (await target.list_streams(StreamQuery())).total_count == 1
        assert manager.worker.stats.takeovers == 1
        assert claimed[0].lease_owner == "dead"


async def test_inline_policy_applies_before_returning(journal_url: str, clock: Clock) -> None:
    manager, target = build(journal_url, clock, on_secondary_failure="inline")
    async with manager:
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert await manager.translate_id(s.id, "primary", "s1") is not None
        target.fail_next("update", Unavailable("down", backend="s1"))
        await manager.update_stream(s.id, StreamPatch(city="Z"))  # no error: journaled
        (row,) = await rows(manager, "pending")
        assert row.attempts == 1


async def test_fail_policy_raises_after_journaling(journal_url: str, clock: Clock) -> None:
    manager, target = build(journal_url, clock, on_secondary_failure="fail")
    async with manager:
        target.fail_next("create", Unavailable("down", backend="s1"))
        with pytest.raises(DualWriteFailed) as info:
            await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert info.value.result is not None
        assert info.value.result.source == "a"
        assert "s1" in info.value.failures
        # Nothing diverges silently: the fan-out is journaled and converges later.
        clock.advance(5)
        assert manager.worker is not None
        await manager.worker.run_once()
        assert (await target.list_streams(StreamQuery())).total_count == 1


async def test_not_found_on_primary_is_the_callers_error(journal_url: str, clock: Clock) -> None:
    manager, _ = build(journal_url, clock)
    async with manager:
        with pytest.raises(NotFound):
            await manager.set_pinned(999, True)


async def test_a_lost_create_is_adopted_even_after_the_title_changed(
    journal_url: str, clock: Clock
) -> None:
    # Found by the chaos test: the worker died after its create reached the target, a later
    # write changed the title, and the next worker created a duplicate (the search matched on
    # the new title).
    manager, target = build(journal_url, clock)
    async with manager:
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com", title="t1"))
        target.fail_next("create", Unavailable("timed out", backend="s1"), after=True)
        assert manager.worker is not None
        await manager.worker.run_once()
        await manager.update_stream(s.id, StreamPatch(title="t2"))
        clock.advance(5)
        await manager.worker.run_once()
        page = await target.list_streams(StreamQuery())
        assert page.total_count == 1  # adopted, not created again
        assert page.items[0].title == "t2"


async def test_a_delete_after_a_lost_create_removes_the_copy(
    journal_url: str, clock: Clock
) -> None:
    # Found by the chaos test: a create reached the target unrecorded, then the stream was
    # deleted; the delete "cancelled out" the create and left an orphan copy behind.
    manager, target = build(journal_url, clock)
    async with manager:
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        target.fail_next("create", Unavailable("timed out", backend="s1"), after=True)
        assert manager.worker is not None
        await manager.worker.run_once()
        assert (await target.list_streams(StreamQuery())).total_count == 1
        await manager.delete_stream(s.id)
        clock.advance(5)
        await manager.worker.run_once()
        assert (await target.list_streams(StreamQuery())).total_count == 0
        assert await rows(manager) == []


async def test_a_lost_create_is_found_behind_many_newer_streams(
    journal_url: str, clock: Clock
) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        await manager.create_stream(StreamDraft(source="lost", link="https://a.com"))
        target.fail_next("create", Unavailable("timed out", backend="s1"), after=True)
        assert manager.worker is not None
        await manager.worker.run_once()
        # Meanwhile 600 newer streams reach the target (other entities, other writers).
        drafts = [StreamDraft(source=f"n{i}", link=f"https://n.com/{i}") for i in range(600)]
        await target.inner.bulk_import(drafts)
        clock.advance(5)
        await manager.worker.run_once()
        copies = [s async for s in target.inner.iter_streams(StreamQuery()) if s.source == "lost"]
        assert len(copies) == 1


async def test_two_lost_creates_with_one_natural_key_adopt_distinct_copies(
    journal_url: str, clock: Clock
) -> None:
    manager, target = build(journal_url, clock)
    async with manager:
        twins = [
            await manager.create_stream(StreamDraft(source="twin", link="https://t.com", title="t"))
            for _ in range(2)
        ]
        # Both creates reach the target, both answers are lost.
        target.fail_next("create", Unavailable("timed out", backend="s1"), times=2, after=True)
        assert manager.worker is not None
        await manager.worker.run_once()
        clock.advance(5)
        await manager.worker.run_once()
        copies = [s async for s in target.inner.iter_streams(StreamQuery())]
        assert len(copies) == 2  # both adopted, none created again
        mapped = {await manager.translate_id(s.id, "primary", "s1") for s in twins}
        assert mapped == {c.id for c in copies}


async def test_a_settle_whose_adopted_copy_is_taken_retries_instead_of_finishing(
    journal_url: str, clock: Clock
) -> None:
    from multibackend.journal.store import Done, FanOut

    manager, _ = build(journal_url, clock)
    async with manager:
        store = manager.store
        assert store is not None
        async with store.begin() as conn:
            await store.enqueue(
                conn,
                [
                    FanOut(entity_type="stream", entity_key=k, target="s1", op="create")
                    for k in ("e1", "e2")
                ],
            )
        rows = await store.claim("w", targets_=["s1"], limit=10, lease_seconds=30)
        # Two workers adopted the same copy (id 7) for two entities in one settle.
        await store.settle("w", [Done(row=r, mapped=7) for r in rows])
        left = await store.rows()
        assert len(left) == 1  # the clashing one is not done
        assert left[0].status == "pending"
        assert left[0].maybe_created
        assert left[0].attempts == 0
        owner = await store.entity_key_of("stream", "s1", 7)
        assert owner in ("e1", "e2")
        assert left[0].entity_key != owner
