"""A backfill chunk's journal work on SQLite as one transaction in aiosqlite's thread.

The backfill (:mod:`multibackend.migrate.backfill`) writes four journal rows per stream: the
source's id-map row (the entity key), a leased create row for the target, and once the target has
the copy, the target's id-map row and the create row's delete. Done statement by statement
(:mod:`multibackend.journal.bulk`) that took two transactions a chunk, about twenty trips to
aiosqlite's thread, and ``RETURNING`` clauses answering a row per stream. Each answered row is
one more ``sqlite3_step``, and the sqlite3 module lets go of the GIL around every step: each
costs the driver's thread a wait for the GIL, up to the interpreter's switch interval (5 ms)
whenever the event loop's thread is busy — which is when the backfill reads the next chunk. So
the journal work could not overlap the backfill's own (Python) work, and the main thread sat
idle for a third of the run waiting for it.

Here a chunk's work is one function run in the driver's thread inside ``BEGIN IMMEDIATE`` ..
``COMMIT`` (the backfill runs :func:`chunk` through a
:class:`~multibackend.journal.writer.HeldWriter`): the previous chunk's settle (its
copies' mappings recorded, its create rows removed) and this chunk's enqueue (tombstones,
entity keys, create rows, checkpoint). Rows go in as the parameters of multi-row VALUES (id
lists as one JSON parameter read by ``json_each``), nothing answers row by row: the ids of the
new create rows come back as one JSON row (``json_group_array``), and whether every row was
written from the statements' change counts. About a dozen steps a chunk instead of a few
thousand, and one commit instead of two.

Settling a chunk's copies with the next chunk means they stay leased by the backfill a little
longer: a manager write merges into such a row as into any leased row (the settle then sends it
back to pending with the newer state), and a killed run takes them back like its other rows.

The statements do what :mod:`multibackend.journal.bulk`'s do, row for row (the fallback for
PostgreSQL, or when the guard of :func:`multibackend.journal.direct.sqlite_driver` says no);
``tests/journal/test_bulk_sql.py`` runs both and compares the journals.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from multibackend.journal.schema import id_map, meta, queue, tombstones
from multibackend.journal.store import encode_id

__all__ = ["Enqueue", "Enqueued", "Settle", "chunk"]

_Q = queue.name
_M = id_map.name
_T = tombstones.name
_EACH = "(SELECT value FROM json_each(?{n}))"

# The highest queue id before this chunk's creates (every id above it is theirs: the
# transaction holds the write lock, and SQLite gives new rows ids above the highest), and
# whether anything was deleted on the source since the run began.
_PROBE = (
    f"SELECT (SELECT max(id) FROM {_Q}), EXISTS (SELECT 1 FROM {_T} WHERE entity_type = ?1 "
    "AND backend = ?2 AND deleted_at >= ?3)"
)
_TOMBSTONED = (
    f"SELECT json_group_array(native_id) FROM {_T} WHERE entity_type = ?1 AND backend = ?2 "
    f"AND deleted_at >= ?3 AND native_id IN {_EACH.format(n=4)}"
)
_KEYS_OF = (
    f"SELECT json_group_object(native_id, entity_key) FROM {_M} WHERE entity_type = ?1 "
    f"AND backend = ?2 AND native_id IN {_EACH.format(n=3)}"
)
# Entities that already have a copy on the target, or a queue row for it.
_SKIP = (
    f"SELECT json_group_array(entity_key) FROM (SELECT entity_key FROM {_M} "
    f"WHERE entity_type = ?1 AND backend = ?2 AND entity_key IN {_EACH.format(n=3)} "
    f"UNION SELECT entity_key FROM {_Q} WHERE entity_type = ?1 AND target = ?2 "
    f"AND entity_key IN {_EACH.format(n=3)})"
)
_NEW_ROWS = (
    f"SELECT count(*), json_group_array(id), json_group_array(entity_key) FROM {_Q} "
    "WHERE id > ?1 "
    # "+": a range of the primary key, not the (entity_type, ...) index over the whole queue.
    "AND +entity_type = ?2 AND +target = ?3"
)
# Only if the ids were not above the old maximum (SQLite past the largest rowid): by key.
_NEW_ROWS_BY_KEY = (
    f"SELECT count(*), json_group_array(id), json_group_array(entity_key) FROM {_Q} "
    "WHERE entity_type = ?1 "
    f"AND target = ?2 AND lease_owner = ?3 AND enqueued_at = ?4 AND status = 'leased' "
    f"AND attempts = 0 AND NOT maybe_created AND entity_key IN {_EACH.format(n=5)}"
)
_SET_META = (
    f'INSERT INTO {meta.name} ("key", value) VALUES (?1, ?2) '
    'ON CONFLICT ("key") DO UPDATE SET value = excluded.value'
)
_DELETE_DONE = f"DELETE FROM {_Q} WHERE lease_owner = ?1 AND seq = ?2 AND id IN {_EACH.format(n=3)}"
# As store.rewritten_while_applied: rows written again while applied go back to pending with
# the newer state (the rows settled above are gone, so only those are left to match).
_REDO = (
    f"UPDATE {_Q} SET status = 'pending', attempts = 0, next_attempt_at = ?1, "
    "last_error = NULL, maybe_created = 0, enqueued_at = updated_at, lease_owner = NULL, "
    f"lease_until = NULL WHERE lease_owner = ?2 AND id IN {_EACH.format(n=3)}"
)


# Row data is bound as the parameters of a multi-row VALUES (a statement per row count, built
# once): read from a JSON parameter instead, the snapshots cost SQLite ~4 ms a chunk to parse.
@functools.lru_cache(maxsize=32)
def _values(kind: str, rows: int) -> str:
    """Statement ``kind`` for ``rows`` rows: ``?1``.. shared, then each row's own values."""

    def tuples(shared: str, own: int, first: int) -> str:
        return ", ".join(
            f"({shared}, " + ", ".join(f"?{first + r * own + i}" for i in range(own)) + ")"
            for r in range(rows)
        )

    if kind == "adopt":  # own: key, native id text, id is int; a key assigned first wins
        return (
            f"INSERT INTO {_M} (entity_type, backend, created_at, entity_key, native_id, "
            f"id_is_int) VALUES {tuples('?1, ?2, ?3', 3, 4)} ON CONFLICT DO NOTHING"
        )
    if kind == "map":  # own: key, native id text, id is int
        return (
            f"INSERT INTO {_M} (entity_type, backend, created_at, entity_key, native_id, "
            f"id_is_int) VALUES {tuples('?1, ?2, ?3', 3, 4)} "
            "ON CONFLICT (entity_type, entity_key, backend) DO UPDATE SET "
            "native_id = excluded.native_id, id_is_int = excluded.id_is_int"
        )
    if kind == "creates":  # own: key, snapshot; leased; a row a manager write made first wins
        shared = "?1, ?2, 'create', 1, 0, 'leased', 0, ?3, 0, ?4, ?5, ?3, ?3"
        return (
            f"INSERT INTO {_Q} (entity_type, target, op, seq, deleted, status, attempts, "
            "next_attempt_at, maybe_created, lease_owner, lease_until, enqueued_at, "
            f"updated_at, entity_key, snapshot) VALUES {tuples(shared, 2, 6)} "
            "ON CONFLICT DO NOTHING"
        )
    raise ValueError(kind)  # pragma: no cover - a programming error


