"""Behaviour of the memory backend beyond the conformance suite: its file, owner, ids and the
optional operations' details."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from multibackend_memory import MemoryBackend

from multibackend.errors import BackendError, NotFound
from multibackend.model import Sort, StreamDraft, StreamPatch, StreamQuery, StreamStatus
from multibackend.registry import load_backend


def draft(n: int, **values: object) -> StreamDraft:
    fields: dict[str, object] = {"source": f"s{n}", "link": f"https://x.test/{n}", **values}
    return StreamDraft(**fields)  # type: ignore[arg-type]


def memory(**options: object) -> MemoryBackend:
    backend = load_backend("memory", name="mem", **options)
    assert isinstance(backend, MemoryBackend)
    return backend


async def test_file_round_trip_keeps_streams_ids_and_the_counter(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "streams.json"
    async with memory(path=str(path), owner_email="o@example.test") as first:
        a = await first.create_stream(draft(1, status="live", notes="n"))
        b = await first.create_stream(draft(2))
        await first.set_pinned(a.id, True)
        await first.delete_stream(b.id)
        a = await first.get_stream(a.id)
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["streams.json"]  # no temporary left

    async with memory(path=str(path), owner_email="o@example.test") as second:
        assert await second.get_stream(a.id) == a
        c = await second.create_stream(draft(3))
    assert c.id == 3  # the deleted id 2 is not handed out again


async def test_a_separate_process_sees_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "streams.json"
    script = textwrap.dedent(
        f"""
        import asyncio
        from multibackend.model import StreamDraft
        from multibackend.registry import load_backend

        async def main():
            async with load_backend("memory", path={str(path)!r}) as backend:
                stream = await backend.create_stream(
                    StreamDraft(source="cli", link="https://x.test/cli", status="offline")
                )
                print(stream.id)

        asyncio.run(main())
        """
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    assert child.returncode == 0
    async with memory(path=str(path)) as backend:
        stream = await backend.get_stream(int(out))
    assert (stream.source, stream.status) == ("cli", StreamStatus.OFFLINE)
    assert stream.last_checked_at is not None


async def test_missing_file_starts_empty(tmp_path: Path) -> None:
    async with memory(path=str(tmp_path / "new.json")) as backend:
        assert (await backend.list_streams(StreamQuery())).total_count == 0


async def test_unreadable_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "streams.json"
    path.write_text("{not json", encoding="utf-8")
    backend = memory(path=str(path))
    with pytest.raises(BackendError) as info:
        await backend.open()
    assert info.value.backend == "mem"
    assert str(path) in str(info.value)
    assert "not a memory backend file" in str(info.value)
    path.write_text(json.dumps({"format": 99, "streams": []}), encoding="utf-8")
    with pytest.raises(BackendError, match="unknown format 99"):
        await backend.open()


async def test_closing_an_unopened_backend_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "streams.json"
    async with memory(path=str(path)) as backend:
        await backend.create_stream(draft(1))
    before = path.read_text(encoding="utf-8")
    await memory(path=str(path)).close()
    assert path.read_text(encoding="utf-8") == before


async def test_legacy_rows_with_null_source_sort_like_postgresql(tmp_path: Path) -> None:
    path = tmp_path / "streams.json"
    async with memory(path=str(path)) as backend:
        await backend.create_stream(draft(1, source="bravo"))
        await backend.create_stream(draft(2, source="alpha"))
    data = json.loads(path.read_text(encoding="utf-8"))
    data["streams"][0]["source"] = None  # a legacy row: the file holds what a backfill left
    path.write_text(json.dumps(data), encoding="utf-8")
    async with memory(path=str(path)) as backend:
        up = await backend.list_streams(StreamQuery(sort=Sort.NAME))
        down = await backend.list_streams(StreamQuery(sort=Sort.NAME_DESC))
    assert [s.source for s in up.items] == ["alpha", None]
    assert [s.source for s in down.items] == [None, "alpha"]


async def test_ids_given_as_digit_strings_are_found() -> None:
    async with memory() as backend:
        stream = await backend.create_stream(draft(1))
        assert await backend.get_stream(str(stream.id)) == stream
        assert await backend.get_stream(f" {stream.id} ") == stream
        for foreign in ("abc", "-1", "1.0", True):
            with pytest.raises(NotFound):
                await backend.get_stream(foreign)


async def test_owner_sets_user_and_default_posted_by() -> None:
    async with memory(owner_email="ed@example.test", owner_id=42) as backend:
        default = await backend.create_stream(draft(1))
        explicit_none = await backend.create_stream(draft(2, posted_by=None))
    assert default.user is not None
    assert (default.user.id, default.user.email) == (42, "ed@example.test")
    assert default.posted_by == "ed@example.test"
    # As on the server, a blank posted_by becomes the owner's email on every save.
    assert explicit_none.posted_by == "ed@example.test"
    async with memory() as anonymous:
        stream = await anonymous.create_stream(draft(1))
        assert (stream.user, stream.posted_by) == (None, None)
        page = await anonymous.list_streams(StreamQuery(user_id=1))
        assert page.total_count == 0


async def test_update_to_the_same_values_keeps_updated_at() -> None:
    async with memory() as backend:
        created = await backend.create_stream(draft(1, title="t", status="live"))
        same = await backend.update_stream(created.id, StreamPatch(title="t", status="live"))
        assert same.updated_at == created.updated_at
        pinned = await backend.set_pinned(created.id, False)  # already unpinned
        assert pinned.updated_at == created.updated_at


async def test_patch_cannot_clear_created_at() -> None:
    async with memory() as backend:
        created = await backend.create_stream(draft(1))
        updated = await backend.update_stream(created.id, StreamPatch(created_at=None))
        assert updated.created_at == created.created_at


async def test_bulk_import_reports_errors_per_item_and_the_new_ids() -> None:
    async with memory() as backend:
        result = await backend.bulk_import(
            [
                draft(1),
                {"source": "s2", "link": "not a url"},
                {"source": "s3", "link": "https://x.test/3", "status": "live"},
                {"source": "s4", "link": "https://x.test/4", "colour": "red"},
            ]
        )
        assert (result.imported, result.total) == (2, 4)
        assert [e.index for e in result.errors] == [1, 3]
        assert "link" in result.errors[0].messages[0]
        assert "colour" in result.errors[1].messages[0]
        assert result.ids is not None
        assert (result.ids[1], result.ids[3]) == (None, None)
        third = await backend.get_stream(result.ids[2])  # type: ignore[arg-type]
        assert (third.source, third.status) == ("s3", StreamStatus.LIVE)
        assert (await backend.list_streams(StreamQuery())).total_count == 2


async def test_export_takes_every_match_regardless_of_page() -> None:
    async with memory() as backend:
        for i in range(30):
            await backend.create_stream(draft(i, status="live" if i % 3 else "offline"))
        result = await backend.export(StreamQuery(status="live", per_page=5, page=4))
    assert len(result.streams) == 20
    assert {s.status for s in result.streams} == {StreamStatus.LIVE}
    assert result.exported_at.tzinfo is not None


async def test_health_counts_streams() -> None:
    async with memory() as backend:
        await backend.create_stream(draft(1))
        health = await backend.health()
    assert health.ok
    assert health.detail == "1 streams in memory"


async def test_timestamps_have_millisecond_precision() -> None:
    async with memory() as backend:
        stream = await backend.create_stream(draft(1, status="live"))
    for value in (stream.created_at, stream.updated_at, stream.last_live_at):
        assert isinstance(value, datetime)
        assert value.tzinfo == UTC
        assert value.microsecond % 1000 == 0
