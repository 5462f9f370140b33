"""Shadow reads: a slow or wrong candidate never slows or fails the caller; mismatches stored."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import attrs
from click.testing import CliRunner

from multibackend.cli import main
from multibackend.errors import Unavailable
from multibackend.journal.store import JournalStore
from multibackend.manager import BackendManager
from multibackend.migrate import shadow_report
from multibackend.model import StreamDraft, StreamPatch, StreamQuery

from .conftest import memory


class Candidate:
    """A memory backend that answers slowly, wrongly or with errors, as told."""

    def __init__(self, name: str) -> None:
        self.inner = memory(name)
        self.name = name
        self.fields = self.inner.fields
        self.capabilities = self.inner.capabilities
        self.delay = 0.0
        self.wrong_title: str | None = None
        self.fail = False

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def _answer(self, stream: Any) -> Any:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise Unavailable("down", backend=self.name)
        if self.wrong_title is not None:
            return attrs.evolve(stream, title=self.wrong_title)
        return stream

    async def get_stream(self, id: Any) -> Any:
        return await self._answer(await self.inner.get_stream(id))

    async def list_streams(self, query: Any) -> Any:
        page = await self.inner.list_streams(query)
        items = [await self._answer(s) for s in page.items]
        return attrs.evolve(page, items=tuple(items))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_slow_and_wrong_candidates_never_touch_the_caller(tmp_path: Path) -> None:
    candidate = Candidate("new")
    journal = f"sqlite+aiosqlite:///{tmp_path}/journal.db"
    manager = BackendManager(
        {"old": memory("old"), "new": candidate},  # type: ignore[dict-item]
        primary="old",
        journal_url=journal,
        shadow_backend="new",
        shadow_sample=1.0,
        shadow_timeout=0.2,
    )
    async with manager:
        made = [
            await manager.create_stream(
                StreamDraft(source="s", link=f"https://x.test/{i}", title=f"t{i}")
            )
            for i in range(4)
        ]
        assert await manager.drain(timeout=10)
        assert manager.shadow is not None
        # Agreeing candidate: comparisons, no mismatch.
        for stream in made:
            await manager.get_stream(stream.id)
        await manager.list_streams(StreamQuery())
        await manager.shadow.wait_idle()
        assert manager.shadow.stats.matched == 8
        # Slow candidate: the caller's read takes no longer; the comparison times out.
        candidate.delay = 1.0
        started = time.monotonic()
        got = await manager.get_stream(made[0].id)
        assert time.monotonic() - started < 0.5  # the candidate takes 1 s
        assert got.title == "t0"
        await manager.shadow.wait_idle()
        assert manager.shadow.stats.timeouts == 1
        # Failing candidate: the caller is fine; counted as an error.
        candidate.delay, candidate.fail = 0.0, True
        assert (await manager.get_stream(made[1].id)).title == "t1"
        await manager.shadow.wait_idle()
        assert manager.shadow.stats.errors == 1
        # Wrong candidate: the caller gets the primary's answer; the mismatch is stored.
        candidate.fail, candidate.wrong_title = False, "WRONG"
        assert (await manager.get_stream(made[2].id)).title == "t2"
        await manager.shadow.wait_idle()
        assert manager.shadow.stats.mismatched == 1
    store = JournalStore(journal)
    await store.open()
    try:
        (report,) = await shadow_report(store)
    finally:
        await store.close()
    assert (report.candidate, report.compared, report.mismatches) == ("new", 9, 1)
    assert (report.timeouts, report.errors) == (1, 1)
    (mismatch,) = report.latest
    assert mismatch.primary_value["title"] == "t2"
    assert mismatch.candidate_value["title"] == "WRONG"
    assert mismatch.primary_id == str(made[2].id)
    assert mismatch.detail == "title"
    assert mismatch.at > 0


async def test_a_write_not_yet_on_the_candidate_is_no_mismatch(tmp_path: Path) -> None:
    manager = BackendManager(
        [memory("old"), memory("new")],
        primary="old",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
        worker="external",
        shadow_backend="new",
        shadow_sample=1.0,
    )
    async with manager:
        made = await manager.create_stream(StreamDraft(source="s", link="https://x.test/a"))
        await manager.get_stream(made.id)
        assert manager.shadow is not None
        await manager.shadow.wait_idle()
        assert manager.shadow.stats.in_flight_skipped == 1
        assert manager.shadow.stats.mismatched == 0


def test_shadow_report_command(tmp_path: Path) -> None:
    config = tmp_path / "mb.toml"
    config.write_text(
        """
[backends.old]
plugin = "memory"
[backends.new]
plugin = "memory"
[manager]
primary = "old"
secondaries = ["new"]
[shadow]
backend = "new"
sample = 1.0
# Generous: a loaded CI machine must not turn the compared read into a timeout.
timeout = 10.0
""",
        encoding="utf-8",
    )

    async def reads() -> None:
        manager = BackendManager.from_config(config)
        assert manager.shadow is None  # created at open
        async with manager:
            made = await manager.create_stream(StreamDraft(source="s", link="https://x.test/a"))
            assert await manager.drain(timeout=5)
            await manager.get_stream(made.id)
            assert manager.shadow is not None
            await manager.shadow.wait_idle()
            await manager.backends["new"].update_stream(  # type: ignore[attr-defined]
                (await manager.translate_id(made.id, "old", "new")),
                StreamPatch(city="Drifted"),
            )
            await manager.get_stream(made.id)
            await manager.shadow.wait_idle()

    asyncio.run(reads())
    runner = CliRunner()
    text = runner.invoke(main, ["shadow", "-c", str(config), "report"])
    assert text.exit_code == 0, text.output
    assert "new: 2 compared, 1 mismatches (50.000%)" in text.output
    assert "'Drifted'" in text.output
    as_json = json.loads(
        runner.invoke(main, ["shadow", "-c", str(config), "report", "--json"]).stdout
    )
    (candidate,) = as_json["candidates"]
    assert candidate["latest"][0]["candidate_value"]["city"] == "Drifted"


async def test_a_stream_deleted_during_the_shadow_read_is_no_mismatch(tmp_path: Path) -> None:
    manager = BackendManager(
        [memory("old"), memory("new")],
        primary="old",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
        shadow_backend="new",
        shadow_sample=1.0,
        shadow_timeout=10.0,
    )
    async with manager:
        made = await manager.create_stream(StreamDraft(source="s", link="https://x.test/a"))
        assert await manager.drain(timeout=10)
        assert manager.shadow is not None
        shadow = manager.shadow
        deleted = asyncio.Event()
        keys = shadow._keys

        async def keys_after_the_delete(*args: Any) -> Any:
            await deleted.wait()  # the app deletes the stream while the shadow read runs
            return await keys(*args)

        shadow._keys = keys_after_the_delete  # type: ignore[method-assign]
        await manager.get_stream(made.id)
        await manager.delete_stream(made.id)
        assert await manager.drain(timeout=10)
        deleted.set()
        await shadow.wait_idle()
        assert shadow.stats.mismatched == 0
        assert shadow.stats.in_flight_skipped == 1
