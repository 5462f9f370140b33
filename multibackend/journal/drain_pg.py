"""A sync worker's journal work on PostgreSQL as fixed SQL and a server-side function.

A worker's step (settle the last batch, record the target states it changed, claim the next
batch with the target states and the leased entities' mappings) is one call of
:data:`STEP_FUNCTION`, a PL/pgSQL function created with the journal's tables
(:func:`install`), run in autocommit: one round trip and one transaction, where main at
9b85ad8 took eleven (the pool's ping of three, ``BEGIN``, two settle statements, four claim
statements, ``COMMIT``). Its
body runs the statements of ``JournalStore._settle_in``, ``_set_target_state_in`` and
``claim_batch`` in their order, so it answers and leaves the journal as they do;
``tests/journal/test_drain_pg.py`` and ``test_drain_sql.py`` run the same scenarios both ways
and compare. When the function cannot be created the store uses :func:`claim_batch` (two
statements: the target states with the planner settings, then the claim) and Core for the rest.

The claim leases in one statement: the ids to lease (expired leases of a dead worker, then due
pending rows, each ``FOR UPDATE SKIP LOCKED``), the lease, and each leased row's mapping on its
target. On a journal without planner statistics its plans are pinned by the settings described
at ``_SETTINGS``.

Settling alone (``JournalStore.settle``: the cutover's fenced drain, a failed step) inserts new
mappings with :func:`insert_mappings` and runs the rest through Core.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from multibackend.journal.schema import id_map, queue, targets

__all__ = ["STEP_FUNCTION", "claim_batch", "insert_mappings", "install", "step"]

log = logging.getLogger("multibackend.journal")

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


# --- a worker's step in one round trip ------------------------------------------------------

#: The server-side function of :func:`step`, created with the journal's tables by
#: :func:`install` (its name carries a version: a changed body gets a new name, and journals
#: keep the old one for older workers).
STEP_FUNCTION = "mb_drain_step_v1"

# Columns of the function's rows: kind ('s' a target state, 'r' a leased row), the target
# state's four columns, then the queue's columns, the old status and the mapping (as _CLAIM).
_STEP_COLUMNS = (
    "o_kind text, o_target text, o_paused_until float8, o_pause_reason text, "
    "o_failures integer, o_id bigint, o_entity_type text, o_entity_key text, o_q_target text, "
    "o_op text, o_seq integer, o_deleted boolean, o_snapshot jsonb, o_status text, "
    "o_attempts integer, o_next_attempt_at float8, o_last_error text, o_lease_owner text, "
    "o_lease_until float8, o_maybe_created boolean, o_enqueued_at float8, o_updated_at float8, "
    "o_was text, o_native_id text, o_id_is_int boolean"
)
_TYPES = [c.split()[1] for c in _STEP_COLUMNS.split(", ")]
_NULL_STATE = ", ".join(f"NULL::{t}" for t in _TYPES[1:5])
_NULL_ROW = ", ".join(f"NULL::{t}" for t in _TYPES[5:])

# What ``JournalStore._settle_in``, ``_set_target_state_in`` and ``claim_batch`` do, in their
# order, as one statement: the settle (id-map deletes and inserts, a mapping that clashes with
# another entity's rescheduled instead of done, done rows deleted or put back to pending when
# written again, reschedules, parks), the target states, then the claim (target states, due
# rows of the targets not paused, leased with their mappings). The planner settings of _TARGETS
# are the function's own (SET clauses), for the statements inside it.
_STEP_SQL = f"""
CREATE OR REPLACE FUNCTION {STEP_FUNCTION}(
    p_owner text, p_now float8,
    p_un_type text[], p_un_key text[], p_un_backend text[],
    p_map_id bigint[], p_map_type text[], p_map_key text[], p_map_backend text[],
    p_map_native text[], p_map_int boolean[],
    p_done_id bigint[], p_done_seq integer[],
    p_later_id bigint[], p_later_inc integer[], p_later_at float8[], p_later_err text[],
    p_later_maybe boolean[],
    p_park_id bigint[], p_park_seq integer[], p_park_err text[],
    p_st_target text[], p_st_until float8[], p_st_reason text[], p_st_failures integer[],
    p_targets text[], p_limit integer, p_lease_until float8
) RETURNS TABLE ({_STEP_COLUMNS})
LANGUAGE plpgsql
SET enable_bitmapscan = off SET enable_seqscan = off SET enable_sort = off
SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
SET plan_cache_mode = force_custom_plan
AS $fn$
DECLARE
    v_inserted bigint;
    v_clash bigint[] := '{{}}';
    v_done bigint[];
    v_removed bigint;
    v_active text[];
    v_row record;
