"""Journal writes in one round trip to aiosqlite's thread (SQLite only).

aiosqlite runs each sqlite3 call on the connection's own thread; every SQLAlchemy statement costs
three or four of those round trips (cursor, execute, fetch, close), each waking the event loop.
On the manager's write path the round trips, not SQLite, were most of a write's time: a create
through the transactional outbox made about 19 of them where a plain create makes 6.

This module runs the journal statements of a group commit — the cutover version read, the
intents, the id mappings of new streams and the fan-out upsert — as one function on that
thread, on the raw ``sqlite3`` connection of the transaction's ``AsyncConnection`` (the same
transaction: nothing else changes about commits or locks). The SQL texts are compiled once from
the very statements :class:`~multibackend.journal.store.JournalStore` runs (named parameters,
values bound the way SQLAlchemy binds them: JSON text, booleans as integers).

It uses aiosqlite's private ``Connection._execute`` (queue a call on the connection's thread),
so :func:`direct` checks for it and answers None when it is missing or the connection is not
aiosqlite's (PostgreSQL, another driver): callers then take the SQLAlchemy path, which stays
the reference. ``tests/journal/test_direct.py`` checks that both paths leave the same rows and
that the guard falls back. sqlite3 errors are raised as SQLAlchemy's ``DBAPIError`` subclasses,
like the statements they replace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs
from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.journal.schema import id_map, intents, meta
from multibackend.model import Stream, StreamDraft, StreamId, StreamPatch

__all__ = [
    "Direct",
    "DirectSQL",
    "DirectWrite",
    "DirectWrites",
    "direct",
    "direct_writes",
    "on_thread",
    "sql_texts",
    "sqlite_driver",
    "writes_unchanged",
]

T = TypeVar("T")

_NAMED = sqlite.dialect(paramstyle="named")

_QUEUE_KEYS = (
    "entity_type",
    "entity_key",
    "target",
    "op",
    "seq",
    "deleted",
    "snapshot",
    "status",
    "attempts",
    "next_attempt_at",
    "maybe_created",
    "enqueued_at",
    "updated_at",
)
_MAPPING_KEYS = ("entity_type", "entity_key", "backend", "native_id", "id_is_int", "created_at")
_INTENT_KEYS = (
    "id",
    "entity_type",
    "entity_key",
    "op",
    "backend",
    "native_id",
    "id_is_int",
    "payload",
    "owner",
    "created_at",
)


class DirectWrite(Protocol):
    """A primary write prepared on the event loop, run by calling it with the raw ``sqlite3``
    connection of the transaction, on that connection's thread: it answers the stream as the
    backend's method would (None for a delete) and raises what that method would raise
    (NotFound when no row matched, the backend's translation of a database error)."""

    def __call__(self, db: sqlite3.Connection) -> Stream | None: ...


class DirectWrites(Protocol):
    """An optional capability of a primary backend sharing the journal's SQLite database (the
    ``sql`` plugin's ``direct_writes()``): its writes as :class:`DirectWrite` calls, so that the
    outbox runs a group commit's primary statements and journal statements in one round trip.

    Each method takes the arguments of the backend method of the same name (``create``:
    ``create_stream``...). Preparing may raise what the backend method raises before it
    touches the database; nothing is written until the call runs.
    """

    def create(self, draft: StreamDraft) -> DirectWrite: ...

    def update(self, id: StreamId, patch: StreamPatch) -> DirectWrite: ...

    def set_pinned(self, id: StreamId, pinned: bool) -> DirectWrite: ...

    def delete(self, id: StreamId) -> DirectWrite: ...


#: The backend methods a :class:`DirectWrites` stands in for.
WRITE_METHODS = ("create_stream", "update_stream", "set_pinned", "delete_stream")


def direct_writes(backend: object) -> DirectWrites | None:
    """``backend``'s :class:`DirectWrites` when it offers them (a ``direct_writes()`` method
    answering not None), else None: the backend's own methods are used.

    Only the backend's own offer counts, and only while its write methods are its class's:
    a wrapper that delegates unknown attributes to the backend it wraps (``FaultyBackend``)
    or methods replaced on the instance (instrumentation, tests) must see every write.
    """
    offer = getattr(backend, "direct_writes", None)
    if not callable(offer) or getattr(offer, "__self__", None) is not backend:
        return None
    if not writes_unchanged(backend):
        return None
    writes: DirectWrites | None = offer()
    return writes


def writes_unchanged(backend: object) -> bool:
    """Whether none of ``backend``'s write methods is replaced on the instance."""
    own = getattr(backend, "__dict__", {})
    return not any(name in own for name in WRITE_METHODS)


@attrs.frozen
class DirectSQL:
    """SQL texts (named parameters) and the constant parameters of the upsert."""

    version: str
    upsert: str
    upsert_constants: Mapping[str, Any]
    new_mapping: str
    owner: str
    insert_intent: str
    delete_intent: str


def _compile(stmt: Any, keys: Sequence[str] | None = None) -> Any:
    if keys is None:
        return stmt.compile(dialect=_NAMED)
    return stmt.compile(dialect=_NAMED, column_keys=list(keys))


def sql_texts(upsert: Any, new_mapping: Any) -> DirectSQL:
    """Compile the store's SQLite statements (``upsert``: the fan-out upsert, ``new_mapping``:
    the insert of a new stream's mapping) and the few simple ones this module runs."""
    compiled_upsert = _compile(upsert, _QUEUE_KEYS)
    constants = {k: v for k, v in compiled_upsert.params.items() if k not in _QUEUE_KEYS}
    return DirectSQL(
        version=_compile(select(meta.c.value).where(meta.c.key == bindparam("key"))).string,
        upsert=compiled_upsert.string,
        upsert_constants=constants,
        new_mapping=_compile(new_mapping, _MAPPING_KEYS).string,
        owner=_compile(
            select(id_map.c.entity_key).where(
                id_map.c.entity_type == bindparam("entity_type"),
                id_map.c.backend == bindparam("backend"),
                id_map.c.native_id == bindparam("native_id"),
            )
        ).string,
        insert_intent=_compile(intents.insert(), _INTENT_KEYS).string,
        delete_intent=_compile(delete(intents).where(intents.c.id == bindparam("id"))).string,
    )


def _json(value: Any) -> str | None:
    # SQLAlchemy's JSON type on SQLite binds json.dumps(value), and None as SQL NULL.
    return None if value is None else json.dumps(value)


class Direct:
    """The raw connection of one SQLite transaction, and the journal work run on its thread."""

    def __init__(self, driver: Any, sql: DirectSQL) -> None:
        self._driver = driver
        self.sql = sql

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(raw connection)`` on the connection's thread (one round trip)."""
        return await on_thread(self._driver, fn)

    # --- the work ------------------------------------------------------------------------------

    def begin(self, db: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``: the transaction starts now, holding SQLite's write lock."""
        db.execute("BEGIN IMMEDIATE").close()

    def begin_and_read_version(self, db: sqlite3.Connection, key: str) -> str | None:
        self.begin(db)
        return self.read_version(db, key)

    def read_version(self, db: sqlite3.Connection, key: str) -> str | None:
        """The cutover version, read inside the write transaction: begun here (IMMEDIATE) if
        nothing began it yet — a journal sharing the sql plugin's engine after a flip has no
        BEGIN of its own, and a read before the first write would be outside the lock."""
        if not db.in_transaction:
            self.begin(db)
        row = db.execute(self.sql.version, {"key": key}).fetchone()
        return None if row is None else str(row[0])

    def insert_intents(self, db: sqlite3.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            db.executemany(
                self.sql.insert_intent,
                [{**row, "payload": _json(row["payload"])} for row in rows],
            )

    def delete_intents(self, db: sqlite3.Connection, ids: Sequence[int]) -> None:
        if ids:
            db.executemany(self.sql.delete_intent, [{"id": i} for i in ids])

    def record(
        self,
        db: sqlite3.Connection,
        mappings: Sequence[Mapping[str, Any]],
        fanouts: Sequence[tuple[int, dict[str, Any]]],
        keys: list[str],
        creates: Sequence[int],
    ) -> list[str]:
        """Map new ids and upsert fan-out rows, as ``JournalStore.map_new_ids`` and
        ``enqueue`` do. ``mappings[j]`` maps the new stream of write ``creates[j]``; each fan-out
        row belongs to write ``index``. Returns each write's entity key (a concurrent backfill
        may have mapped a new id first: its key wins, and the write's rows use it)."""
        keys = list(keys)
        if mappings:
            cursor = db.executemany(self.sql.new_mapping, mappings)
            natives = {m["native_id"] for m in mappings}
            if cursor.rowcount != len(mappings) or len(natives) != len(mappings):
                for j, m in zip(creates, mappings, strict=True):
                    row = db.execute(
                        self.sql.owner,
                        {
                            "entity_type": m["entity_type"],
                            "backend": m["backend"],
                            "native_id": m["native_id"],
                        },
                    ).fetchone()
                    if row is None:  # pragma: no cover - the conflicting row vanished
                        raise sqlite3.IntegrityError(
                            f"could not map {m['entity_type']} id {m['native_id']!r}"
                        )
                    keys[j] = str(row[0])
        if fanouts:
            constants = self.sql.upsert_constants
            db.executemany(
                self.sql.upsert,
                [
                    {
                        **constants,
                        **row,
                        "entity_key": keys[index],
                        "snapshot": _json(row["snapshot"]),
                    }
                    for index, row in fanouts
                ],
            )
        return keys


async def sqlite_driver(conn: AsyncConnection) -> Any | None:
    """The aiosqlite connection under ``conn`` when it has the private call :func:`on_thread`
    needs; None otherwise (another database or driver, a closed connection, an aiosqlite
    without it): callers then use SQLAlchemy."""
    if conn.dialect.name != "sqlite" or conn.dialect.driver != "aiosqlite":
        return None
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if not callable(getattr(driver, "_execute", None)):
        return None
    try:
        if not isinstance(driver._conn, sqlite3.Connection):
            return None
    except Exception:  # aiosqlite raises ValueError when the connection is closed
        return None
    kind = type(driver)
    works = _PROBED.get(kind)
    if works is None:
        # Once per driver class: the private call must also take (fn, *args) and run fn on
        # the connection's thread, as aiosqlite 0.20-0.22 do; another aiosqlite falls back.
        try:
            works = await driver._execute(_probe, driver._conn) == "ok"
        except Exception:
            works = False
        _PROBED[kind] = works
    return driver if works else None


#: Whether a driver class's private ``_execute`` answered the probe as expected.
_PROBED: dict[type, bool] = {}


def _noop() -> None:
    return None


def _probe(db: sqlite3.Connection) -> str:
    return "ok" if isinstance(db, sqlite3.Connection) else "no"


async def on_thread(driver: Any, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(raw sqlite3 connection)`` on the thread of ``driver`` (from
    :func:`sqlite_driver`) in one round trip; sqlite3 errors come back as SQLAlchemy's."""
    try:
        result: T = await driver._execute(fn, driver._conn)
    except asyncio.CancelledError:
        # fn runs on regardless (it is on the thread's queue): wait until it is done, by a
        # no-op queued behind it, before the cancellation goes on — whoever uses the
        # connection next (the pool's reset, which rolls back only an open transaction)
        # must see what fn did, not what it is about to do.
        with contextlib.suppress(Exception):
            await driver._execute(_noop)
        raise
    except sqlite3.Error as exc:
        raise DBAPIError.instance(
            "statements run on the driver's thread", None, exc, sqlite3.Error, hide_parameters=True
        ) from exc
    return result


async def direct(conn: AsyncConnection, sql: Callable[[], DirectSQL]) -> Direct | None:
    """The direct path for ``conn`` when :func:`sqlite_driver` finds one; None otherwise (use
    the SQLAlchemy path)."""
    driver = await sqlite_driver(conn)
    return None if driver is None else Direct(driver, sql())
