"""The worker's claim on PostgreSQL in four statements of fixed SQL.

The Core claim took six statements, each a round trip (the target states, ``SET LOCAL``, the
expired leases, the due rows, the lease, the id-map look-up) and SQLAlchemy's compilation and
result processing. Here:

1. the target states, with ``enable_bitmapscan`` turned off for the transaction in the same
   statement (``set_config(.., true)``; see ``JournalStore._claim_in`` for why);
2. the ids to lease: expired leases (a dead worker's), then due pending rows, each
   ``FOR UPDATE SKIP LOCKED`` in its own CTE (not allowed under a ``UNION`` directly), pulled
   only as far as the limit needs;
3. the lease, returning every column; then the leased entities' mappings, a statement per
   (entity type, target).

Still open: on a journal without planner statistics the id-map look-up runs through the
native-id index (entity type, backend, native id), filtering every mapping of the target by
entity key (1.5-3 ms a batch at 10,000-20,000 mappings), until autovacuum analyzes the table;
a correlated look-up per leased row in the lease's RETURNING was planned the same way (tried).

The statements do what the Core claim does; ``tests/journal/test_drain_sql.py`` runs the same
scenario both ways on PostgreSQL and compares the journals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.journal.schema import id_map, queue, targets

__all__ = ["claim_batch", "insert_mappings"]

_Q = queue.name
_M = id_map.name
_COLUMNS = ", ".join(f"q.{c.name}" for c in queue.c)

_TARGETS = (
    "SELECT set_config('enable_bitmapscan', 'off', true), t.target, t.paused_until, "
    f"t.pause_reason, t.consecutive_failures FROM (SELECT 1) AS one LEFT JOIN {targets.name} "
    "AS t ON true"
)
_DUE = (
    f"WITH expired AS (SELECT id, status FROM {_Q} WHERE status = 'leased' "
    "AND lease_until < $1 AND target = ANY($2::text[]) ORDER BY lease_until, id LIMIT $3 "
    f"FOR UPDATE SKIP LOCKED), due AS (SELECT id, status FROM {_Q} WHERE status = 'pending' "
    "AND next_attempt_at <= $1 AND target = ANY($2::text[]) ORDER BY next_attempt_at, id "
    "LIMIT $3 FOR UPDATE SKIP LOCKED) "
    "(SELECT id, status FROM expired UNION ALL SELECT id, status FROM due) LIMIT $3"
)
_LEASE = (
    f"UPDATE {_Q} AS q SET status = 'leased', lease_owner = $2, lease_until = $3, "
    # SET sees the row as it was: a leased row is a dead worker's, whose create may have
    # reached the target before it died.
    "maybe_created = (q.maybe_created OR q.status = 'leased') "
    f"WHERE q.id = ANY($1::bigint[]) RETURNING {_COLUMNS}"
)
# New id-map rows in one statement from one array per column; any conflict (the entity already
# mapped on that backend, or the native id taken) skips the row, and RETURNING says which went
# in. No savepoint needed (an upsert violating the native-id constraint would abort the whole
# transaction): the caller handles the skipped rows.
_INSERT_MAPPINGS = (
    f"INSERT INTO {_M} (entity_type, entity_key, backend, native_id, id_is_int, created_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], "
    "$6::float8[]) ON CONFLICT DO NOTHING RETURNING entity_type, entity_key, backend"
)
_NATIVE = (
    f"SELECT entity_key, native_id, id_is_int FROM {_M} WHERE entity_type = $1 "
    "AND backend = $2 AND entity_key = ANY($3::text[])"
)


async def claim_batch(
    conn: AsyncConnection,
    owner: str,
    targets_: Sequence[str],
    limit: int,
    lease_seconds: float,
    now: float,
) -> tuple[
    dict[str, tuple[float | None, str | None, int]],
    list[Any],
    set[int],
    list[tuple[str, str, str, str, bool]],
]:
    """Target states, a lease of due rows of the targets not paused at ``now`` (all columns,
    table order), the ids taken over from a dead worker, and (entity type, entity key, target,
    native id, is int) of the leased entities' mappings; in ``conn``'s transaction."""
    states: dict[str, tuple[float | None, str | None, int]] = {}
    found_states: list[Any] = list((await conn.exec_driver_sql(_TARGETS)).all())
    for r in found_states:
        if r[1] is not None:
            states[r[1]] = (r[2], r[3], r[4])
    active = [t for t in targets_ if not ((states.get(t, (None, None, 0))[0] or 0) > now)]
    if not active or limit <= 0:
        return states, [], set(), []
    found: list[Any] = list((await conn.exec_driver_sql(_DUE, (now, active, limit))).all())
    if not found:
        return states, [], set(), []
    taken = {r[0] for r in found if r[1] == "leased"}
    lease = ([r[0] for r in found], owner, now + lease_seconds)
    rows: list[Any] = list((await conn.exec_driver_sql(_LEASE, lease)).all())
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:  # entity_type, entity_key, target: columns 1, 2, 3
        groups.setdefault((r[1], r[3]), []).append(r[2])
    native: list[tuple[str, str, str, str, bool]] = []
    for (etype, target), keys in groups.items():
        mapped: list[Any] = list((await conn.exec_driver_sql(_NATIVE, (etype, target, keys))).all())
        native.extend((etype, r[0], target, r[1], r[2]) for r in mapped)
    return states, rows, taken, native


async def insert_mappings(
    conn: AsyncConnection, values: Sequence[tuple[str, str, str, str, bool, float]]
) -> set[tuple[str, str, str]]:
    """Insert id-map rows (entity type, entity key, backend, native id, is int, created at)
    that conflict with none; returns the (entity type, entity key, backend) inserted."""
    columns = [list(c) for c in zip(*values, strict=True)]
    result: list[Any] = list((await conn.exec_driver_sql(_INSERT_MAPPINGS, tuple(columns))).all())
    return {(r[0], r[1], r[2]) for r in result}
