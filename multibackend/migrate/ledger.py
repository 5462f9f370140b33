"""Journal operations the migration tools (and the manager) share, on top of :class:`JournalStore`.

Kept apart from :mod:`multibackend.journal.store` so that the store's queue mechanics (claim,
settle) stay one module of one responsibility; everything here is plain SQL on the journal's
tables with the same dialect handling (SQLite and PostgreSQL).

The important operations are "insert if absent" ones, so that the backfill and the manager agree
on one entity key per native id and the backfill never enqueues an entity that already has a copy
or pending work on the target (see :mod:`multibackend.migrate.backfill`).
"""

from __future__ import annotations

import json
import sqlite3
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.journal.keys import new_entity_key
from multibackend.journal.schema import id_map, intents, meta, queue, tombstones
from multibackend.journal.store import JournalStore, decode_id, encode_id
from multibackend.model import StreamId

__all__ = [
    "adopt_keys",
    "get_json_meta",
    "outstanding_keys",
    "prune_tombstones",
    "record_tombstone",
    "set_json_meta",
]


async def adopt_keys(
    store: JournalStore,
    conn: AsyncConnection,
    entity_type: str,
    backend: str,
    native_ids: Iterable[StreamId],
    fresh: set[str] | None = None,
) -> dict[str, str]:
    """The entity key of each native id of ``backend``, assigning a new key to unmapped ones.

    Insert-if-absent: when another writer (the manager, another backfill) maps the same native
    id concurrently, its key wins and is returned, never a second one. Returns ``{id text: key}``;
    the keys created here are added to ``fresh`` when given.
    """
    encoded = {encode_id(i)[0]: encode_id(i)[1] for i in native_ids}
    if not encoded:
        return {}
    found = await _keys(conn, entity_type, backend, list(encoded))
    missing = [t for t in encoded if t not in found]
    if missing:
        now = store.clock()
        stmt = (
            store.insert(id_map)
            .on_conflict_do_nothing()
            .returning(id_map.c.native_id, id_map.c.entity_key)
        )
        made: dict[str, str] = {}
        for start in range(0, len(missing), 500):
            result = await conn.execute(
                stmt,
                [
                    {
                        "entity_type": entity_type,
                        "entity_key": new_entity_key(),
                        "backend": backend,
                        "native_id": text,
                        "id_is_int": encoded[text],
                        "created_at": now,
                    }
                    for text in missing[start : start + 500]
                ],
            )
            made.update({r[0]: r[1] for r in result})
        found.update(made)
        if fresh is not None:
            fresh.update(made.values())
        raced = [t for t in missing if t not in made]
        if raced:  # mapped by a concurrent writer in between: its key wins
            found.update(await _keys(conn, entity_type, backend, raced))
    return found


_TRANSLATE_SQLITE = text(
    f"SELECT s.native_id, d.native_id, d.id_is_int FROM {id_map.name} AS s"
    f" JOIN {id_map.name} AS d ON d.entity_type = s.entity_type AND d.entity_key = s.entity_key"
    " AND d.backend = :to_backend"
    " WHERE s.entity_type = :entity_type AND s.backend = :from_backend"
    " AND s.native_id IN (SELECT value FROM json_each(:ids))"
)
# json_each is built into SQLite from 3.38 (and in most earlier builds, but not all).
_JSON_EACH = sqlite3.sqlite_version_info >= (3, 38, 0)


async def translate_chunk(
    store: JournalStore,
    entity_type: str,
    from_backend: str,
    texts: Sequence[str],
    to_backend: str,
) -> dict[str, StreamId]:
    """:meth:`JournalStore.translate_ids` for ids already as text, for verify's per-chunk
    look-ups: on SQLite the ids go as one JSON parameter (one statement text for every chunk,
    no IN list of a thousand parameters to expand and compile each time)."""
    if not texts:
        return {}
    if store.dialect != "sqlite" or not _JSON_EACH:
        return await store.translate_ids(entity_type, from_backend, texts, to_backend)
    params = {
        "entity_type": entity_type,
        "from_backend": from_backend,
        "to_backend": to_backend,
        "ids": json.dumps(list(texts)),
    }
    async with store.engine.connect() as conn:
        rows = (await conn.execute(_TRANSLATE_SQLITE, params)).all()
    return {r[0]: decode_id(r[1], r[2]) for r in rows}


