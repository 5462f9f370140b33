"""Group commit: concurrent journal writes share one transaction.

Each caller hands over a small unit of work (``async def work(conn) -> T``) and waits for its
result. A single flusher runs every unit queued since the last flush inside one transaction, so
under load N writes cost one commit instead of N. A caller's write is durable when its
``submit`` returns.

Failures reach only their own caller: when a unit raises, the shared transaction is rolled back
(nothing of any unit in it is kept), the other units run again together in a new transaction,
and the failed unit runs once more in a transaction of its own, whose outcome (its error, or its
result if it only failed alongside the others) is its caller's answer. When the transaction
itself fails (its begin or its commit), every unit is retried in a transaction of its own.
Units must therefore be safe to run again after a rollback: everything they do goes through
``conn``.

``begin`` opens the shared transaction (default: the store's :meth:`~JournalStore.begin`). The
manager passes the primary's ``transaction()`` when the journal lives in the primary's database
(the transactional outbox): then each unit is a whole write — the primary's statement and its
journal rows — and concurrent writes share one commit, each caller still answered only after the
commit holding its rows. Units run in the flusher task, so calls the primary makes inside a unit
see that transaction. A caller cancelled while waiting does not withdraw its unit: it may still
commit, whole.

Batched units (:meth:`GroupCommitter.submit_batched`): the items of a flush queued for one
``run`` function are handed to it together, in queue order: ``run(conn, items) -> results``
(one per item, in order), so that their rows are written by a few ``executemany`` statements
per flush instead of a few statements per item. ``run`` may answer an item with an exception
instance when it wrote nothing for that item (its caller gets that exception, the others
commit); it raises :class:`ItemFailed` to say which item failed (the transaction rolls back and
the failure is isolated as for a unit); any other error rolls the flush back and every item runs
alone.

Whole flushes on the driver's thread (SQLite): given a :class:`~multibackend.journal.writer.
HeldWriter`, a flush whose units are all items of batched runs submitted with a ``plan`` runs
as ONE call on the held connection's thread: ``BEGIN IMMEDIATE``, each run's planned work,
``COMMIT``. ``plan(items)`` is called on the event loop and answers ``(work, answer)``:
``work(raw sqlite3 connection)`` runs in the transaction, ``answer(work's result)`` gives the
items' results (as ``run`` would), once committed; or None, and the flush takes the ``begin``
path with ``run`` as before (so does every flush when the writer is not available). A failure
of the one call rolls the whole flush back and every item runs alone, as for ``run`` errors
that are not :class:`ItemFailed`; an item failing alone there is run once more through the
``begin`` path, whose outcome is its caller's answer (so a broken held connection, which the
writer replaces, costs no caller an error).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import attrs
from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.journal.store import JournalStore
from multibackend.journal.writer import HeldWriter

__all__ = ["GroupCommitter", "ItemFailed", "Plan", "Planned"]

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[Any]]
Run = Callable[[AsyncConnection, list[Any]], Awaitable[list[Any]]]
Planned = tuple[Callable[[sqlite3.Connection], Any], Callable[[Any], list[Any]]]
Plan = Callable[[list[Any]], Planned | None]


@attrs.frozen
class _Unit:
    work: Work | None  # a plain unit
    run: Run | None  # or an item of a batched run
    item: Any
    future: asyncio.Future[Any]
    plan: Plan | None = None


class ItemFailed(Exception):
    """Raised by a batched ``run``: its item ``index`` failed (the cause is chained)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class _UnitFailed(Exception):
    """Internal: unit ``index`` of the shared transaction raised (the transaction rolls back)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class GroupCommitter:
    """Batches units of journal work into shared transactions on ``store``."""

    def __init__(
        self,
        store: JournalStore,
        *,
        max_batch: int = 512,
        begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]] | None = None,
        writer: HeldWriter | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.max_batch = max_batch
        self._begin = begin if begin is not None else store.begin
        self._queue: list[_Unit] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0
        self.units = 0

    async def submit(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in a shared transaction; return its result once committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(_Unit(work, None, None, future))
        return await future

    async def submit_batched(self, run: Run, item: Any, *, plan: Plan | None = None) -> Any:
        """Hand ``item`` to ``run`` together with the items queued next to it (see the module
        docstring); return ``run``'s result for it once committed. ``plan``: the same work for
        the held writer's one-call flush (see the module docstring)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(_Unit(None, run, item, future, plan))
        return await future

    def _enqueue(self, unit: _Unit) -> None:
        self._queue.append(unit)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())

    async def close(self) -> None:
        """Wait for queued work to commit; return the held writer's connection."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self.writer is not None:
            await self.writer.close()

    async def _flush_loop(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            await self._flush(batch)

    async def _flush(self, batch: list[_Unit]) -> None:
        results: list[Any] = [None] * len(batch)
        # Items of one batched run go together wherever they are queued (in queue order among
        # themselves), at the place of the first of them: units of different runs or plain
        # units are independent writes (made by different callers, each already past its own
        # earlier steps), so only the order within one run can matter.
        runs: dict[Run, list[int]] = {}
        for index, unit in enumerate(batch):
            if unit.run is not None:
                runs.setdefault(unit.run, []).append(index)
        if (
            self.writer is not None
            and self.writer.available
            and all(unit.plan is not None for unit in batch)
        ):
            try:
                planned = await self._flush_held(batch, runs, results)
            except Exception:
                # Rolled back (or never begun). A group's units run alone; a lone unit's
                # answer comes from the begin path below (the reference: the same error for
                # a failing statement, success when the held connection was what failed).
                if len(batch) > 1:
                    for unit in batch:
                        await self._flush([unit])
                    return
                planned = False
            if planned:
                self._committed(batch, results)
                return
        try:
            async with self._begin() as conn:
                for index, unit in enumerate(batch):
                    if unit.run is None:
                        assert unit.work is not None
                        try:
                            results[index] = await unit.work(conn)
                        except Exception as exc:
                            if len(batch) == 1:
                                raise
                            raise _UnitFailed(index) from exc
                        continue
                    members = runs[unit.run]
                    if members[0] != index:
                        continue  # run with the first of its items
                    try:
                        answers = await unit.run(conn, [batch[i].item for i in members])
                    except ItemFailed as failed:
                        cause = failed.__cause__ or failed
                        if len(batch) == 1:
                            raise cause from None
                        raise _UnitFailed(members[failed.index]) from cause
                    if len(answers) != len(members):  # pragma: no cover - a broken run
                        raise RuntimeError("a batched run answered the wrong number of items")
                    for i, answer in zip(members, answers, strict=True):
                        results[i] = answer
        except _UnitFailed as failed:
            # Rolled back. The others share a new transaction; the failed unit runs alone,
            # so that its caller gets its own outcome.
            rest = batch[: failed.index] + batch[failed.index + 1 :]
            await self._flush(rest)
            await self._flush([batch[failed.index]])
            return
        except Exception as exc:
            if len(batch) == 1:
                self._failed(batch, exc)
                return
            for unit in batch:
                await self._flush([unit])
            return
        self._committed(batch, results)

    async def _flush_held(
        self, batch: list[_Unit], runs: dict[Run, list[int]], results: list[Any]
    ) -> bool:
        """The flush as one call on the held writer's thread; False when it cannot be (a plan
        declined, the writer is not available: nothing ran, take the ``begin`` path)."""
        assert self.writer is not None
        work: list[Callable[[sqlite3.Connection], Any]] = []
        answers: list[tuple[list[int], Callable[[Any], list[Any]]]] = []
        for members in runs.values():
            plan = batch[members[0]].plan
            assert plan is not None
            planned = plan([batch[i].item for i in members])
            if planned is None:
                return False
            work.append(planned[0])
            answers.append((members, planned[1]))
        try:
            done = await self.writer.transaction(work)
        except LookupError:
            return False
        for (members, answer), raw in zip(answers, done, strict=True):
            try:
                items = answer(raw)
                if len(items) != len(members):
                    raise RuntimeError("a plan answered the wrong number of items")
            except Exception as exc:  # pragma: no cover - a broken plan
                # Committed: never run again; its callers get the error.
                items = [exc] * len(members)
            for i, result in zip(members, items, strict=True):
                results[i] = result
        return True

    @staticmethod
    def _failed(batch: list[_Unit], exc: BaseException) -> None:
        """A lone unit's failure is its caller's answer (a group's units run again alone)."""
        if len(batch) == 1 and not batch[0].future.done():
            batch[0].future.set_exception(exc)

    def _committed(self, batch: list[_Unit], results: list[Any]) -> None:
        self.commits += 1
        self.units += len(batch)
        for unit, result in zip(batch, results, strict=True):
            if unit.future.done():
                continue
            if isinstance(result, BaseException):
                unit.future.set_exception(result)
            else:
                unit.future.set_result(result)
