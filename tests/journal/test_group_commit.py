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
from multibackend.journal.group import GroupCommitter
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
