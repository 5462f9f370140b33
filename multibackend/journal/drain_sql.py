"""The worker's journal transactions on SQLite, each run whole in aiosqlite's thread.

:meth:`JournalStore.claim_batch`, :meth:`~JournalStore.settle` and
:meth:`~JournalStore.settle_and_claim` are most of a drain's cost. Built with SQLAlchemy Core a
batch ran about ten statements, each compiled (from the cache), its parameters processed and
carried to aiosqlite's thread in four trips (make a cursor, execute, fetch, close): some forty
trips a batch, each a hand-over between two threads that waits for the GIL and, on a busy
machine, for the scheduler. Here a whole transaction (``BEGIN IMMEDIATE``, the statements as
fixed SQL text with id lists as one JSON parameter read by ``json_each``, ``COMMIT``) is one
function run in aiosqlite's thread on its sqlite3 connection: one trip, and one more when the
pool resets the connection.

That needs two private members of ``aiosqlite.Connection``: ``_execute`` (queue a function on
the connection's thread; SQLAlchemy's own aiosqlite adapter relies on that thread and on
``_conn`` too) and ``_conn`` (its sqlite3 connection), used through the one guarded helper the
write path uses too (:func:`multibackend.journal.direct.sqlite_driver` and
:func:`~multibackend.journal.direct.on_thread`). :func:`run` raises :class:`Unsupported` when
the guard says no; the store then uses its Core statements for good (tested
both ways, ``tests/journal/test_drain_sql.py``). Also needed: SQLite 3.38 (``json_each`` built
in; ``RETURNING`` is 3.35), see :data:`AVAILABLE`.

The statements do what the Core statements of :class:`JournalStore` do, row for row; the tests
run the same claims and settles both ways and compare the journals afterwards.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from multibackend.journal.direct import on_thread, sqlite_driver
from multibackend.journal.schema import id_map, queue, targets

__all__ = [
    "AVAILABLE",
    "Claimed",
    "Unsupported",
    "claim",
    "claim_batch",
    "run",
    "settle",
    "settle_and_claim",
]

#: json_each is built into SQLite from 3.38 (RETURNING from 3.35).
AVAILABLE = sqlite3.sqlite_version_info >= (3, 38, 0)

_T = TypeVar("_T")
_State = tuple[float | None, str | None, int]
#: What a claim of a batch found: target states, leased rows (all columns, table order), ids
#: taken over from a dead worker, and (entity type, entity key, target, native id, is int)
#: of the leased entities' mappings.
Claimed = tuple[dict[str, _State], list[Any], set[int], list[tuple[str, str, str, str, bool]]]


class Unsupported(Exception):
    """The driver connection is not an aiosqlite connection with the members used here."""


_Q = queue.name
_M = id_map.name
_COLUMNS = ", ".join(c.name for c in queue.c)
_IDS = "(SELECT value FROM json_each(?{n}))"

_TARGETS = f"SELECT target, paused_until, pause_reason, consecutive_failures FROM {targets.name}"
_SET_TARGET = (
    f"INSERT INTO {targets.name} (target, paused_until, pause_reason, consecutive_failures, "
    "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (target) DO UPDATE SET "
    "paused_until = excluded.paused_until, pause_reason = excluded.pause_reason, "
    "consecutive_failures = excluded.consecutive_failures, updated_at = excluded.updated_at"
)
# Expired leases (a dead worker's rows), then pending rows whose time has come; each served in
# order by the (status, next_attempt_at) index (see JournalStore._claim_select).
_DUE = (
    f"SELECT id, status FROM (SELECT id, status FROM {_Q} WHERE status = 'leased' "
    f"AND lease_until < ?1 AND target IN {_IDS.format(n=2)} ORDER BY lease_until, id LIMIT ?3) "
    f"UNION ALL SELECT id, status FROM (SELECT id, status FROM {_Q} WHERE status = 'pending' "
    f"AND next_attempt_at <= ?1 AND target IN {_IDS.format(n=2)} "
    "ORDER BY next_attempt_at, id LIMIT ?3) LIMIT ?3"
)
# SET expressions see the row as it was: a row that was leased is a dead worker's, whose create
# may have reached the target before it died.
_LEASE = (
    f"UPDATE {_Q} SET status = 'leased', lease_owner = ?1, lease_until = ?2, "
    "maybe_created = (maybe_created OR status = 'leased') "
    f"WHERE id IN {_IDS.format(n=3)} RETURNING {_COLUMNS}"
)
_NATIVE = (
    f"SELECT entity_key, native_id, id_is_int FROM {_M} WHERE entity_type = ?1 "
    f"AND backend = ?2 AND entity_key IN {_IDS.format(n=3)}"
)
_MAP = (
    f"INSERT INTO {_M} (entity_type, entity_key, backend, native_id, id_is_int, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (entity_type, entity_key, backend) "
    "DO UPDATE SET native_id = excluded.native_id, id_is_int = excluded.id_is_int"
)
_UNMAP = f"DELETE FROM {_M} WHERE entity_type = ? AND entity_key = ? AND backend = ?"
# Only rows still at the seq that was applied go; rows written again meanwhile stay.
_DELETE_DONE = (
    f"DELETE FROM {_Q} WHERE id IN {_IDS.format(n=1)} AND seq = ?2 AND lease_owner = ?3 "
    "RETURNING id"
)
# As store.rewritten_while_applied: pending, fresh, with the newer state.
_REDO = (
    f"UPDATE {_Q} SET status = 'pending', attempts = 0, next_attempt_at = ?1, "
    "last_error = NULL, maybe_created = 0, enqueued_at = updated_at, lease_owner = NULL, "
    f"lease_until = NULL WHERE id IN {_IDS.format(n=2)} AND lease_owner = ?3"
)
_LATER = (
    f"UPDATE {_Q} SET status = 'pending', attempts = attempts + ?, next_attempt_at = ?, "
    "last_error = ?, maybe_created = (maybe_created OR ?), lease_owner = NULL, "
    "lease_until = NULL WHERE id = ? AND lease_owner = ?"
)
_PARK = (
    f"UPDATE {_Q} SET status = CASE WHEN seq = ? THEN 'parked' ELSE 'pending' END, "
    "attempts = attempts + 1, next_attempt_at = ?, last_error = ?, lease_owner = NULL, "
    "lease_until = NULL WHERE id = ? AND lease_owner = ?"
)
#: The error of a done row whose adopted copy was mapped to another entity first.
CLASH = "the adopted copy belongs to another entity"


async def run(engine: AsyncEngine, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(db, *args)`` in one write transaction on a pooled connection of ``engine``, run
    in aiosqlite's thread (``db``: its sqlite3 connection) through
    :func:`multibackend.journal.direct.on_thread`. sqlite3 errors are raised as SQLAlchemy
    would raise them (the manager's journal guard turns those into Unavailable). Raises
    :class:`Unsupported` when :func:`~multibackend.journal.direct.sqlite_driver` finds no
    aiosqlite connection with the private call it needs."""
    async with engine.connect() as conn:
        driver = await sqlite_driver(conn)
        if driver is None:
            raise Unsupported("not an aiosqlite connection with _execute and _conn")
        return await on_thread(driver, functools.partial(_transaction, fn=fn, args=args))


