"""The backfill's two journal paths on SQLite — a chunk in one transaction in aiosqlite's thread
(settling the previous chunk's copies in it), and statement by statement — end the same."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from multibackend.manager import BackendManager
from multibackend.migrate import Backfill, Progress, Verifier
from multibackend.model import StreamPatch, StreamQuery

from .conftest import history, legacy, memory
from .test_backfill import _broken_rows, _WritesAfterRead


class _Watch(Progress):
    """Progress that says when ``at`` streams are done (their chunk applied)."""

    def __init__(self, at: int) -> None:
        super().__init__("backfill", enabled=False)
        self.at = at
        self.reached = asyncio.Event()

    def advance(self, count: int = 1) -> None:
        super().advance(count)
        if self.done >= self.at:
            self.reached.set()


async def _import(src: Any, count: int) -> None:
    """history() into ``src``, pinned streams only among the first 15: a chunk with a stream
    to pin after its import is settled at once, the others wait for the next chunk's
    transaction."""
    await src.bulk_import(history(count))
    for row in (await _all(src))[15:]:
        if row.is_pinned:
            await src.set_pinned(row.id, False)


async def _all(backend: Any) -> list[Any]:
    return [s async for s in backend.iter_streams(StreamQuery())]


def _comparable(stream: Any) -> tuple[Any, ...]:
    out = stream.to_dict()
    # Stamped when the source rows were written (each scenario writes its own).
    for name in ("id", "updated_at", "user", "last_checked_at"):
        out.pop(name)
    return tuple(sorted((k, str(v)) for k, v in out.items()))


async def _scenario(folder: Path, direct: bool) -> dict[str, Any]:
    """History with legacy rows today's rules refuse; while the backfill runs, the app deletes
    a stream not read yet, and updates streams of chunks already copied (their create rows
    settled, or, on the direct path, still waiting for the next chunk's transaction) and of the
    chunk being read."""
    folder.mkdir()  # noqa: ASYNC240 - a test's temporary folder
    src, dst = legacy(folder / "legacy.db"), memory("new")
    manager = BackendManager(
        [src, dst], primary="legacy", journal_url=f"sqlite+aiosqlite:///{folder}/j.db"
    )
    async with manager:
        await _import(src, 130)
        await _broken_rows(folder / "legacy.db", 3)
        rows = await _all(src)

        async def write() -> None:
            # Once the second chunk is copied (on the direct path: its rows still leased,
            # waiting for the third chunk's transaction to settle them).
            await progress.reached.wait()
            await manager.delete_stream(rows[100].id)
            for n, row in enumerate((rows[3], rows[30], rows[49], rows[52])):
                await manager.update_stream(row.id, StreamPatch(title=f"newer {n}"))

        assert manager.store is not None
        source = _WritesAfterRead(src, rows[52].id, write)
        progress = _Watch(50)
        backfill = Backfill(
            manager.store,
            source,  # type: ignore[arg-type]
            dst,
            batch=25,
            bulk_chunk=25,
            progress=progress,
        )
        assert backfill.direct  # SQLite through aiosqlite
        backfill.direct = direct
        result = await backfill.run()
        assert await manager.drain(timeout=10)
        verified = await Verifier(manager.store, src, dst).run()
        # Only the rows today's rules refuse (parked) are missing on the target.
        assert sorted((d.kind, d.a_id) for d in verified.differences) == [
            ("missing", i) for i in (131, 132, 133)
        ]
        again = await Backfill(manager.store, src, dst, batch=25).run()
        parked = await manager.store.rows(status="parked")
        return {
            "result": {
                k: v for k, v in result.to_dict().items() if k not in ("elapsed", "rate", "errors")
            },
            "errors": len(result.errors),
            "again": (again.scanned, again.copied, again.already_present, again.enqueued),
            "target": sorted(_comparable(s) for s in await _all(dst)),
            "parked": sorted(r.last_error or "" for r in parked),
            "queue_left": len(await manager.store.rows()) - len(parked),
        }


async def test_a_chunk_in_one_transaction_ends_as_statement_by_statement(tmp_path: Path) -> None:
    direct = await _scenario(tmp_path / "direct", True)
    fallback = await _scenario(tmp_path / "fallback", False)
    assert direct == fallback
    # 133 rows: 1 deleted before its chunk, 1 written by the app before its chunk (the app's
    # row wins; the worker copies it), 3 parked, 128 copied by the backfill.
    result = direct["result"]
    assert (result["copied"], result["parked"], result["skipped_deleted"]) == (128, 3, 1)
    assert (result["already_present"], result["left_to_worker"]) == (1, 0)
    assert direct["again"] == (132, 0, 132, 0)
    titles = {dict(t)["title"] for t in direct["target"]}
    assert {"newer 0", "newer 1", "newer 2", "newer 3"} <= titles
    assert direct["queue_left"] == 0


async def test_copies_waiting_for_the_next_chunk_are_settled_when_the_walk_ends(
    tmp_path: Path,
) -> None:
    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    manager = BackendManager(
        [src, dst], primary="legacy", journal_url=f"sqlite+aiosqlite:///{tmp_path}/j.db"
    )
    async with manager:
        await _import(src, 60)
        assert manager.store is not None
        result = await Backfill(manager.store, src, dst, batch=25, bulk_chunk=25).run(
            finish_timeout=None
        )
        assert (result.copied, result.left_to_worker) == (60, 0)
        assert await manager.store.rows() == []
        mapped = await manager.store.translate_ids(
            "stream", "legacy", [s.id for s in await _all(src)], "new"
        )
        assert len(mapped) == 60


async def test_a_killed_run_takes_back_the_copies_it_had_not_settled(tmp_path: Path) -> None:
    """Killed after a chunk was imported and before the next chunk's transaction settled it:
    the next run finds those copies (adopts them) instead of making duplicates."""
    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    manager = BackendManager(
        [src, dst], primary="legacy", journal_url=f"sqlite+aiosqlite:///{tmp_path}/j.db"
    )

    class Killed(BaseException):
        pass

    async with manager:
        await _import(src, 60)
        rows = await _all(src)
        assert manager.store is not None

        progress = _Watch(50)

        async def kill() -> None:
            await progress.reached.wait()
            raise Killed

        # Raised while reading the third chunk, once the second is imported (not settled).
        source = _WritesAfterRead(src, rows[54].id, kill)
        with pytest.raises(Killed):
            await Backfill(
                manager.store,
                source,  # type: ignore[arg-type]
                dst,
                batch=25,
                bulk_chunk=25,
                progress=progress,
            ).run()
        leased = await manager.store.rows(status="leased")
        assert len(leased) == 25  # the second chunk's copies
        assert len(await _all(dst)) == 50
        result = await Backfill(manager.store, src, dst, batch=25, bulk_chunk=25).run(resume=True)
        assert result.left_to_worker == 0
        copies = await _all(dst)
        assert len(copies) == 60  # nothing twice
        assert (await Verifier(manager.store, src, dst).run()).clean
        with sqlite3.connect(tmp_path / "j.db") as db:
            assert db.execute("SELECT count(*) FROM mb_queue").fetchone() == (0,)
