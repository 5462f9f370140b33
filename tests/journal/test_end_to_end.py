"""End to end over real parts: the legacy database, StreamSource over HTTP (the emulator, through
the client), and memory — faults injected on the way, every backend agreeing at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multibackend_streamsource.emulator import UserSpec, run_emulator

from multibackend.manager import BackendManager
from multibackend.model import (
    Kind,
    Platform,
    StreamDraft,
    StreamPatch,
    StreamQuery,
    StreamStatus,
)
from multibackend.registry import load_backend

EDITOR = UserSpec(email="editor@example.com", password="Passw0rd1", role="editor")
COMPARED = ("source", "link", "status", "is_pinned", "platform", "city", "title")


def streamsource(url: str) -> Any:
    return load_backend(
        "streamsource",
        name="streamsource",
        base_url=url,
        email=EDITOR.email,
        password=EDITOR.password,
    )


def legacy(work: Path) -> Any:
    return load_backend(
        "sql",
        name="legacy",
        url=f"sqlite:///{work}/legacy.db",
        schema="streamsource-legacy",
        create_schema=True,
    )


async def assert_agree(manager: BackendManager, ids: list[Any]) -> None:
    for pid in ids:
        primary = await manager.primary.get_stream(pid)
        for target in manager.secondary_names:
            other = await manager.translate_id(pid, manager.primary_name, target)
            assert other is not None, (pid, target)
            copy = await manager.backends[target].get_stream(other)
            for field in COMPARED:
                assert getattr(copy, field) == getattr(primary, field), (target, field)
    for target in manager.secondary_names:
        page = await manager.backends[target].list_streams(StreamQuery(per_page=1))
        assert page.total_count == len(ids), target


async def test_legacy_primary_fans_out_to_streamsource_and_memory(tmp_path: Path) -> None:
    async with run_emulator(users=[EDITOR]) as emu:
        manager = BackendManager(
            [legacy(tmp_path), streamsource(emu.base_url), load_backend("memory", name="mem")],
            primary="legacy",
            journal_url=f"sqlite:///{tmp_path}/legacy.db",
            lease_seconds=5,
        )
        async with manager:
            ids = []
            for i in range(12):
                s = await manager.create_stream(
                    StreamDraft(
                        source=f"streamer{i}",
                        link=f"https://tiktok.com/@s{i}",
                        platform=Platform.TIKTOK,
                        kind=Kind.OVERLAY,  # the legacy table cannot hold it; StreamSource can
                        notes=f"note {i}",
                    )
                )
                ids.append(s.id)
            manager.retry = manager.retry.__class__(max_attempts=12, base=0.05, cap=0.2)
            assert manager.worker is not None
            manager.worker.policy = manager.retry
            emu.fail_next(2, status=503, method="POST", path="/api/v1/streams")
            assert await manager.drain(timeout=60)
            # Now updates go out as PATCHes, into injected 500s and a tight rate limit: the
            # journal retries, the client waits out the 429s, and everything converges.
            emu.fail_next(3, status=500, method="PATCH")
            emu.set_rate_limit(15, period=1.0)
            for pid in ids[::2]:
                await manager.update_stream(
                    pid, StreamPatch(status=StreamStatus.LIVE, city="Austin")
                )
            await manager.set_pinned(ids[1], True)
            await manager.delete_stream(ids[-1])
            ids.pop()
            assert await manager.drain(timeout=60)
            await assert_agree(manager, ids)
            remote = await manager.translate_id(ids[0], "legacy", "streamsource")
            assert remote is not None
            copy = await manager.backends["streamsource"].get_stream(remote)
            # Fields the legacy table cannot store reached StreamSource from the write itself.
            assert (copy.kind, copy.notes) == (Kind.OVERLAY, "note 0")
            assert emu.counters().faults >= 5


async def test_streamsource_primary_with_legacy_secondary(tmp_path: Path) -> None:
    async with run_emulator(users=[EDITOR]) as emu:
        manager = BackendManager(
            [streamsource(emu.base_url), legacy(tmp_path)],
            primary="streamsource",
            journal_url=f"sqlite:///{tmp_path}/journal.db",
        )
        async with manager:
            ids = [
                (
                    await manager.create_stream(
                        StreamDraft(source=f"s{i}", link=f"https://twitch.tv/s{i}")
                    )
                ).id
                for i in range(8)
            ]
            await manager.update_stream(ids[0], StreamPatch(title="renamed"))
            await manager.set_pinned(ids[2], True)
            assert await manager.drain(timeout=60)
            await assert_agree(manager, ids)
