"""The streamsource-legacy preset against a "Streams" table created by hand (contract §9.1),
with rows written the way the legacy Node app wrote them, checked in both directions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from multibackend_sql import SqlBackend
from sqlalchemy.ext.asyncio import create_async_engine

from multibackend.errors import ConfigError, NotFound
from multibackend.model import Platform, Stream, StreamDraft, StreamPatch, StreamQuery, StreamStatus

# PostgreSQL, as the 2020 Sequelize migrations created it: timestamptz, nullable isPinned.
PG_SEQUELIZE_DDL = [
    """
    CREATE TABLE "Streams" (
        id SERIAL PRIMARY KEY,
        source TEXT,
        platform TEXT,
        link TEXT NOT NULL,
        status TEXT DEFAULT 'Unknown',
        title TEXT,
        "isExpired" BOOLEAN DEFAULT false,
        "checkedAt" TIMESTAMP WITH TIME ZONE,
        "liveAt" TIMESTAMP WITH TIME ZONE,
        "embedLink" TEXT,
        "postedBy" TEXT,
        "isPinned" BOOLEAN,
        city TEXT,
        region TEXT,
        "createdAt" TIMESTAMP WITH TIME ZONE NOT NULL,
        "updatedAt" TIMESTAMP WITH TIME ZONE NOT NULL
    )
    """,
    'CREATE INDEX "streams_is_pinned" ON "Streams" ("isPinned")',
]

# PostgreSQL, as the 2025 Prisma schema maps it: timestamp(3) without zone, isPinned default false.
PG_PRISMA_DDL = [
    """
    CREATE TABLE "Streams" (
        id SERIAL PRIMARY KEY,
        source TEXT,
        platform TEXT,
        link TEXT NOT NULL,
        status TEXT DEFAULT 'Unknown',
        title TEXT,
        "isExpired" BOOLEAN DEFAULT false,
        "checkedAt" TIMESTAMP(3),
        "liveAt" TIMESTAMP(3),
        "embedLink" TEXT,
        "postedBy" TEXT,
        "isPinned" BOOLEAN DEFAULT false,
        city TEXT,
        region TEXT,
        "createdAt" TIMESTAMP(3) NOT NULL,
        "updatedAt" TIMESTAMP(3) NOT NULL
    )
    """,
]

# The SQLite equivalent (Sequelize on SQLite: DATETIME text, booleans as 0/1).
SQLITE_DDL = [
    """
    CREATE TABLE "Streams" (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT,
        platform TEXT,
        link TEXT NOT NULL,
        status TEXT DEFAULT 'Unknown',
        title TEXT,
        "isExpired" BOOLEAN DEFAULT 0,
        "checkedAt" DATETIME,
        "liveAt" DATETIME,
        "embedLink" TEXT,
        "postedBy" TEXT,
        "isPinned" BOOLEAN,
        city TEXT,
        region TEXT,
        "createdAt" DATETIME NOT NULL,
        "updatedAt" DATETIME NOT NULL
    )
    """,
]

CREATED = datetime(2020, 9, 5, 23, 41, 13, 123000, tzinfo=UTC)
CHECKED = datetime(2020, 9, 6, 1, 2, 3, 456000, tzinfo=UTC)

# Rows as the legacy app wrote them: capitalized status, free-text platform in any case,
# NULL isPinned, zone-less UTC timestamps (Sequelize on SQLite appends " +00:00").
LEGACY_ROWS: list[dict[str, Any]] = [
    {
        "source": "alice",
        "platform": "TikTok",
        "link": "https://www.tiktok.com/@alice/live",
        "status": "Live",
        "title": "March",
        "isExpired": False,
        "checkedAt": CHECKED,
        "liveAt": CHECKED,
        "embedLink": "https://embed.example/alice",
        "postedBy": "mod1",
        "isPinned": None,
        "city": "Portland",
        "region": "OR",
    },
    {
        "source": "bob",
        "platform": "instagram",
        "link": "instagram.com/bob",  # stored without its scheme, as the 2025 app did
        "status": "Offline",
        "title": None,
        "isExpired": False,
        "checkedAt": None,
        "liveAt": None,
        "embedLink": None,
        "postedBy": None,
        "isPinned": True,
        "city": None,
        "region": None,
    },
    {
        "source": "carol",
        "platform": "Periscope",
        "link": "https://pscp.tv/carol",
        "status": "Unknown",
        "title": "old",
        "isExpired": True,
        "checkedAt": None,
        "liveAt": None,
        "embedLink": "https://embed.example/carol",
        "postedBy": "mod2",
        "isPinned": None,
        "city": "Seattle",
        "region": "WA",
    },
]

COLUMNS = list(LEGACY_ROWS[0])

Make = Callable[..., SqlBackend]


def _sql_time(value: datetime | None, sqlite: bool) -> str:
    if value is None:
        return "NULL"
    text = value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    # Sequelize writes "+00:00" on SQLite; PostgreSQL ignores a zone given for a timestamp column.
    return f"'{text} +00:00'" if sqlite else f"'{text}+00'"


def _literal(value: Any, sqlite: bool) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return ("1" if value else "0") if sqlite else ("true" if value else "false")
    if isinstance(value, datetime):
        return _sql_time(value, sqlite)
    return "'" + str(value).replace("'", "''") + "'"


def insert_sql(row: dict[str, Any], sqlite: bool) -> str:
    names = ", ".join(f'"{c}"' for c in [*COLUMNS, "createdAt", "updatedAt"])
    values = [_literal(row[c], sqlite) for c in COLUMNS]
    values += [_sql_time(CREATED, sqlite)] * 2
    return f'INSERT INTO "Streams" ({names}) VALUES ({", ".join(values)})'


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("pg-sequelize", marks=pytest.mark.postgres),
        pytest.param("pg-prisma", marks=pytest.mark.postgres),
    ]
)
def legacy_flavour(request: pytest.FixtureRequest, sqlite_url: str) -> tuple[str, str]:
    """(flavour, URL of an empty database for it)."""
    flavour: str = request.param
    url: str = sqlite_url if flavour == "sqlite" else request.getfixturevalue("pg_url")
    return flavour, url


@pytest.fixture
async def legacy_url(legacy_flavour: tuple[str, str]) -> str:
    """A database holding the hand-made legacy table and its three legacy rows."""
    flavour, url = legacy_flavour
    sqlite = flavour == "sqlite"
    ddl = {"sqlite": SQLITE_DDL, "pg-sequelize": PG_SEQUELIZE_DDL, "pg-prisma": PG_PRISMA_DDL}
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in ddl[flavour]:
                await conn.execute(sa.text(statement))
            for row in LEGACY_ROWS:
                await conn.execute(sa.text(insert_sql(row, sqlite)))
    finally:
        await engine.dispose()
    return url


async def plain_rows(url: str, where: str = "") -> list[dict[str, Any]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.text(f'SELECT * FROM "Streams" {where} ORDER BY id'))
            return [dict(r._mapping) for r in result]
    finally:
        await engine.dispose()


async def by_source(backend: SqlBackend, source: str) -> Stream:
    (found,) = [s async for s in backend.iter_streams() if s.source == source]
    return found


def as_utc(value: Any) -> datetime:
    """A timestamp read in plain SQL (naive UTC, aware, or SQLite text) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace(" +", "+"))
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def test_legacy_rows_read_back_through_the_plugin(
    legacy_url: str, make_backend: Make
) -> None:
    async with make_backend(legacy_url, schema="streamsource-legacy") as backend:
        alice, bob, carol = [s async for s in backend.iter_streams()]

    assert alice.status == StreamStatus.LIVE
    assert alice.platform == Platform.TIKTOK
    assert alice.is_pinned is False  # NULL isPinned
    assert (alice.city, alice.state, alice.posted_by, alice.title) == (
        "Portland",
        "OR",
        "mod1",
        "March",
    )
    assert alice.last_checked_at == CHECKED
    assert alice.last_live_at == CHECKED
    assert alice.created_at == CREATED
    assert alice.updated_at == CREATED

    assert bob.status == StreamStatus.OFFLINE
    assert bob.platform == Platform.INSTAGRAM  # "instagram", any case
    assert bob.is_pinned is True
    assert bob.link == "instagram.com/bob"
    assert bob.last_checked_at is None

    assert carol.status == StreamStatus.UNKNOWN
    assert carol.platform == Platform.OTHER  # free text naming no known platform
    assert (carol.orientation, carol.kind, carol.notes) == (None, "video", None)


