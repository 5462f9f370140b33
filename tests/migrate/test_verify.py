"""Verify: every kind of difference found and shown with both values, races re-checked, repair."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from multibackend.cli import main
from multibackend.errors import BackendError
from multibackend.journal.apply import apply_row
from multibackend.journal.retry import RetryPolicy
from multibackend.journal.store import JournalStore
from multibackend.manager import BackendManager
from multibackend.migrate import Backfill, Verifier, side, verify
from multibackend.model import StreamDraft, StreamPatch, StreamQuery
from multibackend.registry import load_backend

from .conftest import history, legacy, native_sql


async def _all(backend: Any) -> list[Any]:
    return [s async for s in backend.iter_streams(StreamQuery())]


async def _copied(tmp_path: Path, count: int = 50) -> tuple[Any, Any, JournalStore]:
    src, dst = legacy(tmp_path / "legacy.db"), native_sql(tmp_path / "new.db", "new")
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/journal.db")
    await src.open()
    await dst.open()
    await store.open()
    await src.bulk_import(history(count))
    await Backfill(store, src, dst).run()
    return src, dst, store


def _app(tmp_path: Path) -> tuple[Any, Any, BackendManager]:
    """The legacy primary and a native ``new`` secondary behind a manager whose worker is
    external (the test runs its drains), with the journal in a SQLite file of its own."""
    src, dst = legacy(tmp_path / "legacy.db"), native_sql(tmp_path / "new.db", "new")
    manager = BackendManager(
        [src, dst],
        primary="legacy",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
        worker="external",
    )
    return src, dst, manager


async def _close(*things: Any) -> None:
    for thing in things:
        await thing.close()


async def test_each_kind_of_difference_is_found_with_both_values(tmp_path: Path) -> None:
    src, dst, store = await _copied(tmp_path)
    try:
        clean = await Verifier(store, src, dst).run()
        assert clean.clean
        assert clean.checked == 50
        # Canonical equality: the legacy table stores 'Live', padded cities, ms timestamps.
        assert "status" in clean.fields
        assert "city" in clean.fields
        a_rows = await _all(src)
        b_ids = await store.translate_ids("stream", "legacy", [s.id for s in a_rows], "new")
        gone, changed = a_rows[3], a_rows[4]
        await dst.delete_stream(b_ids[str(gone.id)])
        await dst.update_stream(b_ids[str(changed.id)], StreamPatch(title="edited in B"))
        extra = await dst.create_stream(StreamDraft(source="x", link="https://x.test/extra"))
        result = await Verifier(store, src, dst).run()
        assert not result.clean
        assert (result.missing, result.extra, result.differing) == (1, 1, 1)
        kinds = {d.kind: d for d in result.differences}
        assert kinds["missing"].a_id == gone.id
        assert kinds["extra"].b_id == extra.id
        (diff,) = kinds["differ"].fields
        assert (diff.field, diff.a, diff.b) == ("title", changed.title, "edited in B")
    finally:
        await _close(store, src, dst)


async def test_repair_brings_b_in_line_through_the_journal(tmp_path: Path) -> None:
    src, dst, store = await _copied(tmp_path)
    try:
        a_rows = await _all(src)
        b_ids = await store.translate_ids("stream", "legacy", [s.id for s in a_rows], "new")
        await dst.delete_stream(b_ids[str(a_rows[0].id)])
        await dst.update_stream(b_ids[str(a_rows[1].id)], StreamPatch(city="Elsewhere"))
        # A legacy row written behind the app, never backfilled: missing and unmapped.
        late = await src.bulk_import([StreamDraft(source="late", link="https://x.test/late")])
        assert late.imported == 1
        found = await Verifier(store, src, dst).run(repair=True)
        assert (found.missing, found.differing, found.repaired) == (2, 1, 3)
        assert await store.outstanding(["new"]) == 3
        from multibackend.journal.worker import SyncWorker

        assert await SyncWorker(store, {"new": dst}, targets=["new"]).drain(timeout=10)
        after = await Verifier(store, src, dst).run()
        assert after.clean, after.differences
        assert len(await _all(dst)) == 51
    finally:
        await _close(store, src, dst)


class _StaleWalk:
    """B as a walk saw it a moment ago: one stream's title still old. Reads by id are current."""

    def __init__(self, inner: Any, stale_id: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.fields = inner.fields
        self.capabilities = inner.capabilities
        self.stale_id = stale_id
        self.gets = 0

    async def iter_streams(self, query: Any = None) -> Any:
        import attrs

        async for stream in self.inner.iter_streams(query):
            yield attrs.evolve(stream, title="stale") if stream.id == self.stale_id else stream

    async def get_stream(self, id: Any) -> Any:
        self.gets += 1
        return await self.inner.get_stream(id)

    async def list_streams(self, query: Any) -> Any:
        return await self.inner.list_streams(query)


async def test_an_entity_that_changed_during_the_walk_is_checked_again(tmp_path: Path) -> None:
    src, dst, store = await _copied(tmp_path)
    try:
        some = (await _all(dst))[7]
        racing = _StaleWalk(dst, some.id)
        result = await Verifier(store, src, racing).run()  # type: ignore[arg-type]
        assert result.clean
        assert racing.gets == 1  # only the suspect was read again
        no_recheck = await Verifier(store, src, racing, recheck=False).run()  # type: ignore[arg-type]
        assert no_recheck.differing == 1
    finally:
        await _close(store, src, dst)


class _FilledWalk(_StaleWalk):
    """B as the StreamSource service returns it: a blank ``posted_by`` filled with the owner's
    email. Reads by id are counted."""

    async def iter_streams(self, query: Any = None) -> Any:
        import attrs

        async for stream in self.inner.iter_streams(query):
            yield attrs.evolve(stream, posted_by=stream.posted_by or "owner@example.com")


async def test_rows_that_differ_only_by_a_value_filled_by_default_are_no_difference(
    tmp_path: Path,
) -> None:
    """A value one side fills by default makes the canonical rows unequal; the entities still
    match, without reading anything again."""
    src, dst, store = await _copied(tmp_path)
    try:
        assert all(s.posted_by is None for s in await _all(src))
        filled = _FilledWalk(dst, None)
        result = await Verifier(store, src, filled).run()  # type: ignore[arg-type]
        assert "posted_by" in result.fields
        assert result.clean, result.differences
        assert result.matching == 50
        assert filled.gets == 0
    finally:
        await _close(store, src, dst)


async def test_entities_with_journal_work_outstanding_are_in_flight_not_different(
    tmp_path: Path,
) -> None:
    src, dst, manager = _app(tmp_path)
    async with manager:
        assert manager.store is not None
        made = [
            await manager.create_stream(StreamDraft(source="s", link=f"https://x.test/{i}"))
            for i in range(5)
        ]
        assert manager.worker is not None
        await manager.worker.drain(timeout=10)
        await manager.update_stream(made[0].id, StreamPatch(title="not there yet"))
        await manager.create_stream(StreamDraft(source="s", link="https://x.test/new"))
        result = await Verifier(manager.store, src, dst).run()
        assert result.clean
        assert result.in_flight == 2


def test_the_command_exits_0_clean_1_different_2_on_error(tmp_path: Path) -> None:
    config = tmp_path / "mb.toml"
    config.write_text(
        """
[backends.legacy]
plugin = "sql"
url = "sqlite+aiosqlite:///legacy.db"
schema = "streamsource-legacy"
create_schema = true

[backends.new]
plugin = "sql"
url = "sqlite+aiosqlite:///new.db"
create_schema = true

[manager]
primary = "legacy"
secondaries = ["new"]

[journal]
url = "sqlite+aiosqlite:///journal.db"
""",
        encoding="utf-8",
    )
    runner = CliRunner()
    empty = runner.invoke(main, ["verify", "-c", str(config), "--no-progress"])
    assert empty.exit_code == 0, empty.output
    assert "clean" in empty.output

    import asyncio

    async def seed() -> None:
        async with legacy(tmp_path / "legacy.db") as src:
            await src.bulk_import(history(12))

    asyncio.run(seed())
    different = runner.invoke(main, ["verify", "-c", str(config), "--json", "--no-progress"])
    assert different.exit_code == 1
    report = json.loads(different.output)
    assert report["missing"] == 12
    assert report["differences"][0]["kind"] == "missing"
    filled = runner.invoke(
        main, ["backfill", "-c", str(config), "--from", "legacy", "--to", "new", "--no-progress"]
    )
    assert filled.exit_code == 0, filled.output
    assert "copied 12" in filled.output
    assert runner.invoke(main, ["verify", "-c", str(config)]).exit_code == 0
    sampled = runner.invoke(main, ["verify", "-c", str(config), "--sample", "5", "--json"])
    assert json.loads(sampled.stdout)["checked"] == 5
    broken = runner.invoke(main, ["verify", "-c", str(config), "--between", "legacy", "nope"])
    assert broken.exit_code == 2
    assert "nope" in broken.output


@pytest.fixture(params=["attached", "journal"])
def id_map_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways verify reads the id map: inside the side table's database (the SQLite journal
    attached) and through the journal's engine (as with PostgreSQL)."""
    monkeypatch.setattr(verify, "_ATTACH", request.param == "attached")
    return str(request.param)


