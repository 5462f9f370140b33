"""Bringing one target in line with one queue row: the call to make and what came of it.

The row holds the entity's desired state on the target; the id map says whether the target
already has it. So the call is derived, not replayed:

=================  ==================  ==========================================
desired            target has it?      call
=================  ==================  ==========================================
deleted            yes                 delete (NotFound counts as done), unmap
deleted            no                  nothing (a create and a delete cancelled out), but
                                       first delete a lost create, if there may be one
snapshot           yes                 update; NotFound -> create again (self-heal)
snapshot           no                  create (after looking for a lost create)
=================  ==================  ==========================================

"Looking for a lost create": when an earlier create on this target may have happened without
being recorded (it timed out, or the worker died mid-call), the target's newest streams are
searched for one with the same natural key (link, source, title) created since the write and not
mapped to any other entity; if found, it is adopted and updated instead of creating a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from multibackend.backend import StreamBackend
from multibackend.errors import MultibackendError, NotFound, RateLimited, ValidationFailed
from multibackend.journal.retry import RetryPolicy
from multibackend.journal.snapshot import decode_snapshot, draft_from_snapshot, patch_from_snapshot
from multibackend.journal.store import Done, JournalStore, Outcome, Park, QueueRow, Reschedule
from multibackend.model import Page, Sort, Stream, StreamId, StreamQuery

__all__ = ["LostCreates", "apply_row", "find_lost_create"]

log = logging.getLogger("multibackend.journal")

#: How far back (seconds) before the write a lost create may be stamped: the allowance for the
#: target's clock running behind the journal's. Every second of it is more streams to scan.
CLOCK_SKEW = 60.0
#: Tries of one page of a lost-create scan on transient errors (a long scan must not fail as a
#: whole because one page did).
PAGE_TRIES = 5
#: Pages of newest streams searched at most. The search normally stops sooner, at streams created
#: before the write was journaled; the cap only bounds targets that report no creation times.
#: (It was 5: a row retried after a backlog of more than 500 newer streams created a duplicate.)
SEARCH_PAGES = 100


async def apply_row(
    row: QueueRow,
    backend: StreamBackend,
    native_id: StreamId | None,
    store: JournalStore,
    policy: RetryPolicy,
    *,
    now: float,
    rand: Any = None,
    lost: LostCreates | None = None,
) -> Outcome:
    """Apply ``row`` to ``backend`` (its target) and return the outcome to settle.

    ``native_id`` is the target's id for the entity from the id map (None when unmapped).
    ``lost``, when given, answers the lost-create searches of a whole batch from one scan.
    Never raises for backend errors: they become Reschedule or Park outcomes.
    """
    creating = False
    try:
        if row.deleted:
            if native_id is None:
                # A create and a delete cancel out, unless the create may have reached the
                # target unrecorded (timeout, crash): then that copy is found and deleted.
                gone = row.snapshot if row.maybe_created else None
                if gone:
                    found = await _search(lost, backend, gone, store, row)
                    if found is not None:
                        with contextlib.suppress(NotFound):
                            await backend.delete_stream(found.id)
                return Done(row=row)
            with contextlib.suppress(NotFound):
                await backend.delete_stream(native_id)
            return Done(row=row, unmapped=True)
        # Decoded once here (the row keeps its text: see QueueRow), dropped after the call.
        snapshot = row.snapshot or {}
        if native_id is not None:
            try:
                await backend.update_stream(native_id, patch_from_snapshot(snapshot))
                return Done(row=row)
            except NotFound:
                log.info(
                    "entity %s missing on %s (id %s): creating it again",
                    row.entity_key,
                    row.target,
                    native_id,
                    extra={"entity_key": row.entity_key, "entry_id": row.id},
                )
        if row.maybe_created:
            found = await _search(lost, backend, snapshot, store, row)
            if found is not None:
                await backend.update_stream(found.id, patch_from_snapshot(snapshot))
                return Done(row=row, mapped=found.id)
        creating = True
        created = await backend.create_stream(draft_from_snapshot(snapshot))
        return Done(row=row, mapped=created.id)
    except RateLimited as exc:
        at = (
            exc.retry_at.timestamp()
            if exc.retry_at is not None
            else now + policy.delay(1, *_r(rand))
        )
        return Reschedule(row=row, at=max(at, now), error=str(exc), count_attempt=False)
    except MultibackendError as exc:
        if not exc.retryable:
            return Park(row=row, error=f"{type(exc).__name__}: {exc}")
        return _retry(row, policy, now, f"{type(exc).__name__}: {exc}", creating, rand)
    except TypeError as exc:
        # A snapshot that lacks a required field (for example a legacy row without a source).
        return Park(row=row, error=f"ValidationFailed: {exc}")
    except Exception as exc:  # a bug in a plugin: retry with backoff, park when exhausted
        log.exception(
            "unexpected error applying entry %s to %s",
            row.id,
            row.target,
            extra={"entity_key": row.entity_key, "entry_id": row.id},
        )
        return _retry(row, policy, now, f"{type(exc).__name__}: {exc}", creating, rand)


async def _search(
    lost: LostCreates | None,
    backend: StreamBackend,
    snapshot: Mapping[str, Any],
    store: JournalStore,
    row: QueueRow,
) -> Stream | None:
    if lost is not None:
        return await lost.find(row, snapshot)
    return await find_lost_create(backend, snapshot, store, row)


# (link, source) -> candidates, newest first, with the entity key each is mapped to (if any).
_Index = dict[tuple[str, Any], list[tuple[Stream, str | None]]]


class LostCreates:
    """The lost-create searches of one batch for one target, answered from a single newest-first
    scan of the target back to the oldest write among ``rows``.

    Searching row by row read the target's newest streams once per row: under a backlog of
    thousands of newer streams (the 10,000-operation chaos run) that made convergence crawl.
    A candidate has the row's link and source, was created since the row's write (less the
    clock-skew allowance) and is not mapped to another entity; one with the row's title is
    preferred, since a later write may have renamed the stream. Each goes to one row only.
    """

    def __init__(self, backend: StreamBackend, store: JournalStore, rows: Sequence[QueueRow]):
        self.backend = backend
        self.store = store
        self.since = min(r.enqueued_at for r in rows) - CLOCK_SKEW
        self._by_key: _Index | None = None
        self._lock = asyncio.Lock()
        self._given: set[str] = set()

    async def _load(
        self, entity_type: str
    ) -> dict[tuple[str, Any], list[tuple[Stream, str | None]]]:
        candidates: list[Stream] = []
        for page in range(1, SEARCH_PAGES + 1):
            result = await _page_with_retries(self.backend, page)
            stop = False
            for stream in result.items:
                if stream.created_at is not None and stream.created_at.timestamp() < self.since:
                    stop = True
                    break
                candidates.append(stream)
            if stop or page >= result.total_pages:
                break
        owners = await self.store.entity_keys_of(
            entity_type, self.backend.name, [s.id for s in candidates]
        )
        by_key: _Index = defaultdict(list)
        for stream in candidates:  # newest first
            by_key[(stream.link, stream.source)].append((stream, owners.get(str(stream.id))))
        return by_key

    async def find(self, row: QueueRow, snapshot: Mapping[str, Any]) -> Stream | None:
        """The stream an unrecorded create of ``row`` made on the target, if any."""
        async with self._lock:
            if self._by_key is None:
                self._by_key = await self._load(row.entity_type)
            values = decode_snapshot(snapshot)
            try:
                want = (values["link"].strip(), values["source"])
            except (KeyError, AttributeError):
                raise ValidationFailed(
                    "snapshot lacks link or source", backend=self.backend.name
                ) from None
            since = row.enqueued_at - CLOCK_SKEW
            fallback: Stream | None = None
            for stream, owner in self._by_key.get(want, []):
                if str(stream.id) in self._given:
                    continue
                if owner is not None and owner != row.entity_key:
                    continue
                if stream.created_at is not None and stream.created_at.timestamp() < since:
                    continue
                if "title" not in values or stream.title == values.get("title"):
                    self._given.add(str(stream.id))
                    return _adopt(row, stream)
                if fallback is None:
                    fallback = stream
            if fallback is None:
                return None
            self._given.add(str(fallback.id))
            return _adopt(row, fallback)


async def _page_with_retries(backend: StreamBackend, page: int) -> Page[Stream]:
    query = StreamQuery(sort=Sort.CREATED_DESC, page=page, per_page=100)
    for attempt in range(1, PAGE_TRIES + 1):
        try:
            return await backend.list_streams(query)
        except MultibackendError as exc:
            if not exc.retryable or isinstance(exc, RateLimited) or attempt == PAGE_TRIES:
                raise
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _r(rand: Any) -> tuple[Any, ...]:
    return () if rand is None else (rand,)


def _retry(
    row: QueueRow, policy: RetryPolicy, now: float, error: str, creating: bool, rand: Any
) -> Outcome:
    failures = row.attempts + 1
    if policy.exhausted(failures):
        return Park(row=row, error=f"gave up after {failures} attempts: {error}")
    return Reschedule(
        row=row,
        at=now + policy.delay(failures, *_r(rand)),
        error=error,
        maybe_created=creating,
    )


async def find_lost_create(
    backend: StreamBackend,
    snapshot: Mapping[str, Any],
    store: JournalStore,
    row: QueueRow,
) -> Stream | None:
    """A stream on ``backend`` that an unrecorded earlier create of ``row`` made, if any
    (:class:`LostCreates` for a single row)."""
    return await LostCreates(backend, store, [row]).find(row, snapshot)


def _adopt(row: QueueRow, stream: Stream) -> Stream:
    log.info(
        "adopting %s id %s as the lost create of entity %s",
        row.target,
        stream.id,
        row.entity_key,
        extra={"entity_key": row.entity_key, "entry_id": row.id},
    )
    return stream
