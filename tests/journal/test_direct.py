"""The one-round-trip journal writes on SQLite (multibackend.journal.direct): the same rows as
the SQLAlchemy path, errors as the manager reports them, and the guard on aiosqlite's private
call."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from multibackend.errors import Unavailable
from multibackend.journal import direct as direct_module
from multibackend.manager import BackendManager, _CutoverMoved, _IntentItem
from multibackend.model import PRESERVABLE_TIMESTAMPS, StreamDraft, StreamPatch
from multibackend.registry import load_backend

from .conftest import Clock, memory


def legacy(url: str) -> Any:
    return load_backend(
        "sql", name="legacy", url=url, schema="streamsource-legacy", create_schema=True
    )


async def _no_direct(conn: Any, sql: Any) -> None:
    return None


async def _no_direct_driver(conn: Any) -> None:
    return None


async def _scenario(manager: BackendManager, db: Path) -> None:
    """Creates, updates merging into pending rows, a parked row given a fresh start, and a
    create whose new id a backfill mapped first (its key must win)."""
    a = await manager.create_stream(StreamDraft(source="a", link="https://a.com", notes="n"))
    b = await manager.create_stream(StreamDraft(source="b", link="https://b.com"))
    await manager.update_stream(a.id, StreamPatch(city="Austin"))
    await manager.update_stream(a.id, StreamPatch(title="T", notes=None))
    assert manager.store is not None
    async with manager.store.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE mb_queue SET status = 'parked', attempts = 5 WHERE target = 's1' AND "
            "entity_key = (SELECT entity_key FROM mb_id_map WHERE backend = :b AND "
            "native_id = :n)",
            {"b": manager.primary_name, "n": str(b.id)},
        )
        # A backfill adopted the id the primary hands out next (ids count up).
        await conn.exec_driver_sql(
            "INSERT INTO mb_id_map (entity_type, entity_key, backend, native_id, id_is_int, "
            "created_at) VALUES ('stream', 'backfill-key', :b, :n, 1, 0)",
            {"b": manager.primary_name, "n": str(int(b.id) + 1)},
        )
    await manager.update_stream(b.id, StreamPatch(city="Paris"))
    c = await manager.create_stream(StreamDraft(source="c", link="https://c.com"))
    assert c.id == int(b.id) + 1


def _journal(db: Path) -> tuple[list[Any], list[Any], int]:
    """The journal's rows, keyed by the primary's ids instead of random entity keys."""
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        native = dict(
            conn.exec_driver_sql(
                "SELECT entity_key, native_id FROM mb_id_map WHERE backend = 'legacy' "
                "OR backend = 'primary'"
            ).all()
        )
        queue = []
        for row in conn.exec_driver_sql(
            "SELECT entity_type, entity_key, target, op, seq, deleted, snapshot, status, "
            "attempts, next_attempt_at, maybe_created, enqueued_at, updated_at FROM mb_queue"
        ).all():
            snapshot = {
                k: v for k, v in json.loads(row.snapshot).items() if k not in PRESERVABLE_TIMESTAMPS
            }
            queue.append((native[row.entity_key], *row[2:6], snapshot, *row[7:]))
        mappings = sorted(
            (
                row.entity_key if row.entity_key == "backfill-key" else "",
                *row[1:],
            )
            for row in conn.exec_driver_sql(
                "SELECT entity_key, backend, native_id, id_is_int, created_at FROM mb_id_map"
            ).all()
        )
        intents = conn.exec_driver_sql("SELECT count(*) FROM mb_intents").scalar_one()
    engine.dispose()
    return sorted(queue, key=repr), mappings, intents


@pytest.mark.parametrize("outbox", [True, False], ids=["outbox", "intents"])
async def test_direct_and_sqlalchemy_paths_leave_the_same_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outbox: bool
) -> None:
    results = []
    # "held": intents flushes in one call on the held connection (journal/writer.py);
    # "direct": SQLAlchemy transactions around the one-call journal statements; "sqlalchemy":
    # neither.
    for name, fast, held in (
        ("held", True, True),
        ("direct", True, False),
        ("sqlalchemy", False, False),
    ):
        if not held:
            monkeypatch.setattr("multibackend.journal.writer.sqlite_driver", _no_direct_driver)
        if not fast:
            monkeypatch.setattr("multibackend.manager.direct", _no_direct)
        db = tmp_path / f"{name}.db"
        url = f"sqlite+aiosqlite:///{db}"
        primary = legacy(url) if outbox else memory("primary")
        manager = BackendManager(
            [primary, memory("s1"), memory("s2")],
            primary=primary.name,
            journal_url=url if outbox else f"sqlite+aiosqlite:///{db}",
            worker="external",
            clock=Clock(1_700_000_000.0),
        )
        async with manager:
            assert manager._outbox is outbox
            assert manager.store is not None
            async with manager.store.begin() as conn:
                taken = await manager._direct(conn)
            assert (taken is not None) is fast
            await _scenario(manager, db)
            writer = manager._group.writer if manager._group is not None else None
            # The held writer took the intents flushes (and only on the intents path: outbox
            # writes go through the primary's transaction).
            assert (writer is not None and writer._driver is not None) is (held and not outbox)
        results.append(_journal(db))
    held_rows, direct_rows, sqlalchemy_rows = results
    queue, mappings, intents = direct_rows
    assert intents == 0
    assert len(queue) == 6  # three entities, two targets
    assert ("backfill-key", "legacy" if outbox else "primary", "3", 1, 0.0) in (mappings)
    assert direct_rows == sqlalchemy_rows
    assert held_rows == sqlalchemy_rows


async def test_a_failing_journal_insert_is_reported_as_unavailable_and_writes_nothing(
    tmp_path: Path,
) -> None:
    primary = memory("primary")
    manager = BackendManager(
        [primary, memory("s1")],
        primary="primary",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
        worker="external",
    )
    async with manager:
        assert manager.store is not None
        async with manager.store.begin() as conn:
            assert await manager._direct(conn) is not None
            await conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON mb_intents "
                "BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        with pytest.raises(Unavailable, match="boom"):
            await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert (await primary.list_streams(sa_query())).items == ()
        assert await manager.store.rows() == []


def sa_query() -> Any:
    from multibackend.model import StreamQuery

    return StreamQuery()


async def test_intents_planned_at_an_old_cutover_version_are_not_recorded(
    tmp_path: Path,
) -> None:
    manager = BackendManager(
        [memory("primary"), memory("s1")],
        primary="primary",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
        worker="external",
    )
    async with manager:
        store = manager.store
        assert store is not None

        def item(expected: int, key: str) -> _IntentItem:
            values = {
                "entity_type": "stream",
                "entity_key": key,
                "op": "create",
                "backend": "primary",
                "native_id": None,
                "payload": {},
                "owner": "test",
            }
            return _IntentItem(expected, values)

        async with store.begin() as conn:
            await store.set_meta(conn, "cutover_version", "2")
        async with store.begin() as conn:
            answers = await manager._add_intents_many(conn, [item(1, "old"), item(2, "new")])
        assert isinstance(answers[0], _CutoverMoved)
        assert answers[0].version == 2
        assert isinstance(answers[1], int)
        stale = await store.stale_intents(store.clock() + 1)
        assert [i.entity_key for i in stale] == ["new"]
        assert stale[0].id == answers[1]


class _Conn:
    """Just enough of an AsyncConnection for the guard."""

    def __init__(self, driver: Any, name: str = "sqlite", dbapi: str = "aiosqlite") -> None:
        self.dialect = type("D", (), {"name": name, "driver": dbapi})()
        self._raw = type("R", (), {"driver_connection": driver})()

    async def get_raw_connection(self) -> Any:
        return self._raw


async def test_the_guard_falls_back_without_aiosqlites_private_call(tmp_path: Path) -> None:
    # The direct path relies on aiosqlite.Connection._execute (queue a call on the connection's
    # thread). This pins it: an aiosqlite without it fails here, and the guard answers None.
    assert callable(getattr(aiosqlite.Connection, "_execute", None))

    def texts() -> Any:
        raise AssertionError("not compiled when the path is not taken")

    class NoPrivateCall:
        _conn = object()

    assert await direct_module.direct(_Conn(NoPrivateCall()), texts) is None  # type: ignore[arg-type]
    assert (
        await direct_module.direct(_Conn(object(), name="postgresql", dbapi="asyncpg"), texts)
        is None
    )  # type: ignore[arg-type]

    class Closed:
        async def _execute(self, fn: Any, *args: Any) -> Any:
            return fn(*args)

        @property
        def _conn(self) -> Any:
            raise ValueError("no active connection")

    assert await direct_module.direct(_Conn(Closed()), texts) is None  # type: ignore[arg-type]

    # A later aiosqlite whose _execute takes something else: probed once, then refused.
    class OtherSignature:
        def __init__(self) -> None:
            self._conn = sqlite3.connect(":memory:")

        async def _execute(self, fn: Any) -> Any:
            return fn()

    other = OtherSignature()
    try:
        assert await direct_module.direct(_Conn(other), texts) is None  # type: ignore[arg-type]
        assert direct_module._PROBED[OtherSignature] is False
    finally:
        other._conn.close()
    # The installed aiosqlite passes the probe (the direct path is really taken in these tests).
    store_url = f"sqlite+aiosqlite:///{tmp_path}/probe.db"
    engine = create_async_engine(store_url)
    try:
        async with engine.connect() as conn:
            assert await direct_module.sqlite_driver(conn) is not None
        assert direct_module._PROBED[aiosqlite.Connection] is True
    finally:
        await engine.dispose()


@pytest.mark.parametrize("writes", [True, False], ids=["direct-writes", "sqlalchemy-writes"])
async def test_an_outbox_commit_begins_and_reads_the_cutover_version_in_one_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes: bool
) -> None:
    db = tmp_path / "legacy.db"
    url = f"sqlite+aiosqlite:///{db}"
    manager = BackendManager(
        [legacy(url), memory("s1")], primary="legacy", journal_url=url, worker="external"
    )
    if not writes:
        monkeypatch.setattr("multibackend.manager.direct_writes", lambda backend: None)
    reads: list[str | None] = []
    locked: list[bool] = []
    original = direct_module.Direct.read_version

    def counted(self: Any, conn: Any, key: str) -> str | None:
        reads.append(original(self, conn, key))
        # Read inside the write transaction: it holds SQLite's write lock already.
        other = sqlite3.connect(db, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
            locked.append(False)
        except sqlite3.OperationalError as exc:
            locked.append("locked" in str(exc))
        finally:
            other.close()
        return reads[-1]

    monkeypatch.setattr(direct_module.Direct, "read_version", counted)
    async with manager:
        assert manager._outbox_group is not None
        assert manager.store is not None
        async with manager._outbox_group._begin() as conn:
            assert await manager._outbox_many(conn, []) == []
        assert reads == [None]  # no cutover yet
        assert locked == [True]
        # A cutover version moved behind the manager's back is seen inside the write's own
        # transaction: the write starts over with the new version and is made once.
        async with manager.store.begin() as conn:
            await manager.store.set_meta(conn, "cutover_version", "1")
        assert manager.cutover.version == 0
        reads.clear()
        created = await manager.create_stream(StreamDraft(source="a", link="https://a.com"))
        assert reads == ["1", "1"]  # the first attempt saw the move, the second wrote
        assert manager.cutover.version == 1
        page = await manager.primary.list_streams(sa_query())
        assert [s.id for s in page.items] == [created.id]
        rows = await manager.store.rows()
        assert [(r.target, r.op) for r in rows] == [("s1", "create")]


def test_the_version_read_takes_the_write_lock_when_nothing_began_the_transaction(
    tmp_path: Path,
) -> None:
    db = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    db.execute("CREATE TABLE mb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO mb_meta VALUES ('cutover_version', '3')")
    other = sqlite3.connect(tmp_path / "j.db", timeout=0)
    fast = direct_module.Direct(None, sql_texts_for_tests())
    try:
        assert not db.in_transaction
        assert fast.read_version(db, "cutover_version") == "3"
        assert db.in_transaction
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        db.rollback()
        # Inside a transaction begun by someone else, it only reads.
        db.execute("BEGIN")
        assert fast.read_version(db, "cutover_version") == "3"
        db.rollback()
    finally:
        other.close()
        db.close()


def sql_texts_for_tests() -> Any:
    from multibackend.journal.store import JournalStore

    class _Store(JournalStore):
        @property
        def dialect(self) -> str:
            return "sqlite"

    return _Store(url="sqlite://").direct_sql()


async def test_a_cancelled_round_trip_finishes_before_the_cancellation_goes_on(
    tmp_path: Path,
) -> None:
    import asyncio
    import time

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/c.db")
    done: list[str] = []

    def slow(db: sqlite3.Connection) -> None:
        time.sleep(0.2)
        db.execute("BEGIN IMMEDIATE").close()
        done.append("begun")

    try:
        async with engine.connect() as conn:
            driver = await direct_module.sqlite_driver(conn)
            assert driver is not None
            task = asyncio.create_task(direct_module.on_thread(driver, slow))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The function had finished when the cancellation reached the caller: the pool
            # (closing this connection next) sees its open transaction and rolls it back.
            assert done == ["begun"]
            assert driver.in_transaction
        other = sqlite3.connect(tmp_path / "c.db", timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
        finally:
            other.close()
    finally:
        await engine.dispose()
