"""Creating SQLAlchemy async engines for the journal, with SQLite set up for concurrent use.

SQLite needs care when several connections (the app's manager, an embedded or external sync
worker) write to one file:

* WAL mode, so readers never block the writer, with ``synchronous=NORMAL`` (durable across
  application crashes; an OS crash may lose the last commits, as with any WAL database);
* a busy timeout, so a writer waits for the lock instead of failing at once;
* ``BEGIN IMMEDIATE`` for every transaction: a deferred transaction that reads and then writes
  can fail with SQLITE_BUSY without waiting when another connection wrote in between.

In-memory SQLite URLs get a single shared connection (StaticPool), so every user sees one
database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from multibackend.errors import ConfigError

__all__ = ["async_url", "create_engine", "is_memory_sqlite", "redact_url"]


def is_memory_sqlite(url: str) -> bool:
    """True for SQLite URLs that name no file (a private in-memory database)."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


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
        engine = create_async_engine(url, **kwargs)
        _setup_sqlite(engine, busy_timeout_ms, wal=not is_memory_sqlite(url))
        return engine
    if backend == "postgresql":
        return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    raise ConfigError(
        f"unsupported database {backend!r} (use sqlite+aiosqlite:// or postgresql+asyncpg://)",
        key="journal.url",
    )


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

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
