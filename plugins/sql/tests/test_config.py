"""Options and mapping checks: what a user with a wrong config sees, before and at open()."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from multibackend_sql import SqlBackend
from sqlalchemy.ext.asyncio import create_async_engine

from multibackend.errors import ConfigError
from multibackend.model import StreamDraft, StreamQuery, StreamStatus

Make = Callable[..., SqlBackend]


@pytest.mark.parametrize(
    ("options", "key", "fragment"),
    [
        ({"table": ""}, "backends.legacy.table", "non-empty"),
        ({"table": "streams\n; drop"}, "backends.legacy.table", "control"),
        ({"table": "x" * 64}, "backends.legacy.table", "longer than 63"),
        ({"columns": {"city": " city"}}, "backends.legacy.columns.city", "whitespace"),
        ({"columns": {"city": "ci\x00ty"}}, "backends.legacy.columns.city", "control"),
        ({"columns": {"colour": "c"}}, "backends.legacy.columns.colour", "unknown field"),
        ({"columns": {"link": False}}, "backends.legacy.columns.link", "required"),
        ({"columns": {"city": True}}, "backends.legacy.columns.city", "column name"),
        ({"columns": {"city": "title"}}, "backends.legacy.columns.city", "several fields"),
        ({"values": {"status": {"gone": "G"}}}, "backends.legacy.values.status.gone", "unknown"),
        ({"values": {"city": {"x": "y"}}}, "backends.legacy.values.city", "enum fields"),
        (
            {"values": {"status": {"live": "unknown"}}},
            "backends.legacy.values.status",
            "both",
        ),
        (
            {"columns": {"is_archived": False}, "delete": "soft"},
            "backends.legacy.delete",
            "archive",
        ),
        ({"url": "not a url"}, "backends.legacy.url", "not a database URL"),
        ({"url": "mysql://u:pw@h/db"}, "backends.legacy.url", "unsupported"),
        ({"schema": "other"}, "backends.legacy.schema", "one of"),
        ({"delete": "maybe"}, "backends.legacy.delete", "one of"),
    ],
)
def test_config_mistakes_name_the_key(
    make_backend: Make, sqlite_url: str, options: dict[str, Any], key: str, fragment: str
) -> None:
    raw = {"url": sqlite_url, **options}
    with pytest.raises(ConfigError) as info:
        make_backend(**raw)
    assert info.value.key is not None
    assert info.value.key.startswith(key)
    assert fragment in str(info.value)


def test_url_password_never_shown(make_backend: Make) -> None:
    backend = make_backend("postgresql://user:s3cret-pw@127.0.0.1:1/db")
    assert "s3cret-pw" not in repr(backend)
    assert "s3cret-pw" not in repr(backend._options)
    with pytest.raises(ConfigError) as info:
        make_backend("postgresql://user:s3cret-pw@127.0.0.1:1/db", schema="nope")
    assert "s3cret-pw" not in str(info.value)


async def test_create_schema_false_and_no_table_fails_at_open(
    make_backend: Make, sqlite_url: str
) -> None:
    backend = make_backend(sqlite_url)
    with pytest.raises(ConfigError) as info:
        await backend.open()
    assert info.value.key == "backends.legacy.schema"
    assert "'streams'" in str(info.value)
    assert "create_schema" in str(info.value)


async def test_custom_table_with_custom_values(make_backend: Make, db_url: str) -> None:
    key = "INTEGER PRIMARY KEY" if db_url.startswith("sqlite") else "SERIAL PRIMARY KEY"
    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                f"CREATE TABLE feeds (feed_id {key}, url TEXT NOT NULL, "
                "handle TEXT, state_code TEXT, created TIMESTAMP NOT NULL, "
                "modified TIMESTAMP NOT NULL)"
            )
        )
        await conn.execute(
            sa.text(
                "INSERT INTO feeds VALUES (7, 'https://a.test', 'a', 'L', "
                "'2021-01-01 00:00:00', '2021-01-01 00:00:00')"
            )
        )
    await engine.dispose()
    mapping = {
        "id": "feed_id",
        "link": "url",
        "source": "handle",
        "status": "state_code",
        "created_at": "created",
        "updated_at": "modified",
    }
    unmapped = dict.fromkeys(
        ("is_pinned", "platform", "orientation", "kind", "city", "state", "notes", "title",
         "posted_by", "last_checked_at", "last_live_at", "is_archived", "user_id", "user_email"),
        False,
    )  # fmt: skip
    backend = make_backend(
        db_url,
        table="feeds",
        columns={**mapping, **unmapped},
        values={"status": {"live": "L", "offline": "O", "unknown": "U"}},
    )
    async with backend:
        assert backend.fields == {"source", "link", "status", "created_at"}
        old = await backend.get_stream(7)
        assert old.status == StreamStatus.LIVE
        made = await backend.create_stream(
            StreamDraft(source="b", link="https://b.test", status="offline", is_pinned=True)
        )
        assert made.is_pinned is False  # no pin column: not stored
        live = await backend.list_streams(StreamQuery(status="live"))
        assert [s.id for s in live.items] == [7]
        assert (await backend.list_streams(StreamQuery(is_pinned=True))).total_count == 0
        assert (await backend.list_streams(StreamQuery(is_pinned=False))).total_count == 2
    engine = create_async_engine(db_url)
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                sa.text("SELECT state_code FROM feeds WHERE feed_id = :i"), {"i": made.id}
            )
        ).scalar_one()
    await engine.dispose()
    assert stored == "O"


async def test_owner_columns_feed_the_user_id_filter(make_backend: Make, db_url: str) -> None:
    async with make_backend(db_url, create_schema=True) as backend:
        mine = await backend.create_stream(StreamDraft(source="a", link="https://a.test"))
        await backend.create_stream(StreamDraft(source="b", link="https://b.test"))
        async with backend.transaction() as conn:
            await conn.execute(
                sa.text("UPDATE streams SET user_id = '42', user_email = 'o@x.test' WHERE id = :i"),
                {"i": mine.id},
            )
        page = await backend.list_streams(StreamQuery(user_id=42))
        assert [s.id for s in page.items] == [mine.id]
        assert page.items[0].user is not None
        assert page.items[0].user.email == "o@x.test"
        assert StreamQuery(user_id=42).matches(page.items[0])
        assert (await backend.list_streams(StreamQuery(user_id="nobody"))).total_count == 0
