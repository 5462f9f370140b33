"""Database failures surface as multibackend errors with the right ``retryable`` and the
backend's name, and never with the URL's password."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from multibackend_sql import SqlBackend
from multibackend_sql.errors import translate
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import create_async_engine

from multibackend.errors import (
    BackendError,
    ConfigError,
    Conflict,
    Unavailable,
    ValidationFailed,
)
from multibackend.model import StreamDraft

Make = Callable[..., SqlBackend]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_locked_sqlite_database_is_unavailable(make_backend: Make, tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    backend = make_backend(f"sqlite:///{path}", create_schema=True, busy_timeout_ms=50)
    async with backend:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(Unavailable) as info:
                await backend.create_stream(StreamDraft(source="a", link="https://a.test"))
            assert info.value.retryable
            assert info.value.backend == "legacy"
            assert "locked" in str(info.value)
            # WAL: readers are not blocked by the writer.
            assert (await backend.health()).ok
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        created = await backend.create_stream(StreamDraft(source="a", link="https://a.test"))
        assert created.source == "a"


async def test_unique_violation_is_a_conflict_and_bulk_reports_the_item(
    make_backend: Make, db_url: str
) -> None:
    async with make_backend(db_url, create_schema=True) as backend:
        engine = create_async_engine(db_url)
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE UNIQUE INDEX streams_link_unique ON streams (link)"))
        await engine.dispose()

        await backend.create_stream(StreamDraft(source="a", link="https://dup.test"))
        with pytest.raises(Conflict) as info:
            await backend.create_stream(StreamDraft(source="b", link="https://dup.test"))
        assert not info.value.retryable
        assert info.value.backend == "legacy"

        drafts = [
            StreamDraft(source="c", link="https://c.test"),
            StreamDraft(source="d", link="https://dup.test"),
            StreamDraft(source="e", link="https://e.test"),
        ]
        result = await backend.bulk_import(drafts)
        assert result.imported == 2
        assert result.total == 3
        assert [e.index for e in result.errors] == [1]
        assert result.ids is not None
        assert result.ids[1] is None
        assert [(await backend.get_stream(i)).source for i in result.ids if i is not None] == [
            "c",
            "e",
        ]


async def test_not_null_violation_is_a_validation_failure(make_backend: Make, db_url: str) -> None:
    pk = "INTEGER PRIMARY KEY" if db_url.startswith("sqlite") else "SERIAL PRIMARY KEY"
    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                f"CREATE TABLE mini (id {pk}, link TEXT NOT NULL, title TEXT NOT NULL, "
                "created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL)"
            )
        )
    await engine.dispose()
    unmapped = (
        "source", "status", "is_pinned", "city", "state", "platform", "notes", "posted_by",
        "last_checked_at", "last_live_at", "orientation", "kind", "is_archived", "user_id",
        "user_email",
    )  # fmt: skip
    backend = make_backend(db_url, table="mini", columns=dict.fromkeys(unmapped, False))
    async with backend:
        with pytest.raises(ValidationFailed) as info:
            await backend.create_stream(StreamDraft(source="a", link="https://a.test"))
        assert not info.value.retryable
        made = await backend.create_stream(
            StreamDraft(source="a", link="https://a.test", title="t")
        )
        assert made.title == "t"


async def test_unreachable_postgres_is_unavailable_without_the_password(make_backend: Make) -> None:
    url = f"postgresql://app:pa55-word-xyz@127.0.0.1:{free_port()}/legacy"
    backend = make_backend(url)
    with pytest.raises(Unavailable) as info:
        await backend.open()
    assert info.value.retryable
    assert info.value.backend == "legacy"
    assert "pa55-word-xyz" not in str(info.value)
    assert "pa55-word-xyz" not in repr(info.value)


async def test_missing_sqlite_directory_is_a_config_error(
    make_backend: Make, tmp_path: Path
) -> None:
    backend = make_backend(f"sqlite:///{tmp_path / 'missing' / 'x.db'}", create_schema=True)
    with pytest.raises(ConfigError) as info:
        await backend.open()
    assert info.value.key == "backends.legacy.url"
    assert "missing" in str(info.value)


async def test_calls_before_open_say_so(make_backend: Make, sqlite_url: str) -> None:
    backend = make_backend(sqlite_url, create_schema=True)
    with pytest.raises(BackendError, match="not open"):
        await backend.get_stream(1)
    async with backend:
        await backend.create_stream(StreamDraft(source="a", link="https://a.test"))
    async with backend:  # reopening after close works
        assert (await backend.get_stream(1)).source == "a"


async def test_a_table_dropped_under_the_backend_is_a_permanent_error(
    make_backend: Make, db_url: str
) -> None:
    async with make_backend(db_url, create_schema=True) as backend:
        await backend.create_stream(StreamDraft(source="a", link="https://a.test"))
        engine = create_async_engine(db_url)
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP TABLE streams"))
        await engine.dispose()
        with pytest.raises(BackendError) as walking:
            [s async for s in backend.iter_streams()]
        with pytest.raises(BackendError) as getting:
            await backend.get_stream(1)
    for error in (walking.value, getting.value):
        assert type(error) is BackendError
        assert not error.retryable
        assert error.backend == "legacy"
        assert "streams" in str(error)


class _DriverError(Exception):
    """Stands in for a driver exception carrying a PostgreSQL SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("wrapper", "sqlstate", "expected", "retryable"),
    [
        (sa_exc.OperationalError, "40001", Unavailable, True),  # serialization failure
        (sa_exc.OperationalError, "40P01", Unavailable, True),  # deadlock
        (sa_exc.DBAPIError, "57P01", Unavailable, True),  # admin shutdown
        (sa_exc.DBAPIError, "08006", Unavailable, True),  # connection failure
        (sa_exc.IntegrityError, "23505", Conflict, False),
        (sa_exc.IntegrityError, "23503", Conflict, False),
        (sa_exc.IntegrityError, "23502", ValidationFailed, False),
        (sa_exc.DataError, "22001", ValidationFailed, False),
        (sa_exc.ProgrammingError, "42P01", BackendError, False),
    ],
)
def test_sqlstates_map_onto_the_error_tree(
    wrapper: type[sa_exc.DBAPIError],
    sqlstate: str,
    expected: type[BackendError],
    retryable: bool,
) -> None:
    # Serialization failures and shutdowns are hard to provoke on demand; the mapping is what
    # matters, so it is checked on the exception shape SQLAlchemy's asyncpg adapter produces.
    orig = _DriverError("could not serialize access: secret-pw in text", sqlstate)
    exc = wrapper("UPDATE streams SET x = $1", ("param-value",), orig)
    error = translate(exc, backend="legacy", secrets=["secret-pw"])
    assert type(error) is expected
    assert error.retryable is retryable
    assert error.backend == "legacy"
    assert "secret-pw" not in str(error)
    assert "param-value" not in str(error)


async def test_an_unreadable_stored_value_names_its_row_and_column(
    make_backend: Make, sqlite_url: str
) -> None:
    async with make_backend(sqlite_url, create_schema=True) as backend:
        made = await backend.create_stream(StreamDraft(source="a", link="https://a.test"))
        async with backend.transaction() as conn:
            await conn.execute(sa.text("UPDATE streams SET last_live_at = 'yesterday-ish'"))
        with pytest.raises(BackendError) as getting:
            await backend.get_stream(made.id)
        with pytest.raises(BackendError) as walking:
            [s async for s in backend.iter_streams()]
    for error in (getting.value, walking.value):
        assert not error.retryable
        assert "'last_live_at'" in str(error)
        assert f"row {made.id!r}" in str(error)