BEGIN
    IF cardinality(p_un_type) > 0 THEN
        DELETE FROM {_M} AS d USING unnest(p_un_type, p_un_key, p_un_backend) AS u(t, k, b)
        WHERE d.entity_type = u.t AND d.entity_key = u.k AND d.backend = u.b;
    END IF;
    IF cardinality(p_map_id) > 0 THEN
        -- A plain insert first (no speculative insertion: cheaper), in a subtransaction; when
        -- some mapping conflicts, those that conflict with none.
        BEGIN
            INSERT INTO {_M} (entity_type, entity_key, backend, native_id, id_is_int, created_at)
            SELECT t, k, b, n, i, p_now
            FROM unnest(p_map_type, p_map_key, p_map_backend, p_map_native, p_map_int)
                AS x(t, k, b, n, i);
            v_inserted := cardinality(p_map_id);
        EXCEPTION WHEN unique_violation THEN
            WITH ins AS (
                INSERT INTO {_M} (entity_type, entity_key, backend, native_id, id_is_int,
                                  created_at)
                SELECT t, k, b, n, i, p_now
                FROM unnest(p_map_type, p_map_key, p_map_backend, p_map_native, p_map_int)
                    AS x(t, k, b, n, i)
                ON CONFLICT DO NOTHING RETURNING 1
            )
            SELECT count(*) INTO v_inserted FROM ins;
        END;
        -- Skipped (rarely): the entity mapped already (its native id replaced), or the native
        -- id taken by another entity (a clash: the row is rescheduled, not done). A mapping
        -- already as wanted needs nothing (the upsert would leave it as it is).
        FOR v_row IN
            SELECT * FROM unnest(p_map_id, p_map_type, p_map_key, p_map_backend, p_map_native,
                                 p_map_int) AS x(id, t, k, b, n, i)
            WHERE v_inserted < cardinality(p_map_id) AND NOT EXISTS (
                SELECT 1 FROM {_M} AS m WHERE m.entity_type = x.t AND m.entity_key = x.k
                    AND m.backend = x.b AND m.native_id = x.n AND m.id_is_int = x.i
            )
        LOOP
            BEGIN
                INSERT INTO {_M} (entity_type, entity_key, backend, native_id, id_is_int,
                                  created_at)
                VALUES (v_row.t, v_row.k, v_row.b, v_row.n, v_row.i, p_now)
                ON CONFLICT (entity_type, entity_key, backend)
                DO UPDATE SET native_id = excluded.native_id, id_is_int = excluded.id_is_int;
            EXCEPTION WHEN unique_violation THEN
                v_clash := v_clash || v_row.id;
            END;
        END LOOP;
    END IF;
    IF cardinality(p_done_id) > 0 THEN
        v_done := ARRAY(SELECT x FROM unnest(p_done_id) AS x WHERE x <> ALL(v_clash));
        DELETE FROM {_Q} AS q USING unnest(p_done_id, p_done_seq) AS d(id, seq)
        WHERE q.id = d.id AND q.seq = d.seq AND q.lease_owner = p_owner
            AND d.id <> ALL(v_clash);
        GET DIAGNOSTICS v_removed = ROW_COUNT;
        IF v_removed < cardinality(v_done) THEN
            -- Written again while applied: pending with the newer state.
            UPDATE {_Q} SET status = 'pending', attempts = 0, next_attempt_at = p_now,
                last_error = NULL, maybe_created = false, enqueued_at = updated_at,
                lease_owner = NULL, lease_until = NULL
            WHERE id = ANY(v_done) AND lease_owner = p_owner;
        END IF;
    END IF;
    IF cardinality(p_later_id) > 0 THEN
        UPDATE {_Q} AS q SET status = 'pending', attempts = q.attempts + l.inc,
            next_attempt_at = l.at, last_error = l.err,
            maybe_created = (q.maybe_created OR l.maybe), lease_owner = NULL, lease_until = NULL
        FROM unnest(p_later_id, p_later_inc, p_later_at, p_later_err, p_later_maybe)
            AS l(id, inc, at, err, maybe)
        WHERE q.id = l.id AND q.lease_owner = p_owner;
    END IF;
    IF cardinality(v_clash) > 0 THEN
        UPDATE {_Q} SET status = 'pending', next_attempt_at = p_now,
            last_error = 'the adopted copy belongs to another entity', maybe_created = true,
            lease_owner = NULL, lease_until = NULL
        WHERE id = ANY(v_clash) AND lease_owner = p_owner;
    END IF;
    IF cardinality(p_park_id) > 0 THEN
        UPDATE {_Q} AS q SET status = CASE WHEN q.seq = p.seq THEN 'parked' ELSE 'pending' END,
            attempts = q.attempts + 1, next_attempt_at = p_now, last_error = p.err,
            lease_owner = NULL, lease_until = NULL
        FROM unnest(p_park_id, p_park_seq, p_park_err) AS p(id, seq, err)
        WHERE q.id = p.id AND q.lease_owner = p_owner;
    END IF;
    IF cardinality(p_st_target) > 0 THEN
        INSERT INTO {targets.name} AS t
            (target, paused_until, pause_reason, consecutive_failures, updated_at)
        SELECT x.t, x.u, x.r, x.f, p_now
        FROM unnest(p_st_target, p_st_until, p_st_reason, p_st_failures) AS x(t, u, r, f)
        ON CONFLICT (target) DO UPDATE SET paused_until = excluded.paused_until,
            pause_reason = excluded.pause_reason,
            consecutive_failures = excluded.consecutive_failures,
            updated_at = excluded.updated_at;
    END IF;
    RETURN QUERY SELECT 's'::text, t.target::text, t.paused_until::float8,
        t.pause_reason::text, t.consecutive_failures::integer, {_NULL_ROW}
        FROM {targets.name} AS t;
    v_active := ARRAY(
        SELECT x FROM unnest(p_targets) AS x
        WHERE NOT EXISTS (
            SELECT 1 FROM {targets.name} AS t WHERE t.target = x AND t.paused_until > p_now
        )
    );
    IF cardinality(v_active) = 0 OR p_limit <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH expired AS (
        SELECT id, status FROM {_Q} WHERE status = 'leased' AND lease_until < p_now
            AND target = ANY(v_active)
        ORDER BY lease_until, id LIMIT p_limit FOR UPDATE SKIP LOCKED
    ), due AS (
        SELECT id, status FROM {_Q} WHERE status = 'pending' AND next_attempt_at <= p_now
            AND target = ANY(v_active)
        ORDER BY next_attempt_at, id LIMIT p_limit FOR UPDATE SKIP LOCKED
    ), picked AS (
        (SELECT id, status FROM expired UNION ALL SELECT id, status FROM due) LIMIT p_limit
    ), leased AS (
        UPDATE {_Q} AS q SET status = 'leased', lease_owner = p_owner,
            lease_until = p_lease_until,
            maybe_created = (q.maybe_created OR q.status = 'leased')
        FROM picked AS p WHERE q.id = p.id
        RETURNING {_COLUMNS}, p.status AS was
    )
    SELECT 'r'::text, {_NULL_STATE}, l.id, l.entity_type::text, l.entity_key::text,
        l.target::text, l.op::text, l.seq, l.deleted, l.snapshot, l.status::text, l.attempts,
        l.next_attempt_at, l.last_error, l.lease_owner::text, l.lease_until, l.maybe_created,
        l.enqueued_at, l.updated_at, l.was::text, m.native_id::text, m.id_is_int
    FROM leased AS l LEFT JOIN LATERAL (
        SELECT native_id, id_is_int FROM {_M} AS m WHERE m.entity_type = l.entity_type
            AND m.entity_key >= l.entity_key AND m.entity_key <= l.entity_key
            AND m.backend = l.target
        ORDER BY m.entity_key LIMIT 1
    ) AS m ON true;
