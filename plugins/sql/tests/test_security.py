"""Security of the sql backend (issue 8): identifiers from configuration are validated and
quoted, so a hostile table or column name is a name, never SQL; files it creates are private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from multibackend_sql.engine import parse_url
from sqlalchemy.ext.asyncio import create_async_engine

from multibackend.errors import ConfigError
from multibackend.model import StreamDraft, StreamPatch, StreamQuery

from .conftest import build_backend

HOSTILE_TABLE = 'streams"; DROP TABLE victims; --'
HOSTILE_COLUMNS = {
    "source": "src'); DELETE FROM victims; --",
    "title": 'ti"tle',
    "city": "city`; --",
    "notes": "Ünï cødé ✓",
}


async def test_hostile_table_and_column_names_are_quoted_not_executed(db_url: str) -> None:
    engine = create_async_engine(parse_url(db_url, "url"))
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE victims (id INTEGER)"))
        await conn.execute(sa.text("INSERT INTO victims VALUES (1)"))
    backend = build_backend(
        db_url, table=HOSTILE_TABLE, columns=HOSTILE_COLUMNS, create_schema=True
    )
    async with backend:
        s = await backend.create_stream(
            StreamDraft(source="a", link="https://a.com", title="t", city="c", notes="n")
        )
        await backend.update_stream(s.id, StreamPatch(title="t2", city=None))
        page = await backend.list_streams(StreamQuery(status="unknown", sort="name"))
        assert [(x.source, x.title, x.city, x.notes) for x in page.items] == [
            ("a", "t2", None, "n")
        ]
        await backend.delete_stream(s.id)
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM victims"))).scalar() == 1
        tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        columns = await conn.run_sync(
            lambda c: {col["name"] for col in sa.inspect(c).get_columns(HOSTILE_TABLE)}
        )
    await engine.dispose()
    assert HOSTILE_TABLE in tables  # the name is the name, quotes and all
    assert set(HOSTILE_COLUMNS.values()) <= columns


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"table": ""}, "backends.legacy.table"),
        ({"table": "streams\nDROP TABLE x"}, "backends.legacy.table"),
        ({"table": " streams"}, "backends.legacy.table"),
        ({"table": "s" * 64}, "backends.legacy.table"),
        ({"table": "str\u200beams"}, "backends.legacy.table"),  # zero-width space
        ({"columns": {"title": "t\x00"}}, "backends.legacy.columns.title"),
        ({"columns": {"title": 7}}, "backends.legacy.columns"),  # a type error: the table's key
        ({"columns": {"title; DROP": "x"}}, "backends.legacy.columns.title; DROP"),
    ],
)
def test_bad_identifiers_are_refused_naming_the_key(
    sqlite_url: str, options: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_backend(sqlite_url, **options)
    assert info.value.key == key


async def test_sqlite_files_it_creates_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        async with build_backend(f"sqlite:///{tmp_path}/legacy.db", create_schema=True) as b:
            await b.create_stream(StreamDraft(source="a", link="https://a.com"))
            files = sorted(tmp_path.glob("legacy.db*"))  # noqa: ASYNC240 (a test's listing)
            assert {p.name for p in files} >= {"legacy.db", "legacy.db-wal", "legacy.db-shm"}
            for path in files:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    finally:
        os.umask(old)
