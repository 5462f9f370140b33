"""Fixtures for journal and manager tests: memory backends, a controllable clock, and a backend
wrapper whose failures a test scripts call by call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from multibackend.backend import BaseBackend
from multibackend.errors import MultibackendError
from multibackend.journal.store import FanOut, JournalStore
from multibackend.manager import BackendManager
from multibackend.model import Page, Stream, StreamDraft, StreamId, StreamPatch, StreamQuery
from multibackend.registry import load_backend


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float | None = None) -> None:
        # Start at the real time: backends stamp real timestamps, and the journal compares.
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Scripted(BaseBackend):
    """Delegates to ``inner``; ``fail_next(op, exc, times)`` makes the next calls raise.

    ``after`` failures happen after the inner call succeeded (an unknown outcome: the write
    happened but the caller saw an error).
    """

    def __init__(self, inner: Any) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.capabilities = inner.capabilities
        self.fields = inner.fields
        self.calls: dict[str, int] = {}
        self._script: dict[str, list[tuple[MultibackendError, bool]]] = {}

    def fail_next(
        self, op: str, exc: MultibackendError, times: int = 1, *, after: bool = False
    ) -> None:
        self._script.setdefault(op, []).extend([(exc, after)] * times)

    async def _call(self, op: str, fn: Callable[[], Any]) -> Any:
        self.calls[op] = self.calls.get(op, 0) + 1
        script = self._script.get(op)
        if script:
            exc, after = script.pop(0)
            if after:
                await fn()
            raise exc
        return await fn()

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def create_stream(self, draft: StreamDraft) -> Stream:
        result: Stream = await self._call("create", lambda: self.inner.create_stream(draft))
        return result

    async def get_stream(self, id: StreamId) -> Stream:
        result: Stream = await self._call("get", lambda: self.inner.get_stream(id))
        return result

    async def update_stream(self, id: StreamId, patch: StreamPatch) -> Stream:
        result: Stream = await self._call("update", lambda: self.inner.update_stream(id, patch))
        return result

    async def delete_stream(self, id: StreamId) -> None:
        await self._call("delete", lambda: self.inner.delete_stream(id))

    async def list_streams(self, query: StreamQuery) -> Page[Stream]:
        result: Page[Stream] = await self._call("list", lambda: self.inner.list_streams(query))
        return result

    async def set_pinned(self, id: StreamId, pinned: bool) -> Stream:
        result: Stream = await self._call("pin", lambda: self.inner.set_pinned(id, pinned))
        return result


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh journal database: a SQLite file, then a PostgreSQL database."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path}/journal.db"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def memory(name: str, **options: Any) -> Any:
    return load_backend("memory", name=name, **options)


def fanout(key: str, target: str = "t1", title: str = "x", op: str = "create") -> FanOut:
    """A fan-out row of entity ``key`` for ``target`` (a small snapshot, none for a delete)."""
    return FanOut(
        entity_type="stream",
        entity_key=key,
        target=target,
        op=op,  # type: ignore[arg-type]
        snapshot=None if op == "delete" else {"title": [title], "source": ["s"]},
    )


async def enqueue(store: JournalStore, *items: FanOut) -> None:
    """Enqueue ``items`` in a transaction of their own."""
    async with store.begin() as conn:
        await store.enqueue(conn, list(items))


@pytest.fixture
async def trio(tmp_path: Any) -> AsyncIterator[BackendManager]:
    """A memory primary with two memory secondaries, embedded worker, SQLite journal file."""
    manager = BackendManager(
        [memory("primary"), memory("s1"), memory("s2")],
        primary="primary",
        journal_url=f"sqlite+aiosqlite:///{tmp_path}/journal.db",
    )
    async with manager:
        yield manager