async def test_filters_and_order_over_legacy_values(legacy_url: str, make_backend: Make) -> None:
    async with make_backend(legacy_url, schema="streamsource-legacy") as backend:
        live = await backend.list_streams(StreamQuery(status="live"))
        assert [s.source for s in live.items] == ["alice"]
        unpinned = await backend.list_streams(StreamQuery(is_pinned=False))
        assert sorted(s.source or "" for s in unpinned.items) == ["alice", "carol"]
        default = await backend.list_streams(StreamQuery())
        assert default.items[0].source == "bob"  # the only pinned row comes first
        assert (await backend.list_streams(StreamQuery(user_id=1))).total_count == 0


async def test_what_the_plugin_writes_reads_back_in_plain_sql(
    legacy_url: str, make_backend: Make
) -> None:
    sqlite = legacy_url.startswith("sqlite")
    async with make_backend(legacy_url, schema="streamsource-legacy") as backend:
        created = await backend.create_stream(
            StreamDraft(
                source="dave",
                link="https://youtube.com/live/dave",
                status="live",
                platform="youtube",
                state="CA",
                city="Oakland",
                posted_by="mod3",
                orientation="vertical",  # no column: accepted, not stored
                notes="dropped",
            )
        )
        await backend.set_pinned(created.id, True)
    (row,) = await plain_rows(legacy_url, f"WHERE id = {int(created.id)}")
    assert row["status"] == "Live"
    assert row["platform"] == "YouTube"
    assert row["region"] == "CA"
    assert row["city"] == "Oakland"
    assert row["postedBy"] == "mod3"
    assert bool(row["isPinned"]) is True
    assert bool(row["isExpired"]) is False
    assert row["embedLink"] is None
    assert created.created_at is not None
    assert as_utc(row["createdAt"]) == created.created_at
    assert as_utc(row["checkedAt"]) == created.last_checked_at
    assert as_utc(row["liveAt"]) == created.last_live_at
    if not sqlite and isinstance(row["createdAt"], datetime) and row["createdAt"].tzinfo is None:
        # A zone-less column holds UTC wall time, as the legacy app wrote it.
        assert row["createdAt"] == created.created_at.replace(tzinfo=None)


