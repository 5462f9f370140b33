"""Batched journal operations (multibackend.journal.bulk) do what their per-row originals do."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from multibackend.errors import ValidationFailed
from multibackend.journal.bulk import (
    FieldPlan,
    adopt_chunk_keys,
    insert_creates,
    inserted_row,
    new_entity_keys,
)
from multibackend.journal.bulk import settle as bulk_settle
from multibackend.journal.snapshot import build_snapshot, draft_from_snapshot
from multibackend.journal.store import Done, FanOut, JournalStore, Park, QueueRow
from multibackend.model import (
    STREAM_FIELDS,
    Kind,
    Orientation,
    Platform,
    Stream,
    StreamDraft,
    StreamStatus,
)

_WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _streams() -> list[Stream]:
    return [
        Stream(id=1, source="s", link="https://x.test/1"),
        Stream(id=3, source="s", link=" https://x.test/3 ", title='ünïcode "quoted" 100%'),
        Stream(
            id="a-2",
            source=None,
            link="x.test/2",
            status=StreamStatus.LIVE,
            is_pinned=True,
            platform=Platform.TWITCH,
            orientation=Orientation.VERTICAL,
            kind=Kind.VIDEO,
            city=" Austin ",
            state="TX",
            notes="n",
            title="t",
            posted_by="p",
            last_checked_at=_WHEN,
            last_live_at=_WHEN,
            created_at=_WHEN,
            updated_at=_WHEN,
        ),
    ]


def _draft(make: Callable[..., StreamDraft], values: dict[str, Any]) -> object:
    """The draft, or the error refusing it (legacy data breaking today's rules)."""
    try:
        return make(**values) if make is StreamDraft else make(values)
    except ValidationFailed as exc:
        return str(exc)
    except TypeError:  # a required field not carried (the backfill parks such rows alike)
        return "missing required fields"


def _plan_draft(plan: FieldPlan, stream: Stream, _: object) -> StreamDraft:
    return plan.draft(stream)


@pytest.mark.parametrize(
    ("primary", "target"),
    [
        (set(STREAM_FIELDS), set(STREAM_FIELDS)),
        # A legacy primary without notes and server timestamps; a target storing everything.
        (set(STREAM_FIELDS) - {"notes", "created_at", "last_checked_at"}, set(STREAM_FIELDS)),
        # A target storing less than the primary.
        (set(STREAM_FIELDS), {"source", "link", "title", "created_at", "status"}),
        # One field (and none) carried: the plan's per-stream getters take these apart.
        (set(STREAM_FIELDS), {"title"}),
        ({"title"}, {"created_at"}),
    ],
)
def test_a_field_plan_gives_what_build_snapshot_gives(primary: set[str], target: set[str]) -> None:
    plan = FieldPlan(primary, target)
    for stream in _streams():
        expected = build_snapshot(stream, primary_fields=primary, target_fields=target, given={})
        # Straight from the stream (the backfill's way): the same snapshot, the same draft.
        got = json.loads(plan.stream_json(stream))
        assert got == expected
        assert _draft(functools.partial(_plan_draft, plan, stream), {}) == _draft(
            draft_from_snapshot, expected
        )
        # An enum member equals its text, but the snapshot must hold plain JSON values.
        assert {k: type(v[0]) for k, v in got.items()} == {
            k: type(v[0]) for k, v in expected.items()
        }


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JournalStore]:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/journal.db"
    journal = JournalStore(url)
    await journal.open()
    try:
        yield journal
    finally:
        await journal.close()


async def test_adopting_keys_keeps_existing_ones_and_makes_ordered_new_ones(
    store: JournalStore,
) -> None:
    async with store.begin() as conn:
        await store.map_id(conn, "stream", "old-key", "src", 2)
    async with store.begin() as conn:
        keys, fresh = await adopt_chunk_keys(store, conn, "stream", "src", [1, 2, "x"])
    assert keys["2"] == "old-key"
    assert fresh == {keys["1"], keys["x"]}
    assert all(len(k) == 32 for k in fresh)
    assert await store.native_ids_of("stream", [keys["1"], keys["x"]], "src") == {
        keys["1"]: 1,
        keys["x"]: "x",
    }
    # Again: nothing new, the same keys.
    async with store.begin() as conn:
        again, made = await adopt_chunk_keys(store, conn, "stream", "src", [1, 2, "x"])
    assert (again, made) == (keys, set())
    later = new_entity_keys(3)
    assert sorted(later) == later or later[0][:14] == later[-1][:14]
    assert min(later) > max(fresh)


