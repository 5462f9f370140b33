"""The backfill's pipeline: a chunk's journal transaction runs while the chunk before it is
copied, but transactions never overlap each other and copies never overlap each other."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from multibackend.journal.store import JournalStore
from multibackend.migrate import Backfill, Verifier
from multibackend.migrate import backfill as backfill_module

from .conftest import history, legacy, memory


class _Log:
    def __init__(self) -> None:
        self.active: dict[str, int] = {"journal": 0, "copy": 0}
        self.most: dict[str, int] = {"journal": 0, "copy": 0}
        #: Journal transactions that began while a copy was in progress.
        self.overlapped = 0

    def enter(self, what: str) -> None:
        self.active[what] += 1
        self.most[what] = max(self.most[what], self.active[what])
        if what == "journal" and self.active["copy"]:
            self.overlapped += 1

    def leave(self, what: str) -> None:
        self.active[what] -= 1


async def test_transactions_and_copies_each_in_order_one_at_a_time_but_overlapping(
    tmp_path: Path, monkeypatch: Any
) -> None:
    log = _Log()
    firsts: list[int] = []  # each transaction's first source id
    on_thread = Backfill._on_thread

    async def journal(self: Backfill, settle: Any, enqueue: Any) -> Any:
        if enqueue is not None:
            firsts.append(int(enqueue.texts[0]))
        log.enter("journal")
        try:
            await asyncio.sleep(0.005)  # a transaction long enough to be overlapped
            return await on_thread(self, settle, enqueue)
        finally:
            log.leave("journal")

    monkeypatch.setattr(Backfill, "_on_thread", journal)
    src, dst = legacy(tmp_path / "legacy.db"), memory("new")
    bulk_import = dst.bulk_import

    async def copy(drafts: Any) -> Any:
        log.enter("copy")
        try:
            await asyncio.sleep(0.02)  # a copy that takes a while (a remote target)
            return await bulk_import(drafts)
        finally:
            log.leave("copy")

    dst.bulk_import = copy
    store = JournalStore(f"sqlite+aiosqlite:///{tmp_path}/journal.db")
    async with src, dst:
        await src.bulk_import(history(95))
        await store.open()
        try:
            backfill = Backfill(store, src, dst, batch=10, bulk_chunk=10)
            assert backfill.direct  # the path with the held connection
            result = await backfill.run()
            assert (await Verifier(store, src, dst).run()).clean
            meta = await backfill_module.get_json_meta(store, backfill.key)
        finally:
            await store.close()
    assert result.copied == 95
    assert result.complete
    assert log.most == {"journal": 1, "copy": 1}
    assert len(firsts) == 10
    assert firsts == sorted(firsts)
    assert log.overlapped >= 5, log.overlapped  # 10 chunks: most transactions overlap a copy
    assert meta is not None
    assert meta["done"]
    assert meta["copied"] == 95
