"""The journal store: durable fan-out state, leases, settlement, the id map and intents.

All methods that change state either take an ``AsyncConnection`` (so the caller can put them in
a larger transaction — the primary write's, for the transactional outbox) or open their own
transaction. Times are epoch seconds from the store's ``clock`` (injectable for tests).

The queue semantics are described in :mod:`multibackend.journal.schema`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
from sqlalchemy import (
    and_,
    any_,
    bindparam,
    case,
    delete,
    event,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from multibackend.errors import Conflict, MultibackendError
from multibackend.journal import drain_pg, drain_sql
from multibackend.journal.direct import DirectSQL, sql_texts
from multibackend.journal.engine import create_engine, redact_url, writer
from multibackend.journal.schema import (
    SCHEMA_VERSION,
    id_map,
    intents,
    meta,
    metadata,
    queue,
    targets,
)
from multibackend.journal.snapshot import Snapshot
from multibackend.model import StreamId

__all__ = [
    "Done",
    "FanOut",
    "Intent",
    "JournalError",
    "JournalStore",
    "Outcome",
    "Park",
    "QueueRow",
    "Reschedule",
    "TargetStatus",
    "decode_id",
    "decode_json",
    "encode_id",
]

Op = Literal["create", "update", "delete"]

#: Rows per statement when settling by id lists (well under SQLite's 32,766 parameters).
_CHUNK = 2000

log = logging.getLogger("multibackend.journal")


class JournalError(MultibackendError):
    """The journal database is unusable (wrong schema version, unreachable)."""


def encode_id(native_id: StreamId) -> tuple[str, bool]:
    """A native id as stored in the id map: (text, is_int)."""
    return str(native_id), isinstance(native_id, int) and not isinstance(native_id, bool)


def decode_id(text: str, is_int: bool | None) -> StreamId:
    """The native id back from its stored form."""
    return int(text) if is_int else text


@attrs.frozen(kw_only=True)
class FanOut:
    """Work for one target: bring ``entity_key`` to ``snapshot`` there, or delete it."""

    entity_type: str
    entity_key: str
    target: str
    op: Op
    snapshot: Snapshot | None = None


def _snapshot_key(value: Snapshot | str | None) -> Any:
    return decode_json(value)


@attrs.frozen(kw_only=True)
class QueueRow:
    """A row of ``mb_queue`` as claimed by a worker (or listed by an operator).

    ``snapshot`` may be given as the stored JSON text: :attr:`snapshot` decodes it on access.
    """

    id: int
    entity_type: str
    entity_key: str
    target: str
    op: str
    seq: int
    deleted: bool
    # Claimed rows keep the text and decode it when applied, into a dict the apply drops:
    # decoded at the claim, a batch's snapshots (a dict and a list per field, some 3,400
    # objects) lived through the whole batch, and the garbage collector's passes over them
    # (and their promotion to older generations, each full pass walking the whole heap) cost
    # about a third of the worker's CPU per entry.
    _snapshot: Snapshot | str | None = attrs.field(eq=_snapshot_key)
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    lease_owner: str | None
    lease_until: float | None
    maybe_created: bool
    enqueued_at: float
    updated_at: float
    #: Claimed from a worker whose lease had expired (it died mid-batch).
    taken_over: bool = False

    @property
    def snapshot(self) -> Snapshot | None:
        """The desired state on the target (None for a row that never had one). Decoded from
        the stored text on each access when the row holds text: keep the result while using
        it rather than reading the property again."""
        decoded: Snapshot | None = decode_json(self._snapshot)
        return decoded


@attrs.frozen(kw_only=True)
class Done:
    """The row's state reached the target. ``mapped`` records the target's native id (after a
    create); ``unmapped`` removes the mapping (after a delete)."""

    row: QueueRow
    mapped: StreamId | None = None
    unmapped: bool = False


@attrs.frozen(kw_only=True)
class Reschedule:
    """Try again at ``at``. ``count_attempt`` is False for rate limits (they spend no attempt).
    ``maybe_created`` marks a create whose outcome is unknown."""

    row: QueueRow
    at: float
    error: str
    count_attempt: bool = True
    maybe_created: bool = False


@attrs.frozen(kw_only=True)
class Park:
    """Stop trying: a permanent error or exhausted attempts. An operator retries or drops it;
    a newer write to the entity retries it automatically."""

    row: QueueRow
    error: str


Outcome = Done | Reschedule | Park


@attrs.frozen(kw_only=True)
class TargetStatus:
    """Fan-out state of one target, for ``sync_status()`` and ``multibackend sync status``."""

    target: str
    pending: int = 0
    leased: int = 0
    parked: int = 0
    oldest_pending_age: float | None = None
    paused_until: float | None = None
    pause_reason: str | None = None
    consecutive_failures: int = 0

    @property
    def outstanding(self) -> int:
        """Rows not yet applied (pending or in flight); parked rows wait for an operator."""
        return self.pending + self.leased


@attrs.frozen(kw_only=True)
class Intent:
    """A write to a non-transactional primary that was started and not settled."""

    id: int
    entity_type: str
    entity_key: str
    op: str
    backend: str
    native_id: StreamId | None
    payload: dict[str, Any] | None
    owner: str
    created_at: float


#: A target's state: paused until (epoch seconds or None), the pause's reason, consecutive
#: failures.
TargetState = tuple[float | None, str | None, int]
#: What a worker's claim of a batch answers: every target's state, the leased rows, and the
#: claimed entities' native ids on their targets, keyed by (entity type, entity key, target).
ClaimedBatch = tuple[dict[str, TargetState], list[QueueRow], dict[tuple[str, str, str], StreamId]]


class JournalStore:
    """Access to the journal tables on one database.

    ``url`` names the database; alternatively pass an existing ``engine`` (the sql backend's, for
    the transactional outbox) which the store then does not dispose of.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (url is None) == (engine is None):
            raise ValueError("give exactly one of url or engine")
        self._url = url
        self._engine = engine
        self._owns_engine = engine is None
        self._writer: AsyncEngine | None = None
        self._upsert: Any = None
        self._new_mapping: Any = None
        self._direct_sql: DirectSQL | None = None
        # Drain-side statements built once per store (their compiled forms are cached).
        self._statements: dict[str, Any] = {}
        #: On SQLite, the worker's claims and settles run as one transaction each in
        #: aiosqlite's thread (:mod:`multibackend.journal.drain_sql`); on PostgreSQL a
        #: worker's claim and step are fixed SQL (:mod:`~multibackend.journal.drain_pg`).
        #: False runs the Core statements instead (the tests compare both).
        self.driver_sql = True
        #: On PostgreSQL, a worker's step (settle, target states, claim) is one call of a
        #: server-side function (:func:`drain_pg.step`) when it could be created.
        # PostgreSQL with the step function installed: the engine its calls run on.
        self._autocommit: AsyncEngine | None = None
        self.clock = clock

    def __repr__(self) -> str:
        where = redact_url(self._url) if self._url else "shared engine"
        return f"<JournalStore {where}>"

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise JournalError("the journal is not open")
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def insert(self, table: Any) -> Any:
        """``INSERT`` into ``table`` in this journal's dialect (SQLite or PostgreSQL), with its
        ``ON CONFLICT`` clauses (``on_conflict_do_nothing``, ``on_conflict_do_update``)."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def _one_of(self, column: Any, values: Sequence[Any]) -> Any:
        """``column IN values``; on PostgreSQL ``column = ANY(array)``, one parameter.

        With asyncpg an IN list of 200 parameters made a 1 ms look-up take 20-30 ms (a new
        statement to prepare and plan for every list length); the array is one typed parameter.
        """
        if self.dialect == "postgresql":
            return column == any_(literal(list(values), postgresql.ARRAY(column.type)))
        return column.in_(list(values))

    async def open(self) -> None:
        """Connect, create missing tables, and check the schema version."""
        if self._engine is None:
            assert self._url is not None
            self._engine = create_engine(self._url)
            if self._engine.dialect.name == "postgresql":
                _custom_plans(self._engine)
        self._writer = writer(self._engine)
        async with self.begin() as conn:
            await conn.run_sync(metadata.create_all, checkfirst=True)
            found = (
                await conn.execute(select(meta.c.value).where(meta.c.key == "schema_version"))
            ).scalar()
            if found is None:
                await conn.execute(
                    meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                )
            elif int(found) > SCHEMA_VERSION:
                raise JournalError(
                    f"journal schema version {found} is newer than this multibackend supports "
                    f"({SCHEMA_VERSION}); upgrade multibackend"
                )
        if self.dialect == "postgresql" and await drain_pg.install(self._writer):
            # One statement, its own transaction: no BEGIN and COMMIT round trips.
            self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")

    async def close(self) -> None:
        if self._engine is not None and self._owns_engine:
            await self._engine.dispose()
            self._engine = None
            self._writer = None
            self._autocommit = None

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction on the journal database (commit on success, rollback on error).

        On SQLite it holds the write lock from its start; read-only work uses
        ``engine.connect()``, which never waits for a writer.
        """
        engine = self._writer if self._writer is not None else self.engine
        async with engine.begin() as conn:
            yield conn

    # --- writing fan-out work --------------------------------------------------------------

    async def enqueue(self, conn: AsyncConnection, items: Sequence[FanOut]) -> None:
        """Record fan-out work in ``conn``'s transaction, merging into existing rows."""
        if not items:
            return
        rows = self.fanout_rows(items, self.clock())
        if self._upsert is None:
            # Built once: constructing it costs more than running it (about 1 ms a write).
            self._upsert = self._upsert_statement()
        await conn.execute(self._upsert, rows)

    @staticmethod
    def fanout_rows(items: Sequence[FanOut], now: float) -> list[dict[str, Any]]:
        """The parameters of :meth:`enqueue`'s upsert for ``items`` (one dict per item)."""
        return [
            {
                "entity_type": it.entity_type,
                "entity_key": it.entity_key,
                "target": it.target,
                "op": it.op,
                "seq": 1,
                "deleted": it.op == "delete",
                "snapshot": None if it.op == "delete" else (it.snapshot or {}),
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "maybe_created": False,
                "enqueued_at": now,
                "updated_at": now,
            }
            for it in items
        ]

    def _upsert_statement(self) -> Any:
        dialect = self.dialect
        ins: Any = self.insert(queue)
        ex = ins.excluded
        if dialect == "postgresql":
            merged: Any = func.coalesce(queue.c.snapshot, literal({}, queue.c.snapshot.type)).op(
                "||"
            )(ex.snapshot)
        else:
            merged = func.json_patch(func.coalesce(queue.c.snapshot, "{}"), ex.snapshot)
        parked = queue.c.status == "parked"
        return ins.on_conflict_do_update(
            index_elements=[queue.c.entity_type, queue.c.entity_key, queue.c.target],
            set_={
                "op": ex.op,
                "seq": queue.c.seq + 1,
                "deleted": ex.deleted,
                # A delete keeps the last snapshot: if a create of the entity may have reached
                # the target unrecorded, the worker needs its natural key to find and delete it.
                "snapshot": case((ex.deleted, queue.c.snapshot), else_=merged),
                # A leased row stays leased: its worker sees the new seq when it settles.
                "status": case((queue.c.status == "leased", "leased"), else_="pending"),
                # A newer write gives a parked row a fresh start.
                "attempts": case((parked, 0), else_=queue.c.attempts),
                "next_attempt_at": case(
                    (parked, ex.next_attempt_at), else_=queue.c.next_attempt_at
                ),
                "updated_at": ex.updated_at,
            },
        )

    # --- the id map -------------------------------------------------------------------------

    async def map_id(
        self,
        conn: AsyncConnection,
        entity_type: str,
        entity_key: str,
        backend: str,
        native_id: StreamId,
    ) -> None:
        """Record that ``entity_key`` is ``native_id`` in ``backend`` (replacing an old mapping).

        Raises Conflict when that native id already belongs to another entity.
        """
        text, is_int = encode_id(native_id)
        ins: Any = self.insert(id_map)
        stmt = ins.values(
            entity_type=entity_type,
            entity_key=entity_key,
            backend=backend,
            native_id=text,
            id_is_int=is_int,
            created_at=self.clock(),
        ).on_conflict_do_update(
            index_elements=[id_map.c.entity_type, id_map.c.entity_key, id_map.c.backend],
            set_={"native_id": text, "id_is_int": is_int},
        )
        try:
            async with conn.begin_nested():
                await conn.execute(stmt)
        except IntegrityError:
            raise Conflict(
                f"{entity_type} id {native_id!r} is already mapped to another entity",
                backend=backend,
            ) from None

    async def map_new_id(
        self,
        conn: AsyncConnection,
        entity_type: str,
        entity_key: str,
        backend: str,
        native_id: StreamId,
    ) -> str:
        """Map a native id just created for ``entity_key`` (a fresh key); return the key that
        owns the id: ``entity_key``, or the key another writer (a backfill) mapped it to first.

        One statement, no savepoint: the insert skips a native id that is already mapped.
        """
        if self._new_mapping is None:
            self._new_mapping = self._new_mapping_statement()
        text, is_int = encode_id(native_id)
        result = await conn.execute(
            self._new_mapping,
            {
                "entity_type": entity_type,
                "entity_key": entity_key,
                "backend": backend,
                "native_id": text,
                "id_is_int": is_int,
                "created_at": self.clock(),
            },
        )
        if result.rowcount:
            return entity_key
        owner = await self.entity_key_of(entity_type, backend, native_id, conn)
        if owner is None:  # pragma: no cover - the conflicting row vanished mid-transaction
            raise Conflict(f"could not map {entity_type} id {native_id!r}", backend=backend)
        return owner

    def _new_mapping_statement(self) -> Any:
        ins: Any = self.insert(id_map)
        return ins.on_conflict_do_nothing(
            index_elements=[id_map.c.entity_type, id_map.c.backend, id_map.c.native_id]
        )

    def direct_sql(self) -> DirectSQL:
        """The SQL texts of :mod:`multibackend.journal.direct` for this store (SQLite), built
        from the statements above once."""
        if self._direct_sql is None:
            if self._upsert is None:
                self._upsert = self._upsert_statement()
            if self._new_mapping is None:
                self._new_mapping = self._new_mapping_statement()
            self._direct_sql = sql_texts(self._upsert, self._new_mapping)
        return self._direct_sql

    async def map_new_ids(
        self,
        conn: AsyncConnection,
        entity_type: str,
        backend: str,
        pairs: Sequence[tuple[str, StreamId]],
    ) -> list[str]:
        """:meth:`map_new_id` for several (entity key, native id) pairs with two statements:
        one ``executemany`` insert that skips native ids already mapped, then one look-up of
        the owners. Returns the owning key per pair, in order."""
        if len(pairs) == 1:
            return [await self.map_new_id(conn, entity_type, pairs[0][0], backend, pairs[0][1])]
        if not pairs:
            return []
        if self._new_mapping is None:
            self._new_mapping = self._new_mapping_statement()
        now = self.clock()
        texts = [encode_id(native_id) for _, native_id in pairs]
        inserted = await conn.execute(
            self._new_mapping,
            [
                {
                    "entity_type": entity_type,
                    "entity_key": key,
                    "backend": backend,
                    "native_id": text,
                    "id_is_int": is_int,
                    "created_at": now,
                }
                for (key, _), (text, is_int) in zip(pairs, texts, strict=True)
            ],
        )
        if inserted.rowcount == len(pairs) and len({t for t, _ in texts}) == len(pairs):
            # Every row went in (the drivers sum an executemany's row counts): no id was
            # mapped before, each pair's own key owns it. Skips the look-up below.
            return [key for key, _ in pairs]
        owners: dict[str, str] = {}
        wanted = sorted({text for text, _ in texts})
        for start in range(0, len(wanted), 500):
            rows = await conn.execute(
                select(id_map.c.native_id, id_map.c.entity_key).where(
                    id_map.c.entity_type == entity_type,
                    id_map.c.backend == backend,
                    id_map.c.native_id.in_(wanted[start : start + 500]),
                )
            )
            owners.update((str(n), str(k)) for n, k in rows)
        out = []
        for (_, native_id), (text, _) in zip(pairs, texts, strict=True):
            owner = owners.get(text)
            if owner is None:  # pragma: no cover - the conflicting row vanished mid-transaction
                raise Conflict(f"could not map {entity_type} id {native_id!r}", backend=backend)
            out.append(owner)
        return out

    async def unmap_id(
        self, conn: AsyncConnection, entity_type: str, entity_key: str, backend: str
    ) -> None:
        await conn.execute(
            delete(id_map).where(
                id_map.c.entity_type == entity_type,
                id_map.c.entity_key == entity_key,
                id_map.c.backend == backend,
            )
        )

    async def entity_key_of(
        self,
        entity_type: str,
        backend: str,
        native_id: StreamId,
        conn: AsyncConnection | None = None,
    ) -> str | None:
        """The entity key that ``native_id`` in ``backend`` belongs to, if mapped."""
        stmt = select(id_map.c.entity_key).where(
            id_map.c.entity_type == entity_type,
            id_map.c.backend == backend,
            id_map.c.native_id == encode_id(native_id)[0],
        )
        key: Any = await self._scalar(stmt, conn)
        return None if key is None else str(key)

    async def entity_keys_of(
        self, entity_type: str, backend: str, native_ids: Iterable[StreamId]
    ) -> dict[str, str]:
        """Entity keys of many native ids of ``backend`` (as text keys; unmapped ids omitted)."""
        texts = [encode_id(i)[0] for i in native_ids]
        if not texts:
            return {}
        stmt = select(id_map.c.native_id, id_map.c.entity_key).where(
            id_map.c.entity_type == entity_type,
            id_map.c.backend == backend,
            self._one_of(id_map.c.native_id, texts),
        )
        async with self.engine.connect() as conn:
            return {r[0]: r[1] for r in (await conn.execute(stmt)).all()}

    async def native_id_of(
        self,
        entity_type: str,
        entity_key: str,
        backend: str,
        conn: AsyncConnection | None = None,
    ) -> StreamId | None:
        """The native id of ``entity_key`` in ``backend``, if mapped."""
        stmt = select(id_map.c.native_id, id_map.c.id_is_int).where(
            id_map.c.entity_type == entity_type,
            id_map.c.entity_key == entity_key,
            id_map.c.backend == backend,
        )
        row = await self._first(stmt, conn)
        return None if row is None else decode_id(row[0], row[1])

    async def native_ids_of(
        self, entity_type: str, entity_keys: Iterable[str], backend: str
    ) -> dict[str, StreamId]:
        """Native ids in ``backend`` for many entity keys at once (missing keys omitted)."""
        keys = list(entity_keys)
        if not keys:
            return {}
        stmt = select(id_map.c.entity_key, id_map.c.native_id, id_map.c.id_is_int).where(
            id_map.c.entity_type == entity_type,
            id_map.c.backend == backend,
            self._one_of(id_map.c.entity_key, keys),
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {r[0]: decode_id(r[1], r[2]) for r in rows}

    async def translate_ids(
        self, entity_type: str, from_backend: str, native_ids: Iterable[StreamId], to_backend: str
    ) -> dict[str, StreamId]:
        """Map native ids of ``from_backend`` (as text keys) to ids in ``to_backend``."""
        texts = [encode_id(i)[0] for i in native_ids]
        if not texts:
            return {}
        src = id_map.alias("src")
        dst = id_map.alias("dst")
        stmt = (
            select(src.c.native_id, dst.c.native_id, dst.c.id_is_int)
            .select_from(
                src.join(
                    dst,
                    and_(
                        dst.c.entity_type == src.c.entity_type,
                        dst.c.entity_key == src.c.entity_key,
                        dst.c.backend == to_backend,
                    ),
                )
            )
            .where(
                src.c.entity_type == entity_type,
                src.c.backend == from_backend,
                src.c.native_id.in_(texts),
            )
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {r[0]: decode_id(r[1], r[2]) for r in rows}

    async def mapped_native_ids(self, entity_type: str, backend: str) -> set[str]:
        """Every native id (as text) mapped in ``backend``."""
        stmt = select(id_map.c.native_id).where(
            id_map.c.entity_type == entity_type, id_map.c.backend == backend
        )
        async with self.engine.connect() as conn:
            return {r[0] for r in (await conn.execute(stmt)).all()}

    # --- claiming and settling ----------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        targets_: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> list[QueueRow]:
        """Lease up to ``limit`` due rows for ``targets_`` (oldest due first).

        Due: pending with ``next_attempt_at`` reached, or leased by a worker whose lease
        expired (it died). A row taken over from a dead worker is marked ``maybe_created``: its
        create may have reached the target before the crash. On PostgreSQL concurrent workers
        skip each other's rows (``FOR UPDATE SKIP LOCKED``); on SQLite the write lock serializes
        claims.
        """
        if not targets_ or limit <= 0:
            return []
        now = self.clock()
        ran, result = await self._on_driver(
            drain_sql.claim, owner, list(targets_), limit, now + lease_seconds, now
        )
        if ran:
            rows, taken = result
            return _leased(rows, taken)
        async with self.begin() as conn:
            return await self._claim_in(conn, owner, targets_, limit, lease_seconds)

    async def claim_batch(
        self,
        owner: str,
        *,
        targets_: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> ClaimedBatch:
        """What a worker needs for a batch, in one transaction: the target states (as
        :meth:`target_states`), a :meth:`claim` of due rows of the targets among ``targets_``
        not paused now, and the claimed entities' native ids on their targets, keyed by
        (entity type, entity key, target)."""
        ran, result = await self._on_driver(
            drain_sql.claim_batch, owner, list(targets_), limit, lease_seconds, self.clock()
        )
        if ran:
            return _claimed(result)
        if self._on_step():
            now = self.clock()
            return await self._step(
                self._settle_args(owner, []), [], (owner, list(targets_), limit, lease_seconds, now)
            )
        async with self.begin() as conn:
            return await self._claim_batch_in(conn, owner, targets_, limit, lease_seconds)

    async def _claim_batch_in(
        self,
        conn: AsyncConnection,
        owner: str,
        targets_: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> ClaimedBatch:
        """:meth:`claim_batch` inside the caller's write transaction ``conn``."""
        if self.driver_sql and self.dialect == "postgresql":
            return _claimed(
                await drain_pg.claim_batch(
                    conn, owner, list(targets_), limit, lease_seconds, self.clock()
                )
            )
        native: dict[tuple[str, str, str], StreamId] = {}
        states = {
            r.target: (r.paused_until, r.pause_reason, r.consecutive_failures)
            for r in await conn.execute(select(targets))
        }
        now = self.clock()
        active = [t for t in targets_ if not ((states.get(t, (None, None, 0))[0] or 0) > now)]
        if not active or limit <= 0:
            return states, [], native
        rows = await self._claim_in(conn, owner, active, limit, lease_seconds)
        groups: dict[tuple[str, str], list[str]] = {}
        for r in rows:
            groups.setdefault((r.entity_type, r.target), []).append(r.entity_key)
        for (etype, target), keys in groups.items():
            found = await conn.execute(
                select(id_map.c.entity_key, id_map.c.native_id, id_map.c.id_is_int).where(
                    id_map.c.entity_type == etype,
                    id_map.c.backend == target,
                    self._one_of(id_map.c.entity_key, keys),
                )
            )
            for key, text, is_int in found.all():
                native[(etype, key, target)] = decode_id(text, is_int)
        return states, rows, native

    def _on_step(self) -> bool:
        """True when a worker's step runs as :func:`drain_pg.step` (PostgreSQL)."""
        return self.driver_sql and self._autocommit is not None

    async def _step(self, *args: Any) -> ClaimedBatch:
        """:func:`drain_pg.step` as one statement in autocommit: the function's body is one
        transaction, and the call one round trip."""
        assert self._autocommit is not None
        async with self._autocommit.connect() as conn:
            return _claimed(await drain_pg.step(conn, *args))

    async def _on_driver(self, fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """(True, ``fn(db, *args)``) run as one transaction in aiosqlite's thread
        (:mod:`multibackend.journal.drain_sql`) on SQLite; (False, None) when the Core
        statements are to be used instead."""
        if not (self.driver_sql and drain_sql.AVAILABLE and self.dialect == "sqlite"):
            return False, None
        try:
            return True, await drain_sql.run(self.engine, fn, *args)
        except drain_sql.Unsupported as exc:
            log.warning("journal: %s; using SQLAlchemy Core statements", exc)
            self.driver_sql = False
            return False, None

    async def _claim_in(
        self,
        conn: AsyncConnection,
        owner: str,
        targets_: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> list[QueueRow]:
        """:meth:`claim` inside the caller's write transaction ``conn``."""
        now = self.clock()
        params: dict[str, Any] = {"b_targets": list(targets_), "b_now": now, "b_limit": limit}
        # Two statements in one write transaction (rows locked on PostgreSQL, the database on
        # SQLite): the due ids, then the lease; so the claim knows which rows it takes over
        # from a dead worker.
        if self.dialect == "postgresql":
            # Without fresh statistics (a new journal, or a burst written since the last
            # ANALYZE) the planner guesses a few due rows and picks a bitmap scan that reads
            # and sorts every due row for each claim of 200: 8-10 ms at 20,000 rows, growing
            # with the backlog. The (status, next_attempt_at) index scan stops after the batch
            # (1 ms); with statistics the planner picks it anyway. Scoped to this transaction.
            await conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            # FOR UPDATE SKIP LOCKED is not allowed with UNION: a statement per kind.
            found = list((await conn.execute(self._claim_select("takeover"), params)).all())
            if len(found) < limit:
                params["b_limit"] = limit - len(found)
                found.extend((await conn.execute(self._claim_select("pending"), params)).all())
        else:
            found = list((await conn.execute(self._claim_select("both"), params)).all())
        if not found:
            return []
        taken = {r[0] for r in found if r[1] == "leased"}
        rows = await conn.execute(
            self._lease_statement(),
            {"b_ids": [r[0] for r in found], "b_owner": owner, "b_until": now + lease_seconds},
        )
        return _leased(rows.all(), taken)

    def _lease_statement(self) -> Any:
        """Lease the rows ``b_ids``, returning them in QueueRow field order (built once)."""
        cached = self._statements.get("lease")
        if cached is not None:
            return cached
        stmt = (
            update(queue)
            .where(self._ids_param())
            .values(
                status="leased",
                lease_owner=bindparam("b_owner"),
                lease_until=bindparam("b_until"),
                # A dead worker's row: its create may have reached the target before it died.
                maybe_created=or_(queue.c.maybe_created, queue.c.status == "leased"),
            )
            .returning(*queue.c)
        )
        self._statements["lease"] = stmt
        return stmt

    def _ids_param(self) -> Any:
        """``mb_queue.id`` among the bound list ``b_ids`` (one array parameter on PostgreSQL)."""
        if self.dialect == "postgresql":
            return queue.c.id == any_(bindparam("b_ids", type_=postgresql.ARRAY(queue.c.id.type)))
        return queue.c.id.in_(bindparam("b_ids", expanding=True))

    def _settle_statement(self, which: Literal["delete", "redo", "later", "park", "map"]) -> Any:
        """The statements of :meth:`settle`, built once: constructing them (the id-map upsert's
        ``excluded`` alias above all) cost more CPU per batch than compiling from the cache."""
        key = f"settle_{which}"
        cached = self._statements.get(key)
        if cached is not None:
            return cached
        stmt: Any
        if which == "delete":
            stmt = delete(queue).where(
                self._ids_param(),
                queue.c.seq == bindparam("b_seq"),
                queue.c.lease_owner == bindparam("b_owner"),
            )
        elif which == "redo":
            stmt = (
                update(queue)
                .where(self._ids_param(), queue.c.lease_owner == bindparam("b_owner"))
                .values(**rewritten_while_applied(bindparam("b_now")))
            )
        elif which == "later":
            stmt = (
                update(queue)
                .where(queue.c.id == bindparam("b_id"), queue.c.lease_owner == bindparam("b_owner"))
                .values(
                    status="pending",
                    attempts=queue.c.attempts + bindparam("b_inc"),
                    next_attempt_at=bindparam("b_at"),
                    last_error=bindparam("b_error"),
                    maybe_created=or_(queue.c.maybe_created, bindparam("b_maybe")),
                    lease_owner=None,
                    lease_until=None,
                )
            )
        elif which == "park":
            stmt = (
                update(queue)
                .where(queue.c.id == bindparam("b_id"), queue.c.lease_owner == bindparam("b_owner"))
                .values(
                    status=case((queue.c.seq == bindparam("b_seq"), "parked"), else_="pending"),
                    attempts=queue.c.attempts + 1,
                    next_attempt_at=bindparam("b_now"),
                    last_error=bindparam("b_error"),
                    lease_owner=None,
                    lease_until=None,
                )
            )
        else:
            ins: Any = self.insert(id_map)
            stmt = ins.on_conflict_do_update(
                index_elements=[id_map.c.entity_type, id_map.c.entity_key, id_map.c.backend],
                set_={"native_id": ins.excluded.native_id, "id_is_int": ins.excluded.id_is_int},
            )
        self._statements[key] = stmt
        return stmt

    def _claim_select(self, which: Literal["takeover", "pending", "both"]) -> Any:
        """The due rows' (id, status), oldest first, up to ``b_limit``.

        Two queries, each served in order by the (status, next_attempt_at) index: expired
        leases (a dead worker's rows) and pending rows whose time has come. One query ORing
        both made SQLite collect and sort every due row on each claim, a cost that grew with
        the backlog (a claim of 200 from 20,000 due rows took 16 ms).
        """
        cached = self._statements.get(which)
        if cached is not None:
            return cached
        in_targets = queue.c.target.in_(bindparam("b_targets", expanding=True))
        takeover = (
            select(queue.c.id, queue.c.status)
            .where(queue.c.status == "leased", queue.c.lease_until < bindparam("b_now"), in_targets)
            .order_by(queue.c.lease_until, queue.c.id)
            .limit(bindparam("b_limit"))
        )
        pending = (
            select(queue.c.id, queue.c.status)
            .where(
                queue.c.status == "pending",
                queue.c.next_attempt_at <= bindparam("b_now"),
                in_targets,
            )
            .order_by(queue.c.next_attempt_at, queue.c.id)
            .limit(bindparam("b_limit"))
        )
        stmt: Any
        if which == "both":
            first, second = takeover.subquery(), pending.subquery()
            stmt = union_all(
                select(first.c.id, first.c.status), select(second.c.id, second.c.status)
            ).limit(bindparam("b_limit"))
        else:
            stmt = (takeover if which == "takeover" else pending).with_for_update(skip_locked=True)
        self._statements[which] = stmt
        return stmt

    async def claim_entity(
        self,
        owner: str,
        entity_type: str,
        entity_key: str,
        *,
        targets_: Sequence[str],
        lease_seconds: float,
    ) -> list[QueueRow]:
        """Lease the due pending rows of one entity (for applying a write inline)."""
        now = self.clock()
        stmt = (
            update(queue)
            .where(
                queue.c.entity_type == entity_type,
                queue.c.entity_key == entity_key,
                queue.c.target.in_(list(targets_)),
                queue.c.status == "pending",
                queue.c.next_attempt_at <= now,
            )
            .values(status="leased", lease_owner=owner, lease_until=now + lease_seconds)
            .returning(*queue.c)
        )
        async with self.begin() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_row(r) for r in rows]

    async def renew(self, owner: str, ids: Sequence[int], lease_seconds: float) -> None:
        """Extend the leases ``owner`` holds on ``ids``."""
        if not ids:
            return
        async with self.begin() as conn:
            await conn.execute(
                update(queue)
                .where(self._one_of(queue.c.id, ids), queue.c.lease_owner == owner)
                .values(lease_until=self.clock() + lease_seconds)
            )

    async def release(self, owner: str, ids: Sequence[int]) -> None:
        """Give back the leases ``owner`` holds on ``ids`` without applying the rows: pending
        again, due as they were, attempts unchanged (a worker's rows claimed ahead, when it
        stops or their target is paused). A row written again meanwhile keeps its new state."""
        if not ids:
            return
        async with self.begin() as conn:
            await conn.execute(
                update(queue)
                .where(
                    self._one_of(queue.c.id, ids),
                    queue.c.lease_owner == owner,
                    queue.c.status == "leased",
                )
                .values(status="pending", lease_owner=None, lease_until=None)
            )

    async def settle(self, owner: str, outcomes: Sequence[Outcome]) -> None:
        """Record the outcomes of applied rows in one transaction, in a few batched statements.

        Only rows still leased by ``owner`` change; a row written again while it was applied
        (its ``seq`` moved on) goes back to pending instead of being removed or parked.
        """
        if not outcomes:
            return
        ran, _ = await self._on_driver(drain_sql.settle, *self._settle_args(owner, outcomes))
        if ran:
            return
        async with self.begin() as conn:
            await self._settle_in(conn, owner, outcomes)

    async def settle_and_claim(
        self,
        owner: str,
        outcomes: Sequence[Outcome],
        target_states: Mapping[str, TargetState],
        *,
        targets_: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> ClaimedBatch:
        """A worker's step from one batch to the next in one transaction: :meth:`settle`
        ``outcomes``, record ``target_states`` (paused until, reason, consecutive failures, as
        :meth:`set_target_state`) and :meth:`claim_batch` the next batch, which therefore
        leaves out targets just paused.

        One transaction instead of two (three with a target state) per batch: on SQLite one
        write lock and one commit, and the queue pages the settle and the claim both touch
        written once."""
        now = self.clock()
        # The same arguments for SQLite's one-call transaction and PostgreSQL's step function.
        args = (
            self._settle_args(owner, outcomes),
            [
                (t, until, reason, failures, now)
                for t, (until, reason, failures) in target_states.items()
            ],
            (owner, list(targets_), limit, lease_seconds, now),
        )
        ran, result = await self._on_driver(drain_sql.settle_and_claim, *args)
        if ran:
            return _claimed(result)
        if self._on_step():
            return await self._step(*args)
        async with self.begin() as conn:
            if outcomes:
                await self._settle_in(conn, owner, outcomes)
            for target, (paused_until, reason, failures) in target_states.items():
                await self._set_target_state_in(
                    conn,
                    target,
                    paused_until=paused_until,
                    reason=reason,
                    consecutive_failures=failures,
                )
            return await self._claim_batch_in(conn, owner, targets_, limit, lease_seconds)

    def _settle_args(self, owner: str, outcomes: Sequence[Outcome]) -> tuple[Any, ...]:
        """The arguments of :func:`drain_sql.settle` for ``outcomes``."""
        now = self.clock()
        done = [o for o in outcomes if isinstance(o, Done)]
        return (
            owner,
            [(o.row.entity_type, o.row.entity_key, o.row.target) for o in done if o.unmapped],
            [
                (
                    o.row.id,
                    (o.row.entity_type, o.row.entity_key, o.row.target, *encode_id(o.mapped), now),
                )
                for o in done
                if o.mapped is not None
            ],
            [(o.row.id, o.row.seq) for o in done],
            [
                (1 if o.count_attempt else 0, o.at, o.error[:2000], o.maybe_created, o.row.id)
                for o in outcomes
                if isinstance(o, Reschedule)
            ],
            [(o.row.seq, o.error[:2000], o.row.id) for o in outcomes if isinstance(o, Park)],
            now,
        )

    async def _settle_in(
        self, conn: AsyncConnection, owner: str, outcomes: Sequence[Outcome]
    ) -> None:
        """:meth:`settle` inside the caller's write transaction ``conn``."""
        now = self.clock()
        done = [o for o in outcomes if isinstance(o, Done)]
        later = [o for o in outcomes if isinstance(o, Reschedule)]
        parked = [o for o in outcomes if isinstance(o, Park)]
        clashes = await self._record_mappings(conn, done)
        if clashes:
            # The copy this row adopted was mapped to another entity first (two workers
            # adopting one lost create): not done; search again, or create, next time.
            later = [
                *later,
                *(
                    Reschedule(
                        row=o.row,
                        at=now,
                        error="the adopted copy belongs to another entity",
                        count_attempt=False,
                        maybe_created=True,
                    )
                    for o in done
                    if o.row.id in clashes
                ),
            ]
            done = [o for o in done if o.row.id not in clashes]
        removed = 0
        by_seq: dict[int, list[int]] = {}
        for o in done:
            by_seq.setdefault(o.row.seq, []).append(o.row.id)
        for seq, ids in by_seq.items():
            # A statement per seq value (almost always one or two) and chunk: only rows
            # still at the seq that was applied go; rows written again meanwhile stay.
            for start in range(0, len(ids), _CHUNK):
                result = await conn.execute(
                    self._settle_statement("delete"),
                    {"b_ids": ids[start : start + _CHUNK], "b_seq": seq, "b_owner": owner},
                )
                removed += result.rowcount
        if removed < len(done):
            # Rows still there were written again while applied: pending with the new state.
            await conn.execute(
                self._settle_statement("redo"),
                {"b_ids": [o.row.id for o in done], "b_owner": owner, "b_now": now},
            )
        if later:
            await conn.execute(
                self._settle_statement("later"),
                [
                    {
                        "b_id": o.row.id,
                        "b_owner": owner,
                        "b_inc": 1 if o.count_attempt else 0,
                        "b_at": o.at,
                        "b_error": o.error[:2000],
                        "b_maybe": o.maybe_created,
                    }
                    for o in later
                ],
            )
        if parked:
            await conn.execute(
                self._settle_statement("park"),
                [
                    {
                        "b_id": o.row.id,
                        "b_owner": owner,
                        "b_seq": o.row.seq,
                        "b_now": now,
                        "b_error": o.error[:2000],
                    }
                    for o in parked
                ],
            )

    async def _record_mappings(self, conn: AsyncConnection, done: Sequence[Done]) -> set[int]:
        """Record the id-map changes of ``done``; return the ids of rows whose new mapping
        clashed with another entity's (left unrecorded)."""
        removed = [o for o in done if o.unmapped]
        if removed:
            await conn.execute(
                delete(id_map).where(
                    id_map.c.entity_type == bindparam("b_type"),
                    id_map.c.entity_key == bindparam("b_key"),
                    id_map.c.backend == bindparam("b_backend"),
                ),
                [
                    {
                        "b_type": o.row.entity_type,
                        "b_key": o.row.entity_key,
                        "b_backend": o.row.target,
                    }
                    for o in removed
                ],
            )
        mapped = [o for o in done if o.mapped is not None]
        if mapped and self.driver_sql and self.dialect == "postgresql":
            # New mappings in one statement that skips any conflict; the rows it skipped
            # (a mapping replaced, a native id taken) go the way below.
            now = self.clock()
            values = []
            for o in mapped:
                assert o.mapped is not None
                values.append(
                    (o.row.entity_type, o.row.entity_key, o.row.target, *encode_id(o.mapped), now)
                )
            inserted = await drain_pg.insert_mappings(conn, values)
            mapped = [
                o
                for o in mapped
                if (o.row.entity_type, o.row.entity_key, o.row.target) not in inserted
            ]
        if not mapped:
            return set()
        rows = []
        for o in mapped:
            assert o.mapped is not None
            text, is_int = encode_id(o.mapped)
            rows.append(
                {
                    "entity_type": o.row.entity_type,
                    "entity_key": o.row.entity_key,
                    "backend": o.row.target,
                    "native_id": text,
                    "id_is_int": is_int,
                    "created_at": self.clock(),
                }
            )
        stmt = self._settle_statement("map")
        clashes: set[int] = set()
        try:
            async with conn.begin_nested():
                await conn.execute(stmt, rows)
        except IntegrityError:
            # One native id claimed by two entities: record the others, report the clash.
            for o in mapped:
                assert o.mapped is not None
                try:
                    await self.map_id(
                        conn, o.row.entity_type, o.row.entity_key, o.row.target, o.mapped
                    )
                except Conflict:
                    clashes.add(o.row.id)
        return clashes

    # --- targets: pauses and the circuit breaker -------------------------------------------

    async def target_states(self) -> dict[str, TargetState]:
        """(paused_until, reason, consecutive_failures) by target."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(targets))).all()
        return {r.target: (r.paused_until, r.pause_reason, r.consecutive_failures) for r in rows}

    async def set_target_state(
        self,
        target: str,
        *,
        paused_until: float | None,
        reason: str | None,
        consecutive_failures: int,
    ) -> None:
        async with self.begin() as conn:
            await self._set_target_state_in(
                conn,
                target,
                paused_until=paused_until,
                reason=reason,
                consecutive_failures=consecutive_failures,
            )

    async def _set_target_state_in(
        self,
        conn: AsyncConnection,
        target: str,
        *,
        paused_until: float | None,
        reason: str | None,
        consecutive_failures: int,
    ) -> None:
        values = {
            "paused_until": paused_until,
            "pause_reason": reason,
            "consecutive_failures": consecutive_failures,
            "updated_at": self.clock(),
        }
        ins: Any = self.insert(targets)
        stmt = ins.values(target=target, **values).on_conflict_do_update(
            index_elements=[targets.c.target], set_=values
        )
        await conn.execute(stmt)

    # --- inspection and operator actions -----------------------------------------------------

    async def status(self, targets_: Iterable[str]) -> dict[str, TargetStatus]:
        """Fan-out state per target (every target in ``targets_`` is present)."""
        now = self.clock()
        stmt = select(
            queue.c.target,
            queue.c.status,
            func.count(),
            func.min(queue.c.enqueued_at),
        ).group_by(queue.c.target, queue.c.status)
        async with self.engine.connect() as conn:
            counts = (await conn.execute(stmt)).all()
            states = (await conn.execute(select(targets))).all()
        acc: dict[str, dict[str, Any]] = {t: {} for t in targets_}
        for target, status, count, oldest in counts:
            entry = acc.setdefault(target, {})
            entry[status] = count
            if status in ("pending", "leased") and oldest is not None:
                age = max(0.0, now - oldest)
                entry["age"] = max(entry.get("age", 0.0), age)
        out: dict[str, TargetStatus] = {}
        state_by_target = {s.target: s for s in states}
        for target, entry in acc.items():
            st = state_by_target.get(target)
            paused = st.paused_until if st is not None and (st.paused_until or 0) > now else None
            out[target] = TargetStatus(
                target=target,
                pending=entry.get("pending", 0),
                leased=entry.get("leased", 0),
                parked=entry.get("parked", 0),
                oldest_pending_age=entry.get("age"),
                paused_until=paused,
                pause_reason=st.pause_reason if paused is not None and st is not None else None,
                consecutive_failures=st.consecutive_failures if st is not None else 0,
            )
        return out

    async def outstanding(self, targets_: Iterable[str] | None = None) -> int:
        """Rows pending or leased (parked ones wait for an operator and are not counted)."""
        stmt = select(func.count()).where(queue.c.status.in_(("pending", "leased")))
        if targets_ is not None:
            stmt = stmt.where(queue.c.target.in_(list(targets_)))
        return int(await self._scalar(stmt) or 0)

    async def next_due(self, targets_: Sequence[str]) -> float | None:
        """When the earliest pending row for ``targets_`` becomes due (None when none)."""
        stmt = select(func.min(queue.c.next_attempt_at)).where(
            queue.c.status == "pending", queue.c.target.in_(list(targets_))
        )
        value = await self._scalar(stmt)
        return None if value is None else float(value)

    async def rows(
        self, *, status: str | None = None, target: str | None = None, limit: int = 100
    ) -> list[QueueRow]:
        """Queue rows for inspection, oldest first."""
        stmt = select(queue).order_by(queue.c.id).limit(limit)
        if status is not None:
            stmt = stmt.where(queue.c.status == status)
        if target is not None:
            stmt = stmt.where(queue.c.target == target)
        async with self.engine.connect() as conn:
            return [_row(r) for r in (await conn.execute(stmt)).mappings().all()]

    async def row(self, row_id: int) -> QueueRow | None:
        async with self.engine.connect() as conn:
            found = (await conn.execute(select(queue).where(queue.c.id == row_id))).mappings()
            first = found.first()
        return None if first is None else _row(first)

    async def retry(self, row_ids: Sequence[int] | None = None) -> int:
        """Make parked rows due now with fresh attempts: the given ids, or every parked row."""
        stmt = update(queue).where(queue.c.status == "parked")
        if row_ids is not None:
            stmt = stmt.where(queue.c.id.in_(list(row_ids)))
        async with self.begin() as conn:
            result = await conn.execute(
                stmt.values(
                    status="pending", attempts=0, next_attempt_at=self.clock(), last_error=None
                )
            )
        return int(result.rowcount)

    async def drop(self, row_id: int) -> bool:
        """Remove a row (an operator gives up on bringing that target in line)."""
        async with self.begin() as conn:
            result = await conn.execute(delete(queue).where(queue.c.id == row_id))
        return bool(result.rowcount)

    # --- intents -------------------------------------------------------------------------------

    async def add_intent(
        self,
        conn: AsyncConnection,
        *,
        entity_type: str,
        entity_key: str,
        op: str,
        backend: str,
        native_id: StreamId | None,
        payload: Mapping[str, Any] | None,
        owner: str,
    ) -> int:
        text, is_int = encode_id(native_id) if native_id is not None else (None, None)
        result = await conn.execute(
            intents.insert()
            .values(
                entity_type=entity_type,
                entity_key=entity_key,
                op=op,
                backend=backend,
                native_id=text,
                id_is_int=is_int,
                payload=dict(payload) if payload is not None else None,
                owner=owner,
                created_at=self.clock(),
            )
            .returning(intents.c.id)
        )
        return int(result.scalar_one())

    async def add_intents(
        self, conn: AsyncConnection, items: Sequence[Mapping[str, Any]]
    ) -> list[int]:
        """Record several intents with one statement; returns their ids, in order.

        Each item has the keyword arguments of :meth:`add_intent` but ``conn``. The ids are
        chosen here (random 62-bit integers, so that one ``executemany`` needs no RETURNING,
        whose row order SQLite does not guarantee); a clash with an existing id fails the
        statement, and the caller's retry draws new ones.
        """
        if not items:
            return []
        ids, rows = self.intent_rows(items, self.clock())
        await conn.execute(_INSERT_INTENT, rows)
        return ids

    @staticmethod
    def intent_rows(
        items: Sequence[Mapping[str, Any]], now: float
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """New intent ids and the insert's parameters for :meth:`add_intents`'s ``items``."""
        ids = [secrets.randbits(62) + 1 for _ in items]
        rows = []
        for intent_id, it in zip(ids, items, strict=True):
            native_id = it["native_id"]
            text, is_int = encode_id(native_id) if native_id is not None else (None, None)
            payload = it["payload"]
            rows.append(
                {
                    "id": intent_id,
                    "entity_type": it["entity_type"],
                    "entity_key": it["entity_key"],
                    "op": it["op"],
                    "backend": it["backend"],
                    "native_id": text,
                    "id_is_int": is_int,
                    "payload": dict(payload) if payload is not None else None,
                    "owner": it["owner"],
                    "created_at": now,
                }
            )
        return ids, rows

    async def remove_intents(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        if ids:
            await conn.execute(delete(intents).where(intents.c.id.in_(list(ids))))

    async def stale_intents(self, older_than: float) -> list[Intent]:
        """Intents created before ``older_than`` (epoch seconds), oldest first."""
        stmt = (
            select(intents)
            .where(intents.c.created_at < older_than)
            .order_by(intents.c.created_at, intents.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [
            Intent(
                id=r["id"],
                entity_type=r["entity_type"],
                entity_key=r["entity_key"],
                op=r["op"],
                backend=r["backend"],
                native_id=None
                if r["native_id"] is None
                else decode_id(r["native_id"], r["id_is_int"]),
                payload=decode_json(r["payload"]),
                owner=r["owner"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    # --- meta -------------------------------------------------------------------------------

    async def get_meta(self, key: str, conn: AsyncConnection | None = None) -> str | None:
        value: Any = await self._scalar(select(meta.c.value).where(meta.c.key == key), conn)
        return None if value is None else str(value)

    async def set_meta(self, conn: AsyncConnection, key: str, value: str) -> None:
        ins: Any = self.insert(meta)
        await conn.execute(
            ins.values(key=key, value=value).on_conflict_do_update(
                index_elements=[meta.c.key], set_={"value": value}
            )
        )

    # --- helpers ------------------------------------------------------------------------------

    async def _scalar(self, stmt: Any, conn: AsyncConnection | None = None) -> Any:
        if conn is not None:
            return (await conn.execute(stmt)).scalar()
        async with self.engine.connect() as own:
            return (await own.execute(stmt)).scalar()

    async def _first(self, stmt: Any, conn: AsyncConnection | None = None) -> Any:
        if conn is not None:
            return (await conn.execute(stmt)).first()
        async with self.engine.connect() as own:
            return (await own.execute(stmt)).first()

    # --- watermarks (multibackend.journal.watermark) ------------------------------------------

    async def outstanding_marks(
        self, targets_: Iterable[str], *, up_to: int | None = None
    ) -> dict[int, tuple[str, float]]:
        """The rows pending or leased for ``targets_`` (with an id at most ``up_to``), read in
        one statement: id -> (status, enqueued_at). Parked rows are left out, as
        :meth:`outstanding` leaves them out.

        ``enqueued_at`` of an existing row changes only when a worker that applied it finds it
        written again meanwhile (it goes back to pending, stamped with its newest write), which
        is how :class:`~multibackend.journal.watermark.JournalWatermark` tells a row applied
        since from one still waiting."""
        stmt = select(queue.c.id, queue.c.status, queue.c.enqueued_at).where(
            queue.c.status.in_(("pending", "leased")),
            queue.c.target.in_(list(targets_)),
        )
        if up_to is not None:
            stmt = stmt.where(queue.c.id <= up_to)
        async with self.engine.connect() as conn:
            found = (await conn.execute(stmt)).all()
        return {int(r[0]): (str(r[1]), float(r[2])) for r in found}


def _custom_plans(engine: AsyncEngine) -> None:
    """Make PostgreSQL plan every journal statement for its parameters.

    asyncpg prepares statements; after five executions PostgreSQL may switch to a generic plan
    if its estimate looks no worse. A fresh journal has no planner statistics, so those
    estimates are guesses: the id-map look-up of a batch went from 1 ms to 27 ms at the sixth
    batch (a generic plan scanning every mapping of the target), and claims likewise. Custom
    plans cost a planning each time (tens of microseconds for these statements).
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(
            lambda conn: conn.execute("SET plan_cache_mode = force_custom_plan")
        )


def rewritten_while_applied(now: Any) -> dict[str, Any]:
    """The values that put a leased row written again while it was applied back to pending,
    fresh, with its newer state (``now``: when it is due; a value or a bind parameter)."""
    return {
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": None,
        "maybe_created": False,
        "enqueued_at": queue.c.updated_at,
        "lease_owner": None,
        "lease_until": None,
    }


def decode_json(value: Any) -> Any:
    """A JSON column's value: SQLAlchemy's JSON type decodes already; text read through a raw
    driver connection may still need it."""
    return json.loads(value) if isinstance(value, str) else value


def _row_tuple(r: Any, taken: set[int]) -> QueueRow:
    """A QueueRow from a row of all ``mb_queue`` columns in table order (the QueueRow field
    order): positional access, cheaper than a mapping per row."""
    return QueueRow(
        id=r[0],
        entity_type=r[1],
        entity_key=r[2],
        target=r[3],
        op=r[4],
        seq=r[5],
        deleted=bool(r[6]),
        snapshot=r[7],  # text from a raw driver connection: decoded when applied
        status=r[8],
        attempts=r[9],
        next_attempt_at=r[10],
        last_error=r[11],
        lease_owner=r[12],
        lease_until=r[13],
        maybe_created=bool(r[14]),
        enqueued_at=r[15],
        updated_at=r[16],
        taken_over=r[0] in taken,
    )


def _claimed(
    found: drain_sql.Claimed,
) -> ClaimedBatch:
    """A claim of a batch by :mod:`drain_sql` as :meth:`JournalStore.claim_batch` answers."""
    states, rows, taken, native = found
    return (
        states,
        _leased(rows, taken),
        {(e, k, t): decode_id(text, is_int) for e, k, t, text, is_int in native},
    )


def _leased(rows: Iterable[Any], taken: set[int]) -> list[QueueRow]:
    """Leased rows (all columns, table order) as QueueRows, oldest due first."""
    claimed = [_row_tuple(r, taken) for r in rows]
    claimed.sort(key=lambda r: (r.next_attempt_at, r.id))
    return claimed


def _row(r: Any, *, taken_over: bool = False) -> QueueRow:
    return QueueRow(
        taken_over=taken_over,
        id=r["id"],
        entity_type=r["entity_type"],
        entity_key=r["entity_key"],
        target=r["target"],
        op=r["op"],
        seq=r["seq"],
        deleted=bool(r["deleted"]),
        snapshot=decode_json(r["snapshot"]),
        status=r["status"],
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        last_error=r["last_error"],
        lease_owner=r["lease_owner"],
        lease_until=r["lease_until"],
        maybe_created=bool(r["maybe_created"]),
        enqueued_at=r["enqueued_at"],
        updated_at=r["updated_at"],
    )


#: One intent row with its id given (see :meth:`JournalStore.add_intents`).
_INSERT_INTENT = intents.insert()
