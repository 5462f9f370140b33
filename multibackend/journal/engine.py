"""Creating SQLAlchemy async engines for the journal, with SQLite set up for concurrent use.

SQLite needs care when several connections (the app's manager, an embedded or external sync
worker) write to one file:

* WAL mode, so readers never block the writer, with ``synchronous=NORMAL`` (durable across
  application crashes; an OS crash may lose the last commits, as with any WAL database);
* a busy timeout, so a writer waits for the lock instead of failing at once;
* ``BEGIN IMMEDIATE`` for write transactions (those begun on :func:`writer` engines): a
  deferred transaction that reads and then writes can fail with SQLITE_BUSY without waiting when
  another connection wrote in between. Reads begin deferred, so in WAL mode they never wait for
  a writer (an IMMEDIATE read would queue behind every write, and SQLite's busy handler sleeps
  up to 100 ms between tries).

In-memory SQLite URLs get a single shared connection (StaticPool), so every user sees one
database. A SQLite file the journal creates is readable and writable by its owner only (0600):
it holds application data; SQLite gives its ``-wal`` and ``-shm`` files the same mode.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from multibackend.errors import ConfigError

#: Execution option marking connections whose transactions write (BEGIN IMMEDIATE on SQLite).
WRITE_OPTION = "multibackend_journal_write"

__all__ = [
    "WRITE_OPTION",
    "async_url",
    "create_engine",
    "create_private_file",
    "is_memory_sqlite",
    "redact_url",
    "writer",
]


def is_memory_sqlite(url: str) -> bool:
    """True for SQLite URLs that name no file (a private in-memory database)."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def create_private_file(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (an existing file keeps its mode).

    Called before SQLite opens a database file, which it would otherwise create with the
    process umask (typically world-readable). SQLite creates the database's ``-wal``, ``-shm``
    and ``-journal`` files with the database file's mode, so they are private too.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a missing folder, no permission: SQLite reports it when it opens the file
    os.close(fd)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"


_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def async_url(url: str) -> str:
    """``url`` with its async driver: plain ``sqlite://`` means aiosqlite and ``postgresql://``
    asyncpg (as in the sql plugin), so configuration files can use the usual spellings."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(
            "not a database URL (expected e.g. sqlite:///journal.db or "
            "postgresql+asyncpg://user@host/db)",
            key="journal.url",
        ) from None
    if parsed.drivername in _ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername])
    return parsed.render_as_string(hide_password=False)


def writer(engine: AsyncEngine) -> AsyncEngine:
    """A view of ``engine`` (same pool) whose transactions take SQLite's write lock up front.

    Engines made by :func:`create_engine` begin every transaction themselves (their "begin"
    hook reads :data:`WRITE_OPTION`). Another SQLite engine, such as the sql plugin's that a
    manager shares when the journal lives in the primary's database, lets the sqlite3 module
    begin a transaction only before its first INSERT, UPDATE or DELETE: a transaction that reads
    and then writes would read outside the lock. For a claim (the due rows, then their lease)
    that let two workers lease, and apply, the same rows: a duplicate on the target for each
    create. Such an engine's view begins its transactions with ``BEGIN IMMEDIATE`` itself.
    """
    view = engine.execution_options(**{WRITE_OPTION: True})
    if engine.dialect.name == "sqlite" and not event.contains(
        engine.sync_engine, "begin", _begin_by_option
    ):
        event.listen(view.sync_engine, "begin", _begin_immediate)
    return view


def _begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_by_option(conn: Any) -> None:
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def create_engine(url: str, *, busy_timeout_ms: int = 30_000) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite://``, ``postgresql://``, or with an explicit async
    driver: ``sqlite+aiosqlite://``, ``postgresql+asyncpg://``)."""
    url = async_url(url)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        kwargs: dict[str, Any] = {}
        if is_memory_sqlite(url):
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        elif parsed.database and not parsed.database.startswith("file:"):
            create_private_file(parsed.database)
        engine = create_async_engine(url, **kwargs)
        _setup_sqlite(engine, busy_timeout_ms, wal=not is_memory_sqlite(url))
        return engine
    if backend == "postgresql":
        engine = create_async_engine(url, pool_size=10, max_overflow=20)
        _ping_idle_connections(engine)
        return engine
    raise ConfigError(
        f"unsupported database {backend!r} (use sqlite+aiosqlite:// or postgresql+asyncpg://)",
        key="journal.url",
    )


#: A pooled PostgreSQL connection idle longer than this (seconds) is pinged before use.
PING_AFTER_IDLE = 2.0


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Ping a pooled connection before use only when it sat idle in the pool for
    :data:`PING_AFTER_IDLE` seconds or more (SQLAlchemy's ``pool_pre_ping`` pings at every
    checkout).

    With asyncpg a ping is three round trips (``BEGIN``, an empty statement, ``ROLLBACK``): a
    sync worker checks a connection out for every batch, and pinged about as often as it ran
    statements. A connection returned moments ago has just worked; the ones that go stale (a
    server restart, an idle timeout, a failover) sat idle, and those are still pinged. A failed
    ping raises ``DisconnectionError``, on which the pool discards the connection and checks
    out another (SQLAlchemy's documented pattern for custom pre-ping). A connection that breaks
    in use is invalidated by SQLAlchemy as before.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["multibackend_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("multibackend_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


def _setup_sqlite(engine: AsyncEngine, busy_timeout_ms: int, *, wal: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is
        # deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    event.listen(engine.sync_engine, "begin", _begin_by_option)
