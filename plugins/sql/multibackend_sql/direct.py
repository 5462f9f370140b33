"""The ``sql`` backend's writes run on a raw ``sqlite3`` connection (SQLite through aiosqlite).

An optional capability for the sync journal's transactional outbox
(:class:`multibackend.journal.direct.DirectWrites`): the manager runs a group commit's primary
statements and its journal statements as one function on aiosqlite's thread, where each
SQLAlchemy statement would cost three or four round trips to that thread (cursor, execute,
fetch, close). :meth:`SqlBackend.direct_writes` answers None on PostgreSQL and other drivers.

Each write is prepared on the event loop exactly as the backend's own method prepares it (the
same statement objects, :meth:`SqlBackend._update_plan` and friends, the same timestamps) and
then run on the connection's thread by calling it with the raw connection. What runs there:

* the statement's SQL text, compiled once per statement (per key set for inserts) from the
  SQLAlchemy statement the backend executes, with named parameters;
* the parameters converted by the same bind processors SQLAlchemy applies for the engine's
  dialect (timestamps as text, booleans as integers), constants of the statement included;
* the returned row converted by the columns' result processors and read by the backend's codec.

So the rows written and the stream answered are the backend's own (tested against the
SQLAlchemy path, ``tests/test_direct.py``). Errors are the backend's: NotFound when no row
matched, and sqlite3 errors translated like the SQLAlchemy path translates them (``Conflict``,
``Unavailable``...).

The prepared call runs on another thread than the event loop: it only reads what preparing it
built, and the codec (immutable after ``open()``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from multibackend.backend import Capability
from multibackend.model import Stream, StreamDraft, StreamId, StreamPatch
from multibackend_sql.errors import translate

if TYPE_CHECKING:
    from multibackend_sql.backend import SqlBackend

__all__ = ["SqliteWrites"]

_NAMED = sqlite.dialect(paramstyle="named")

Processor = Callable[[Any], Any] | None


class _Statement:
    """One SQLAlchemy statement compiled for sqlite3 with named parameters, and how
    SQLAlchemy would bind its parameters and read its returned columns on ``dialect``."""

    def __init__(
        self,
        stmt: Any,
        dialect: Dialect,
        returning: tuple[Any, ...],
        keys: tuple[str, ...] | None = None,
    ) -> None:
        compiled = stmt.compile(dialect=_NAMED, column_keys=None if keys is None else list(keys))
        self.sql: str = compiled.string
        escaped = dict(compiled.escaped_bind_names or {})
        unescaped = {v: k for k, v in escaped.items()}
        constants: dict[str, Any] = {}
        params: list[tuple[str, str, Processor]] = []
        for name, value in compiled.params.items():
            bind = compiled.binds[unescaped.get(name, name)]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                params.append((bind.key, name, process))
            else:  # a value written into the statement (a literal): bound the same every time
                constants[name] = value if process is None else process(value)
        self.constants = constants
        self.params = tuple(params)
        self.results: tuple[Processor, ...] = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in returning
        )

    def run(self, db: sqlite3.Connection, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Execute with ``values`` (keyed as the statement's parameters); the first returned row
        (processed), or None when there is none."""
        bound = dict(self.constants)
        for key, name, process in self.params:
            value = values[key]
            bound[name] = value if process is None else process(value)
        cursor = db.execute(self.sql, bound)
        try:
            row = cursor.fetchone()
            # Step the statement to its end (RETURNING of one row: nothing more), as fetching
            # the whole result does in SQLAlchemy.
            cursor.fetchall()
        finally:
            cursor.close()
        if row is None:
            return None
        return tuple(
            value if process is None else process(value)
            for value, process in zip(row, self.results, strict=True)
        )


class _Prepared:
    """One prepared write: ``__call__(db)`` runs it (see :class:`SqliteWrites`)."""

    __slots__ = ("_answer", "_backend", "_id", "_statement", "_values")

    def __init__(
        self,
        backend: SqlBackend,
        statement: _Statement,
        values: Mapping[str, Any],
        id: StreamId | None,
        answer: bool,
    ) -> None:
        self._backend = backend
        self._statement = statement
        self._values = values
        self._id = id
        self._answer = answer

    def __call__(self, db: sqlite3.Connection) -> Stream | None:
        backend = self._backend
        try:
            row = self._statement.run(db, self._values)
        except sqlite3.Error as exc:
            wrapped = DBAPIError.instance(
                self._statement.sql,
                None,
                exc,
                sqlite3.Error,
                hide_parameters=True,
                connection_invalidated=False,
            )
            raise translate(wrapped, backend=backend.name, secrets=backend._secrets) from wrapped
        if row is None:
            if self._id is None:  # pragma: no cover - an insert returns its row
                raise backend._not_found("new stream")
            raise backend._not_found(self._id)
        if not self._answer:
            return None
        return backend._stream(row)


class SqliteWrites:
    """:class:`multibackend.journal.direct.DirectWrites` for a ``SqlBackend`` on SQLite.

    ``create``, ``update``, ``set_pinned`` and ``delete`` take the arguments of the backend's
    methods and answer a prepared call ``(sqlite3.Connection) -> Stream | None``; preparing
    raises what the backend's method raises before touching the database (NotFound for an id
    the id column cannot hold, Unsupported for pins without a pin column).
    """

    def __init__(self, backend: SqlBackend, dialect: Dialect) -> None:
        self._backend = backend
        self._dialect = dialect
        self._inserts: dict[tuple[str, ...], _Statement] = {}
        self._updates: dict[Any, _Statement] = {}
        self._get: _Statement | None = None
        self._delete: _Statement | None = None

    def create(self, draft: StreamDraft) -> _Prepared:
        backend = self._backend
        codec = backend._require()
        params = backend._insert_params(draft)
        keys = tuple(params)
        statement = self._inserts.get(keys)
        if statement is None:
            statement = _Statement(backend._insert, self._dialect, codec.columns, keys)
            if len(self._inserts) >= 256:
                self._inserts.clear()
            self._inserts[keys] = statement
        return _Prepared(backend, statement, params, None, True)

    def update(self, id: StreamId, patch: StreamPatch) -> _Prepared:
        backend = self._backend
        codec = backend._require()
        plan = backend._update_plan(id, patch)
        if plan is None:
            # Nothing stored changes: the backend answers the stored stream.
            if self._get is None:
                self._get = _Statement(backend._get, self._dialect, codec.columns)
            native = codec.native_id(id)
            if native is None:
                raise backend._not_found(id)
            return _Prepared(backend, self._get, {"_id": native}, id, True)
        stmt, params = plan
        statement = self._updates.get(stmt)
        if statement is None:
            statement = _Statement(stmt, self._dialect, codec.columns)
            if len(self._updates) >= 256:
                self._updates.clear()
            self._updates[stmt] = statement
        return _Prepared(backend, statement, params, id, True)

    def set_pinned(self, id: StreamId, pinned: bool) -> _Prepared:
        if Capability.PIN not in self._backend.capabilities:
            self._backend._unsupported(Capability.PIN)
        return self.update(id, StreamPatch(is_pinned=pinned))

    def delete(self, id: StreamId) -> _Prepared:
        backend = self._backend
        codec = backend._require()
        stmt, params = backend._delete_plan(id)
        if self._delete is None:
            self._delete = _Statement(stmt, self._dialect, (codec.id_column,))
        return _Prepared(backend, self._delete, params, id, False)
