"""Journal operations for many entities at once: what a backfill does per chunk.

The backfill (:mod:`multibackend.migrate.backfill`) handles thousands of streams per second;
per-row work that the manager's write path can afford (an upsert built by SQLAlchemy per row,
a snapshot built by the general :func:`~multibackend.journal.snapshot.build_snapshot`) is most
of its cost there. The operations here do the same work for a whole chunk: a field plan computed
once per run, and statements that carry a chunk each.
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.journal.keys import new_entity_keys
from multibackend.journal.schema import id_map, meta, queue, tombstones
from multibackend.journal.snapshot import Snapshot
from multibackend.journal.store import (
    Done,
    JournalStore,
    Outcome,
    QueueRow,
    decode_id,
    encode_id,
    rewritten_while_applied,
)
from multibackend.model import (
    PRESERVABLE_TIMESTAMPS,
    WRITABLE_FIELDS,
    Stream,
    StreamDraft,
    StreamId,
)

__all__ = [
    "PART",
    "Created",
    "FieldPlan",
    "Inserted",
    "adopt_chunk_keys",
    "deleted_since",
    "insert_creates",
    "inserted_row",
    "native_ids_of_keys",
    "new_entity_keys",
    "set_meta",
    "settle",
    "settle_created",
]

_T = TypeVar("_T")

_SNAPSHOT_FIELDS = WRITABLE_FIELDS | PRESERVABLE_TIMESTAMPS


class FieldPlan:
    """The fields a target's snapshot carries for streams read from one primary, with nothing
    given by a write (what a backfill copies), worked out once instead of per stream.

    ``stream_json(stream)`` is ``build_snapshot(stream, primary_fields=..., target_fields=...,
    given={})`` as JSON text, and ``draft(stream)`` equals ``draft_from_snapshot`` of that
    snapshot, both made straight from the stream (what a backfill does per stream): no snapshot
    object in between (a list per field for the garbage collector), and the draft gets the
    stream's enum members as they are instead of their text, parsed again.
    """

    def __init__(self, primary_fields: Iterable[str], target_fields: Iterable[str]) -> None:
        primary = set(primary_fields)
        self.always: tuple[str, ...] = tuple(
            n for n in target_fields if n in _SNAPSHOT_FIELDS and n in primary
        )
        # Server timestamps the primary does not store but reported: carried when present.
        self.if_present: tuple[str, ...] = tuple(
            n
            for n in target_fields
            if n in _SNAPSHOT_FIELDS and n not in primary and n in PRESERVABLE_TIMESTAMPS
        )
        self._template = "{" + ", ".join(f"{json.dumps(n)}: [%s]" for n in self.always)
        # The values of a stream's fields in one C call (a tuple), not one look-up each.
        self._attrs = _tuple_getter(operator.attrgetter, self.always)

    def stream_json(self, stream: Stream) -> str:
        """The stream's snapshot for the target as JSON text (see the class docstring)."""
        present = {}
        for name in self.if_present:
            value = getattr(stream, name)
            if value is not None:
                present[name] = value
        return self._json(self._attrs(stream), present)

    def _json(self, always: tuple[Any, ...], present: Mapping[str, Any]) -> str:
        enc = _json_text
        # _json_value, with its commonest cases inline: no call for text (an enum member is
        # text too, its value: the C encoder reads a str subclass's characters) or None.
        text = self._template % tuple(
            [
                enc(v) if isinstance(v, str) else "null" if v is None else _json_value(v)
                for v in always
            ]
        )
        extra = [
            f"{json.dumps(n)}: [{_json_value(present[n])}]" for n in self.if_present if n in present
        ]
        if extra:
            text += (", " if self.always else "") + ", ".join(extra)
        return text + "}"

    def draft(self, stream: Stream) -> StreamDraft:
        """``StreamDraft(**values(stream))``, with the stream's enum members as they are (the
        draft's converters take a member without parsing text). Raises what that raises
        (ValidationFailed for legacy data, TypeError when a required field is not carried)."""
        given = dict(zip(self.always, self._attrs(stream), strict=True))
        for name in self.if_present:
            value = getattr(stream, name)
            if value is not None:
                given[name] = value
        return StreamDraft(**given)


