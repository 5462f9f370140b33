"""The manager's write path, fan-out and reads, end to end on memory backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from multibackend.errors import NotFound
from multibackend.manager import BackendManager
from multibackend.model import (
    UNSET,
    Kind,
    Platform,
    StreamDraft,
    StreamPatch,
    StreamQuery,
    StreamStatus,
)

from .conftest import memory

COMPARED = ("source", "link", "status", "is_pinned", "platform", "city", "notes", "title", "kind")


def same(a: Any, b: Any) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in COMPARED)


async def copy_of(manager: BackendManager, primary_id: Any, target: str) -> Any:
    other = await manager.translate_id(primary_id, manager.primary_name, target)
    assert other is not None, f"{target} has no copy of {primary_id}"
    return await manager.backends[target].get_stream(other)


async def test_create_fans_out_to_every_secondary(trio: BackendManager) -> None:
    created = await trio.create_stream(
        StreamDraft(source="alice", link="https://twitch.tv/alice", platform=Platform.TWITCH)
    )
    assert await trio.drain(timeout=10)
    for target in ("s1", "s2"):
        copy = await copy_of(trio, created.id, target)
        assert same(copy, created)
        # Preserved timestamps travel with the snapshot: both sides say the same.
        assert copy.created_at == created.created_at


async def test_update_pin_delete_reach_secondaries_in_order(trio: BackendManager) -> None:
    s = await trio.create_stream(StreamDraft(source="bob", link="https://youtube.com/bob"))
    await trio.update_stream(s.id, StreamPatch(status=StreamStatus.LIVE, city="Austin"))
    await trio.set_pinned(s.id, True)
    await trio.update_stream(s.id, StreamPatch(city=None, notes="n"))
    assert await trio.drain(timeout=10)
    final = await trio.get_stream(s.id)
    assert final.city is None
    assert final.is_pinned
    assert final.status == StreamStatus.LIVE
    for target in ("s1", "s2"):
        copy = await copy_of(trio, s.id, target)
        assert same(copy, final)
        assert copy.last_live_at == final.last_live_at
    await trio.delete_stream(s.id)
    assert await trio.drain(timeout=10)
    for target in ("s1", "s2"):
        page = await trio.backends[target].list_streams(StreamQuery())
        assert page.total_count == 0
        assert await trio.translate_id(s.id, "primary", target) is None


async def test_missing_id_raises_not_found_and_journals_nothing(trio: BackendManager) -> None:
    with pytest.raises(NotFound):
        await trio.update_stream(12345, StreamPatch(city="x"))
    with pytest.raises(NotFound):
        await trio.delete_stream(12345)
    status = await trio.sync_status()
    assert status.outstanding == 0


async def test_reads_from_a_secondary_use_primary_ids(tmp_path: Any) -> None:
    manager = BackendManager(
        [memory("primary"), memory("s1")],
        primary="primary",
        read_from="s1",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/j.db",
    )
    async with manager:
        # Give the secondary a different id space: an unrelated stream takes id 1 there.
        await manager.backends["s1"].create_stream(
            StreamDraft(source="other", link="https://x.com")
        )
        a = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert await manager.drain(timeout=10)
        got = await manager.get_stream(a.id)
        assert got.id == a.id
        assert got.source == "a"
        listed = await manager.list_streams(StreamQuery())
        assert [s.id for s in listed.items] == [a.id]  # the unmapped one is not shown
        assert [s.id async for s in manager.iter_streams()] == [a.id]


async def test_sync_status_counts_pending_work_per_target(tmp_path: Any) -> None:
    manager = BackendManager(
        [memory("primary"), memory("s1"), memory("s2")],
        primary="primary",
        worker="external",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/j.db",
    )
    async with manager:
        for i in range(3):
            await manager.create_stream(StreamDraft(source=f"s{i}", link="https://x.com"))
        status = await manager.sync_status()
        assert {t: st.pending for t, st in status.targets.items()} == {"s1": 3, "s2": 3}
        assert status.targets["s1"].oldest_pending_age is not None
        assert not await manager.drain(timeout=0.2)  # nobody drains an external journal here
        assert manager.worker is not None
        assert await manager.worker.drain(timeout=10)
        assert (await manager.sync_status()).outstanding == 0


async def test_journal_survives_restart(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/j.db"
    prim = tmp_path / "primary.json"
    first = BackendManager(
        [memory("primary", path=str(prim)), memory("s1")],
        primary="primary",
        worker="external",
        journal_url=url,
    )
    async with first:
        created = await first.create_stream(StreamDraft(source="a", link="https://a.com"))
    second = BackendManager(
        [memory("primary", path=str(prim)), memory("s1")], primary="primary", journal_url=url
    )
    async with second:
        assert await second.drain(timeout=10)
        copy = await copy_of(second, created.id, "s1")
        assert copy.source == "a"


async def test_unset_and_none_travel_faithfully(trio: BackendManager) -> None:
    s = await trio.create_stream(
        StreamDraft(source="c", link="https://c.com", city="Paris", kind=Kind.WEB)
    )
    await trio.update_stream(s.id, StreamPatch(city=None, title=UNSET))
    assert await trio.drain(timeout=10)
    copy = await copy_of(trio, s.id, "s1")
    assert copy.city is None
    assert copy.kind == Kind.WEB


@pytest.mark.parametrize("journal_url", [None, "sqlite+aiosqlite://", "sqlite://"])
async def test_default_and_in_memory_journals_work_with_the_embedded_worker(
    journal_url: str | None,
) -> None:
    manager = BackendManager(
        [memory("primary"), memory("s1")], primary="primary", journal_url=journal_url
    )
    async with manager:
        for i in range(20):
            await manager.create_stream(StreamDraft(source=f"s{i}", link="https://x.com"))
        assert await manager.drain(timeout=10)
        assert manager.worker is not None
        assert manager.worker.stats.applied == 20
        temp = manager.journal_url
    assert "multibackend-journal-" in temp
    assert not Path(temp.removeprefix("sqlite+aiosqlite:///")).exists()  # noqa: ASYNC240


async def test_a_broken_journal_database_is_reported_as_unavailable(tmp_path: Any) -> None:
    import sqlalchemy as sa

    from multibackend.errors import Unavailable

    manager = BackendManager(
        [memory("primary"), memory("s1")],
        primary="primary",
        worker="external",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/j.db",
    )
    async with manager:
        s = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert manager.store is not None
        async with manager.store.begin() as conn:
            await conn.execute(sa.text("DROP TABLE mb_id_map"))
        with pytest.raises(Unavailable, match="journal database: no such table"):
            await manager.update_stream(s.id, StreamPatch(city="x"))
        with pytest.raises(Unavailable):
            await manager.translate_id(s.id, "primary", "s1")
