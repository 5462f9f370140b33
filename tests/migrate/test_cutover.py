"""A full cutover and a rollback while the app keeps writing, ending with both sides equal."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from multibackend.journal.store import JournalStore
from multibackend.manager import BackendManager
from multibackend.migrate import Backfill, Cutover, CutoverPolicy, Verifier, WriteFenced
from multibackend.migrate.phases import load_state, save_state
from multibackend.model import StreamDraft, StreamPatch, StreamQuery

from .conftest import history, legacy, native_sql


async def _all(backend: Any) -> list[Any]:
    return [s async for s in backend.iter_streams(StreamQuery())]


async def _eventually(check: Any, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _advance(cutover: Cutover, to: str, tries: int = 200) -> None:
    """Advance, retrying while a precondition is only momentarily missing (a busy journal)."""
    for _ in range(tries):
        outcome = await cutover.advance()
        if outcome.done:
            assert outcome.to_phase == to
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"could not advance to {to}: {outcome.missing}")


async def test_full_cutover_and_rollback_with_writes_throughout(
    tmp_path: Path, journal_url: str
) -> None:
    async with legacy(tmp_path / "legacy.db") as seed:
        await seed.bulk_import(history(80))
    app = BackendManager(
        [legacy(tmp_path / "legacy.db"), native_sql(tmp_path / "new.db", "new")],
        primary="legacy",
        secondaries=["new"],
        journal_url=journal_url,
        shadow_backend="new",
        shadow_sample=1.0,
        shadow_timeout=2.0,
    )
    ops = legacy(tmp_path / "legacy.db"), native_sql(tmp_path / "new.db", "new")
    store = JournalStore(journal_url)
    async with app, ops[0], ops[1]:
        await store.open()
        cutover = Cutover(
            store,
            {"legacy": ops[0], "new": ops[1]},
            primary="legacy",
            secondaries=["new"],
            shadow_backend="new",
            policy=CutoverPolicy(
                fence_timeout=10, fence_grace=0.1, min_shadow_reads=5, max_shadow_mismatch_rate=0.2
            ),
        )
        # Entities the app knows, each by the backend that gave it its id.
        known: list[tuple[str, Any]] = [("legacy", s.id) for s in await _all(ops[0])]
        gone: set[int] = set()
        errors: list[BaseException] = []
        primaries_seen: set[str] = set()
        stop = asyncio.Event()
        rng = random.Random(3)

        async def writer() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    roll = rng.random()
                    index = rng.randrange(len(known))
                    backend, id = known[index]
                    if roll < 0.3 or index in gone:
                        made = await app.create_stream(
                            StreamDraft(source="app", link=f"https://x.test/{n}", title=f"c{n}")
                        )
                        known.append((app.primary_name, made.id))
                    elif roll < 0.9:
                        await app.update_stream(id, StreamPatch(title=f"u{n}"), id_from=backend)
                    else:
                        gone.add(index)
                        await app.delete_stream(id, id_from=backend)
                    primaries_seen.add(app.primary_name)
                except Exception as exc:  # the test fails below if any write failed
                    errors.append(exc)
                await asyncio.sleep(0.002)

        task = asyncio.create_task(writer())
        try:
            status = await cutover.status()
            assert status["phase"] == "legacy-only"
            await _advance(cutover, "dual-write")
            blocked = await cutover.advance()
            assert not blocked.done
            assert "no completed backfill legacy -> new" in blocked.missing[0]

            await Backfill(store, ops[0], ops[1], batch=32).run()
            await _advance(cutover, "backfilled")
            assert (await Verifier(store, ops[0], ops[1]).run()).clean
            await _advance(cutover, "verified")
            await _advance(cutover, "shadow")
            for index, (_, id) in enumerate(known[:10]):
                # Skip streams the writer deleted meanwhile (a read of them is NotFound).
                if isinstance(id, int) and index not in gone:
                    await app.get_stream(id, id_from="legacy")
            assert app.shadow is not None
            await app.shadow.wait_idle()
            await app.shadow.flush()

            dry = await cutover.advance(dry_run=True)
            assert not dry.done
            assert any("raise the write fence" in step for step in dry.steps)
            assert (await load_state(store)).phase == "shadow"

            await _advance(cutover, "flipped")
            # The app's manager follows before its next write.
            await _eventually(lambda: app.primary_name == "new")
            assert app.secondary_names == ["legacy"]
            await asyncio.sleep(0.3)  # writes go on against the new primary

            back = await cutover.rollback()
            assert back.done, back.missing
            assert back.to_phase == "shadow"
            await _eventually(lambda: app.primary_name == "legacy")
            await asyncio.sleep(0.2)
        finally:
            stop.set()
            await task
        assert not errors, errors[:3]
        assert primaries_seen == {"legacy", "new"}
        assert await app.drain(timeout=20)
        forward = await Verifier(store, ops[0], ops[1]).run()
        backward = await Verifier(store, ops[1], ops[0]).run()
        assert forward.clean, forward.differences[:3]
        assert backward.clean, backward.differences[:3]
        assert len(await _all(ops[0])) == len(await _all(ops[1]))
        await store.close()


async def test_writes_wait_at_the_fence_and_fail_clearly_past_its_bound(tmp_path: Path) -> None:
    journal = f"sqlite+aiosqlite:///{tmp_path}/journal.db"
    app = BackendManager(
        [legacy(tmp_path / "legacy.db"), native_sql(tmp_path / "new.db", "new")],
        primary="legacy",
        journal_url=journal,
    )
    async with app:
        assert app.store is not None
        made = await app.create_stream(StreamDraft(source="s", link="https://x.test/a"))
        state = await load_state(app.store)
        fenced = await save_state(
            app.store,
            state.__class__(
                phase="shadow",
                legacy="legacy",
                new="new",
                fence_until=app.store.clock() + 0.3,
                fence_reason="test",
            ),
        )
        with pytest.raises(WriteFenced, match=r"fenced \(test\)"):
            await app.update_stream(made.id, StreamPatch(title="x"))
        # A fence lifted in time: the waiting write proceeds.
        import attrs

        await save_state(app.store, attrs.evolve(fenced, fence_until=app.store.clock() + 5))

        async def lift() -> None:
            await asyncio.sleep(0.2)
            assert app.store is not None
            current = await load_state(app.store)
            await save_state(app.store, attrs.evolve(current, fence_until=None))

        lifter = asyncio.create_task(lift())
        started = asyncio.get_running_loop().time()
        updated = await app.update_stream(made.id, StreamPatch(title="after the fence"))
        assert asyncio.get_running_loop().time() - started >= 0.15
        assert updated.title == "after the fence"
        await lifter