async def _keys(
    conn: AsyncConnection, entity_type: str, backend: str, texts: Sequence[str]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for start in range(0, len(texts), 500):
        part = texts[start : start + 500]
        rows = await conn.execute(
            select(id_map.c.native_id, id_map.c.entity_key).where(
                id_map.c.entity_type == entity_type,
                id_map.c.backend == backend,
                id_map.c.native_id.in_(part),
            )
        )
        out.update({r[0]: r[1] for r in rows})
    return out


async def outstanding_keys(
    store: JournalStore, entity_type: str, keys: Iterable[str], targets: Sequence[str] | None = None
) -> set[str]:
    """Entity keys among ``keys`` with work in flight: queue rows pending or leased (on
    ``targets``), or a primary write started and not yet settled (an intent)."""
    wanted = list(keys)
    found: set[str] = set()
    async with store.engine.connect() as conn:
        for start in range(0, len(wanted), 500):
            # Intents before queue rows: a write settled between the two reads removes its
            # intent and adds its queue rows in one transaction, so read in this order it is
            # seen by one of them (the other order missed it on PostgreSQL, where each
            # statement sees the latest commits: the verifier then reported an in-flight delete
            # as an extra).
            pending_writes = select(intents.c.entity_key).where(
                intents.c.entity_type == entity_type,
                intents.c.entity_key.in_(wanted[start : start + 500]),
            )
            found.update(r[0] for r in await conn.execute(pending_writes))
            stmt = select(queue.c.entity_key).where(
                queue.c.entity_type == entity_type,
                queue.c.entity_key.in_(wanted[start : start + 500]),
                queue.c.status.in_(("pending", "leased")),
            )
            if targets is not None:
                stmt = stmt.where(queue.c.target.in_(list(targets)))
            found.update(r[0] for r in await conn.execute(stmt))
    return found


async def record_tombstone(
    store: JournalStore, conn: AsyncConnection, entity_type: str, backend: str, native_id: StreamId
) -> None:
    """Remember that ``native_id`` was deleted from ``backend`` now; at most every
    :data:`PRUNE_EVERY` seconds (per store), also drop a batch of tombstones no backfill can
    still ask for (:func:`prune_tombstones`), in the same transaction."""
    now = store.clock()
    stmt = store.insert(tombstones).values(
        entity_type=entity_type, backend=backend, native_id=encode_id(native_id)[0], deleted_at=now
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[tombstones.c.entity_type, tombstones.c.backend, tombstones.c.native_id],
            set_={"deleted_at": now},
        )
    )
    # The manager records a tombstone with every delete, long after the last backfill: without
    # pruning here the table would grow with every delete forever.
    last = _last_pruned.get(store)
    if last is None or not last - PRUNE_EVERY < now < last + PRUNE_EVERY:
        _last_pruned[store] = now
        await prune_tombstones(store, conn=conn, limit=PRUNE_BATCH)


#: Tombstones younger than this (seconds) are always kept: the allowance for the clocks of the
#: processes sharing a journal disagreeing (each stamps its deletes and runs with its own).
TOMBSTONE_MARGIN = 3600.0
#: An unfinished backfill whose checkpoint has not moved for this long (seconds) is taken for
#: dead. A dead run needs no tombstone: a resumed run asks only for deletes since it resumed.
STALE_RUN = 86400.0
#: How often (seconds, per store) recording a tombstone also prunes, and how many it drops then.
PRUNE_EVERY = 600.0
PRUNE_BATCH = 1000

_last_pruned: weakref.WeakKeyDictionary[JournalStore, float] = weakref.WeakKeyDictionary()


async def prune_tombstones(
    store: JournalStore,
    *,
    conn: AsyncConnection | None = None,
    margin: float = TOMBSTONE_MARGIN,
    stale: float = STALE_RUN,
    limit: int | None = None,
) -> int:
    """Drop the tombstones no backfill can still ask for; return how many were dropped.

    A backfill asks for the deletes since its run began (tombstones at or after that time), so
    a tombstone is needed only while a run that began before it still runs. Kept: every
    tombstone at or after the start of the oldest unfinished backfill (a checkpoint not marked
    done that moved within ``stale`` seconds; one without a start time keeps them all), and
    every tombstone younger than ``margin`` seconds. ``limit`` drops at most that many (the
    oldest first). Runs in ``conn``'s transaction when given.
    """
    if conn is None:
        async with store.begin() as own:
            return await prune_tombstones(store, conn=own, margin=margin, stale=stale, limit=limit)
    now = store.clock()
    cutoff = now - margin
    runs = await conn.execute(select(meta.c.value).where(meta.c.key.like(_BACKFILL_KEYS)))
    for (text_value,) in runs:
        try:
            point = json.loads(text_value)
        except ValueError:
            return 0  # unreadable: keep everything rather than guess
        if not isinstance(point, dict) or point.get("done"):
            continue
        began = point.get("since", point.get("started_at"))
        moved = max(
            (v for v in (point.get("at"), began) if isinstance(v, int | float)), default=None
        )
        if moved is not None and moved < now - stale:
            continue  # dead: a resumed run asks only for deletes since it resumed
        if not isinstance(began, int | float):
            return 0  # running, start unknown: keep everything
        cutoff = min(cutoff, float(began))
    old = tombstones.c.deleted_at < cutoff
    if limit is None:
        result = await conn.execute(delete(tombstones).where(old))
        return int(result.rowcount)
    key = tuple_(tombstones.c.entity_type, tombstones.c.backend, tombstones.c.native_id)
    oldest = (
        select(tombstones.c.entity_type, tombstones.c.backend, tombstones.c.native_id)
        .where(old)
        .order_by(tombstones.c.deleted_at)
        .limit(limit)
    )
    result = await conn.execute(delete(tombstones).where(key.in_(oldest)))
    return int(result.rowcount)


# The checkpoints of backfill runs (``backfill_checkpoint_key``), as a LIKE pattern.
_BACKFILL_KEYS = "backfill:%"


async def get_json_meta(
    store: JournalStore, key: str, conn: AsyncConnection | None = None
) -> dict[str, Any] | None:
    """A JSON object stored in ``mb_meta`` under ``key`` (None when absent)."""
    text = await store.get_meta(key, conn)
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


async def set_json_meta(
    store: JournalStore, conn: AsyncConnection, key: str, value: dict[str, Any]
) -> None:
    """Store a JSON object in ``mb_meta`` under ``key`` (replacing it)."""
    await store.set_meta(conn, key, json.dumps(value, sort_keys=True, default=str))
