"""A group commit's whole transaction in one round trip to aiosqlite's thread (SQLite only).

:mod:`multibackend.journal.direct` put a flush's journal statements into one call on the
driver's thread, but the transaction around them still went through SQLAlchemy: a pool checkout,
``BEGIN IMMEDIATE`` as a statement (three round trips), the direct call, ``COMMIT``, and the
pool's rollback when the connection went back — about six thread hand-offs and 500 us of CPU per
flush, and on the intents path (an intent before the primary's call, a settle after it) a flush
carries only a few units, so that was most of a write's journal cost.

:class:`HeldWriter` holds one pooled connection of the journal's engine for a group committer
and runs a flush as one function on its thread: ``BEGIN IMMEDIATE``, the work, ``COMMIT`` (or
``ROLLBACK`` when anything raised). Nothing else changes about the transaction: the same
database file, the same connection settings (the engine's ``connect`` hook set the busy
timeout, WAL and ``synchronous``; another process's writer is waited for as before), the write
lock held from the start, and a caller answered only after ``COMMIT`` returned.

Lifecycle: the connection is checked out at the first flush and kept between flushes (outside
any transaction, so it holds no lock and does not hold back WAL checkpoints). After a failure
that may have left it unusable — the driver's thread gone, a ``ROLLBACK`` that failed or left a
transaction open, an error that is not sqlite3's — it is invalidated (the pool discards it) and
the next flush checks out a fresh one. :meth:`close` returns it; a flush after ``close`` finds
no writer and takes the SQLAlchemy path. The private-call guard is
:func:`~multibackend.journal.direct.sqlite_driver`'s: without it (another aiosqlite, another
driver or database, an in-memory database whose single connection everyone shares) the writer
answers None once and for all, and callers use the SQLAlchemy path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import StaticPool

from multibackend.journal.direct import on_thread, sqlite_driver

__all__ = ["HeldWriter", "Unusable"]


class Unusable(Exception):
    """Internal: the held connection may be broken (raised on the driver's thread)."""


class HeldWriter:
    """One held SQLite connection of ``engine`` that runs whole transactions on its thread."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None
        self._driver: Any | None = None
        # None: not tried yet; False: the direct path is not available (do not ask again).
        self._supported: bool | None = None
        if engine.dialect.name != "sqlite" or isinstance(engine.pool, StaticPool):
            self._supported = False
        self._closed = False
        self.reconnects = 0

    @property
    def available(self) -> bool:
        """False once the writer is closed or known not to work here."""
        return not self._closed and self._supported is not False

    async def _driver_or_none(self) -> Any | None:
        if not self.available:
            return None
        if self._driver is not None:
            return self._driver
        conn = await self.engine.connect()
        try:
            driver = await sqlite_driver(conn)
        except BaseException:
            await conn.close()
            raise
        if driver is None:
            self._supported = False
            await conn.close()
            return None
        self._supported = True
        self._conn, self._driver = conn, driver
        return driver

    async def transaction(self, work: Sequence[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """Run ``work`` (functions of the raw connection, in order) in one write transaction on
        the held connection's thread; their results once ``COMMIT`` returned. Raises
        :class:`LookupError` when the writer is not available (use the SQLAlchemy path; nothing
        ran), SQLAlchemy's ``DBAPIError`` for sqlite3 errors (the transaction rolled back)."""
        driver = await self._driver_or_none()
        if driver is None:
            raise LookupError("no held SQLite writer")
        try:
            return await on_thread(driver, lambda db: _transaction(db, work))
        except BaseException as exc:
            if _maybe_broken(exc):
                await self.discard()
            raise

    async def discard(self) -> None:
        """Drop the held connection (the pool discards it); the next flush takes a new one."""
        conn, self._conn, self._driver = self._conn, None, None
        if conn is None:
            return
        self.reconnects += 1
        try:
            await conn.invalidate()
        finally:
            await conn.close()

    async def close(self) -> None:
        """Return the held connection; later flushes take the SQLAlchemy path."""
        self._closed = True
        conn, self._conn, self._driver = self._conn, None, None
        if conn is not None:
            await conn.close()


def _transaction(
    db: sqlite3.Connection, work: Sequence[Callable[[sqlite3.Connection], Any]]
) -> Any:
    """On the driver's thread: BEGIN IMMEDIATE, ``work``, COMMIT; ROLLBACK on any error."""
    if db.in_transaction:  # pragma: no cover - a held connection is left outside transactions
        raise Unusable("the held connection is inside a transaction")
    db.execute("BEGIN IMMEDIATE").close()
    try:
        results = [fn(db) for fn in work]
        db.commit()
    except BaseException:
        try:
            db.rollback()
        except BaseException as exc:
            raise Unusable("ROLLBACK failed") from exc
        if db.in_transaction:  # pragma: no cover - rollback left it open
            raise Unusable("ROLLBACK left a transaction open") from None
        raise
    return results


def _maybe_broken(exc: BaseException) -> bool:
    """Whether the held connection may be unusable after ``exc``: anything but a sqlite3 error
    that the transaction rolled back cleanly (a constraint, a busy timeout, a trigger)."""
    if isinstance(exc, DBAPIError) and isinstance(exc.orig, sqlite3.Error):
        return isinstance(exc.orig, (sqlite3.InterfaceError, sqlite3.ProgrammingError))
    return True