def _transaction(db: sqlite3.Connection, *, fn: Callable[..., _T], args: Sequence[Any]) -> _T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db, *args)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def _json(values: Sequence[Any]) -> str:
    return json.dumps(list(values))


def claim(
    db: sqlite3.Connection,
    owner: str,
    targets_: Sequence[str],
    limit: int,
    until: float,
    now: float,
) -> tuple[list[Any], set[int]]:
    """Lease up to ``limit`` due rows of ``targets_``; returns the leased rows (every column,
    table order) and the ids among them taken over from a dead worker."""
    found = db.execute(_DUE, (now, _json(targets_), limit)).fetchall()
    if not found:
        return [], set()
    taken = {r[0] for r in found if r[1] == "leased"}
    rows = db.execute(_LEASE, (owner, until, _json([r[0] for r in found]))).fetchall()
    return rows, taken


def claim_batch(
    db: sqlite3.Connection,
    owner: str,
    targets_: Sequence[str],
    limit: int,
    lease_seconds: float,
    now: float,
) -> Claimed:
    """Target states, a claim of due rows of the targets not paused at ``now``, and the
    claimed entities' mappings on their targets (as ``JournalStore.claim_batch``)."""
    states = {r[0]: (r[1], r[2], r[3]) for r in db.execute(_TARGETS)}
    active = [t for t in targets_ if not ((states.get(t, (None, None, 0))[0] or 0) > now)]
    if not active or limit <= 0:
        return states, [], set(), []
    rows, taken = claim(db, owner, active, limit, now + lease_seconds, now)
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:  # entity_type, entity_key, target: columns 1, 2, 3
        groups.setdefault((r[1], r[3]), []).append(r[2])
    native = []
    for (etype, target), keys in groups.items():
        for key, text, is_int in db.execute(_NATIVE, (etype, target, _json(keys))):
            native.append((etype, key, target, text, is_int))
    return states, rows, taken, native