async def test_a_copy_made_right_after_the_chunk_was_translated_is_no_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, id_map_path: str
) -> None:
    """The sync worker applies a fresh create between verify's id translation and its
    re-check: the re-check must look the entity up again, not report it missing."""
    src, dst, manager = _app(tmp_path)
    async with manager:
        store, worker = manager.store, manager.worker
        assert store is not None
        assert worker is not None
        await manager.create_stream(StreamDraft(source="s", link="https://x.test/late"))
        translate = verify.lookup_chunk
        applied = []

        async def translate_then_apply(*args: Any, **kwargs: Any) -> Any:
            found = await translate(*args, **kwargs)  # no copy in B yet
            assert found == [None]
            if not applied:
                applied.append(await worker.drain(timeout=10))  # now there is
            return found

        monkeypatch.setattr(verify, "lookup_chunk", translate_then_apply)
        result = await Verifier(store, src, dst).run()
        assert applied == [True]
        assert result.clean, result.differences
        assert result.missing == 0


async def test_a_create_whose_primary_answered_but_is_not_yet_mapped_is_in_flight(
    tmp_path: Path,
) -> None:
    """A manager without the outbox records an intent, calls the primary, then maps the new id:
    a stream walked in between has no entity key yet. It is in flight while the create's intent
    is there, and judged by its mapping once the create settles."""
    src, dst, store = await _copied(tmp_path, count=5)
    try:
        made = await src.create_stream(StreamDraft(source="app", link="https://x.test/new"))
        async with store.begin() as conn:
            intent = await store.add_intent(
                conn,
                entity_type="stream",
                entity_key="k-new",
                op="create",
                backend="legacy",
                native_id=None,
                payload=None,
                owner="app",
            )
        # The create stays unsettled: in flight, not missing (after waiting a bounded time).
        waiting = await Verifier(store, src, dst, intent_wait=0.2).run()
        assert (waiting.missing, waiting.in_flight) == (0, 1), waiting.differences

        async def settle_soon() -> None:
            await asyncio.sleep(0.1)
            async with store.begin() as conn:
                await store.remove_intents(conn, [intent])
                await store.map_id(conn, "stream", "k-new", "legacy", made.id)

        # The create settles while verify waits: the entity is then known, and missing in B
        # (nothing fans it out in this test), which is reported.
        settling = asyncio.create_task(settle_soon())
        settled = await Verifier(store, src, dst, intent_wait=5).run()
        await settling
        assert settled.missing == 1
        assert [d.entity_key for d in settled.differences] == ["k-new"]
        # Without any create in flight an unmapped stream is missing at once.
        async with store.begin() as conn:
            await store.unmap_id(conn, "stream", "k-new", "legacy")
        assert (await Verifier(store, src, dst, intent_wait=5).run()).missing == 1
    finally:
        await _close(src, dst, store)


