"""The worker's claim and settle on SQLite as fixed SQL run straight on the driver connection.

:meth:`JournalStore.claim_batch` and :meth:`JournalStore.settle` are most of a drain's cost. Built
with SQLAlchemy Core they ran ten statements a batch, each compiled (from the cache), its
parameters processed, and carried to aiosqlite's thread in four trips (make a cursor, execute,
fetch, close); every trip waits for the event loop's thread to let go of the GIL. Here each
statement is one trip (aiosqlite's ``execute_fetchall``, or ``executemany`` for per-row
values), its text fixed, id lists passed as one JSON parameter read back with ``json_each``.
SQLAlchemy still owns the transaction (``store.begin()``: ``BEGIN IMMEDIATE``, commit or
rollback), and sqlite3 errors are raised as SQLAlchemy would raise them.

The statements do what the Core statements of :class:`JournalStore` do, row for row; the tests
in ``tests/journal/test_drain_sql.py`` run the same claims and settles both ways and compare
the journal afterwards. Used when the SQLite library has ``json_each`` and ``RETURNING``
(3.38+, :data:`AVAILABLE`) and the driver is aiosqlite; otherwise the store uses Core.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.journal.schema import id_map, queue, targets

__all__ = [
    "AVAILABLE",
    "claim",
    "driver_of",
    "id_map_lookup",
    "record_mappings",
    "settle",
    "target_states",
]

#: json_each is built into SQLite from 3.38 (RETURNING from 3.35, UPDATE .. FROM from 3.33).
AVAILABLE = sqlite3.sqlite_version_info >= (3, 38, 0)

_Q = queue.name
_M = id_map.name
_COLUMNS = ", ".join(c.name for c in queue.c)
_IDS = "(SELECT value FROM json_each(?{n}))"

_TARGETS = f"SELECT target, paused_until, pause_reason, consecutive_failures FROM {targets.name}"
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


async def driver_of(conn: AsyncConnection) -> Any:
    """The aiosqlite connection under ``conn`` (in ``conn``'s transaction), or None when the
    driver is another one."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    return driver if hasattr(driver, "execute_fetchall") else None


async def _fetch(driver: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    try:
        return list(await driver.execute_fetchall(sql, params))
    except sqlite3.Error as exc:
        # As SQLAlchemy would raise it (OperationalError "database is locked"...), so callers
        # (the manager's journal guard) see the same exceptions either way.
        raise DBAPIError.instance(sql, params, exc, sqlite3.Error) from exc


async def _many(driver: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    try:
        async with driver.executemany(sql, rows):
            pass
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, rows, exc, sqlite3.Error) from exc


async def target_states(driver: Any) -> dict[str, tuple[float | None, str | None, int]]:
    return {r[0]: (r[1], r[2], r[3]) for r in await _fetch(driver, _TARGETS, ())}


async def claim(
    driver: Any, owner: str, targets_: Sequence[str], limit: int, until: float, now: float
) -> tuple[list[Any], set[int]]:
    """Lease up to ``limit`` due rows; returns the leased rows (every column, table order)
    and the ids among them taken over from a dead worker."""
    found = await _fetch(driver, _DUE, (now, json.dumps(list(targets_)), limit))
    if not found:
        return [], set()
    taken = {r[0] for r in found if r[1] == "leased"}
    rows = await _fetch(driver, _LEASE, (owner, until, json.dumps([r[0] for r in found])))
    return rows, taken


async def id_map_lookup(
    driver: Any, entity_type: str, target: str, keys: Sequence[str]
) -> list[Any]:
    """(entity_key, native_id, id_is_int) of the mapped ``keys`` on ``target``."""
    return await _fetch(driver, _NATIVE, (entity_type, target, json.dumps(list(keys))))


async def record_mappings(
    driver: Any,
    removed: Sequence[tuple[str, str, str]],
    mapped: Sequence[tuple[int, tuple[str, str, str, str, bool, float]]],
) -> set[int]:
    """The id-map changes of done rows: ``removed`` (entity type, key, backend) unmapped,
    ``mapped`` (row id, id-map values) upserted. Returns the ids of rows whose new mapping
    clashed with another entity's (left unrecorded), as ``JournalStore._record_mappings``."""
    if removed:
        await _many(driver, _UNMAP, removed)
    if not mapped:
        return set()
    try:
        await _many(driver, _MAP, [values for _, values in mapped])
        return set()
    except DBAPIError as exc:
        if not isinstance(exc.orig, sqlite3.IntegrityError):
            raise
    # One native id claimed by two entities. The failed statement undid only its own row (the
    # rows before it stay, and are upserted again below to the same values), so no savepoint
    # is needed: each row on its own, a clash failing only that row's statement.
    clashes: set[int] = set()
    for row_id, values in mapped:
        try:
            await _fetch(driver, _MAP, values)
        except DBAPIError as exc:
            if not isinstance(exc.orig, sqlite3.IntegrityError):
                raise
            clashes.add(row_id)
    return clashes


async def settle(
    driver: Any,
    owner: str,
    done: Sequence[tuple[int, int]],
    later: Sequence[tuple[int, float, str, bool, int]],
    parked: Sequence[tuple[int, str, int]],
    now: float,
) -> None:
    """Settle outcomes whose mappings are recorded (see ``JournalStore.settle``): ``done``
    as (row id, seq applied), ``later`` as (attempts to add, when, error, maybe created, row
    id), ``parked`` as (seq applied, error, row id)."""
    removed: set[int] = set()
    by_seq: dict[int, list[int]] = {}
    for row_id, seq in done:
        by_seq.setdefault(seq, []).append(row_id)
    for seq, ids in by_seq.items():
        result = await _fetch(driver, _DELETE_DONE, (json.dumps(ids), seq, owner))
        removed.update(r[0] for r in result)
    again = [row_id for row_id, _ in done if row_id not in removed]
    if again:
        # Written again while applied: pending with the new state.
        await _fetch(driver, _REDO, (now, json.dumps(again), owner))
    if later:
        await _many(driver, _LATER, [(*values, owner) for values in later])
    if parked:
        await _many(
            driver, _PARK, [(seq, now, error, row_id, owner) for seq, error, row_id in parked]
        )