_json_text: Callable[[str], str] = json.encoder.encode_basestring_ascii  # as json.dumps does


def _tuple_getter(
    make: Callable[..., Callable[[Any], Any]], names: Sequence[str]
) -> Callable[[Any], tuple[Any, ...]]:
    """``make(*names)`` (operator's itemgetter...), always answering a tuple (``make`` answers
    the value itself for one name, and needs at least one)."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        one = make(names[0])
        return lambda obj: (one(obj),)
    many: Callable[[Any], tuple[Any, ...]] = make(*names)
    return many


def _json_value(value: Any) -> str:
    """``json.dumps(value)`` for a plain field value (datetimes as ISO 8601 text), faster."""
    kind = type(value)
    if kind is str:
        return str(_json_text(value))
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is datetime:
        return f'"{value.isoformat()}"'
    if isinstance(value, datetime):
        return json.dumps(value.isoformat())
    return json.dumps(value)


# --- SQL for whole chunks --------------------------------------------------------------------
#
# Plain driver SQL, built once per (dialect, statement, row count): SQLAlchemy's per-parameter
# processing of a compiled multi-row statement costs more than SQLite's work on it. Values shared
# by every row (entity type, target, times) are bound once and referred to by number (``?1`` on
# SQLite, ``$1`` on PostgreSQL; both allow a numbered parameter to appear many times).

#: Rows per statement: SQLite allows 32,766 parameters and PostgreSQL 32,767 per statement.
PART = 1000


def _parts(items: Sequence[_T], size: int = PART) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@functools.lru_cache(maxsize=64)
def _sql(dialect: str, kind: str, rows: int) -> str:
    mark = "$" if dialect == "postgresql" else "?"

    def p(n: int) -> str:
        return f"{mark}{n}"

    def listed(first: int) -> str:
        return ", ".join(p(first + i) for i in range(rows))

    def tuples(shared: Sequence[int], own: int, first: int) -> str:
        # Each row: the shared parameters, then ``own`` parameters of its own.
        return ", ".join(
            "("
            + ", ".join([*(p(n) for n in shared), *(p(first + r * own + i) for i in range(own))])
            + ")"
            for r in range(rows)
        )

    m, q = id_map.name, queue.name
    if kind == "keys_of_native":
        return (
            f"SELECT native_id, entity_key FROM {m} WHERE entity_type = {p(1)} "
            f"AND backend = {p(2)} AND native_id IN ({listed(3)})"
        )
    if kind == "insert_keys":
        return (
            f"INSERT INTO {m} (entity_type, backend, created_at, entity_key, native_id, "
            f"id_is_int) VALUES {tuples((1, 2, 3), 3, 4)} ON CONFLICT DO NOTHING "
            "RETURNING native_id, entity_key"
        )
    if kind == "mapped_keys":
        return (
            f"SELECT entity_key, native_id, id_is_int FROM {m} WHERE entity_type = {p(1)} "
            f"AND backend = {p(2)} AND entity_key IN ({listed(3)})"
        )
    if kind == "queued_keys":
        return (
            f"SELECT entity_key FROM {q} WHERE entity_type = {p(1)} AND target = {p(2)} "
            f"AND entity_key IN ({listed(3)})"
        )
    if kind == "insert_creates":
        # Shared: entity_type, target, op, seq, deleted, status, attempts, next_attempt_at,
        # maybe_created, lease_owner, lease_until, enqueued_at, updated_at; own: key, snapshot.
        return (
            f"INSERT INTO {q} (entity_type, target, op, seq, deleted, status, attempts, "
            "next_attempt_at, maybe_created, lease_owner, lease_until, enqueued_at, updated_at, "
            f"entity_key, snapshot) VALUES {tuples(range(1, 14), 2, 14)} "
            "ON CONFLICT DO NOTHING RETURNING id, entity_key"
        )
    if kind == "record_mappings":
        return (
            f"INSERT INTO {m} (entity_type, backend, created_at, entity_key, native_id, "
            f"id_is_int) VALUES {tuples((1, 2, 3), 3, 4)} "
            "ON CONFLICT (entity_type, entity_key, backend) DO UPDATE SET "
            "native_id = excluded.native_id, id_is_int = excluded.id_is_int"
        )
    if kind == "delete_settled":
        return (
            f"DELETE FROM {q} WHERE lease_owner = {p(1)} AND seq = {p(2)} "
            f"AND id IN ({listed(3)}) RETURNING id"
        )
    if kind == "recent_tombstone":
        return (
            f"SELECT 1 FROM {tombstones.name} WHERE entity_type = {p(1)} AND backend = {p(2)} "
            f"AND deleted_at >= {p(3)} LIMIT 1"
        )
    if kind == "tombstoned":
        return (
            f"SELECT native_id FROM {tombstones.name} WHERE entity_type = {p(1)} "
            f"AND backend = {p(2)} AND deleted_at >= {p(3)} AND native_id IN ({listed(4)})"
        )
    if kind == "set_meta":
        return (
            f'INSERT INTO {meta.name} ("key", value) VALUES ({p(1)}, {p(2)}) '
            'ON CONFLICT ("key") DO UPDATE SET value = excluded.value'
        )
    raise ValueError(kind)  # pragma: no cover - a programming error


async def _run(
    store: JournalStore, conn: AsyncConnection, kind: str, shared: Sequence[Any], own: Sequence[Any]
) -> Sequence[Any]:
    """Execute statement ``kind`` for the rows of ``own`` (flattened per-row values); return
    the rows it answers (RETURNING, SELECT)."""
    width = _OWN[kind]
    sql = _sql(store.dialect, kind, len(own) // width)
    params = (*shared, *own)
    if store.dialect == "sqlite":
        # One trip to aiosqlite's thread (execute, fetch, close) instead of the four that
        # SQLAlchemy's cursor adapter makes: each trip waits for the event loop's thread to
        # let go of the GIL, which a busy loop holds for up to 5 ms at a time.
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        try:
            return list(await driver.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            # As SQLAlchemy would raise it (IntegrityError, OperationalError...).
            raise DBAPIError.instance(sql, params, exc, sqlite3.Error) from exc
    result = await conn.exec_driver_sql(sql, params)
    return result.all() if result.returns_rows else []


_OWN = {
    "keys_of_native": 1,
    "insert_keys": 3,
    "mapped_keys": 1,
    "queued_keys": 1,
    "insert_creates": 2,
    "record_mappings": 3,
    "delete_settled": 1,
    "recent_tombstone": 1,
    "tombstoned": 1,
    "set_meta": 1,
}


async def adopt_chunk_keys(
    store: JournalStore,
    conn: AsyncConnection,
    entity_type: str,
    backend: str,
    native_ids: Sequence[StreamId],
) -> tuple[dict[str, str], set[str]]:
    """Like :func:`multibackend.migrate.ledger.adopt_keys` for a chunk: the entity key of each
    native id of ``backend`` (``{id text: key}``), assigning new keys to unmapped ones
    (insert-if-absent: a key a concurrent writer assigned first wins), and the set of keys
    assigned here. One insert per :data:`PART` ids, and a look-up only for the ids it found
    mapped already (none in a first backfill: one statement, one trip to the driver)."""
    encoded = dict(encode_id(i) for i in native_ids)
    made: dict[str, str] = {}
    texts = list(encoded)
    if not texts:
        return {}, set()
    now = store.clock()
    keys = new_entity_keys(len(texts))
    for start in range(0, len(texts), PART):
        own: list[Any] = []
        for text, key in zip(texts[start : start + PART], keys[start : start + PART], strict=True):
            own += (key, text, encoded[text])
        result = await _run(store, conn, "insert_keys", (entity_type, backend, now), own)
        made.update((r[0], r[1]) for r in result)
    found = dict(made)
    mapped = [t for t in texts if t not in made]
    for part in _parts(mapped):  # mapped before (or by a concurrent writer): that key wins
        result = await _run(store, conn, "keys_of_native", (entity_type, backend), part)
        found.update((r[0], r[1]) for r in result)
    return found, set(made.values())


async def deleted_since(
    store: JournalStore,
    conn: AsyncConnection,
    entity_type: str,
    backend: str,
    native_ids: Sequence[StreamId],
    since: float,
) -> set[str]:
    """Which of ``native_ids`` (as text) the manager deleted at or after ``since`` (its
    tombstones); one statement when nothing was deleted since (the common case)."""
    shared = (entity_type, backend, since)
    if not await _run(store, conn, "recent_tombstone", shared, ()):
        return set()
    out: set[str] = set()
    for part in _parts([encode_id(i)[0] for i in native_ids]):
        out.update(r[0] for r in await _run(store, conn, "tombstoned", shared, part))
    return out


async def set_meta(store: JournalStore, conn: AsyncConnection, key: str, value: str) -> None:
    """:meth:`JournalStore.set_meta` in one statement."""
    await _run(store, conn, "set_meta", (key, value), ())


class Inserted(NamedTuple):
    """A create row :func:`insert_creates` inserted, as inserted: leased by its owner until
    ``lease_until``, at ``seq`` 1, enqueued ``at``. (The garbage collector keeps tracking a
    NamedTuple, unlike a plain tuple of plain values: keep it short-lived.)"""

    id: int
    entity_key: str
    at: float
    lease_until: float


async def insert_creates(
    store: JournalStore,
    conn: AsyncConnection,
    *,
    entity_type: str,
    target: str,
    items: Sequence[tuple[str, str]],
    owner: str,
    lease_seconds: float,
    fresh: set[str],
) -> list[Inserted]:
    """Insert a create row for ``target`` for each ``(key, snapshot as JSON text)``, leased by
    ``owner``, only where the entity has neither a mapping on ``target`` nor a queue row for it;
    return the inserted rows in id order. Keys in ``fresh`` were assigned in this transaction and
    are not looked up."""
    if not items:
        return []
    known = [k for k, _ in items if k not in fresh]
    skip: set[str] = set()
    for part in _parts(known):
        mapped = await _run(store, conn, "mapped_keys", (entity_type, target), part)
        skip.update(r[0] for r in mapped)
        queued = await _run(store, conn, "queued_keys", (entity_type, target), part)
        skip.update(r[0] for r in queued)
    wanted = [item for item in items if item[0] not in skip] if skip else items
    now = store.clock()
    until = now + lease_seconds
    shared: tuple[Any, ...] = (entity_type, target, "create", 1, False, "leased", 0, now)
    shared += (False, owner, until, now, now)
    inserted: list[Inserted] = []
    for batch in _parts(wanted):
        own: list[Any] = []
        for item in batch:
            own += item
        # ON CONFLICT DO NOTHING: a row a concurrent manager write inserted in between wins (it
        # holds newer state); the backfill re-checks the mapping before applying anyway.
        result = await _run(store, conn, "insert_creates", shared, own)
        inserted.extend(Inserted(int(r[0]), r[1], now, until) for r in result)
    inserted.sort()
    return inserted


def inserted_row(
    made: Inserted, *, entity_type: str, target: str, owner: str, snapshot: Snapshot
) -> QueueRow:
    """The queue row ``made`` as :func:`insert_creates` inserted it, with its snapshot."""
    return QueueRow(
        id=made.id,
        entity_type=entity_type,
        entity_key=made.entity_key,
        target=target,
        op="create",
        seq=1,
        deleted=False,
        snapshot=snapshot,
        status="leased",
        attempts=0,
        next_attempt_at=made.at,
        last_error=None,
        lease_owner=owner,
        lease_until=made.lease_until,
        maybe_created=False,
        enqueued_at=made.at,
        updated_at=made.at,
    )


async def native_ids_of_keys(
    store: JournalStore, entity_type: str, keys: Sequence[str], backend: str
) -> dict[str, StreamId]:
    """Like :meth:`JournalStore.native_ids_of`, one query per :data:`PART` keys."""
    out: dict[str, StreamId] = {}
    if not keys:
        return out
    async with store.engine.connect() as conn:
        for part in _parts(keys):
            result = await _run(store, conn, "mapped_keys", (entity_type, backend), part)
            out.update((r[0], decode_id(r[1], r[2])) for r in result)
    return out


#: A row applied successfully: (row id, row seq, entity key, native id or None).
Created = tuple[int, int, str, StreamId | None]


async def settle(store: JournalStore, owner: str, outcomes: Sequence[Outcome]) -> None:
    """:meth:`JournalStore.settle` with a fast path for the common outcome of a chunk: rows done
    (mapped after a create, or found already there), settled as :func:`settle_created` does.
    Every other outcome, and the whole chunk when a new mapping clashes with another entity's,
    is settled by the store."""
    plain = [o for o in outcomes if isinstance(o, Done) and not o.unmapped]
    rest = [o for o in outcomes if not (isinstance(o, Done) and not o.unmapped)]
    groups: dict[tuple[str, str], list[Done]] = defaultdict(list)
    for o in plain:
        groups[(o.row.entity_type, o.row.target)].append(o)
    for (entity_type, target), done in groups.items():
        settled = await settle_created(
            store,
            owner,
            entity_type,
            target,
            [(o.row.id, o.row.seq, o.row.entity_key, o.mapped) for o in done],
        )
        if not settled:
            rest.extend(done)
    if rest:
        await store.settle(owner, rest)


async def settle_created(
    store: JournalStore,
    owner: str,
    entity_type: str,
    target: str,
    done: Sequence[Created],
) -> bool:
    """Settle rows of ``target`` that ``owner`` applied successfully, given as (row id, seq,
    entity key, native id or None when there was nothing to record), in one transaction: the
    mappings recorded (one multi-row upsert per 1,000) and the rows removed (one DELETE per seq
    per 1,000). A row written again while it was applied (its ``seq`` moved on) goes back to
    pending with the newer state, as :meth:`JournalStore.settle` does it.

    Returns False, having changed nothing, when a native id is already mapped to another entity:
    the caller then settles the rows with :meth:`JournalStore.settle`, which records the others
    and retries the clashing ones."""
    if not done:
        return True
    now = store.clock()
    own: list[Any] = []
    by_seq: dict[int, list[int]] = defaultdict(list)
    for row_id, seq, key, native in done:
        if native is not None:
            text, is_int = encode_id(native)
            own += (key, text, is_int)
        by_seq[seq].append(row_id)
    try:
        async with store.begin() as conn:
            for start in range(0, len(own), PART * 3):
                part = own[start : start + PART * 3]
                await _run(store, conn, "record_mappings", (entity_type, target, now), part)
            removed: set[int] = set()
            for seq, ids in by_seq.items():
                for ids_part in _parts(ids):
                    result = await _run(store, conn, "delete_settled", (owner, seq), ids_part)
                    removed.update(r[0] for r in result)
            again = [d[0] for d in done if d[0] not in removed]
            if again:
                # Written again while applied: pending with the new state (as the store does).
                await conn.execute(
                    update(queue)
                    .where(queue.c.id.in_(again), queue.c.lease_owner == owner)
                    .values(**rewritten_while_applied(now))
                )
    except IntegrityError:
        return False  # one native id claimed by two entities; the transaction was rolled back
    return True
