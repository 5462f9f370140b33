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
_LEASED = ", ".join(f"l.{c.name}" for c in queue.c)

# The planner settings of the claim's transaction, set by its first statement (``set_config(..,
# true)`` lasts until the transaction ends). A journal is often younger than its planner
# statistics (a new journal, a burst written since the last ANALYZE), and the guesses without
# them were each measured costing milliseconds a batch of 200 at 10,000 due rows:
#
# * bitmap scans read and sort every due row (8-10 ms) where the (status, next_attempt_at)
#   index scan stops after the batch;
# * a full sort of every due row for ``ORDER BY next_attempt_at, id`` (5.8 ms) where an
#   incremental sort over that index only sorts rows sharing a time (1.3 ms);
# * a sequential scan of the queue for the lease's ids (2.9 ms against 1.9 with the primary key);
# * hash or merge joins of the leased rows with every mapping of their targets, where a nested
#   loop looks each one up by primary key;
# * the look-up of a leased row's mapping through the native-id index (entity type, backend,
#   native id), filtering every mapping of the target (0.4 ms per row at 1,600 mappings, 2-3 ms
#   at 8,000): both indexes lead with the entity type, and when the planner believes the table
#   small it rates them alike and takes that one. The look-up bounds the entity key from both
#   sides (``>=`` and ``<=``: equal, but no equivalence the planner could treat as a constant)
#   and orders by it, ``LIMIT 1`` (the primary key allows one row): only the primary key gives
#   that order without a sort. On a fresh, a small fresh, an analyzed-empty, an analyzed-full
#   and a grown-since-analyzed id map it took the primary key each time (0.6-1.1 ms for 200
#   rows, against up to 945 ms for a plain join; ordering by all the key's columns with plain
#   equalities still lost on the small fresh map).
#
# These only rule plans out as far as alternatives exist (a disabled node stays possible, with a
# huge cost); ``jit`` is off because such costs would otherwise make PostgreSQL JIT-compile the
# statement (120 ms).
_SETTINGS = (
    "enable_bitmapscan",
    "enable_seqscan",
    "enable_sort",
    "enable_hashjoin",
    "enable_mergejoin",
    "jit",
)
_TARGETS = (
    "SELECT t.target, t.paused_until, t.pause_reason, t.consecutive_failures, "
    + ", ".join(f"set_config('{name}', 'off', true)" for name in _SETTINGS)
    + f" FROM (SELECT 1) AS one LEFT JOIN {targets.name} AS t ON true"
)
# Expired leases (a dead worker's rows), then due pending rows, each ``FOR UPDATE SKIP LOCKED``
# in its own CTE (not allowed under a UNION directly) and pulled only as far as the limit needs;
# leased in the same statement (one round trip instead of three: ids, lease, mappings), with
# the old status (``was``: 'leased' for a takeover) and the entity's mapping on the row's target.
# ``SET`` sees the row as it was: a leased row is a dead worker's, whose create may have reached
# the target before it died. Leasing in one statement was tried before (perf-drain2) and was
# slower than three, through the plans the settings above now rule out.
_CLAIM = (
    f"WITH expired AS (SELECT id, status FROM {_Q} WHERE status = 'leased' "
    "AND lease_until < $1 AND target = ANY($2::text[]) ORDER BY lease_until, id LIMIT $3 "
    f"FOR UPDATE SKIP LOCKED), due AS (SELECT id, status FROM {_Q} WHERE status = 'pending' "
    "AND next_attempt_at <= $1 AND target = ANY($2::text[]) ORDER BY next_attempt_at, id "
    "LIMIT $3 FOR UPDATE SKIP LOCKED), "
    "picked AS ((SELECT id, status FROM expired UNION ALL SELECT id, status FROM due) LIMIT $3), "
    f"leased AS (UPDATE {_Q} AS q SET status = 'leased', lease_owner = $4, lease_until = $5, "
    "maybe_created = (q.maybe_created OR q.status = 'leased') FROM picked AS p "
    f"WHERE q.id = p.id RETURNING {_COLUMNS}, p.status AS was) "
    f"SELECT {_LEASED}, l.was, m.native_id, m.id_is_int FROM leased AS l LEFT JOIN LATERAL "
    f"(SELECT native_id, id_is_int FROM {_M} AS m WHERE m.entity_type = l.entity_type "
    "AND m.entity_key >= l.entity_key AND m.entity_key <= l.entity_key AND m.backend = l.target "
    "ORDER BY m.entity_key LIMIT 1) AS m ON true"
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
        if r[0] is not None:
            states[r[0]] = (r[1], r[2], r[3])
    active = [t for t in targets_ if not ((states.get(t, (None, None, 0))[0] or 0) > now)]
    if not active or limit <= 0:
        return states, [], set(), []
    claim = (now, active, limit, owner, now + lease_seconds)
    rows: list[Any] = list((await conn.exec_driver_sql(_CLAIM, claim)).all())
    # Columns: the queue's (table order), then was, native_id, id_is_int.
    width = len(queue.c)
    taken = {r[0] for r in rows if r[width] == "leased"}
    native = [
        (r[1], r[2], r[3], r[width + 1], r[width + 2]) for r in rows if r[width + 1] is not None
    ]
    return states, rows, taken, native


async def insert_mappings(
    conn: AsyncConnection, values: Sequence[tuple[str, str, str, str, bool, float]]
) -> set[tuple[str, str, str]]:
    """Insert id-map rows (entity type, entity key, backend, native id, is int, created at)
    that conflict with none; returns the (entity type, entity key, backend) inserted."""
    columns = [list(c) for c in zip(*values, strict=True)]
    result: list[Any] = list((await conn.exec_driver_sql(_INSERT_MAPPINGS, tuple(columns))).all())
    return {(r[0], r[1], r[2]) for r in result}
