"""Group commit: concurrent journal writes share one transaction.

Each caller hands over a small unit of work (``async def work(conn) -> T``) and waits for its
result. A single flusher runs every unit queued since the last flush inside one transaction, so
under load N writes cost one commit instead of N. A caller's write is durable when its
``submit`` returns. If the shared transaction fails, each unit is retried in a transaction of its
own, so one bad unit fails only its own caller. When several units share a transaction, their
row writes are deferred to just before the commit and run as a few ``executemany`` calls
(:class:`~multibackend.journal.store.DeferredWrites`): a flush costs a few round trips to the
database, not a few per unit.

``begin`` opens the shared transaction (default: the store's). The manager passes the primary's
``transaction()`` when the journal lives in the primary's database (the transactional outbox):
then each unit is a whole write — the primary's statement and its journal rows — and concurrent
writes share one commit, while each caller is still answered only after its commit. A unit runs
in the flusher task, so calls the primary makes inside it see that transaction. A caller that is
cancelled while waiting does not withdraw its unit: it may still commit (whole, with its journal
rows).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.journal.store import IntentId, JournalStore

__all__ = ["GroupCommitter"]

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[Any]]


class GroupCommitter:
    """Batches units of journal work into shared transactions on ``store``."""

    def __init__(
        self,
        store: JournalStore,
        *,
        max_batch: int = 512,
        begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]] | None = None,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self._begin = begin
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

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        if self._begin is None:
            async with self.store.begin() as conn:  # takes the store's write slot itself
                yield conn
        else:
            async with self.store.write_slot(), self._begin() as conn:
                yield conn

    async def _flush(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            async with self._transaction() as conn:
                if len(batch) == 1:
                    results.append(await batch[0][0](conn))
                else:
                    # The units' row writes run as a few executemany calls before the commit.
                    async with self.store.deferring(conn):
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
            if isinstance(result, IntentId):
                result = int(result)  # an intent added under deferral: its id is known now
            if not future.done():
                future.set_result(result)
