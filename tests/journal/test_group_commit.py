"""Group commit: concurrent units share transactions; a failure reaches only its own caller;
outbox writes of the manager share commits and stay whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.errors import NotFound
from multibackend.journal.group import GroupCommitter, ItemFailed
from multibackend.journal.store import JournalStore
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft, StreamPatch, StreamQuery
from multibackend.registry import load_backend


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JournalStore]:
    s = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/journal.db")
    await s.open()
    yield s
    await s.close()


def put(store: JournalStore, key: str, value: str) -> Any:
    async def work(conn: AsyncConnection) -> str:
        await store.set_meta(conn, key, value)
        return value

    return work


async def test_concurrent_units_share_commits_and_each_gets_its_result(
    store: JournalStore,
) -> None:
    group = GroupCommitter(store)
    results = await asyncio.gather(*(group.submit(put(store, f"k{i}", f"v{i}")) for i in range(40)))
    assert results == [f"v{i}" for i in range(40)]
    assert group.units == 40
    assert group.commits < 40  # shared
    for i in range(40):
        assert await store.get_meta(f"k{i}") == f"v{i}"


async def test_a_failing_unit_fails_only_its_caller_and_leaves_nothing_behind(
    store: JournalStore,
) -> None:
    group = GroupCommitter(store)

    async def bad(conn: AsyncConnection) -> None:
        await store.set_meta(conn, "bad", "written before the error")
        raise NotFound("no such stream", backend="x")

    flaky_runs: list[int] = []

    async def fails_only_alongside_others(conn: AsyncConnection) -> str:
        # Fails on its first run (in the shared transaction), succeeds alone.
        flaky_runs.append(1)
        await store.set_meta(conn, "flaky", "ok")
        if len(flaky_runs) == 1:
            raise RuntimeError("transient")
        return "ok"

    units = [put(store, f"a{i}", "x") for i in range(5)]
    units.insert(2, bad)
    units.insert(4, fails_only_alongside_others)
    answers = await asyncio.gather(*(group.submit(u) for u in units), return_exceptions=True)

    assert isinstance(answers[2], NotFound)
    assert answers[4] == "ok"
    assert [a for i, a in enumerate(answers) if i not in (2, 4)] == ["x"] * 5
    assert await store.get_meta("bad") is None  # the failed unit's statement was rolled back
    assert await store.get_meta("flaky") == "ok"
    for i in range(5):
        assert await store.get_meta(f"a{i}") == "x"


async def test_a_failed_commit_retries_every_unit_alone(store: JournalStore) -> None:
    opened = 0
    real_begin = store.begin

    class FailingCommit:
        def __init__(self) -> None:
            self.cm = real_begin()

        async def __aenter__(self) -> AsyncConnection:
            return await self.cm.__aenter__()

        async def __aexit__(self, *exc: Any) -> None:
            await self.cm.__aexit__(RuntimeError, RuntimeError("commit failed"), None)
            raise RuntimeError("commit failed")

    def begin() -> Any:
        nonlocal opened
        opened += 1
        return FailingCommit() if opened == 1 else real_begin()

    group = GroupCommitter(store, begin=begin)
    results = await asyncio.gather(*(group.submit(put(store, f"c{i}", "y")) for i in range(4)))
    assert results == ["y"] * 4
    assert opened == 1 + 4
    for i in range(4):
        assert await store.get_meta(f"c{i}") == "y"


async def test_outbox_writes_share_commits_and_stay_whole(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/app.db"
    manager = BackendManager(
        [
            load_backend(
                "sql", name="legacy", url=url, schema="streamsource-legacy", create_schema=True
            ),
            load_backend("memory", name="s1"),
        ],
        primary="legacy",
        journal_url=url,
    )
    async with manager:
        assert manager._outbox
        assert manager._outbox_group is not None
        made = await asyncio.gather(
            *(
                manager.create_stream(StreamDraft(source=f"s{i}", link=f"https://x.test/{i}"))
                for i in range(32)
            )
        )
        group = manager._outbox_group
        assert group.units >= 32
        assert group.commits < group.units
        # An update of a missing stream, among concurrent good updates: only it fails, and
        # nothing of it reaches the journal.
        answers = await asyncio.gather(
            *(manager.update_stream(s.id, StreamPatch(title="t")) for s in made[:8]),
            manager.update_stream(999_999, StreamPatch(title="ghost")),
            return_exceptions=True,
        )
        assert all(getattr(a, "title", None) == "t" for a in answers[:8])
        assert isinstance(answers[8], NotFound)
        assert await manager.drain(timeout=10)
        s1 = {
            s.link: s for s in [x async for x in manager.backends["s1"].iter_streams(StreamQuery())]
        }
        assert len(s1) == 32
        assert {s1[s.link].title for s in made[:8]} == {"t"}
        assert "ghost" not in {s.title for s in s1.values()}


async def test_batched_items_run_together_and_fail_alone(store: JournalStore) -> None:
    group = GroupCommitter(store)
    calls: list[list[str]] = []

    async def run(conn: AsyncConnection, items: list[str]) -> list[Any]:
        calls.append(list(items))
        answers: list[Any] = []
        for index, item in enumerate(items):
            if item == "refused":  # answered with an error, nothing written for it
                answers.append(ValueError("refused"))
                continue
            if item == "broken" and len(items) > 1:
                raise ItemFailed(index) from RuntimeError("broken among others")
            if item == "broken":
                raise ItemFailed(index) from RuntimeError("broken alone")
            await store.set_meta(conn, item, "1")
            answers.append(item.upper())
        return answers

    items = ["a", "b", "refused", "c", "broken", "d"]
    answers = await asyncio.gather(
        *(group.submit_batched(run, item) for item in items), return_exceptions=True
    )
    assert answers[:2] == ["A", "B"]
    assert isinstance(answers[2], ValueError)
    assert answers[3] == "C"
    assert isinstance(answers[4], RuntimeError)
    assert str(answers[4]) == "broken alone"
    assert answers[5] == "D"
    # The first run had every item; after the failure the others ran together, then it alone.
    assert calls[0] == items
    assert calls[1] == ["a", "b", "refused", "c", "d"]
    assert calls[2] == ["broken"]
    for item in "abcd":
        assert await store.get_meta(item) == "1"
    assert await store.get_meta("refused") is None
    assert await store.get_meta("broken") is None


async def test_batched_new_id_mappings_give_way_to_an_earlier_owner(store: JournalStore) -> None:
    async with store.begin() as conn:
        await store.map_new_id(conn, "stream", "backfilled-key", "legacy", 2)
    async with store.begin() as conn:
        owners = await store.map_new_ids(
            conn, "stream", "legacy", [("k1", 1), ("k2", 2), ("k3", "x-3")]
        )
    assert owners == ["k1", "backfilled-key", "k3"]
    assert await store.entity_key_of("stream", "legacy", 2) == "backfilled-key"
    assert await store.entity_key_of("stream", "legacy", "x-3") == "k3"


@pytest.mark.parametrize("outbox", [True, False], ids=["outbox", "intents"])
async def test_concurrent_writes_of_one_entity_reach_the_secondary_as_the_primary_has_them(
    tmp_path: Path, outbox: bool
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/app.db"
    primary = (
        load_backend("sql", name="p", url=url, schema="native", create_schema=True)
        if outbox
        else load_backend("memory", name="p")
    )
    manager = BackendManager(
        [primary, load_backend("memory", name="s1")],
        primary="p",
        journal_url=url,
        worker="external",
    )
    async with manager:
        assert manager._outbox is outbox
        made = await manager.create_stream(StreamDraft(source="s", link="https://x.test/one"))
        await asyncio.gather(
            *(manager.update_stream(made.id, StreamPatch(title=f"t{i}")) for i in range(20))
        )
        final = await manager.get_stream(made.id)
        manager.worker_mode = "embedded"
        assert manager.worker is not None
        task = asyncio.create_task(manager.worker.run())
        try:
            assert await manager.drain(timeout=10)
        finally:
            manager.worker.stop()
            await task
        copies = [s async for s in manager.backends["s1"].iter_streams(StreamQuery())]
        assert [c.title for c in copies] == [final.title]