async def test_differences_are_found_through_the_journal_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the id map read through the journal's engine (a PostgreSQL journal) instead of the
    attached SQLite file: the same findings."""
    monkeypatch.setattr(verify, "_ATTACH", False)
    await test_each_kind_of_difference_is_found_with_both_values(tmp_path)


async def test_differences_are_found_without_json_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite without json_each: chunks go to the side table as VALUES lists (of at most a
    few hundred parameters each, for old SQLite limits): the same findings."""
    monkeypatch.setattr(side, "_has_json", lambda db: False)
    monkeypatch.setattr(side, "_VALUES_CHUNK", 7)
    await test_each_kind_of_difference_is_found_with_both_values(tmp_path)


async def test_a_delete_that_starts_after_the_extras_journal_check_is_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, id_map_path: str
) -> None:
    """B's walk saw a fresh copy whose mapping was recorded only after A's chunk was translated
    (so the walk never marked it seen); then the app deletes it from A right after verify asked
    the journal about B's unmatched streams. B still has it, A not: its delete is on its way to
    B — in flight, not an extra."""
    src, dst, manager = _app(tmp_path)
    async with manager:
        store, worker = manager.store, manager.worker
        assert store is not None
        assert worker is not None
        made = await manager.create_stream(StreamDraft(source="s", link="https://x.test/s"))
        assert await worker.drain(timeout=10)
        translate, outstanding = verify.lookup_chunk, verify.outstanding_keys
        deleted: list[Any] = []

        async def translate_before_the_mapping(*args: Any, **kwargs: Any) -> Any:
            found = await translate(*args, **kwargs)
            assert len(found) == 1
            assert found[0] is not None
            return [None]  # as if mapped just after this look-up

        async def check_then_delete(store: Any, entity: str, keys: Any, *rest: Any) -> Any:
            keys = list(keys)
            busy = await outstanding(store, entity, keys, *rest)
            if keys and not deleted:  # the check of B's unmatched streams
                deleted.append(made.id)
                await manager.delete_stream(made.id)  # B's delete now queued, not applied
            return busy

        monkeypatch.setattr(verify, "lookup_chunk", translate_before_the_mapping)
        monkeypatch.setattr(verify, "outstanding_keys", check_then_delete)
        result = await Verifier(store, src, dst).run()
        assert deleted, "the race was not set up"
        assert result.extra == 0, result.differences
        assert result.in_flight == 1
        assert result.clean