async def enqueue_creates(
    store: JournalStore,
    conn: Any,
    *,
    entity_type: str,
    target: str,
    items: list[tuple[str, dict[str, Any]]],
    owner: str,
    lease_seconds: float,
    fresh: set[str],
) -> list[QueueRow]:
    """:func:`insert_creates` for snapshots; the inserted rows as inserted."""
    snapshots = dict(items)
    made = await insert_creates(
        store,
        conn,
        entity_type=entity_type,
        target=target,
        items=[(k, json.dumps(v)) for k, v in items],
        owner=owner,
        lease_seconds=lease_seconds,
        fresh=fresh,
    )
    return [
        inserted_row(
            m, entity_type=entity_type, target=target, owner=owner, snapshot=snapshots[m.entity_key]
        )
        for m in made
    ]


async def test_enqueue_creates_skips_mapped_and_queued_entities(store: JournalStore) -> None:
    async with store.begin() as conn:
        await store.map_id(conn, "stream", "mapped", "dst", 7)
        await store.enqueue(
            conn,
            [
                FanOut(
                    entity_type="stream",
                    entity_key="queued",
                    target="dst",
                    op="update",
                    snapshot={"title": ["newer"]},
                )
            ],
        )
    items = [(k, {"title": [k]}) for k in ("mapped", "queued", "new")]
    async with store.begin() as conn:
        rows = await enqueue_creates(
            store,
            conn,
            entity_type="stream",
            target="dst",
            items=items,
            owner="bf",
            lease_seconds=60,
            fresh=set(),
        )
    assert [(r.entity_key, r.snapshot, r.status, r.lease_owner) for r in rows] == [
        ("new", {"title": ["new"]}, "leased", "bf")
    ]
    assert await store.row(rows[0].id) == rows[0]
    queued = [r for r in await store.rows() if r.entity_key == "queued"]
    assert queued[0].snapshot == {"title": ["newer"]}  # the newer state was not replaced


async def _leased(store: JournalStore, keys: list[str]) -> list[QueueRow]:
    items = [(k, {"title": [k]}) for k in keys]
    async with store.begin() as conn:
        return await enqueue_creates(
            store,
            conn,
            entity_type="stream",
            target="dst",
            items=items,
            owner="bf",
            lease_seconds=60,
            fresh=set(keys),
        )


async def test_settle_maps_done_rows_and_keeps_rows_written_meanwhile(
    store: JournalStore,
) -> None:
    rows = await _leased(store, ["a", "b", "c"])
    # A manager write merges newer state into b while the backfill applies it.
    async with store.begin() as conn:
        await store.enqueue(
            conn,
            [
                FanOut(
                    entity_type="stream",
                    entity_key="b",
                    target="dst",
                    op="update",
                    snapshot={"title": ["newer"]},
                )
            ],
        )
    await bulk_settle(
        store,
        "bf",
        [
            Done(row=rows[0], mapped=10),
            Done(row=rows[1], mapped=11),
            Park(row=rows[2], error="bad link"),
        ],
    )
    assert await store.native_ids_of("stream", ["a", "b", "c"], "dst") == {"a": 10, "b": 11}
    left = {r.entity_key: r for r in await store.rows()}
    assert set(left) == {"b", "c"}
    assert (left["b"].status, left["b"].seq, left["b"].lease_owner) == ("pending", 2, None)
    assert left["b"].snapshot == {"title": ["newer"]}
    assert (left["c"].status, left["c"].last_error) == ("parked", "bad link")


async def test_settle_falls_back_to_the_store_when_a_copy_is_claimed_twice(
    store: JournalStore,
) -> None:
    rows = await _leased(store, ["a", "b"])
    async with store.begin() as conn:
        await store.map_id(conn, "stream", "other", "dst", 10)
    await bulk_settle(store, "bf", [Done(row=rows[0], mapped=10), Done(row=rows[1], mapped=11)])
    # b is done; a's copy belongs to another entity: a is retried, not mapped.
    assert await store.native_ids_of("stream", ["a", "b", "other"], "dst") == {
        "b": 11,
        "other": 10,
    }
    left = await store.rows()
    assert [(r.entity_key, r.status, r.maybe_created) for r in left] == [("a", "pending", True)]
