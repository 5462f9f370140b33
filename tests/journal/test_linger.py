"""A running worker lingers after a batch that was not full, so that trickling writes share
claims and settles; a full batch, a stop and any drain in the process end the wait at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from multibackend.config import load_config
from multibackend.errors import ConfigError
from multibackend.journal.store import FanOut, JournalStore
from multibackend.journal.worker import EMBEDDED_LINGER, SyncWorker, draining
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft, StreamQuery

from .conftest import Clock, Scripted, memory

# Long enough that a test passing within it proves the wait was cut short, never waited out.
LONG = 30.0


async def _enqueue(store: JournalStore, *keys: str) -> None:
    async with store.begin() as conn:
        await store.enqueue(
            conn,
            [
                FanOut(
                    entity_type="stream",
                    entity_key=k,
                    target="t1",
                    op="create",
                    snapshot={"source": ["s"], "link": [f"https://x.test/{k}"], "title": [k]},
                )
                for k in keys
            ],
        )


async def _until(check: Any, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _worker(
    journal_url: str, clock: Clock, *, batch_size: int, linger: float, queued: int = 0
) -> AsyncIterator[tuple[JournalStore, Scripted, SyncWorker]]:
    """An open journal with ``queued`` creates for t1 (keys k0..), a counting target and a
    worker for it (not started)."""
    store = JournalStore(journal_url, clock=clock)
    await store.open()
    try:
        if queued:
            await _enqueue(store, *(f"k{n}" for n in range(queued)))
        target = Scripted(memory("t1"))
        async with target:
            yield (
                store,
                target,
                SyncWorker(
                    store, {"t1": target}, targets=["t1"], batch_size=batch_size, linger=linger
                ),
            )
    finally:
        await store.close()


async def _stopped(worker: SyncWorker, task: asyncio.Task[None]) -> None:
    worker.stop()
    await asyncio.wait_for(task, timeout=10)


async def test_woken_worker_gathers_writes_until_a_full_batch(
    journal_url: str, clock: Clock
) -> None:
    async with _worker(journal_url, clock, batch_size=6, linger=LONG) as (store, target, worker):
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0.05)  # idle: nothing queued
            for n in range(3):
                await _enqueue(store, f"k{n}")
                worker.wake()
            await asyncio.sleep(0.2)
            # Woken three times, but lingering for more: nothing claimed, nothing applied.
            assert target.calls == {}
            assert (await store.status(["t1"]))["t1"].pending == 3
            for n in range(3, 6):
                await _enqueue(store, f"k{n}")
                worker.wake()
            # Six writes for one target make a full batch: claimed at once, in one batch.
            await _until(lambda: _applied(target, 6))
            assert worker.stats.batches == 1
        finally:
            await _stopped(worker, task)
        assert await store.outstanding(["t1"]) == 0


async def _applied(target: Scripted, n: int) -> bool:
    return target.calls.get("create", 0) >= n


async def test_without_linger_each_wake_is_claimed_at_once(journal_url: str, clock: Clock) -> None:
    async with _worker(journal_url, clock, batch_size=6, linger=0) as (store, target, worker):
        task = asyncio.create_task(worker.run())
        try:
            for n in range(3):
                await _enqueue(store, f"k{n}")
                worker.wake()
                await _until(lambda n=n: _applied(target, n + 1))
            assert worker.stats.batches == 3
        finally:
            await _stopped(worker, task)


async def test_a_drain_ends_a_linger_at_once(journal_url: str, clock: Clock) -> None:
    async with _worker(journal_url, clock, batch_size=50, linger=LONG) as (store, target, worker):
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0.05)
            await _enqueue(store, "a", "b")
            worker.wake()
            await asyncio.sleep(0.1)
            assert target.calls == {}  # lingering
            loop = asyncio.get_running_loop()
            started = loop.time()
            with draining():
                await _until(lambda: _outstanding_is(store, 0))
            assert loop.time() - started < LONG / 3
            assert target.calls == {"create": 2}
            # While a drain is in progress no worker lingers: new work goes at once.
            with draining():
                await _enqueue(store, "c")
                worker.wake()
                await _until(lambda: _outstanding_is(store, 0))
            assert target.calls == {"create": 3}
        finally:
            await _stopped(worker, task)


async def _outstanding_is(store: JournalStore, n: int) -> bool:
    return await store.outstanding(None) == n


async def test_applied_rows_stay_leased_while_lingering_and_are_settled_on_stop(
    journal_url: str, clock: Clock
) -> None:
    async with _worker(journal_url, clock, batch_size=50, linger=LONG, queued=2) as (
        store,
        target,
        worker,
    ):
        task = asyncio.create_task(worker.run())
        # The first claim does not wait; the batch was not full, so the worker lingers
        # before settling it together with its next claim.
        await _until(lambda: _applied(target, 2))
        await asyncio.sleep(0.1)
        assert (await store.status(["t1"]))["t1"].leased == 2
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _stopped(worker, task)
        assert loop.time() - started < LONG / 3
        assert await store.outstanding(None) == 0
        assert target.calls == {"create": 2}


async def test_worker_drain_never_lingers(journal_url: str, clock: Clock) -> None:
    async with _worker(journal_url, clock, batch_size=3, linger=LONG, queued=5) as (_, target, w):
        assert await asyncio.wait_for(w.drain(timeout=LONG), timeout=LONG / 3)
        assert target.calls == {"create": 5}


async def test_manager_drain_cuts_its_workers_linger_short(tmp_path: Path) -> None:
    manager = BackendManager(
        [memory("p"), memory("s")],
        primary="p",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
        linger=LONG,
    )
    async with manager:
        assert manager.worker is not None
        assert manager.worker.linger == LONG
        for n in range(3):
            await manager.create_stream(StreamDraft(source="s", link=f"https://x.test/{n}"))
        await asyncio.sleep(0.1)
        secondary = manager.backends["s"]
        assert (await secondary.list_streams(StreamQuery())).total_count == 0  # lingering
        assert await asyncio.wait_for(manager.drain(timeout=LONG), timeout=LONG / 3)
        assert (await secondary.list_streams(StreamQuery())).total_count == 3


def _config(tmp_path: Path, sync: str) -> Path:
    path = tmp_path / "mb.toml"
    path.write_text(
        '[backends.p]\nplugin = "memory"\n[backends.s]\nplugin = "memory"\n'
        f'[manager]\nprimary = "p"\nsecondaries = ["s"]\n[sync]\n{sync}\n'
    )
    return path


def test_sync_linger_is_configured_and_reaches_the_worker_setting(tmp_path: Path) -> None:
    assert load_config(_config(tmp_path, "")).sync.linger == EMBEDDED_LINGER
    config = load_config(_config(tmp_path, "linger = 0.05"))
    assert config.sync.linger == 0.05
    assert BackendManager.from_config(config).linger == 0.05
    assert load_config(_config(tmp_path, "linger = 0")).sync.linger == 0
    with pytest.raises(ConfigError, match=r"sync\.linger: must be 0 or more"):
        load_config(_config(tmp_path, "linger = -1"))
    with pytest.raises(ValueError, match="linger"):
        SyncWorker(JournalStore("sqlite+aiosqlite://"), {}, targets=[], linger=-0.5)
