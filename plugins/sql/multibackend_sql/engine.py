"""Engine creation: async drivers, SQLite pragmas and transaction begin modes.

* ``sqlite://`` means aiosqlite and ``postgresql://`` means asyncpg, so plain URLs work.
* SQLite files get WAL (readers do not block the writer) and a busy timeout (a writer waits
  for a lock instead of failing at once).
* SQLite transactions: the sqlite3 module begins a transaction by itself before the first
  INSERT/UPDATE/DELETE of a connection; we make that ``BEGIN IMMEDIATE`` (isolation_level
  "IMMEDIATE"), so a write transaction takes the write lock up front and waits under the busy
  timeout instead of failing with "database is locked" when upgrading a read lock. Letting
  the driver begin costs nothing, where an explicit ``BEGIN`` costs aiosqlite a round trip to
  its thread on every write (a third of a single create's time). Plain reads run in autocommit
  (each statement sees a consistent snapshot). ``transaction()`` begins explicitly with
  ``BEGIN IMMEDIATE`` (see :func:`begin_sqlite_write`), so reads inside it belong to it.
  Every backend write is one statement (``INSERT/UPDATE/DELETE ... RETURNING``), so nothing
  relies on SAVEPOINT, which the sqlite3 module's implicit transactions break.
* A SQLite file this creates is owner-only (0600), and so are its -wal/-shm files.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from multibackend.errors import ConfigError
from multibackend.journal.direct import on_thread, sqlite_driver
from multibackend.journal.engine import create_private_file

__all__ = [
    "begin_sqlite_write",
    "commit_sqlite_raw",
    "create_engine",
    "is_sqlite_file",
    "parse_url",
]

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def parse_url(raw: str, key: str) -> URL:
    """The URL with its async driver; ConfigError (without echoing the URL) when malformed."""
    try:
        url = make_url(raw)
    except (sa.exc.ArgumentError, ValueError):
        raise ConfigError(
            "not a database URL (expected e.g. sqlite:///streams.db or "
            "postgresql+asyncpg://user@host/db)",
            key=key,
        ) from None
    if url.drivername in _ASYNC_DRIVERS:
        url = url.set(drivername=_ASYNC_DRIVERS[url.drivername])
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"unsupported database {url.get_backend_name()!r} (sqlite or postgresql)", key=key
        )
    return url


def is_sqlite_file(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


def create_engine(url: URL, *, busy_timeout_ms: int) -> AsyncEngine:
    """The engine for ``url``, with the SQLite settings described above."""
    if is_sqlite_file(url) and url.database and not url.database.startswith("file:"):
        # Owner-only, like the journal's file (it may share this database as an outbox).
        create_private_file(url.database)
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url)
    # The pool's reset is ours (see _configure_sqlite): a rollback only when one is open.
    engine = create_async_engine(url, pool_reset_on_return=None)
    _configure_sqlite(engine, wal=is_sqlite_file(url), busy_timeout_ms=busy_timeout_ms)
    return engine


def _configure_sqlite(engine: AsyncEngine, *, wal: bool, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()
        dbapi_connection.isolation_level = "IMMEDIATE"

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
        # The pool's default reset rolls back every connection it gets back: one more round
        # trip to aiosqlite's thread per transaction, for nothing after a commit. Roll back
        # only when SQLite says a transaction is open (or cannot say).
        if not reset_state.asyncio_safe or reset_state.transaction_was_reset:
            return
        driver = getattr(dbapi_connection, "driver_connection", None)
        try:
            open_ = bool(driver.in_transaction)  # type: ignore[union-attr]
        except Exception:  # not aiosqlite, or closed: roll back as the pool would
            open_ = True
        if open_:
            dbapi_connection.rollback()


async def begin_sqlite_write(conn: AsyncConnection) -> None:
    """Start the transaction of ``conn`` (SQLite) now, holding the write lock.

    With aiosqlite in one round trip to the driver's thread instead of the three a SQLAlchemy
    statement takes (:mod:`multibackend.journal.direct`; SQLAlchemy when not available).
    """
    driver = await sqlite_driver(conn)
    if driver is None:
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        await on_thread(driver, _begin_immediate)


def _begin_immediate(db: Any) -> None:
    db.execute("BEGIN IMMEDIATE").close()


async def commit_sqlite_raw(conn: AsyncConnection) -> None:
    """Commit the transaction open on ``conn``'s raw connection (begun there, through the
    direct path, without SQLAlchemy knowing); nothing when none is open."""
    driver = await sqlite_driver(conn)
    # Without the direct path nothing can have begun behind SQLAlchemy's back.
    if driver is not None and driver.in_transaction:
        await on_thread(driver, _commit)


def _commit(db: Any) -> None:
    db.commit()
