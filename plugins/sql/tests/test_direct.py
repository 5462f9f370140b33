"""``SqlBackend.direct_writes()``: the backend's writes run on a raw sqlite3 connection give the
same rows, answers and errors as the backend's own methods (on the hand-made legacy table,
whose column types are reflected, and on the tables ``create_schema`` makes)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from multibackend_sql import SqlBackend
from sqlalchemy.ext.asyncio import create_async_engine

from multibackend.errors import Conflict, FeatureUnavailable, NotFound
from multibackend.journal.direct import on_thread, sqlite_driver
from multibackend.model import StreamDraft, StreamPatch

from .conftest import build_backend
from .test_legacy_table import LEGACY_ROWS, SQLITE_DDL, insert_sql


class Ticks:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


async def legacy_table(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in SQLITE_DDL:
                await conn.execute(sa.text(statement))
            for row in LEGACY_ROWS:
                await conn.execute(sa.text(insert_sql(row, True)))
    finally:
        await engine.dispose()
    return url


async def direct(backend: SqlBackend, prepare: Any) -> Any:
    """Prepare a write and run it on the raw connection of a backend transaction."""
    writes = backend.direct_writes()
    assert writes is not None
    call = prepare(writes)
    async with backend.transaction() as conn:
        driver = await sqlite_driver(conn)
        assert driver is not None
        return await on_thread(driver, call)


async def own(backend: SqlBackend, prepare: Any) -> Any:
    return await prepare(backend)


def _steps(first: int) -> list[tuple[str, Any]]:
    """(what, how): ``how(writer)`` calls the backend's method or the direct form's."""
    return [
        ("create", lambda w: _create(w, StreamDraft(source="n", link="https://n.com"))),
        (
            "create-all",
            lambda w: _create(
                w,
                StreamDraft(
                    source="m",
                    link="https://m.com",
                    status="live",
                    platform="youtube",
                    title="T",
                    city="C",
                    posted_by="p",
                    is_pinned=True,
                    notes="n",
                ),
            ),
        ),
        ("status", lambda w: _update(w, first, StreamPatch(status="live"))),
        ("status-again", lambda w: _update(w, first, StreamPatch(status="live", title="x"))),
        ("offline", lambda w: _update(w, first, StreamPatch(status="offline", city=None))),
        ("nothing-stored", lambda w: _update(w, first, StreamPatch(notes="n"))),
        ("pin", lambda w: _pin(w, first, True)),
        ("unpin", lambda w: _pin(w, first + 1, False)),
        ("missing-update", lambda w: _update(w, 999, StreamPatch(title="x"))),
        ("bad-id", lambda w: _update(w, "abc", StreamPatch(title="x"))),
        ("delete", lambda w: _delete(w, first + 2)),
        ("delete-again", lambda w: _delete(w, first + 2)),
    ]


def _create(w: Any, draft: StreamDraft) -> Any:
    return w.create_stream(draft) if isinstance(w, SqlBackend) else w.create(draft)


def _update(w: Any, id: Any, patch: StreamPatch) -> Any:
    return w.update_stream(id, patch) if isinstance(w, SqlBackend) else w.update(id, patch)


def _pin(w: Any, id: Any, pinned: bool) -> Any:
    return w.set_pinned(id, pinned)


def _delete(w: Any, id: Any) -> Any:
    return w.delete_stream(id) if isinstance(w, SqlBackend) else w.delete(id)


@pytest.mark.parametrize(
    "table",
    ["hand-made-legacy", "legacy", "legacy-soft", "native"],
)
async def test_direct_writes_match_the_backends_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str
) -> None:
    outcomes = []
    for path in ("own", "direct"):
        monkeypatch.setattr("multibackend_sql.backend.utc_now", Ticks())
        db = tmp_path / f"{path}.db"
        if table == "hand-made-legacy":
            url = await legacy_table(db)
            options: dict[str, Any] = {"schema": "streamsource-legacy"}
            first = 1
        else:
            url = f"sqlite+aiosqlite:///{db}"
            options = {
                "schema": "native" if table == "native" else "streamsource-legacy",
                "create_schema": True,
            }
            if table == "legacy-soft":
                options["delete"] = "soft"
            first = 1
        answers: list[Any] = []
        async with build_backend(url, **options) as backend:
            if table != "hand-made-legacy":
                for i in range(3):
                    await backend.create_stream(StreamDraft(source=f"s{i}", link="https://s.com"))
            for _, how in _steps(first):
                try:
                    if path == "own":
                        answers.append(await how(backend))
                    else:
                        answers.append(await direct(backend, how))
                except Exception as exc:
                    answers.append((type(exc).__name__, str(exc), getattr(exc, "id", None)))
        name = "streams" if table == "native" else "Streams"
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute(f'SELECT * FROM "{name}" ORDER BY id').fetchall()
        finally:
            conn.close()
        outcomes.append((answers, rows))
    assert outcomes[0] == outcomes[1]
    answers, rows = outcomes[0]
    kinds = [a[0] if isinstance(a, tuple) else type(a).__name__ for a in answers]
    assert kinds == ["Stream"] * 8 + ["NotFound"] * 2 + ["NoneType", "NotFound"]


async def test_direct_writes_raise_the_backends_errors(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.db"
    async with build_backend(url, schema="streamsource-legacy", create_schema=True) as backend:
        async with backend.transaction() as conn:
            await conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON \"Streams\" WHEN NEW.source = 'bad' "
                "BEGIN SELECT RAISE(ABORT, 'bad source'); END"
            )
        bad = StreamDraft(source="bad", link="https://bad.com")
        with pytest.raises(Conflict) as by_method:
            await backend.create_stream(bad)
        with pytest.raises(Conflict) as by_direct:
            await direct(backend, lambda w: w.create(bad))
        assert (by_direct.value.detail, by_direct.value.backend) == (
            by_method.value.detail,
            by_method.value.backend,
        )
        with pytest.raises(NotFound):
            await direct(backend, lambda w: w.delete(5))
    # Preparing raises what the method raises before touching the database.
    async with build_backend(
        f"sqlite+aiosqlite:///{tmp_path}/n.db",
        schema="native",
        create_schema=True,
        columns={"is_pinned": False},
    ) as no_pins:
        writes = no_pins.direct_writes()
        assert writes is not None
        with pytest.raises(FeatureUnavailable):
            writes.set_pinned(1, True)
        with pytest.raises(NotFound):
            writes.update("abc", StreamPatch(title="x"))


@pytest.mark.postgres
async def test_no_direct_writes_on_postgresql(pg_url: str) -> None:
    async with build_backend(pg_url, create_schema=True) as backend:
        assert backend.direct_writes() is None


async def test_the_pool_rolls_back_only_connections_left_in_a_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiosqlite

    rollbacks = 0
    original = aiosqlite.Connection.rollback

    async def counted(self: Any) -> None:
        nonlocal rollbacks
        rollbacks += 1
        await original(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)
    db = tmp_path / "s.db"
    async with build_backend(
        f"sqlite+aiosqlite:///{db}", schema="native", create_schema=True
    ) as backend:
        rollbacks = 0  # the dialect rolls back once when it first connects
        created = await backend.create_stream(StreamDraft(source="a", link="https://a.com"))
        await backend.update_stream(created.id, StreamPatch(title="t"))
        async with backend.transaction():
            await backend.create_stream(StreamDraft(source="b", link="https://b.com"))
        assert rollbacks == 0  # committed: nothing to roll back on return
        # A transaction SQLAlchemy does not know about (begun on the raw connection) is
        # rolled back when the connection goes back to the pool: its lock is released.
        engine = backend.engine
        conn = await engine.connect()
        driver = await sqlite_driver(conn)
        assert driver is not None
        await on_thread(driver, lambda db: db.execute("BEGIN IMMEDIATE").close())
        await conn.close()
        assert rollbacks == 1
        other = sqlite3.connect(db, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
        finally:
            other.close()

        # A block that raised is rolled back (SQLAlchemy's own rollback) and the next
        # transaction on the pooled connection starts clean.
        async def fail() -> None:
            async with backend.transaction():
                await backend.create_stream(StreamDraft(source="c", link="https://c.com"))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await fail()
        assert rollbacks == 2
        assert sorted(s.source for s in (await backend.list_streams(_query())).items) == [
            "a",
            "b",
        ]


def _query() -> Any:
    from multibackend.model import StreamQuery

    return StreamQuery()


async def test_a_transaction_the_caller_begins_commits_at_the_blocks_exit(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with build_backend(
        f"sqlite+aiosqlite:///{db}", schema="native", create_schema=True
    ) as backend:
        writes = backend.direct_writes()
        assert writes is not None

        async def raw_block(name: str, *, commit: bool = False, fail: bool = False) -> None:
            assert writes is not None
            call = writes.create(StreamDraft(source=name, link="https://x.com"))

            def work(db: sqlite3.Connection) -> None:
                db.execute("BEGIN IMMEDIATE").close()
                call(db)
                if commit:
                    db.commit()

            async with backend.transaction(sqlite_begin=False) as conn:
                driver = await sqlite_driver(conn)
                assert driver is not None
                await on_thread(driver, work)
                if fail:
                    raise RuntimeError("the block raised")

        await raw_block("left-open")  # begun and written on the raw connection only
        await raw_block("committed-by-caller", commit=True)
        with pytest.raises(RuntimeError):
            await raw_block("rolled-back", fail=True)

        async def through_sqlalchemy() -> None:
            async with backend.transaction(sqlite_begin=False) as conn:
                driver = await sqlite_driver(conn)
                assert driver is not None
                await on_thread(driver, lambda db: db.execute("BEGIN IMMEDIATE").close())
                await backend.create_stream(StreamDraft(source="mixed", link="https://x.com"))

        await through_sqlalchemy()
    plain = sqlite3.connect(db)
    try:
        names = [r[0] for r in plain.execute("SELECT source FROM streams ORDER BY id")]
    finally:
        plain.close()
    assert names == ["left-open", "committed-by-caller", "mixed"]
