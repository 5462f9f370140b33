"""The ``sql`` backend: streams in a SQL table (SQLite or PostgreSQL) through SQLAlchemy async Core.

Behaviour worth knowing (the protocol's contract is in :mod:`multibackend.backend`):

* **Mapping** — see :mod:`multibackend_sql.mapping`: two presets (``native``,
  ``streamsource-legacy``) and custom overrides, checked against the live table at ``open()``.
* **Writes** — creates set ``created_at`` (unless preserved) and ``updated_at``; updates write
  only the columns the patch gives, plus ``updated_at`` and the status side effects, in one
  ``UPDATE ... RETURNING``; legacy columns the mapping does not name (``embedLink``) are never
  touched. A patch that gives no stored field changes nothing (not even ``updated_at``).
* **Status side effects** (contract §7) are computed in the ``UPDATE`` itself from the stored
  status, so concurrent updates cannot both see the old status.
* **Lists** filter, sort and page in SQL. Without ``sort``: pinned first, newest first, then id.
  ``total_count`` comes from a ``COUNT(*)`` with the same filters, skipped when the page itself
  proves the total. Stored status values are compared exactly (NULL counts as unknown).
* **iter_streams** ignores ``sort`` and ``page``: it walks the rows matching the filters in
  ascending id order, by keyset pages of ``iter_page_size`` rows, each page its own short read,
  so memory stays flat and no connection is held while the caller works.
* **Delete** — ``hard`` deletes the row. ``soft`` sets the archive flag; archived rows are then
  gone as far as this backend's callers can tell: hidden from lists, ``iter_streams`` and
  ``export``, and get/update/pin/delete answer NotFound. With ``hard``, archived rows (written by
  another app) are listed like any other.
* **Owner** — the ``user_id`` filter compares the mapped ``user_id`` column; when the mapping
  has none (the legacy preset) no stream has an owner, so the filter matches nothing.
* **Transactions** — ``transaction()`` yields the ``AsyncConnection``; backend calls in the same
  task inside the block use it (a ContextVar), and nested ``transaction()`` calls join the outer
  one. Do not run concurrent calls (``gather``) inside one block: a connection does one thing at
  a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from multibackend.backend import (
    BaseBackend,
    BulkImportResult,
    BulkItemError,
    Capability,
    ExportResult,
    Health,
    status_side_effects,
)
from multibackend.errors import (
    BackendError,
    ConfigError,
    MultibackendError,
    NotFound,
)
from multibackend.model import (
    Kind,
    Page,
    Sort,
    Stream,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
    StreamStatus,
    utc_now,
)
from multibackend_sql.codec import Codec
from multibackend_sql.direct import SqliteWrites
from multibackend_sql.engine import (
    begin_sqlite_write,
    commit_sqlite_raw,
    create_engine,
    is_sqlite_file,
    parse_url,
)
from multibackend_sql.errors import translate
from multibackend_sql.mapping import TableMapping, build_table, check_against, resolve_mapping
from multibackend_sql.options import Options as SqlOptions
from multibackend_sql.pages import KeysetPages

__all__ = ["SqlBackend"]

_DB_ERRORS = (sa_exc.SQLAlchemyError, OSError)


class SqlBackend(BaseBackend):
    """Streams in a SQL table. See the module docstring for the behaviour."""

    Options = SqlOptions
    #: Rows per keyset page of ``iter_streams`` and ``export``.
    iter_page_size: ClassVar[int] = 2000

    def __init__(self, name: str, options: SqlOptions) -> None:
        super().__init__(name)
        where = f"backends.{name}"
        self._options = options
        self._url = parse_url(options.url, f"{where}.url")
        self._secrets = tuple(p for p in (self._url.password,) if p)
        if options.busy_timeout_ms < 0:
            raise ConfigError("must be >= 0", key=f"{where}.busy_timeout_ms")
        if options.bulk_batch_size < 1:
            raise ConfigError("must be >= 1", key=f"{where}.bulk_batch_size")
        self.mapping: TableMapping = resolve_mapping(options, where)
        self.fields = self.mapping.stored_fields
        capabilities = {
            Capability.BULK_IMPORT,
            Capability.EXPORT,
            Capability.TRANSACTIONS,
            Capability.HEALTH,
        }
        if self.mapping.has("is_pinned"):
            capabilities.add(Capability.PIN)
        self.capabilities = frozenset(capabilities)
        self._tx: ContextVar[AsyncConnection | None] = ContextVar(
            f"multibackend_sql_tx_{name}", default=None
        )
        self._engine: AsyncEngine | None = None
        self._codec: Codec | None = None
        self._direct: SqliteWrites | None = None

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def is_sqlite(self) -> bool:
        return self._url.get_backend_name() == "sqlite"

    async def open(self) -> None:
        """Connect, create the table when ``create_schema`` asks and it is missing, and check
        the mapping against the table (ConfigError naming the column and the key)."""
        if self._engine is not None:
            return
        self._check_sqlite_folder()
        engine = create_engine(self._url, busy_timeout_ms=self._options.busy_timeout_ms)
        try:
            with self._errors():
                async with engine.begin() as conn:
                    table = await conn.run_sync(self._prepare)
        except BaseException:
            await engine.dispose()
            raise
        self._codec = Codec(self.mapping, table, sqlite=self.is_sqlite)
        self._build_statements(self._codec)
        self._engine = engine

    def _check_sqlite_folder(self) -> None:
        # Caught here rather than from the driver: "unable to open database file" says less,
        # and a failed aiosqlite connect leaves a thread behind that races the event loop.
        if not is_sqlite_file(self._url):
            return
        folder = Path(self._url.database or "").expanduser().resolve().parent
        if not folder.is_dir():
            raise ConfigError(
                f"the SQLite file's directory {str(folder)!r} does not exist — create it "
                "or fix the path",
                key=f"backends.{self.name}.url",
            )

    def _prepare(self, conn: sa.Connection) -> sa.Table:
        mapping = self.mapping
        if not sa.inspect(conn).has_table(mapping.table):
            if not self._options.create_schema:
                check_against(mapping, None)
            # Just created from the mapping: it is the table, no need to reflect it back.
            created = build_table(mapping, sa.MetaData())
            created.create(conn)
            return created
        table = sa.Table(mapping.table, sa.MetaData(), autoload_with=conn)
        check_against(mapping, table)
        return table

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    def _build_statements(self, codec: Codec) -> None:
        table, id_col = codec.table, codec.id_column
        self._direct = None
        self._visible: tuple[sa.ColumnElement[bool], ...] = ()
        if self._options.delete == "soft":
            archived = table.c[self.mapping.columns["is_archived"]]
            self._visible = (sa.or_(archived == sa.false(), archived.is_(None)),)
        self._select = sa.select(*codec.columns)
        self._get = self._select.where(id_col == sa.bindparam("_id"), *self._visible)
        self._insert = sa.insert(table).returning(*codec.columns)
        self._updates: dict[tuple[tuple[str, ...], tuple[str, ...]], sa.Update] = {}
        self._delete: sa.Delete | sa.Update
        if self._options.delete == "soft":
            columns = self.mapping.columns
            values: dict[str, Any] = {columns["is_archived"]: True}
            if self.mapping.has("updated_at"):
                updated = table.c[columns["updated_at"]]
                values[updated.name] = sa.bindparam("_updated", type_=updated.type)
            self._delete = (
                sa.update(table)
                .where(id_col == sa.bindparam("_id"), *self._visible)
                .values(values)
                .returning(id_col)
            )
        else:
            self._delete = sa.delete(table).where(id_col == sa.bindparam("_id")).returning(id_col)

    def _require(self) -> Codec:
        if self._codec is None or self._engine is None:
            raise BackendError("not open: call open() first (or use async with)", backend=self.name)
        return self._codec

    # --- connections and errors -------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except MultibackendError:
            raise
        except _DB_ERRORS as exc:
            raise translate(exc, backend=self.name, secrets=self._secrets) from exc

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[AsyncConnection]:
        """The transaction's connection inside ``transaction()``, else a fresh one in its own
        transaction (committed when the block exits normally)."""
        current = self._tx.get()
        if current is not None:
            yield current
            return
        self._require()
        assert self._engine is not None
        async with self._engine.begin() as conn:
            yield conn

    @property
    def engine(self) -> AsyncEngine:
        """The backend's engine (open backends only).

        The sync journal uses it when it lives in the same database, so that a primary write
        and its journal rows commit in one transaction (the transactional outbox). On SQLite,
        writes take the lock when their first statement runs (pysqlite's IMMEDIATE mode).
        """
        self._require()
        assert self._engine is not None
        return self._engine

    def direct_writes(self) -> SqliteWrites | None:
        """This backend's writes in a form run on the raw ``sqlite3`` connection of a
        ``transaction()`` (SQLite through aiosqlite; None otherwise): an optional capability
        the sync journal's transactional outbox uses to run a write and its journal rows in
        one round trip to the driver's thread. See :mod:`multibackend_sql.direct`."""
        self._require()
        assert self._engine is not None
        if self._engine.dialect.name != "sqlite" or self._engine.dialect.driver != "aiosqlite":
            return None
        if self._direct is None:
            self._direct = SqliteWrites(self, self._engine.dialect)
        return self._direct

    def transaction(
        self, *, sqlite_begin: bool = True
    ) -> AbstractAsyncContextManager[AsyncConnection]:
        """An async context manager yielding the ``AsyncConnection`` of a new transaction.

        Backend calls made inside the block in the same task use it; the caller may execute
        its own statements on it. Commits when the block exits normally, rolls back when it
        raises. A nested ``transaction()`` joins the outer one.

        On SQLite the block begins with ``BEGIN IMMEDIATE`` (the write lock, so that reads in
        it see a state no other writer changes until it ends). ``sqlite_begin=False`` leaves
        the transaction to the caller, who must begin it (``BEGIN IMMEDIATE`` on the raw
        connection) first thing in the block — the sync journal runs it together with its own
        statements in one round trip to aiosqlite's thread. Statements run through the
        connection join that transaction and the block's exit commits it; a caller that ran
        everything on the raw connection may also commit there as its last act in the block
        (the exit then has nothing left to commit, and makes no round trip). Ignored on
        PostgreSQL.
        """
        return self._transaction(sqlite_begin)

    @asynccontextmanager
    async def _transaction(self, sqlite_begin: bool = True) -> AsyncIterator[AsyncConnection]:
        current = self._tx.get()
        if current is not None:
            yield current
            return
        self._require()
        assert self._engine is not None
        with self._errors():
            conn = await self._engine.connect()
        caller_begins = self.is_sqlite and not sqlite_begin
        try:
            with self._errors():
                if not caller_begins:
                    await conn.begin()
                if self.is_sqlite and sqlite_begin:
                    await begin_sqlite_write(conn)
            token = self._tx.set(conn)
            try:
                yield conn
            finally:
                self._tx.reset(token)
            with self._errors():
                if caller_begins and not conn.in_transaction():
                    # Nothing ran through SQLAlchemy: commit what the caller began on the raw
                    # connection, unless it committed it itself.
                    await commit_sqlite_raw(conn)
                else:
                    await conn.commit()
        finally:
            # Rolls back whatever was not committed (the block raised, or the commit failed).
            await conn.close()

    # --- reads ------------------------------------------------------------------------------

    async def get_stream(self, id: StreamId) -> Stream:
        codec = self._require()
        native = codec.native_id(id)
        if native is None:
            raise self._not_found(id)
        with self._errors():
            async with self._conn() as conn:
                row = (await conn.execute(self._get, {"_id": native})).first()
        if row is None:
            raise self._not_found(id)
        return self._stream(row)

    async def list_streams(self, query: StreamQuery) -> Page[Stream]:
        codec = self._require()
        where = self._filters(query)
        stmt = (
            self._select.where(*where)
            .order_by(*self._order(query.sort))
            .limit(query.per_page)
            .offset(query.offset)
        )
        with self._errors():
            async with self._conn() as conn:
                rows = (await conn.execute(stmt)).all()
                if (rows and len(rows) < query.per_page) or (not rows and query.offset == 0):
                    # The page ends inside the result: it tells the total by itself.
                    total = query.offset + len(rows)
                else:
                    count = sa.select(sa.func.count()).select_from(codec.table).where(*where)
                    total = int((await conn.execute(count)).scalar_one())
        return Page.build((self._stream(r) for r in rows), query, total)

    async def iter_streams(self, query: StreamQuery | None = None) -> AsyncIterator[Stream]:
        """Every stream matching the query's filters, in ascending id order (``sort`` and
        ``page`` are ignored), by keyset pages: constant memory, no connection held between
        pages."""
        codec = self._require()
        assert self._engine is not None
        where = self._filters(query or StreamQuery())
        size = self.iter_page_size
        base = self._select.where(*where).order_by(codec.id_column).limit(size)
        pages = KeysetPages(base, codec.id_column, self._engine.dialect)
        last: Any = None
        while True:
            raw = self._tx.get() is None
            with self._errors():
                async with self._conn() as conn:
                    rows = await pages.fetch(conn, last, raw=raw)
            read = codec.stream
            try:
                for row in rows:
                    yield read(row)
            except ValueError as exc:
                raise BackendError(f"unreadable stored value: {exc}", backend=self.name) from None
            if len(rows) < size:
                return
            last = rows[-1][0]

    async def export(self, query: StreamQuery | None = None) -> ExportResult:
        """Every stream matching the filters, in ascending id order."""
        exported_at = utc_now()
        streams = [s async for s in self.iter_streams(query)]
        return ExportResult(exported_at=exported_at, streams=tuple(streams))

    async def health(self) -> Health:
        """ok when the mapped table answers a one-row select; the failure otherwise."""
        codec = self._require()
        try:
            with self._errors():
                async with self._conn() as conn:
                    await conn.execute(sa.select(codec.id_column).limit(1))
        except BackendError as exc:
            return Health(ok=False, detail=exc.detail)
        return Health(
            ok=True, detail=f"{self._url.get_backend_name()}: table {self.mapping.table!r} answers"
        )

    # --- writes -----------------------------------------------------------------------------

    async def create_stream(self, draft: StreamDraft) -> Stream:
        self._require()
        params = self._insert_params(draft)
        with self._errors():
            async with self._conn() as conn:
                row = (await conn.execute(self._insert, params)).one()
        return self._stream(row)

    def _insert_params(self, draft: StreamDraft) -> dict[str, Any]:
        codec = self._require()
        mapping = self.mapping
        now = utc_now()
        given = {k: v for k, v in draft.given().items() if mapping.has(k)}
        values: dict[str, Any] = {
            "status": StreamStatus.UNKNOWN,
            "is_pinned": False,
            "kind": Kind.VIDEO,
            "is_archived": False,
        }
        values.update(given)
        values.update(status_side_effects(None, values["status"], given, now))
        if values.get("created_at") is None:
            values["created_at"] = now
        values["updated_at"] = now
        return codec.row_values(values)

    async def update_stream(self, id: StreamId, patch: StreamPatch) -> Stream:
        plan = self._update_plan(id, patch)
        if plan is None:
            return await self.get_stream(id)
        stmt, params = plan
        with self._errors():
            async with self._conn() as conn:
                row = (await conn.execute(stmt, params)).first()
        if row is None:
            raise self._not_found(id)
        return self._stream(row)

    def _update_plan(
        self, id: StreamId, patch: StreamPatch
    ) -> tuple[sa.Update, dict[str, Any]] | None:
        """The ``UPDATE ... RETURNING`` of ``update_stream`` and its parameters; None when the
        patch gives no stored field (nothing to change: the update answers the stored stream).
        Raises NotFound for an id the id column cannot hold.

        The statement depends only on which columns the patch sets (it is built once per such
        shape); the values, the id and the status side effects' timestamps are parameters.
        """
        codec = self._require()
        mapping = self.mapping
        given = {k: v for k, v in patch.given().items() if mapping.has(k)}
        if not given:
            return None
        native = codec.native_id(id)
        if native is None:
            raise self._not_found(id)
        now = utc_now()
        values = codec.row_values(given)
        stamps: list[str] = []
        params: dict[str, Any] = {"_id": native}
        if "status" in given and mapping.has("status"):
            fields = ["last_checked_at"]
            if given["status"] == StreamStatus.LIVE:
                fields.append("last_live_at")
            for field in fields:
                if mapping.has(field) and field not in given:
                    params[f"_stamp{len(stamps)}"] = codec.time(field, now)
                    stamps.append(mapping.columns[field])
            if stamps:
                params["_status"] = str(codec.value("status", given["status"])).lower()
        if mapping.has("updated_at"):
            values[mapping.columns["updated_at"]] = codec.time("updated_at", now)
        columns = tuple(values)
        params.update((f"_v{i}", values[c]) for i, c in enumerate(columns))
        return self._update_statement(columns, tuple(stamps)), params

    def _update_statement(self, columns: tuple[str, ...], stamps: tuple[str, ...]) -> sa.Update:
        """``UPDATE`` setting ``columns`` (parameters ``_v0``...) and, when the status changes,
        the ``stamps`` columns (``_stamp0``...) — computed in the statement from the stored
        status (parameter ``_status``, lower case), so that concurrent updates cannot both
        see the old status — for the row ``_id``, returning the stream's columns."""
        key = (columns, stamps)
        stmt = self._updates.get(key)
        if stmt is not None:
            return stmt
        codec = self._require()
        mapping, table = self.mapping, codec.table
        values: dict[str, Any] = {
            c: sa.bindparam(f"_v{i}", type_=table.c[c].type) for i, c in enumerate(columns)
        }
        if stamps:
            status_col = table.c[mapping.columns["status"]]
            was = sa.func.coalesce(
                sa.func.lower(status_col), mapping.values["status"]["unknown"].lower()
            )
            changed = was != sa.bindparam("_status")
            for i, name in enumerate(stamps):
                col = table.c[name]
                stamp = sa.bindparam(f"_stamp{i}", type_=col.type)
                values[name] = sa.case((changed, stamp), else_=col)
        stmt = (
            sa.update(table)
            .where(codec.id_column == sa.bindparam("_id"), *self._visible)
            .values(values)
            .returning(*codec.columns)
        )
        if len(self._updates) >= 256:  # patches setting ever new column sets: stay bounded
            self._updates.clear()
        self._updates[key] = stmt
        return stmt

    async def set_pinned(self, id: StreamId, pinned: bool) -> Stream:
        if Capability.PIN not in self.capabilities:
            self._unsupported(Capability.PIN)
        return await self.update_stream(id, StreamPatch(is_pinned=pinned))

    async def delete_stream(self, id: StreamId) -> None:
        """Delete the row (``delete = "hard"``) or set its archive flag (``"soft"``)."""
        stmt, params = self._delete_plan(id)
        with self._errors():
            async with self._conn() as conn:
                row = (await conn.execute(stmt, params)).first()
        if row is None:
            raise self._not_found(id)

    def _delete_plan(self, id: StreamId) -> tuple[sa.Delete | sa.Update, dict[str, Any]]:
        """The statement of ``delete_stream`` (returning the id: no row means not found) and
        its parameters. Raises NotFound for an id the id column cannot hold."""
        codec = self._require()
        native = codec.native_id(id)
        if native is None:
            raise self._not_found(id)
        params: dict[str, Any] = {"_id": native}
        if self._options.delete == "soft" and self.mapping.has("updated_at"):
            params["_updated"] = codec.time("updated_at", utc_now())
        return self._delete, params

    async def bulk_import(self, drafts: Sequence[StreamDraft]) -> BulkImportResult:
        """Insert ``drafts`` in batches of ``bulk_batch_size`` rows, one transaction a batch
        (or the surrounding ``transaction()``). Items are independent: when a batch fails on an
        item's data, its items are retried one by one and each failure is reported at its index.
        A transient failure (``Unavailable``) before anything was imported is raised; after that,
        the items not imported are reported as failed with the reason. New ids are reported.
        Inside ``transaction()`` there is no per-item recovery: any failure is raised, and the
        caller's transaction should roll back.
        """
        self._require()
        ids: list[StreamId | None] = [None] * len(drafts)
        errors: list[BulkItemError] = []
        size = self._options.bulk_batch_size
        for start in range(0, len(drafts), size):
            indexes = list(range(start, min(start + size, len(drafts))))
            try:
                await self._insert_batch(drafts, indexes, ids)
                continue
            except BackendError as exc:
                if self._tx.get() is not None:
                    # Inside a caller's transaction a failed statement may have poisoned it
                    # (PostgreSQL): the caller must roll back, so the failure is raised as is.
                    raise
                if exc.retryable:
                    if not any(i is not None for i in ids):
                        raise
                    rest = range(start, len(drafts))
                    errors.extend(BulkItemError(index=i, messages=(exc.detail,)) for i in rest)
                    break
            for index in indexes:
                try:
                    await self._insert_batch(drafts, [index], ids)
                except BackendError as exc:
                    if exc.retryable:
                        raise
                    errors.append(BulkItemError(index=index, messages=(exc.detail,)))
        imported = sum(1 for i in ids if i is not None)
        return BulkImportResult(
            imported=imported, total=len(drafts), errors=tuple(errors), ids=tuple(ids)
        )

    async def _insert_batch(
        self, drafts: Sequence[StreamDraft], indexes: list[int], ids: list[StreamId | None]
    ) -> None:
        codec = self._require()
        # One executemany needs one key set: group the batch's rows by the columns they give.
        groups: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = {}
        for index in indexes:
            params = self._insert_params(drafts[index])
            groups.setdefault(tuple(params), []).append((index, params))
        stmt = sa.insert(codec.table).returning(codec.id_column, sort_by_parameter_order=True)
        results: list[tuple[int, Any]] = []
        with self._errors():
            async with self._conn() as conn:
                for rows in groups.values():
                    result = await conn.execute(stmt, [params for _, params in rows])
                    results.extend(
                        (index, new_id)
                        for (index, _), new_id in zip(rows, result.scalars().all(), strict=True)
                    )
        for index, new_id in results:
            ids[index] = new_id

    # --- query building ---------------------------------------------------------------------

    def _filters(self, query: StreamQuery) -> list[sa.ColumnElement[bool]]:
        codec = self._require()
        mapping, table = self.mapping, codec.table
        where: list[sa.ColumnElement[bool]] = list(self._visible)
        status_col = table.c[mapping.columns["status"]] if mapping.has("status") else None
        for wanted, negate in ((query.status, False), (query.not_status, True)):
            if wanted is None:
                continue
            if status_col is None:
                # Every stream reads as unknown.
                matches = wanted == StreamStatus.UNKNOWN
                where.append(sa.true() if matches != negate else sa.false())
                continue
            cond = status_col == codec.value("status", wanted)
            if wanted == StreamStatus.UNKNOWN:
                cond = sa.or_(cond, status_col.is_(None))
            if negate:
                cond = sa.not_(cond)
                if wanted != StreamStatus.UNKNOWN:
                    cond = sa.or_(cond, status_col.is_(None))
            where.append(cond)
        if query.is_pinned is not None:
            if mapping.has("is_pinned"):
                col = table.c[mapping.columns["is_pinned"]]
                if query.is_pinned:
                    where.append(col == sa.true())
                else:
                    where.append(sa.or_(col == sa.false(), col.is_(None)))
            elif query.is_pinned:
                where.append(sa.false())
        if query.user_id is not None:
            owner = codec.owner_value(query.user_id) if mapping.has("user_id") else None
            if owner is None:
                where.append(sa.false())
            else:
                where.append(table.c[mapping.columns["user_id"]] == owner)
        return where

    def _order(self, sort: Sort | None) -> list[sa.ColumnElement[Any]]:
        codec = self._require()
        mapping, table, id_col = self.mapping, codec.table, codec.id_column

        def column(field: str) -> sa.Column[Any] | None:
            return table.c[mapping.columns[field]] if mapping.has(field) else None

        source, created, pinned = column("source"), column("created_at"), column("is_pinned")
        order: list[sa.ColumnElement[Any]] = []
        if sort is None:
            if pinned is not None:
                order.append(sa.func.coalesce(pinned, sa.false()).desc())
            if created is not None:
                order.append(created.desc())
            order.append(id_col.desc())
        elif sort in (Sort.NAME, Sort.CREATED):
            # PostgreSQL's own NULL placement, spelled out so SQLite orders the same way.
            col = source if sort == Sort.NAME else created
            if col is not None:
                order.append(col.asc().nulls_last())
            order.append(id_col.asc())
        else:
            col = source if sort == Sort.NAME_DESC else created
            if col is not None:
                order.append(col.desc().nulls_first())
            order.append(id_col.desc())
        return order

    def _stream(self, row: Any) -> Stream:
        try:
            return self._require().stream(row)
        except ValueError as exc:
            raise BackendError(f"unreadable stored value: {exc}", backend=self.name) from None

    def _not_found(self, id: StreamId) -> NotFound:
        return NotFound(f"stream {id!r} not found", backend=self.name, id=id)
