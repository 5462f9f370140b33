"""The outbox's one-round-trip flush on SQLite: the sql plugin's direct writes and the journal
statements run together on aiosqlite's thread. The same rows as the SQLAlchemy path, the same
answers and errors, failures isolated in a group, and the guard that keeps wrapped or
instrumented primaries on their own methods."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from multibackend_sql.direct import SqliteWrites

from multibackend.errors import Conflict, NotFound, Unavailable
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft, StreamPatch, StreamQuery
from multibackend.registry import load_backend
from multibackend.testing.faulty import Fault, FaultyBackend

from .conftest import Clock, memory


def sql(url: str, **options: Any) -> Any:
    return load_backend("sql", name="legacy", url=url, create_schema=True, **options)


def manager_for(db: Path, primary: Any | None = None, **kwargs: Any) -> BackendManager:
    url = f"sqlite+aiosqlite:///{db}"
    return BackendManager(
        [primary or sql(url, schema="streamsource-legacy"), memory("s1"), memory("s2")],
        primary="legacy",
        journal_url=url,
        worker="external",
        clock=Clock(1_700_000_000.0),
        **kwargs,
    )


class Ticks:
    """A deterministic ``utc_now`` for the sql plugin, moved on between the scenario's steps
    (not per call: the SQLAlchemy path runs a group's writes again after a miss)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self) -> None:
        self.now += timedelta(milliseconds=1)


async def _scenario(m: BackendManager, ticks: Ticks) -> list[Any]:
    """Creates, updates (status changes with their stamps, a patch storing nothing on the
    legacy table, pins), deletes, misses, and groups of several writes per commit. Returns
    what the manager answered (streams, or the error's type and text)."""
    answers: list[Any] = []

    async def note(call: Any) -> Any:
        try:
            return await call
        except Exception as exc:
            return (type(exc).__name__, str(exc))

    async def step(*calls: Any) -> None:
        ticks.advance()
        answers.extend(await asyncio.gather(*(note(c) for c in calls)))

    a = await m.create_stream(
        StreamDraft(source="a", link="https://a.com", status="live", notes="n", city="X")
    )
    ticks.advance()
    b = await m.create_stream(StreamDraft(source="b", link="https://b.com"))
    answers += [a, b]
    await step(
        m.create_stream(StreamDraft(source="c", link="https://c.com", title="C")),
        m.create_stream(StreamDraft(source="d", link="https://d.com")),
        m.update_stream(a.id, StreamPatch(title="T", status="offline")),
        m.set_pinned(b.id, True),
    )
    await step(m.update_stream(a.id, StreamPatch(status="live")))
    await step(m.update_stream(a.id, StreamPatch(status="live", city=None)))
    await step(m.update_stream(b.id, StreamPatch(notes="only a secondary stores notes")))
    await step(m.set_pinned(b.id, False))
    c_id = answers[2].id
    await step(
        m.delete_stream(c_id),
        m.update_stream(99_999, StreamPatch(title="missing")),
        m.delete_stream(99_998),
        m.set_pinned(99_997, True),
        m.create_stream(StreamDraft(source="e", link="https://e.com")),
        m.update_stream(b.id, StreamPatch(platform="twitch", status="unknown")),
    )
    await step(m.delete_stream(c_id))
    await step(m.update_stream("not-an-id", StreamPatch(title="x")))
    return answers


def _database(db: Path, table: str) -> dict[str, Any]:
    """Every row the scenario left: the primary's table, and the journal keyed by the
    primary's ids instead of random entity keys."""
    conn = sqlite3.connect(db)
    try:
        keys = dict(conn.execute("SELECT entity_key, native_id FROM mb_id_map").fetchall())
        queue = sorted(
            (keys.get(row[0], "gone"), *row[1:5], json.loads(row[5] or "null"), *row[6:])
            for row in conn.execute(
                "SELECT entity_key, target, op, seq, deleted, snapshot, status, attempts, "
                "next_attempt_at, maybe_created, enqueued_at, updated_at FROM mb_queue"
            )
        )
        return {
            "primary": conn.execute(f'SELECT * FROM "{table}" ORDER BY id').fetchall(),
            "queue": queue,
            "id_map": sorted(
                conn.execute("SELECT backend, native_id, id_is_int, created_at FROM mb_id_map")
            ),
            "tombstones": sorted(conn.execute("SELECT * FROM mb_tombstones")),
            "intents": conn.execute("SELECT count(*) FROM mb_intents").fetchall(),
        }
    finally:
        conn.close()


@pytest.mark.parametrize(
    "options",
    [
        {"schema": "streamsource-legacy"},
        {"schema": "streamsource-legacy", "delete": "soft"},
        {"schema": "native"},
    ],
    ids=["legacy", "legacy-soft-delete", "native"],
)
async def test_direct_and_sqlalchemy_writes_leave_the_same_rows_and_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    outcomes = []
    for path in ("direct", "sqlalchemy"):
        with monkeypatch.context() as patch:
            ticks = Ticks()
            patch.setattr("multibackend_sql.backend.utc_now", ticks)
            prepared: list[str] = []
            for name in ("create", "update", "delete"):
                original = getattr(SqliteWrites, name)

                def counted(
                    self: Any, *args: Any, _o: Any = original, _n: str = name, _p: Any = prepared
                ) -> Any:
                    _p.append(_n)
                    return _o(self, *args)

                patch.setattr(SqliteWrites, name, counted)
            if path == "sqlalchemy":
                patch.setattr("multibackend.manager.direct_writes", lambda backend: None)
            db = tmp_path / f"{path}.db"
            primary = sql(f"sqlite+aiosqlite:///{db}", **options)
            async with manager_for(db, primary) as m:
                answers = await _scenario(m, ticks)
            table = "Streams" if options["schema"] == "streamsource-legacy" else "streams"
            outcomes.append((answers, _database(db, table)))
            # The direct path was really taken (and only there).
            assert (len(prepared) > 0) is (path == "direct")
    (direct_answers, direct_rows), (sa_answers, sa_rows) = outcomes
    assert direct_answers == sa_answers
    assert direct_rows == sa_rows
    # The scenario did what it says (so that equal also means right).
    errors = [a for a in direct_answers if isinstance(a, tuple)]
    assert [e[0] for e in errors] == ["NotFound"] * 5
    # a, b, d, e for s1 and s2, and c's delete (its id unmapped: "gone").
    assert [q[:3] for q in direct_rows["queue"]] == [
        (str(i), target, op)
        for i, op in (
            (1, "update"),
            (2, "update"),
            (4, "create"),
            (5, "create"),
            ("gone", "delete"),
        )
        for target in ("s1", "s2")
    ]
    assert len(direct_rows["tombstones"]) == 1


async def _trigger(db: Path, sql_text: str) -> None:
    async with aiosqlite.connect(db) as conn:
        await conn.execute(sql_text)
        await conn.commit()


@pytest.mark.parametrize("path", ["direct", "sqlalchemy"])
async def test_a_failing_write_in_a_group_fails_alone_and_the_others_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    if path == "sqlalchemy":
        monkeypatch.setattr("multibackend.manager.direct_writes", lambda backend: None)
    db = tmp_path / "legacy.db"
    async with manager_for(db) as m:
        assert (m._primary_writes() is not None) is (path == "direct")
        await _trigger(
            db,
            "CREATE TRIGGER refuse BEFORE INSERT ON \"Streams\" WHEN NEW.source = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'bad source'); END",
        )
        # What the plugin itself raises for that insert.
        with pytest.raises(Conflict) as own:
            await m.primary.create_stream(StreamDraft(source="bad", link="https://bad.com"))
        group = m._outbox_group
        assert group is not None
        commits, units = group.commits, group.units
        results = await asyncio.gather(
            *(
                m.create_stream(StreamDraft(source=s, link=f"https://{s}.com"))
                for s in ("ok1", "bad", "ok2", "ok3")
            ),
            return_exceptions=True,
        )
        failed = results[1]
        assert isinstance(failed, Conflict)
        assert (failed.detail, failed.backend) == (own.value.detail, own.value.backend)
        assert [r.source for r in results if not isinstance(r, BaseException)] == [
            "ok1",
            "ok2",
            "ok3",
        ]
        # The other three shared one commit after the group rolled back.
        assert (group.commits - commits, group.units - units) == (1, 3)
        page = await m.primary.list_streams(StreamQuery())
        assert sorted(s.source for s in page.items) == ["ok1", "ok2", "ok3"]
        assert m.store is not None
        rows = await m.store.rows()
        assert len(rows) == 6
        mapped = await m.store.translate_ids("stream", "legacy", [s.id for s in page.items], "s1")
        assert mapped == {}  # not applied yet; but each stream has its key:
        for s in page.items:
            assert await m.store.entity_key_of("stream", "legacy", s.id) is not None


async def test_a_miss_in_a_group_answers_notfound_as_the_plugin_does(tmp_path: Path) -> None:
    db = tmp_path / "legacy.db"
    async with manager_for(db) as m:
        assert m._primary_writes() is not None
        own: list[Exception] = []
        for call in (
            m.primary.update_stream(404, StreamPatch(title="x")),
            m.primary.delete_stream(404),
            m.primary.set_pinned(404, True),
            m.primary.update_stream("x", StreamPatch(title="x")),
        ):
            with pytest.raises(NotFound) as caught:
                await call
            own.append(caught.value)
        # Every item handed to the outbox run, each time it is handed over.
        handed: list[str] = []
        run = m._run_outbox

        async def counted(conn: Any, items: list[Any]) -> Any:
            handed.extend(item.op for item in items)
            return await run(conn, items)

        m._run_outbox = counted  # type: ignore[method-assign]
        results = await asyncio.gather(
            m.create_stream(StreamDraft(source="a", link="https://a.com")),
            m.update_stream(404, StreamPatch(title="x")),
            m.delete_stream(404),
            m.set_pinned(404, True),
            m.update_stream("x", StreamPatch(title="x")),
            m.create_stream(StreamDraft(source="b", link="https://b.com")),
            return_exceptions=True,
        )
        misses = results[1:5]
        assert [(type(e), str(e), getattr(e, "id", None)) for e in misses] == [
            (type(e), str(e), getattr(e, "id", None)) for e in own
        ]
        # Nothing was written for a miss: no transaction was rolled back and run again.
        assert sorted(handed) == ["create"] * 2 + ["delete"] + ["update"] * 3
        assert m.store is not None
        assert len(await m.store.rows()) == 4


async def test_round_trips_per_outbox_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = 0
    original = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    async with manager_for(tmp_path / "legacy.db") as m:
        await m.create_stream(StreamDraft(source="warm", link="https://w.com"))
        trips = 0
        for i in range(10):
            await m.create_stream(StreamDraft(source=f"s{i}", link=f"https://{i}.com"))
        # BEGIN, version read, insert, journal rows and COMMIT: one round trip (and the pool
        # does not roll back a connection whose transaction committed).
        assert trips == 10


async def test_a_wrapped_or_instrumented_primary_keeps_its_own_methods(tmp_path: Path) -> None:
    db = tmp_path / "legacy.db"
    url = f"sqlite+aiosqlite:///{db}"
    faulty = FaultyBackend(sql(url, schema="streamsource-legacy"), seed=1)
    async with manager_for(db, faulty) as m:  # type: ignore[arg-type]
        assert m._outbox
        # The wrapper delegates direct_writes() to the sql backend: not taken, or the faults
        # it injects would be skipped.
        assert m._primary_writes() is None
        faulty.script("create_stream", Fault.UNAVAILABLE)
        with pytest.raises(Unavailable):
            await m.create_stream(StreamDraft(source="a", link="https://a.com"))
        created = await m.create_stream(StreamDraft(source="b", link="https://b.com"))
        assert m.store is not None
        assert await m.store.entity_key_of("stream", "legacy", created.id) is not None
    async with manager_for(tmp_path / "other.db") as m:
        assert m._primary_writes() is not None
        seen: list[str] = []
        create = m.primary.create_stream

        async def instrumented(draft: StreamDraft) -> Any:
            seen.append(str(draft.source))
            return await create(draft)

        m.primary.create_stream = instrumented  # type: ignore[method-assign]
        assert m._primary_writes() is None
        await m.create_stream(StreamDraft(source="c", link="https://c.com"))
        assert seen == ["c"]
