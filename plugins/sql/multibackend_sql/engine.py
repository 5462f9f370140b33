"""Engine creation: async drivers, SQLite pragmas and transaction begin modes.

* ``sqlite://`` means aiosqlite and ``postgresql://`` means asyncpg, so plain URLs work.
* SQLite files get WAL (readers do not block the writer) and a busy timeout (a writer waits
  for a lock instead of failing at once). A file this creates is owner-only (0600), and so are
  its -wal/-shm files.
* pysqlite/aiosqlite's own transaction handling defers ``BEGIN`` and breaks SAVEPOINT, so we
  switch it off and emit ``BEGIN`` ourselves (SQLAlchemy's documented recipe). Connections from
  the write engine begin with ``BEGIN IMMEDIATE``: a write transaction that reads first (an
  update) then takes the write lock up front, waiting under the busy timeout, instead of failing
  with "database is locked" when it tries to upgrade a read lock.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from multibackend.errors import ConfigError
from multibackend.journal.engine import create_private_file

__all__ = ["WRITE_OPTION", "create_engines", "parse_url"]

#: Execution option marking connections that begin write transactions.
WRITE_OPTION = "multibackend_write"

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


def create_engines(url: URL, *, busy_timeout_ms: int) -> tuple[AsyncEngine, AsyncEngine]:
    """A read engine and a write engine sharing one pool (the write one begins IMMEDIATE on
    SQLite)."""
    if is_sqlite_file(url) and url.database and not url.database.startswith("file:"):
        # Owner-only, like the journal's file (it may share this database as an outbox).
        create_private_file(url.database)
    engine = create_async_engine(url)
    if url.get_backend_name() == "sqlite":
        _configure_sqlite(engine, wal=is_sqlite_file(url), busy_timeout_ms=busy_timeout_ms)
    return engine, engine.execution_options(**{WRITE_OPTION: True})


def _configure_sqlite(engine: AsyncEngine, *, wal: bool, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
