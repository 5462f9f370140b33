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
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.journal.schema import id_map, queue
from multibackend.journal.snapshot import Snapshot
from multibackend.journal.store import (
    Done,
    JournalStore,
    Outcome,
    QueueRow,
    decode_id,
    encode_id,
)
from multibackend.model import PRESERVABLE_TIMESTAMPS, WRITABLE_FIELDS, Stream, StreamId

__all__ = [
    "PART",
    "adopt_chunk_keys",
    "enqueue_creates",
    "native_ids_of_keys",
    "new_entity_keys",
    "settle",
    "snapshot_builder",
]

_T = TypeVar("_T")

_SNAPSHOT_FIELDS = WRITABLE_FIELDS | PRESERVABLE_TIMESTAMPS


def snapshot_builder(
    primary_fields: Iterable[str], target_fields: Iterable[str]
) -> Callable[[Stream], Snapshot]:
    """A function equal to ``build_snapshot(stream, primary_fields=..., target_fields=...,
    given={})`` (a stream read from the primary, no write carrying extra fields), with the
    field choice made once instead of per stream."""
    primary = set(primary_fields)
    always: list[str] = []
    if_present: list[str] = []
    for name in target_fields:
        if name not in _SNAPSHOT_FIELDS:
            continue
        if name in primary:
            always.append(name)
        elif name in PRESERVABLE_TIMESTAMPS:
            if_present.append(name)  # a server timestamp the primary reported
    # Only what a stream can hold: a datetime, an enum, or a plain JSON value.
    dt, en = datetime, Enum

    def build(stream: Stream) -> Snapshot:
        out: Snapshot = {}
        for name in always:
            value = getattr(stream, name)
            if isinstance(value, dt):
                value = value.isoformat()
            elif isinstance(value, en):
                value = value.value
            out[name] = [value]
        for name in if_present:
            value = getattr(stream, name)
            if value is not None:
                out[name] = [value.isoformat() if isinstance(value, dt) else value]
        return out

    return build


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
    raise ValueError(kind)  # pragma: no cover - a programming error