class _Reversed:
    """B walked in descending id order (a walk verify cannot rely on being in id order)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.fields = inner.fields
        self.capabilities = inner.capabilities

    async def iter_streams(self, query: Any = None) -> Any:
        for stream in sorted(await _all(self.inner), key=lambda s: s.id, reverse=True):
            yield stream

    async def get_stream(self, id: Any) -> Any:
        return await self.inner.get_stream(id)

    async def list_streams(self, query: Any) -> Any:
        return await self.inner.list_streams(query)


@pytest.mark.parametrize("late_copy", [True, False])
@pytest.mark.parametrize("recheck", [True, False])
@pytest.mark.parametrize("walk", ["ordered", "reversed"])
async def test_b_walked_in_step_with_a_finds_copies_out_of_order_extras_and_gaps(
    tmp_path: Path, id_map_path: str, walk: str, recheck: bool, late_copy: bool
) -> None:
    """B's walk is consumed in step with A's, a few streams at a time: a copy made much later
    than its neighbours (far ahead in B's walk), extras between the copies, a copy deleted from
    B and one that differs are all found — also when B's walk is not in id order."""
    a = load_backend("memory", name="a")
    b = load_backend("memory", name="b")
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/journal.db")
    await store.open()
    try:
        late = None
        made: list[tuple[Any, Any]] = []
        for i in range(30):
            draft = StreamDraft(source=f"s{i}", link=f"https://x.test/{i}", title=f"t{i}")
            ours = await a.create_stream(draft)
            if i == 5 and late_copy:
                late = (ours, draft)  # its copy is made last: far ahead in B's walk
                continue
            made.append((ours, await b.create_stream(draft)))
            if i in (9, 17):
                await b.create_stream(StreamDraft(source="x", link=f"https://x.test/extra{i}"))
        if late is not None:
            made.append((late[0], await b.create_stream(late[1])))
        async with store.begin() as conn:
            for n, (ours, theirs) in enumerate(made):
                await store.map_id(conn, "stream", f"k{n}", "a", ours.id)
                await store.map_id(conn, "stream", f"k{n}", "b", theirs.id)
        by_a = {ours.id: theirs.id for ours, theirs in made}
        gone = made[11][0].id
        await b.delete_stream(by_a[gone])
        changed = made[19][0].id
        await b.update_stream(by_a[changed], StreamPatch(title="edited in B"))
        side_b = _Reversed(b) if walk == "reversed" else b
        result = await Verifier(store, a, side_b, chunk=4, recheck=recheck).run()  # type: ignore[arg-type]
        assert (result.checked, result.matching) == (30, 28), result.differences
        assert (result.missing, result.extra, result.differing) == (1, 2, 1), result.differences
        kinds: dict[str, list[Any]] = {}
        for d in result.differences:
            kinds.setdefault(d.kind, []).append(d)
        assert [d.a_id for d in kinds["missing"]] == [gone]
        assert [d.a_id for d in kinds["differ"]] == [changed]
        assert sorted(d.b_id for d in kinds["extra"]) == sorted(
            s.id for s in await _all(b) if s.source == "x"
        )
    finally:
        await store.close()


class _Failing(_Reversed):
    """A walk that fails after a few streams."""

    async def iter_streams(self, query: Any = None) -> Any:
        for n, stream in enumerate(await _all(self.inner)):
            if n == 5:
                raise BackendError("the walk broke", backend=self.name)
            yield stream


class _Tracked(_Reversed):
    """B walked in order; remembers whether its walk was closed."""

    closed = False

    async def iter_streams(self, query: Any = None) -> Any:
        try:
            for stream in await _all(self.inner):
                yield stream
        finally:
            self.closed = True


async def test_a_walk_of_a_that_fails_stops_the_run_and_closes_the_walk_of_b(
    tmp_path: Path,
) -> None:
    src, dst, store = await _copied(tmp_path, count=20)
    try:
        walk_b = _Tracked(dst)
        with pytest.raises(BackendError, match="the walk broke"):
            await Verifier(store, _Failing(src), walk_b, chunk=2).run()  # type: ignore[arg-type]
        assert walk_b.closed
    finally:
        await _close(store, src, dst)


async def test_a_copy_an_update_recreated_but_not_yet_settled_is_in_flight_not_extra(
    tmp_path: Path,
) -> None:
    """An update whose copy is missing on B recreates it (self-healing); the new copy is
    mapped when the row settles. Until then (a worker lingering after its apply, or just
    between the apply and the settle) B holds a stream no mapping names: in flight, not an
    extra — as for a create being applied."""
    src, dst, manager = _app(tmp_path)
    async with manager:
        store, worker = manager.store, manager.worker
        assert store is not None
        assert worker is not None
        made = [
            await manager.create_stream(StreamDraft(source="s", link=f"https://x.test/{i}"))
            for i in range(3)
        ]
        assert await worker.drain(timeout=10)
        lost = await manager.translate_id(made[0].id, "legacy", "new")
        await dst.delete_stream(lost)  # gone from B behind the journal's back
        await manager.update_stream(made[0].id, StreamPatch(title="healed"))
        _, rows, native = await store.claim_batch("w", targets_=["new"], limit=10, lease_seconds=60)
        assert [r.op for r in rows] == ["update"]
        outcome = await apply_row(
            rows[0],
            dst,
            native.get((rows[0].entity_type, rows[0].entity_key, "new")),
            store,
            RetryPolicy(),
            now=store.clock(),
        )
        assert len(await _all(dst)) == 3  # recreated, not mapped yet
        during = await Verifier(store, src, dst).run()
        assert during.extra == 0, during.differences
        assert during.in_flight >= 1
        await store.settle("w", [outcome])
        after = await Verifier(store, src, dst).run()
        assert after.clean, after.differences
        assert after.matching == 3


class _Hooked:
    """A backend whose ``get_stream`` of one id runs ``hooks`` in turn, one a call, before
    reading (``before``) or after: a stand-in for the app and the sync worker acting between
    verify's reads."""

    def __init__(self, inner: Any, id: Any, hooks: list[Any], *, before: bool) -> None:
        self._inner, self._id, self._hooks, self._before = inner, id, hooks, before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get_stream(self, id: Any) -> Any:
        hook = self._hooks.pop(0) if id == self._id and self._hooks else None
        if hook is not None and self._before:
            await hook()
        stream = await self._inner.get_stream(id)
        if hook is not None and not self._before:
            await hook()
        return stream


async def test_an_app_write_between_the_journal_check_and_the_second_read_is_in_flight(
    tmp_path: Path,
) -> None:
    """Verify reads a suspect's two sides, asks the journal, reads again. An app write that
    lands after the journal answered "idle" makes that second read differ while its own fan-out
    is still queued: in flight, not a difference."""
    src, dst, manager = _app(tmp_path)
    async with manager:
        store, worker = manager.store, manager.worker
        assert store is not None
        assert worker is not None
        made = await manager.create_stream(StreamDraft(source="s", link="https://x.test/0"))
        assert await worker.drain(timeout=10)
        b_id = await manager.translate_id(made.id, "legacy", "new")
        await manager.update_stream(made.id, StreamPatch(title="v1"))  # queued for B

        async def nothing() -> None:
            return None

        async def drain() -> None:  # B read (still without v1); then v1 reaches B
            assert worker is not None
            assert await worker.drain(timeout=10)

        async def app_writes() -> None:  # after the journal said idle: v2, queued
            await manager.update_stream(made.id, StreamPatch(title="v2"))

        a = _Hooked(src, made.id, [nothing, app_writes], before=True)
        b = _Hooked(dst, b_id, [drain], before=False)
        result = await Verifier(store, a, b).run()
        assert result.differing == 0, result.differences
        assert result.in_flight == 1
        assert await worker.drain(timeout=10)
        assert (await Verifier(store, src, dst).run()).clean


async def test_a_difference_that_holds_still_is_still_reported(tmp_path: Path) -> None:
    src, dst, store = await _copied(tmp_path, count=3)
    try:
        first = (await _all(dst))[0]
        await dst.update_stream(first.id, StreamPatch(title="drifted"))
        result = await Verifier(store, src, dst).run()
        assert result.differing == 1
        assert result.differences[0].fields[0].b == "drifted"
    finally:
        await _close(store, src, dst)
