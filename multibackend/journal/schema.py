"""The journal's tables, created and versioned by the library (SQLite or PostgreSQL).

Design (DESIGN.md §5, issue 6). The journal replicates *state*, not a log of operations:

``mb_queue``
    One row per (entity, target) with work outstanding. It holds the desired state of the entity
    on that target: a snapshot of the fields the target stores (a JSON object), or ``deleted``.
    A new write to the same entity merges its snapshot into the row (newer values win; fields the
    write did not carry are kept), so pending updates compact into the latest state by
    construction and replays are idempotent. ``seq`` counts writes: a worker that applied seq N
    settles the row only if it is still at N; otherwise the row goes back to pending with the newer
    state. One row per pair also means one worker at a time per (entity, target): rows are leased.
``mb_id_map``
    (entity, backend) -> the backend's native id, for every backend the entity lives in.
``mb_intents``
    Writes in flight to a primary that cannot share a transaction with the journal: recorded
    before the primary is called, settled after; leftovers are recovered at start.
``mb_targets``
    Per-target state shared by all workers: paused until (rate limit or circuit breaker), why,
    consecutive failures.
``mb_meta``
    Key/value: the schema version, the cutover phase and its version, backfill checkpoints.
``mb_tombstones`` (version 2)
    (entity type, backend, native id, when): a manager delete on the primary, so a backfill that
    read the stream just before it was deleted does not copy it afterwards.
``mb_shadow`` (version 2)
    Shadow-read mismatches: the entity, both values (JSON), when.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql

__all__ = [
    "SCHEMA_VERSION",
    "id_map",
    "intents",
    "meta",
    "metadata",
    "queue",
    "shadow_mismatches",
    "targets",
    "tombstones",
]

SCHEMA_VERSION: Final = 2

metadata = MetaData()

# BIGINT on PostgreSQL; INTEGER (the rowid alias, so it autoincrements) on SQLite.
_BigId = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL so snapshots merge with ``||``; JSON text on SQLite (merged by json_patch).
_Json = JSON().with_variant(postgresql.JSONB(), "postgresql")

queue = Table(
    "mb_queue",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("entity_type", String(32), nullable=False),
    Column("entity_key", String(64), nullable=False),
    Column("target", String(128), nullable=False),
    # Last operation written: create | update | delete (informational; apply derives the call).
    Column("op", String(16), nullable=False),
    Column("seq", Integer, nullable=False, default=1),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("snapshot", _Json, nullable=True),
    # pending | leased | parked
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    # True when an earlier create on the target may have happened without being recorded
    # (timeout, crash): the next attempt looks for it before creating again.
    Column("maybe_created", Boolean, nullable=False, default=False),
    Column("enqueued_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("entity_type", "entity_key", "target", name="mb_queue_entity_target"),
    Index("mb_queue_due", "status", "next_attempt_at"),
)

id_map = Table(
    "mb_id_map",
    metadata,
    Column("entity_type", String(32), primary_key=True),
    Column("entity_key", String(64), primary_key=True),
    Column("backend", String(128), primary_key=True),
    # The native id as text; ``id_is_int`` says whether to read it back as an int.
    Column("native_id", String(255), nullable=False),
    Column("id_is_int", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("entity_type", "backend", "native_id", name="mb_id_map_native"),
)

intents = Table(
    "mb_intents",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("entity_type", String(32), nullable=False),
    Column("entity_key", String(64), nullable=False),
    Column("op", String(16), nullable=False),
    Column("backend", String(128), nullable=False),
    Column("native_id", String(255), nullable=True),
    Column("id_is_int", Boolean, nullable=True),
    # The write's given fields (for fields the primary does not store) as JSON.
    Column("payload", _Json, nullable=True),
    Column("owner", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

targets = Table(
    "mb_targets",
    metadata,
    Column("target", String(128), primary_key=True),
    Column("paused_until", Float, nullable=True),
    Column("pause_reason", Text, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("updated_at", Float, nullable=False),
)

meta = Table(
    "mb_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# --- version 2: migration tools (issue 7) -------------------------------------------------------

tombstones = Table(
    "mb_tombstones",
    metadata,
    Column("entity_type", String(32), primary_key=True),
    Column("backend", String(128), primary_key=True),
    Column("native_id", String(255), primary_key=True),
    Column("deleted_at", Float, nullable=False),
    Index("mb_tombstones_at", "entity_type", "backend", "deleted_at"),
)

shadow_mismatches = Table(
    "mb_shadow",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("entity_type", String(32), nullable=False),
    Column("entity_key", String(64), nullable=True),
    Column("primary_backend", String(128), nullable=False),
    Column("candidate", String(128), nullable=False),
    Column("primary_id", String(255), nullable=True),
    # get | list
    Column("read", String(16), nullable=False),
    # differ | missing | error | timeout
    Column("kind", String(16), nullable=False),
    Column("primary_value", _Json, nullable=True),
    Column("candidate_value", _Json, nullable=True),
    Column("detail", Text, nullable=True),
    Column("at", Float, nullable=False),
    Index("mb_shadow_at", "at"),
)
