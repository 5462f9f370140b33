"""Recovery from real crashes: processes killed with SIGKILL, then restarted."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from multibackend.model import StreamDraft, StreamPatch, StreamQuery
from multibackend.registry import load_backend

from .crashing import manager

SCRIPT = Path(__file__).with_name("crashing.py")


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def count_copies(work: Path) -> int:
    copy = load_backend("sql", name="copy", url=f"sqlite+aiosqlite:///{work}/copy.db")
    async with copy:
        return (await copy.list_streams(StreamQuery(per_page=1))).total_count


async def all_streams(backend: Any) -> list[Any]:
    return [s async for s in backend.iter_streams(StreamQuery())]


@pytest.mark.parametrize("journal", ["legacy.db", "journal.db"], ids=["outbox", "intents"])
async def test_worker_killed_mid_batch_resumes_without_duplicates(
    tmp_path: Path, journal: str
) -> None:
    m = manager(tmp_path, journal, worker="external", lease_seconds=1.0)
    async with m:
        ids = [
            (await m.create_stream(StreamDraft(source=f"s{i}", link=f"https://x.com/{i}"))).id
            for i in range(60)
        ]
        for i in ids[::3]:
            await m.update_stream(i, StreamPatch(title="updated"))

    progress = []
    for _ in range(3):  # kill it three times at different points
        proc = await spawn("worker", str(tmp_path), journal)
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
        # Kill it as soon as it applied something new (a fixed sleep raced the first claim on
        # a loaded machine: nothing applied yet). The slow target keeps it mid-batch then.
        before = progress[-1] if progress else 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while before < 60 and loop.time() < deadline:
            if await count_copies(tmp_path) > before:
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        progress.append(await count_copies(tmp_path))
        await asyncio.sleep(1.05)  # let the dead worker's leases expire before the next one
    # Each run was killed mid-way, after applying some rows but before finishing.
    assert 0 < progress[0] < 60, progress
    assert progress == sorted(progress), progress

    m = manager(tmp_path, journal, worker="external", lease_seconds=1.0)
    async with m:
        await asyncio.sleep(1.05)  # the last dead worker's leases expire
        assert m.worker is not None
        assert await m.worker.drain(timeout=60)
        primary = await all_streams(m.primary)
        copies = await all_streams(m.backends["copy"])
        assert len(copies) == len(primary) == 60  # nothing lost, nothing duplicated
        for stream in primary:
            other = await m.translate_id(stream.id, "legacy", "copy")
            assert other is not None
            copy = await m.backends["copy"].get_stream(other)
            assert (copy.source, copy.link, copy.title) == (
                stream.source,
                stream.link,
                stream.title,
            )


async def test_manager_killed_between_primary_and_journal_recovers(tmp_path: Path) -> None:
    proc = await spawn("write-and-die", str(tmp_path), "journal.db", "a1", "a2", "die", "a4")
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    m = manager(tmp_path, "journal.db", intent_grace=0.0)
    async with m:  # recovery runs at open
        assert await m.drain(timeout=30)
        primary = sorted(s.source for s in await all_streams(m.primary))
        copies = sorted(s.source for s in await all_streams(m.backends["copy"]))
        # The crashed write reached the primary; recovery fanned it out; a4 never ran.
        assert primary == copies == ["a1", "a2", "die"]
        assert m.store is not None
        assert await m.store.stale_intents(older_than=1e12) == []


@pytest.mark.parametrize("mode", ["write-and-die-direct", "write-and-die"])
async def test_outbox_crash_before_commit_loses_the_write_everywhere(
    tmp_path: Path, mode: str
) -> None:
    proc = await spawn(mode, str(tmp_path), "legacy.db", "a1", "die", "a3")
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    m = manager(tmp_path, "legacy.db")
    async with m:
        assert await m.drain(timeout=30)
        primary = [s.source for s in await all_streams(m.primary)]
        copies = [s.source for s in await all_streams(m.backends["copy"])]
        # The primary row and its journal rows were one transaction: both rolled back.
        assert primary == copies == ["a1"]