async def _run(
    store: JournalStore, conn: AsyncConnection, kind: str, shared: Sequence[Any], own: Sequence[Any]
) -> Any:
    """Execute statement ``kind`` for the rows of ``own`` (flattened per-row values)."""
    width = _OWN[kind]
    sql = _sql(store.dialect, kind, len(own) // width)
    return await conn.exec_driver_sql(sql, (*shared, *own))


_OWN = {
    "keys_of_native": 1,
    "insert_keys": 3,
    "mapped_keys": 1,
    "queued_keys": 1,
    "insert_creates": 2,
    "record_mappings": 3,
    "delete_settled": 1,
}


def new_entity_keys(count: int) -> list[str]:
    """``count`` fresh entity keys: 32 hex characters like the manager's, but starting with the
    time (microseconds), so that a chunk's keys land next to each other in the id map's and the
    queue's key indexes (a few index pages written per chunk instead of about one per row); the
    72 random bits after it keep keys made in the same microsecond apart."""
    prefix = f"{time.time_ns() // 1000:014x}"
    noise = os.urandom(9 * count).hex()
    return [prefix + noise[i * 18 : i * 18 + 18] for i in range(count)]


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
    assigned here. One look-up and one insert per :data:`PART` ids."""
    encoded = dict(encode_id(i) for i in native_ids)
    found: dict[str, str] = {}
    made: dict[str, str] = {}
    texts = list(encoded)
    for part in _parts(texts):
        result = await _run(store, conn, "keys_of_native", (entity_type, backend), part)
        found.update((r[0], r[1]) for r in result)
    missing = [t for t in texts if t not in found]
    if missing:
        now = store.clock()
        keys = new_entity_keys(len(missing))
        for start in range(0, len(missing), PART):
            own: list[Any] = []
            for text, key in zip(
                missing[start : start + PART], keys[start : start + PART], strict=True
            ):
                own += (key, text, encoded[text])
            result = await _run(store, conn, "insert_keys", (entity_type, backend, now), own)
            made.update((r[0], r[1]) for r in result)
        found.update(made)
        raced = [t for t in missing if t not in made]
        for part in _parts(raced):  # mapped by a concurrent writer in between: its key wins
            result = await _run(store, conn, "keys_of_native", (entity_type, backend), part)
            found.update((r[0], r[1]) for r in result)
    return found, set(made.values())


async def enqueue_creates(
    store: JournalStore,
    conn: AsyncConnection,
    *,
    entity_type: str,
    target: str,
    items: Sequence[tuple[str, Snapshot]],
    owner: str,
    lease_seconds: float,
    fresh: set[str],
) -> list[QueueRow]:
    """Like :func:`multibackend.migrate.ledger.enqueue_if_absent`: insert a create row
    ``(key, snapshot)`` for ``target``, leased by ``owner``, only where the entity has neither a
    mapping on ``target`` nor a queue row for it; return the inserted rows as inserted, in id
    order. Keys in ``fresh`` were assigned in this transaction and are not looked up."""
    if not items:
        return []
    known = [k for k, _ in items if k not in fresh]
    skip: set[str] = set()
    for part in _parts(known):
        mapped = await _run(store, conn, "mapped_keys", (entity_type, target), part)
        skip.update(r[0] for r in mapped)
        queued = await _run(store, conn, "queued_keys", (entity_type, target), part)
        skip.update(r[0] for r in queued)
    wanted = [(k, s) for k, s in items if k not in skip]
    if not wanted:
        return []
    now = store.clock()
    until = now + lease_seconds
    shared: tuple[Any, ...] = (entity_type, target, "create", 1, False, "leased", 0, now)
    shared += (False, owner, until, now, now)
    snapshots = dict(wanted)
    inserted: list[QueueRow] = []
    for batch in _parts(wanted):
        own: list[Any] = []
        for key, snapshot in batch:
            own += (key, json.dumps(snapshot))
        # ON CONFLICT DO NOTHING: a row a concurrent manager write inserted in between wins (it
        # holds newer state); the backfill re-checks the mapping before applying anyway.
        result = await _run(store, conn, "insert_creates", shared, own)
        for row_id, key in result:
            inserted.append(
                QueueRow(
                    id=int(row_id),
                    entity_type=entity_type,
                    entity_key=key,
                    target=target,
                    op="create",
                    seq=1,
                    deleted=False,
                    snapshot=snapshots[key],
                    status="leased",
                    attempts=0,
                    next_attempt_at=now,
                    last_error=None,
                    lease_owner=owner,
                    lease_until=until,
                    maybe_created=False,
                    enqueued_at=now,
                    updated_at=now,
                )
            )
    inserted.sort(key=lambda r: r.id)
    return inserted


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


async def settle(store: JournalStore, owner: str, outcomes: Sequence[Outcome]) -> None:
    """:meth:`JournalStore.settle` with a fast path for the common outcome of a chunk: rows done
    (mapped after a create, or found already there). Those are settled here in one transaction:
    their mappings recorded and the rows removed, by a few statements per chunk; a row written
    again while it was applied (its ``seq`` moved on) goes back to pending with the newer state,
    exactly as the store does. Every other outcome, and the whole chunk when a new mapping
    clashes with another entity's, is settled by the store."""
    plain = [o for o in outcomes if isinstance(o, Done) and not o.unmapped]
    rest = [o for o in outcomes if not (isinstance(o, Done) and not o.unmapped)]
    if plain:
        try:
            await _settle_done(store, owner, plain)
        except IntegrityError:
            # One native id claimed by two entities: the store records the others and retries
            # the clashing rows (the failed transaction changed nothing).
            rest = list(outcomes)
    if rest:
        await store.settle(owner, rest)


async def _settle_done(store: JournalStore, owner: str, done: Sequence[Done]) -> None:
    now = store.clock()
    mappings: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for o in done:
        if o.mapped is not None:
            text, is_int = encode_id(o.mapped)
            mappings[(o.row.entity_type, o.row.target)] += (o.row.entity_key, text, is_int)
    by_seq: dict[int, list[int]] = defaultdict(list)
    for o in done:
        by_seq[o.row.seq].append(o.row.id)
    async with store.begin() as conn:
        for (entity_type, target), own in mappings.items():
            for start in range(0, len(own), PART * 3):
                await _run(
                    store,
                    conn,
                    "record_mappings",
                    (entity_type, target, now),
                    own[start : start + PART * 3],
                )
        removed: set[int] = set()
        for seq, ids in by_seq.items():
            for part in _parts(ids):
                result = await _run(store, conn, "delete_settled", (owner, seq), part)
                removed.update(r[0] for r in result)
        again = [o.row.id for o in done if o.row.id not in removed]
        if again:
            # Written again while applied: pending with the new state (as the store settles).
            await conn.execute(
                update(queue)
                .where(queue.c.id.in_(again), queue.c.lease_owner == owner)
                .values(
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    last_error=None,
                    maybe_created=False,
                    enqueued_at=queue.c.updated_at,
                    lease_owner=None,
                    lease_until=None,
                )
            )
