"""Behaviour of the sql backend on SQLite and PostgreSQL, for both presets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from multibackend_sql import SqlBackend

from multibackend.backend import Capability
from multibackend.errors import NotFound
from multibackend.model import (
    Platform,
    Sort,
    StreamDraft,
    StreamPatch,
    StreamQuery,
    StreamStatus,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)


def draft(n: int = 0, **fields: object) -> StreamDraft:
    return StreamDraft(source=fields.pop("source", f"src{n}"), link=f"https://x.test/{n}", **fields)  # type: ignore[arg-type]


async def test_create_then_get_returns_what_was_stored(backend: SqlBackend) -> None:
    created = await backend.create_stream(
        draft(1, platform="tiktok", city="Austin", state="TX", title="t", posted_by="me")
    )
    assert created.id is not None
    assert created.status == StreamStatus.UNKNOWN
    assert created.is_pinned is False
    assert created.platform == Platform.TIKTOK
    assert (created.city, created.state, created.title, created.posted_by) == (
        "Austin",
        "TX",
        "t",
        "me",
    )
    assert created.created_at is not None
    assert created.created_at.tzinfo is not None
    assert created.last_checked_at is None
    assert created.last_live_at is None
    assert await backend.get_stream(created.id) == created


async def test_status_side_effects_on_create_and_update(backend: SqlBackend) -> None:
    live = await backend.create_stream(draft(1, status="live"))
    assert live.last_checked_at is not None
    assert live.last_live_at == live.last_checked_at

    same = await backend.update_stream(live.id, StreamPatch(status="live"))
    assert same.last_checked_at == live.last_checked_at
    assert same.last_live_at == live.last_live_at

    offline = await backend.update_stream(live.id, StreamPatch(status="offline"))
    assert offline.status == StreamStatus.OFFLINE
    assert offline.last_checked_at is not None
    assert offline.last_checked_at >= live.last_checked_at
    assert offline.last_live_at == live.last_live_at


async def test_preserved_timestamps_win_over_side_effects(backend: SqlBackend) -> None:
    created = await backend.create_stream(
        draft(1, status="live", last_checked_at=T0, last_live_at=T0, created_at=T0)
    )
    assert (created.last_checked_at, created.last_live_at, created.created_at) == (T0, T0, T0)
    later = T0 + timedelta(hours=1)
    updated = await backend.update_stream(
        created.id, StreamPatch(status="offline", last_checked_at=later)
    )
    assert updated.last_checked_at == later
    assert updated.last_live_at == T0


async def test_update_changes_only_given_fields_and_sets_updated_at(backend: SqlBackend) -> None:
    created = await backend.create_stream(draft(1, city="Austin", title="keep", created_at=T0))
    updated = await backend.update_stream(created.id, StreamPatch(city=None, source="renamed"))
    assert updated.city is None
    assert updated.source == "renamed"
    assert updated.title == "keep"
    assert updated.created_at == T0
    assert updated.updated_at is not None
    assert created.updated_at is not None
    assert updated.updated_at >= created.updated_at


async def test_fields_not_stored_are_accepted_and_dropped(backend: SqlBackend) -> None:
    created = await backend.create_stream(draft(1, orientation="vertical", kind="web", notes="n"))
    updated = await backend.update_stream(created.id, StreamPatch(notes="again", kind="overlay"))
    if {"orientation", "kind", "notes"} <= backend.fields:
        assert (updated.orientation, updated.kind, updated.notes) == (
            "vertical",
            "overlay",
            "again",
        )
    else:
        assert backend.fields.isdisjoint({"orientation", "kind", "notes"})
        assert (updated.orientation, updated.kind, updated.notes) == (None, "video", None)


async def test_missing_ids_are_not_found(backend: SqlBackend) -> None:
    for missing in (424242, "424242", "not-a-number"):
        with pytest.raises(NotFound) as info:
            await backend.get_stream(missing)
        assert info.value.backend == backend.name
        with pytest.raises(NotFound):
            await backend.update_stream(missing, StreamPatch(title="x"))
        with pytest.raises(NotFound):
            await backend.delete_stream(missing)
        with pytest.raises(NotFound):
            await backend.set_pinned(missing, True)


async def test_default_order_is_pinned_first_then_newest(backend: SqlBackend) -> None:
    old = await backend.create_stream(draft(1, created_at=T0))
    mid = await backend.create_stream(draft(2, created_at=T0 + timedelta(minutes=1)))
    new = await backend.create_stream(draft(3, created_at=T0 + timedelta(minutes=2)))
    await backend.set_pinned(old.id, True)
    page = await backend.list_streams(StreamQuery())
    assert [s.id for s in page.items] == [old.id, new.id, mid.id]
    assert page.items[0].is_pinned is True


async def test_explicit_sorts(backend: SqlBackend) -> None:
    b = await backend.create_stream(draft(1, source="bravo", created_at=T0))
    a = await backend.create_stream(draft(2, source="alpha", created_at=T0 + timedelta(days=1)))
    c = await backend.create_stream(draft(3, source="charlie", created_at=T0 - timedelta(days=1)))
    await backend.set_pinned(c.id, True)

    async def order(sort: Sort) -> list[object]:
        return [s.id for s in (await backend.list_streams(StreamQuery(sort=sort))).items]

    assert await order(Sort.NAME) == [a.id, b.id, c.id]
    assert await order(Sort.NAME_DESC) == [c.id, b.id, a.id]
    assert await order(Sort.CREATED) == [c.id, b.id, a.id]
    assert await order(Sort.CREATED_DESC) == [a.id, b.id, c.id]


async def test_filters_and_pagination(backend: SqlBackend) -> None:
    statuses = ["live", "offline", "unknown", "live", "live", "offline", "live"]
    ids = [(await backend.create_stream(draft(i, status=s))).id for i, s in enumerate(statuses)]
    await backend.set_pinned(ids[0], True)

    live = await backend.list_streams(StreamQuery(status="live", per_page=3))
    assert live.total_count == 4
    assert live.total_pages == 2
    assert len(live.items) == 3
    assert all(s.status == StreamStatus.LIVE for s in live.items)
    second = await backend.list_streams(StreamQuery(status="live", per_page=3, page=2))
    assert len(second.items) == 1
    assert second.total_count == 4
    assert {s.id for s in live.items + second.items} == {ids[i] for i in (0, 3, 4, 6)}

    past = await backend.list_streams(StreamQuery(status="live", per_page=3, page=5))
    assert past.items == ()
    assert past.total_count == 4
    assert past.page == 5

    not_live = await backend.list_streams(StreamQuery(not_status="live"))
    assert sorted(s.status for s in not_live.items) == ["offline", "offline", "unknown"]
    pinned = await backend.list_streams(StreamQuery(is_pinned=True))
    assert [s.id for s in pinned.items] == [ids[0]]
    unpinned = await backend.list_streams(StreamQuery(is_pinned=False, status="live"))
    assert unpinned.total_count == 3
    none = await backend.list_streams(StreamQuery(status="offline", not_status="offline"))
    assert none.total_count == 0
    assert none.total_pages == 0


async def test_iter_streams_walks_every_match_in_id_order(backend: SqlBackend) -> None:
    backend.iter_page_size = 3  # type: ignore[misc]
    made = [
        await backend.create_stream(draft(i, status="live" if i % 2 else "offline"))
        for i in range(10)
    ]
    everything = [s async for s in backend.iter_streams()]
    assert [s.id for s in everything] == sorted(s.id for s in made)  # type: ignore[type-var]
    live = [s async for s in backend.iter_streams(StreamQuery(status="live", sort="-name"))]
    assert [s.id for s in live] == [s.id for s in made if s.status == StreamStatus.LIVE]


async def test_hard_delete_removes_the_row(backend: SqlBackend) -> None:
    created = await backend.create_stream(draft(1))
    await backend.delete_stream(created.id)
    with pytest.raises(NotFound):
        await backend.get_stream(created.id)
    assert (await backend.list_streams(StreamQuery())).total_count == 0


async def test_bulk_import_reports_ids_and_export_returns_matches(backend: SqlBackend) -> None:
    assert Capability.BULK_IMPORT in backend.capabilities
    drafts = [draft(i, status="live") if i < 3 else draft(i) for i in range(7)]
    result = await backend.bulk_import(drafts)
    assert result.imported == 7
    assert result.total == 7
    assert result.errors == ()
    assert result.ids is not None
    assert None not in result.ids
    for i, new_id in enumerate(result.ids):
        assert new_id is not None
        stored = await backend.get_stream(new_id)
        assert stored.source == f"src{i}"
    exported = await backend.export(StreamQuery(status="live"))
    assert [s.source for s in exported.streams] == ["src0", "src1", "src2"]
    assert exported.exported_at.tzinfo is not None


async def test_health_and_capabilities(backend: SqlBackend) -> None:
    health = await backend.health()
    assert health.ok
    assert {Capability.PIN, Capability.TRANSACTIONS, Capability.EXPORT} <= backend.capabilities


async def test_fields_describe_the_mapping(backend: SqlBackend, preset: str) -> None:
    common = {
        "source", "link", "status", "is_pinned", "platform", "city", "state", "title",
        "posted_by", "last_checked_at", "last_live_at", "created_at",
    }  # fmt: skip
    if preset == "native":
        assert backend.fields == common | {"orientation", "kind", "notes"}
    else:
        assert backend.fields == common


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-01-01", datetime(2020, 1, 1, tzinfo=UTC)),
        ("2020-01-01 10:30:00", datetime(2020, 1, 1, 10, 30, tzinfo=UTC)),
        ("2020-01-01 10:30:00.123 +00:00", datetime(2020, 1, 1, 10, 30, 0, 123000, tzinfo=UTC)),
        ("2020-01-01T12:30:00+02:00", datetime(2020, 1, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_text_timestamps_read_as_aware_utc(text: str, expected: datetime) -> None:
    from multibackend_sql.codec import read_text_time

    value = read_text_time(text)
    assert value == expected
    assert value is not None
    assert value.utcoffset() is not None


async def test_ids_of_deleted_streams_are_never_reused(backend: SqlBackend) -> None:
    # Found by the differential test: on SQLite the last row's id went to the next stream
    # (rowid reuse), so an id held from before the delete named another stream.
    first = await backend.create_stream(draft(1))
    await backend.delete_stream(first.id)
    second = await backend.create_stream(draft(2))
    assert second.id != first.id
    with pytest.raises(NotFound):
        await backend.get_stream(first.id)