#: Rows per statement (SQLite allows 32,766 parameters).
_PART = 1000


def _insert(
    db: sqlite3.Connection, kind: str, shared: Sequence[Any], own: Sequence[Any], width: int
) -> int:
    """Insert rows with statement ``kind``, ``own`` holding each row's ``width`` values one
    after the other (no tuple per row: fewer objects for the garbage collector); how many
    rows were written."""
    written = 0
    step = _PART * width
    for start in range(0, len(own), step):
        part = own[start : start + step]
        params = [*shared, *part]
        written += db.execute(_values(kind, len(part) // width), params).rowcount
    return written


class Settle(NamedTuple):
    """Rows of ``target`` that ``owner`` applied: ``done`` as :data:`multibackend.journal.bulk.
    Created` tuples (row id, seq, entity key, native id or None)."""

    owner: str
    entity_type: str
    target: str
    done: Sequence[tuple[int, int, str, Any]]
    now: float


class Enqueue(NamedTuple):
    """A chunk to enqueue: for each stream of ``backend`` its native id (text, is int) and
    snapshot JSON text; ``keys``: a new entity key for each, used if it has none."""

    entity_type: str
    backend: str
    target: str
    texts: Sequence[str]
    is_int: Sequence[bool]
    snapshots: Sequence[str]
    keys: Sequence[str]
    since: float
    owner: str
    now: float
    lease_until: float
    meta_key: str
    meta_value: str


class Enqueued(NamedTuple):
    """What :func:`chunk` did with an :class:`Enqueue`: the native ids (text) deleted since,
    each live id's entity key, the keys assigned now, and the create rows inserted as
    (id, entity key), in id order."""

    dead: set[str]
    keys: dict[str, str]
    fresh: set[str]
    inserted: list[tuple[int, str]]


def chunk(
    db: sqlite3.Connection, settle: Settle | None, enqueue: Enqueue | None
) -> tuple[bool, Enqueued | None]:
    """Settle, then enqueue, in the caller's transaction. Returns whether the settle was done
    (False: one of its native ids is mapped to another entity already; nothing of the settle
    was changed and the caller settles those rows its other way) and the enqueue's answer."""
    settled = True if settle is None else _settle(db, settle)
    return settled, None if enqueue is None else _enqueue(db, enqueue)


def _settle(db: sqlite3.Connection, s: Settle) -> bool:
    if not s.done:
        return True
    mapped: list[Any] = []
    for _, _, key, native in s.done:
        if native is not None:
            mapped += (key, *encode_id(native))
    if mapped:
        # A failed statement undoes only itself: with more than one, a savepoint undoes all.
        several = len(mapped) > _PART * 3
        if several:
            db.execute("SAVEPOINT mb_settle")
        try:
            _insert(db, "map", (s.entity_type, s.target, s.now), mapped, 3)
        except sqlite3.IntegrityError:
            # A native id mapped to another entity already. Nothing of the settle stays: the
            # rows are still leased, and the caller settles them its other way, one by one.
            if several:
                db.execute("ROLLBACK TO mb_settle")
                db.execute("RELEASE mb_settle")
            return False
        if several:
            db.execute("RELEASE mb_settle")
    by_seq: dict[int, list[int]] = {}
    for row_id, seq, _, _ in s.done:
        by_seq.setdefault(seq, []).append(row_id)
    removed = 0
    for seq, ids in by_seq.items():
        removed += db.execute(_DELETE_DONE, (s.owner, seq, json.dumps(ids))).rowcount
    if removed != len(s.done):
        # Written again while applied: pending with the new state (as the store does).
        db.execute(_REDO, (s.now, s.owner, json.dumps([d[0] for d in s.done])))
    return True


def _one(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    row = db.execute(sql, params).fetchone()
    return None if row is None else row[0]


def _enqueue(db: sqlite3.Connection, e: Enqueue) -> Enqueued:
    top, recent = db.execute(_PROBE, (e.entity_type, e.backend, e.since)).fetchone()
    live: Sequence[int] = range(len(e.texts))
    dead: set[str] = set()
    if recent:
        dead = set(
            json.loads(
                _one(db, _TOMBSTONED, (e.entity_type, e.backend, e.since, json.dumps(e.texts)))
            )
        )
        if dead:
            live = [i for i in live if e.texts[i] not in dead]
    if not live:
        db.execute(_SET_META, (e.meta_key, e.meta_value))
        return Enqueued(dead, {}, set(), [])
    proposed: list[Any] = []
    for i in live:
        proposed += (e.keys[i], e.texts[i], e.is_int[i])
    added = _insert(db, "adopt", (e.entity_type, e.backend, e.now), proposed, 3)
    keys: dict[str, str]
    if added == len(live):
        keys = {e.texts[i]: e.keys[i] for i in live}
        fresh: set[str] = set(keys.values())
    else:  # some were mapped before (or by a concurrent writer): their key wins
        wanted = json.dumps([e.texts[i] for i in live])
        keys = json.loads(_one(db, _KEYS_OF, (e.entity_type, e.backend, wanted)))
        fresh = {e.keys[i] for i in live if keys.get(e.texts[i]) == e.keys[i]}
    known = [keys[e.texts[i]] for i in live if keys[e.texts[i]] not in fresh]
    skip: set[str] = set()
    if known:
        skip = set(json.loads(_one(db, _SKIP, (e.entity_type, e.target, json.dumps(known)))))
    items: list[Any] = []
    for i in live:
        key = keys[e.texts[i]]
        if key not in skip:
            items += (key, e.snapshots[i])
    inserted: list[tuple[int, str]] = []
    if items:
        shared = (e.entity_type, e.target, e.now, e.owner, e.lease_until)
        made = _insert(db, "creates", shared, items, 2)
        if made:
            found = db.execute(
                _NEW_ROWS, (-1 if top is None else top, e.entity_type, e.target)
            ).fetchone()
            if found[0] != made:
                wanted = json.dumps([keys[e.texts[i]] for i in live])
                params = (e.entity_type, e.target, e.owner, e.now, wanted)
                found = db.execute(_NEW_ROWS_BY_KEY, params).fetchone()
            # Two flat lists (no list per row), in the same row order: one aggregation pass.
            ids, new_keys = json.loads(found[1]), json.loads(found[2])
            inserted = sorted(zip(ids, new_keys, strict=True))
    db.execute(_SET_META, (e.meta_key, e.meta_value))
    return Enqueued(dead, keys, fresh, inserted)