END
$fn$
"""


async def install(engine: AsyncEngine) -> bool:
    """Create :data:`STEP_FUNCTION` in the journal's database unless it exists; False when it
    cannot be (no privilege, say: the store then runs the statements one by one)."""
    for attempt in range(3):
        try:
            async with engine.begin() as conn:
                found = await conn.exec_driver_sql(_FIND_FUNCTION, (STEP_FUNCTION,))
                if found.first() is None:
                    await conn.exec_driver_sql(_STEP_SQL)
            return True
        except DBAPIError as exc:
            # Another process creating it at the same moment ("tuple concurrently updated"):
            # it exists now. Anything else: without it.
            if attempt == 2:
                log.warning(
                    "journal: cannot create %s (%s); claiming statement by statement",
                    STEP_FUNCTION,
                    exc,
                )
    return False


_FIND_FUNCTION = (
    "SELECT 1 FROM pg_proc WHERE proname = $1 AND pronamespace = current_schema()::regnamespace"
)
# The snapshot as its text (``::text``): claimed rows keep it so until the apply decodes it
# (see ``QueueRow``), instead of asyncpg's JSON codec decoding a batch's snapshots at once into
# objects that live through the whole batch and feed the garbage collector.
_STEP_SELECT = ", ".join(
    f"{name}::text" if name == "o_snapshot" else name
    for name in (column.split()[0] for column in _STEP_COLUMNS.split(", "))
)
_STEP = f"SELECT {_STEP_SELECT} FROM {STEP_FUNCTION}({', '.join(f'${i}' for i in range(1, 29))})"


async def step(
    conn: AsyncConnection,
    settle: Sequence[Any],
    target_states: Sequence[tuple[str, float | None, str | None, int, float]],
    claim: tuple[str, Sequence[str], int, float, float],
) -> tuple[
    dict[str, tuple[float | None, str | None, int]],
    list[Any],
    set[int],
    list[tuple[str, str, str, str, bool]],
]:
    """A worker's step as one call of :data:`STEP_FUNCTION`: ``settle`` (the arguments of
    ``drain_sql.settle``: owner, unmapped, mapped, done, later, parked, now), the target
    states to record (target, paused until, reason, failures, now) and the claim (owner,
    targets, limit, lease seconds, now); answers as :func:`claim_batch`."""
    owner, unmapped, mapped, done, later, parked, now = settle
    _, targets_, limit, lease_seconds, claim_now = claim
    args = (
        owner,
        now,
        [u[0] for u in unmapped],
        [u[1] for u in unmapped],
        [u[2] for u in unmapped],
        [m[0] for m in mapped],
        [m[1][0] for m in mapped],
        [m[1][1] for m in mapped],
        [m[1][2] for m in mapped],
        [m[1][3] for m in mapped],
        [m[1][4] for m in mapped],
        [d[0] for d in done],
        [d[1] for d in done],
        [x[4] for x in later],
        [x[0] for x in later],
        [x[1] for x in later],
        [x[2] for x in later],
        [x[3] for x in later],
        [p[2] for p in parked],
        [p[0] for p in parked],
        [p[1] for p in parked],
        [t[0] for t in target_states],
        [t[1] for t in target_states],
        [t[2] for t in target_states],
        [t[3] for t in target_states],
        list(targets_),
        limit,
        claim_now + lease_seconds,
    )
    found: list[Any] = list((await conn.exec_driver_sql(_STEP, args)).all())
    states: dict[str, tuple[float | None, str | None, int]] = {}
    rows: list[Any] = []
    taken: set[int] = set()
    native: list[tuple[str, str, str, str, bool]] = []
    for r in found:
        if r[0] == "s":
            states[r[1]] = (r[2], r[3], r[4])
            continue
        row = r[5:22]
        rows.append(row)
        if r[22] == "leased":
            taken.add(row[0])
        if r[23] is not None:
            native.append((row[1], row[2], row[3], r[23], r[24]))
    return states, rows, taken, native