async def test_update_leaves_unmapped_and_unread_legacy_values_alone(
    legacy_url: str, make_backend: Make
) -> None:
    before = {r["source"]: r for r in await plain_rows(legacy_url)}
    async with make_backend(legacy_url, schema="streamsource-legacy") as backend:
        carol = await by_source(backend, "carol")
        updated = await backend.update_stream(carol.id, StreamPatch(title="new", status="offline"))
    assert updated.title == "new"
    after = {r["source"]: r for r in await plain_rows(legacy_url)}
    assert after["carol"]["embedLink"] == "https://embed.example/carol"
    assert after["carol"]["platform"] == "Periscope"  # read as "other", never rewritten
    assert after["carol"]["status"] == "Offline"
    assert after["carol"]["title"] == "new"
    assert as_utc(after["carol"]["updatedAt"]) > as_utc(before["carol"]["updatedAt"])
    assert after["alice"] == before["alice"]


async def test_soft_delete_sets_isexpired_and_hides_archived_rows(
    legacy_url: str, make_backend: Make
) -> None:
    async with make_backend(legacy_url, schema="streamsource-legacy", delete="soft") as backend:
        visible = [s.source async for s in backend.iter_streams()]
        assert visible == ["alice", "bob"]  # carol has isExpired = true
        alice = await by_source(backend, "alice")
        await backend.delete_stream(alice.id)
        with pytest.raises(NotFound):
            await backend.get_stream(alice.id)
        with pytest.raises(NotFound):
            await backend.delete_stream(alice.id)
        page = await backend.list_streams(StreamQuery())
        assert [s.source for s in page.items] == ["bob"]
        assert [s.source for s in (await backend.export()).streams] == ["bob"]
    rows = {r["source"]: r for r in await plain_rows(legacy_url)}
    assert bool(rows["alice"]["isExpired"]) is True  # still there, archived

    async with make_backend(legacy_url, schema="streamsource-legacy") as hard:
        # With hard delete, rows archived by another app are listed like any other.
        assert (await hard.list_streams(StreamQuery())).total_count == 3


async def test_misnamed_column_fails_at_open_naming_it(legacy_url: str, make_backend: Make) -> None:
    backend = make_backend(
        legacy_url, name="legacy", schema="streamsource-legacy", columns={"is_pinned": "pinned"}
    )
    with pytest.raises(ConfigError) as info:
        await backend.open()
    message = str(info.value)
    assert info.value.key == "backends.legacy.columns.is_pinned"
    assert "'pinned'" in message
    assert "'Streams'" in message
    assert "isPinned" in message  # the suggestion


async def test_missing_table_fails_at_open_naming_it(legacy_url: str, make_backend: Make) -> None:
    backend = make_backend(legacy_url, name="legacy", schema="streamsource-legacy", table="Strams")
    with pytest.raises(ConfigError) as info:
        await backend.open()
    assert info.value.key == "backends.legacy.table"
    assert "'Strams'" in str(info.value)


async def test_create_schema_never_alters_an_existing_table(
    legacy_url: str, make_backend: Make
) -> None:
    # The native preset's columns are not in the legacy table: create_schema must not add them.
    backend = make_backend(legacy_url, table="Streams", create_schema=True)
    with pytest.raises(ConfigError) as info:
        await backend.open()
    assert info.value.key is not None
    assert info.value.key.startswith("backends.legacy.columns.")
    rows = await plain_rows(legacy_url)
    assert set(rows[0]) == {*COLUMNS, "id", "createdAt", "updatedAt"}


async def test_custom_mapping_over_the_legacy_preset(legacy_url: str, make_backend: Make) -> None:
    backend: SqlBackend = make_backend(
        legacy_url,
        schema="streamsource-legacy",
        columns={"notes": "embedLink", "is_pinned": False},
        values={"platform": {"other": "Periscope"}},
    )
    async with backend:
        assert "notes" in backend.fields
        assert "is_pinned" not in backend.fields
        carol = await by_source(backend, "carol")
        assert carol.notes == "https://embed.example/carol"
        made = await backend.create_stream(
            StreamDraft(source="erin", link="https://x.test/e", platform="other", notes="n")
        )
    (row,) = await plain_rows(legacy_url, f"WHERE id = {int(made.id)}")
    assert row["platform"] == "Periscope"
    assert row["embedLink"] == "n"
