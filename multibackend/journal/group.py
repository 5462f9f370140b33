"""Group commit: concurrent journal writes share one transaction.

Each caller hands over a small unit of work (``async def work(conn) -> T``) and waits for its
result. A single flusher runs every unit queued since the last flush inside one transaction, so
under load N writes cost one commit instead of N. A caller's write is durable when its
``submit`` returns. If the shared transaction fails, each unit is retried in a transaction of its
own, so one bad unit fails only its own caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.journal.store import JournalStore

__all__ = ["GroupCommitter"]

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[Any]]


class GroupCommitter:
    """Batches units of journal work into shared transactions on ``store``."""

    def __init__(self, store: JournalStore, *, max_batch: int = 512) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: list[tuple[Work, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0
        self.units = 0

    async def submit(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in a shared transaction; return its result once committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        return await future

    async def close(self) -> None:
        """Wait for queued work to commit."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush_loop(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            async with self.store.begin() as conn:
                for work, _ in batch:
                    results.append(await work(conn))
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            for unit in batch:
                await self._flush([unit])
            return
        self.commits += 1
        self.units += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