def settle(
    db: sqlite3.Connection,
    owner: str,
    removed: Sequence[tuple[str, str, str]],
    mapped: Sequence[tuple[int, tuple[str, str, str, str, bool, float]]],
    done: Sequence[tuple[int, int]],
    later: Sequence[tuple[int, float, str, bool, int]],
    parked: Sequence[tuple[int, str, int]],
    now: float,
) -> None:
    """Settle outcomes as ``JournalStore.settle`` does. ``removed``: (entity type, key,
    target) of done deletes to unmap; ``mapped``: (row id, id-map values) of done rows to map;
    ``done``: (row id, seq applied); ``later``: (attempts to add, when, error, maybe created,
    row id); ``parked``: (seq applied, error, row id)."""
    if removed:
        db.executemany(_UNMAP, removed)
    clashes: set[int] = set()
    if mapped:
        try:
            db.executemany(_MAP, [values for _, values in mapped])
        except sqlite3.IntegrityError:
            # One native id claimed by two entities. The failed statement undid only its own
            # row (those before it stay, and are upserted again below to the same values), so
            # no savepoint is needed: each row on its own, a clash failing only its statement.
            for row_id, values in mapped:
                try:
                    db.execute(_MAP, values)
                except sqlite3.IntegrityError:
                    clashes.add(row_id)
    if clashes:
        # Not done: search again, or create, next time (as JournalStore.settle).
        later = [*later, *((0, now, CLASH, True, i) for i, _ in done if i in clashes)]
        done = [(i, seq) for i, seq in done if i not in clashes]
    removed_ids: set[int] = set()
    by_seq: dict[int, list[int]] = {}
    for row_id, seq in done:
        by_seq.setdefault(seq, []).append(row_id)
    for seq, ids in by_seq.items():
        result = db.execute(_DELETE_DONE, (_json(ids), seq, owner))
        removed_ids.update(r[0] for r in result)
    again = [row_id for row_id, _ in done if row_id not in removed_ids]
    if again:
        # Written again while applied: pending with the new state.
        db.execute(_REDO, (now, _json(again), owner))
    if later:
        db.executemany(_LATER, [(*values, owner) for values in later])
    if parked:
        db.executemany(_PARK, [(seq, now, error, row_id, owner) for seq, error, row_id in parked])


def settle_and_claim(
    db: sqlite3.Connection,
    settle_args: Sequence[Any],
    target_states: Sequence[tuple[str, float | None, str | None, int, float]],
    claim_args: Sequence[Any],
) -> Claimed:
    """:func:`settle`, the target states recorded, then :func:`claim_batch`."""
    settle(db, *settle_args)
    for values in target_states:
        db.execute(_SET_TARGET, values)
    return claim_batch(db, *claim_args)
