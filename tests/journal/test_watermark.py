"""The journal watermark: every entry outstanding when it was taken is applied since, while new
writes keep coming; a row written again and again still counts as settled once applied at a
state that includes the writes before the watermark, and not before."""

from __future__ import annotations

import random
from typing import Any

import pytest

from multibackend.journal.store import Done, JournalStore, Park, QueueRow, Reschedule
from multibackend.journal.watermark import JournalWatermark

from .conftest import Clock, enqueue, fanout


async def _open(journal_url: str, clock: Clock) -> JournalStore:
    store = JournalStore(journal_url, clock=clock)
    await store.open()
    return store


async def _claim(store: JournalStore, owner: str = "w") -> list[QueueRow]:
    return await store.claim(owner, targets_=["t1"], limit=100, lease_seconds=60)


async def test_new_writes_do_not_hold_the_watermark_back(journal_url: str, clock: Clock) -> None:
    store = await _open(journal_url, clock)
    try:
        await enqueue(store, fanout("a"), fanout("b"), fanout("other", target="t2"))
        mark = await JournalWatermark.take(store, ["t1"])
        assert mark.taken == 2
        clock.advance(1)
        await enqueue(store, fanout("c"))  # after the watermark
        assert await mark.remaining() == 2
        rows = await _claim(store)
        assert {r.entity_key for r in rows} == {"a", "b", "c"}
        await store.settle("w", [Done(row=r) for r in rows if r.entity_key != "c"])
        clock.advance(1)
        await enqueue(store, fanout("d"))
        # a and b applied; c (leased) and d (pending) came later: reached, with work outstanding.
        assert await mark.remaining() == 0
        assert await store.outstanding(["t1"]) == 2
    finally:
        await store.close()


async def test_a_row_written_again_while_applied_is_settled_by_that_apply(
    journal_url: str, clock: Clock
) -> None:
    store = await _open(journal_url, clock)
    try:
        await enqueue(store, fanout("hot", title="1"))
        mark = await JournalWatermark.take(store, ["t1"])
        [row] = await _claim(store)
        clock.advance(1)
        await enqueue(store, fanout("hot", title="2"))  # written again while applied
        await store.settle("w", [Done(row=row)])
        # The row is pending again (title 2 not applied yet), but title 1, all there was at the
        # watermark, reached the target.
        assert await store.outstanding(["t1"]) == 1
        assert await mark.remaining() == 0
    finally:
        await store.close()


async def test_a_lease_older_than_the_watermark_does_not_settle_it(
    journal_url: str, clock: Clock
) -> None:
    store = await _open(journal_url, clock)
    try:
        await enqueue(store, fanout("hot", title="1"))
        [row] = await _claim(store)  # applying title 1...
        clock.advance(1)
        await enqueue(store, fanout("hot", title="2"))  # ...when title 2 is written
        mark = await JournalWatermark.take(store, ["t1"])  # title 2 is before the watermark
        clock.advance(1)
        await enqueue(store, fanout("hot", title="3"))
        await store.settle("w", [Done(row=row)])  # title 1 applied: not enough
        assert await mark.remaining() == 1
        clock.advance(1)
        [again] = await _claim(store)
        assert again.snapshot is not None
        assert again.snapshot["title"] == ["3"]
        await store.settle("w", [Done(row=again)])
        assert await mark.remaining() == 0
    finally:
        await store.close()


async def test_a_lease_ending_without_an_apply_counts_for_nothing(
    journal_url: str, clock: Clock
) -> None:
    store = await _open(journal_url, clock)
    try:
        await enqueue(store, fanout("a"), fanout("b"))
        rows = await _claim(store)
        mark = await JournalWatermark.take(store, ["t1"])
        await store.release("w", [r.id for r in rows])
        assert await mark.remaining() == 2
        clock.advance(1)
        rows = await _claim(store)
        clock.advance(1)
        await enqueue(store, fanout("a", title="later"))
        await store.settle("w", [Done(row=r) for r in rows])
        # b is gone; a was leased after the watermark and applied, then written again.
        assert await mark.remaining() == 0
    finally:
        await store.close()


async def test_parked_rows_leave_the_watermark(journal_url: str, clock: Clock) -> None:
    store = await _open(journal_url, clock)
    try:
        await enqueue(store, fanout("bad"))
        mark = await JournalWatermark.take(store, ["t1"])
        [row] = await _claim(store)
        await store.settle("w", [Park(row=row, error="refused")])
        assert await mark.remaining() == 0  # parked: the caller reports it
        assert (await store.status(["t1"]))["t1"].parked == 1
    finally:
        await store.close()


async def test_wait_gives_up_after_its_timeout(journal_url: str, clock: Clock) -> None:
    store = await _open(journal_url, clock)
    try:
        await enqueue(store, fanout("a"))
        mark = await JournalWatermark.take(store, ["t1"])
        assert await mark.wait(0.05) == 1
        assert await (await JournalWatermark.take(store, ["t2"])).wait(5) == 0
    finally:
        await store.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_histories_never_report_an_entry_applied_too_early(
    journal_url: str, clock: Clock, seed: int
) -> None:
    """Random writes, claims, applies, reschedules and releases by two workers, with watermarks
    taken along the way: whenever one reports nothing remaining, every entity outstanding when
    it was taken has reached the target at a version at least the one written before it."""
    rng = random.Random(seed)
    store = await _open(journal_url, clock)
    entities = [f"e{i}" for i in range(4)]
    written = dict.fromkeys(entities, 0)  # versions written (the title carries it)
    applied = dict.fromkeys(entities, 0)  # highest version a settled apply delivered
    held: dict[str, list[QueueRow]] = {"w1": [], "w2": []}
    marks: list[tuple[JournalWatermark, dict[str, int]]] = []
    reached = 0
    try:
        for _ in range(120):
            clock.advance(0.001 + rng.random() / 1000)
            op = rng.random()
            owner = rng.choice(["w1", "w2"])
            if op < 0.35:
                key = rng.choice(entities)
                written[key] += 1
                await enqueue(store, fanout(key, title=str(written[key])))
            elif op < 0.55:
                rows = await store.claim(
                    owner, targets_=["t1"], limit=rng.randint(1, 3), lease_seconds=60
                )
                held[owner].extend(rows)
            elif op < 0.8 and held[owner]:
                done = rng.sample(held[owner], rng.randint(1, len(held[owner])))
                outcomes: list[Any] = []
                for row in done:
                    held[owner].remove(row)
                    if rng.random() < 0.8:
                        outcomes.append(Done(row=row))
                        assert row.snapshot is not None
                        version = int(row.snapshot["title"][0])
                        applied[row.entity_key] = max(applied[row.entity_key], version)
                    else:
                        outcomes.append(Reschedule(row=row, at=clock(), error="later"))
                await store.settle(owner, outcomes)
            elif op < 0.88 and held[owner]:
                await store.release(owner, [r.id for r in held[owner]])
                held[owner] = []
            elif op < 0.94:
                mark = await JournalWatermark.take(store, ["t1"])
                marks.append((mark, dict(written)))
            for mark, before in marks:
                if mark.taken and await mark.remaining() == 0:
                    late = {e: (applied[e], v) for e, v in before.items() if applied[e] < v}
                    assert not late, f"reported applied, but (applied, written before): {late}"
                    reached += 1
            marks = [(m, b) for m, b in marks if m.taken]
        assert reached  # the histories did reach watermarks, not only wait
    finally:
        await store.close()
