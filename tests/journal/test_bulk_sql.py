"""A backfill chunk's journal work in one transaction (multibackend.journal.bulk_sql): the cases
the end-to-end tests do not reach on their own."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from multibackend.journal import bulk_sql
from multibackend.journal.bulk import new_entity_keys
from multibackend.journal.store import JournalStore


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[sqlite3.Connection]:
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/j.db")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _enqueue(ids: list[int], now: float = 100.0) -> bulk_sql.Enqueue:
    return bulk_sql.Enqueue(
        entity_type="stream",
        backend="src",
        target="dst",
        texts=[str(i) for i in ids],
        is_int=[True] * len(ids),
        snapshots=[json.dumps({"title": [f"t{i}"]}) for i in ids],
        keys=new_entity_keys(len(ids)),
        since=0.0,
        owner="bf",
        now=now,
        lease_until=now + 300,
        meta_key="backfill:src->dst",
        meta_value="{}",
    )


def _run(
    db: sqlite3.Connection, settle: bulk_sql.Settle | None, enqueue: bulk_sql.Enqueue | None
) -> tuple[bool, bulk_sql.Enqueued | None]:
    db.execute("BEGIN IMMEDIATE")
    out = bulk_sql.chunk(db, settle, enqueue)
    db.execute("COMMIT")
    return out


def test_rows_are_found_when_sqlite_gives_them_ids_below_the_highest(
    db: sqlite3.Connection,
) -> None:
    # Past the largest rowid SQLite picks new ids at random: not all above the old maximum.
    db.execute(
        "INSERT INTO mb_queue (id, entity_type, entity_key, target, op, seq, deleted, status, "
        "attempts, next_attempt_at, maybe_created, enqueued_at, updated_at) VALUES "
        "(9223372036854775807, 'stream', 'other', 'dst', 'update', 1, 0, 'pending', 0, 0, 0, 0, 0)"
    )
    _, answer = _run(db, None, _enqueue(list(range(1, 41))))
    assert answer is not None
    stored = dict(
        db.execute("SELECT id, entity_key FROM mb_queue WHERE lease_owner = 'bf'").fetchall()
    )
    assert dict(answer.inserted) == stored
    assert len(stored) == 40
    assert [i for i, _ in answer.inserted] == sorted(stored)


def test_a_settle_whose_copy_is_mapped_to_another_entity_changes_nothing(
    db: sqlite3.Connection,
) -> None:
    _, answer = _run(db, None, _enqueue([1, 2, 3]))
    assert answer is not None
    db.execute(
        "INSERT INTO mb_id_map (entity_type, entity_key, backend, native_id, id_is_int, "
        "created_at) VALUES ('stream', 'someone-else', 'dst', '502', 1, 0)"
    )
    done = [(row_id, 1, key, 500 + n) for n, (row_id, key) in enumerate(answer.inserted)]
    settled, _ = _run(db, bulk_sql.Settle("bf", "stream", "dst", done, 200.0), None)
    assert not settled
    assert db.execute("SELECT count(*) FROM mb_id_map WHERE backend = 'dst'").fetchone() == (1,)
    assert db.execute(
        "SELECT count(*) FROM mb_queue WHERE status = 'leased' AND lease_owner = 'bf'"
    ).fetchone() == (3,)


def test_a_row_written_again_while_applied_goes_back_to_pending_with_its_newer_state(
    db: sqlite3.Connection,
) -> None:
    _, answer = _run(db, None, _enqueue([1, 2]))
    assert answer is not None
    (first, key1), (second, key2) = answer.inserted
    # A manager write merged into the second row while it was applied.
    db.execute(
        "UPDATE mb_queue SET seq = 2, snapshot = ?, updated_at = 150 WHERE id = ?",
        (json.dumps({"title": ["newer"]}), second),
    )
    done = [(first, 1, key1, 501), (second, 1, key2, 502)]
    # Settled in the next chunk's transaction, as the backfill does.
    settled, nxt = _run(db, bulk_sql.Settle("bf", "stream", "dst", done, 200.0), _enqueue([3]))
    assert settled
    assert nxt is not None
    assert len(nxt.inserted) == 1
    rows = {
        r[0]: r[1:]
        for r in db.execute(
            "SELECT id, status, lease_owner, snapshot, enqueued_at, next_attempt_at FROM mb_queue"
        )
    }
    assert first not in rows
    assert rows[second] == ("pending", None, json.dumps({"title": ["newer"]}), 150.0, 200.0)
    mapped = dict(
        db.execute("SELECT entity_key, native_id FROM mb_id_map WHERE backend = 'dst'").fetchall()
    )
    assert mapped == {key1: "501", key2: "502"}


def test_entities_with_a_key_a_mapping_or_a_queue_row_are_not_enqueued_twice(
    db: sqlite3.Connection,
) -> None:
    _, first = _run(db, None, _enqueue([1, 2, 3]))
    assert first is not None
    keys = dict(first.keys)
    # Entity 1's copy exists (mapped on dst); 2 still has its queue row; 3 settled and unmapped.
    db.execute(
        "INSERT INTO mb_id_map (entity_type, entity_key, backend, native_id, id_is_int, "
        "created_at) VALUES ('stream', ?, 'dst', '900', 1, 0)",
        (keys["1"],),
    )
    db.execute("DELETE FROM mb_queue WHERE entity_key IN (?, ?)", (keys["1"], keys["3"]))
    _, again = _run(db, None, _enqueue([1, 2, 3, 4]))
    assert again is not None
    # Existing keys are kept; only 4 gets a new one.
    assert {t: again.keys[t] for t in ("1", "2", "3")} == keys
    assert again.fresh == {again.keys["4"]}
    assert sorted(k for _, k in again.inserted) == sorted([keys["3"], again.keys["4"]])
