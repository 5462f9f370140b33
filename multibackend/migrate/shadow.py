"""Shadow reads: repeat a sampled share of the manager's reads on a candidate backend, compare.

With ``[shadow] backend = "streamsource"``, ``sample = 0.1`` and ``timeout = 0.5``, one read in
ten is repeated on the candidate *after* the caller has its answer, in a background task with a
deadline. The caller's read is never slowed or failed by the candidate: the task is only
scheduled (never awaited by the read), a full set of tasks in flight drops further samples, and
every candidate error or timeout is counted, not raised.

Comparison is verify's (:mod:`multibackend.migrate.compare`): the fields both store,
canonicalized. An entity with journal work outstanding (a write not yet on the candidate) is not
a mismatch and is skipped. Mismatches are stored in the journal table ``mb_shadow`` (entity,
both values, when); counts of comparisons and mismatches are kept per candidate in ``mb_meta``
(``shadow_counts:NAME``), flushed every second and on close. ``multibackend shadow report``
summarizes them; the cutover's ``shadow -> flipped`` step checks the mismatch rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from sqlalchemy import func, select

from multibackend.backend import StreamBackend
from multibackend.errors import MultibackendError, NotFound
from multibackend.journal.schema import meta, shadow_mismatches
from multibackend.journal.store import JournalStore
from multibackend.journal.store import decode_json as _json
from multibackend.metrics import REGISTRY
from multibackend.migrate.compare import canonical_fields, compared_fields, diff_values
from multibackend.migrate.ledger import outstanding_keys
from multibackend.model import Page, Stream, StreamId, StreamQuery

__all__ = ["ShadowMismatch", "ShadowReader", "ShadowReport", "ShadowStats", "shadow_report"]

log = logging.getLogger("multibackend.shadow")

ENTITY = "stream"


_SHADOW = "multibackend_shadow_reads_total"


@attrs.define
class ShadowStats:
    """What this process's shadow reader did."""

    sampled: int = 0
    compared: int = 0
    matched: int = 0
    mismatched: int = 0
    in_flight_skipped: int = 0
    timeouts: int = 0
    errors: int = 0
    dropped: int = 0


@attrs.frozen(kw_only=True)
class ShadowMismatch:
    """One stored mismatch."""

    id: int
    entity_key: str | None
    primary_backend: str
    candidate: str
    primary_id: str | None
    read: str
    kind: str
    primary_value: Any
    candidate_value: Any
    detail: str | None
    at: float


@attrs.frozen(kw_only=True)
class ShadowReport:
    """Totals for one candidate and the latest mismatches."""

    candidate: str
    compared: int
    mismatches: int
    timeouts: int
    errors: int
    latest: tuple[ShadowMismatch, ...]

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / self.compared if self.compared else 0.0


def _counts_key(candidate: str) -> str:
    return f"shadow_counts:{candidate}"


class ShadowReader:
    """Schedules and runs shadow comparisons for one candidate (see the module docstring)."""

    def __init__(
        self,
        store: JournalStore,
        candidate: StreamBackend,
        *,
        sample: float,
        timeout: float,
        max_in_flight: int = 64,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.candidate = candidate
        self.sample = sample
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.stats = ShadowStats()
        self._rand = rand
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = {"compared": 0, "mismatches": 0, "timeouts": 0, "errors": 0}
        self._last_flush = time.monotonic()

    # --- scheduling (called by the manager after it has the primary's answer) ------------------

    def _take(self) -> bool:
        if self.sample <= 0 or self._rand() >= self.sample:
            return False
        self.stats.sampled += 1
        if len(self._tasks) >= self.max_in_flight:
            self.stats.dropped += 1
            return False
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def after_get(self, primary: StreamBackend, stream: Stream) -> None:
        """Maybe compare ``stream`` (the primary's answer to a get) with the candidate's copy."""
        if primary.name != self.candidate.name and self._take():
            self._spawn(self._guard(self._compare_get(primary, stream)))

    def after_list(self, primary: StreamBackend, query: StreamQuery, page: Page[Stream]) -> None:
        """Maybe repeat a list on the candidate and compare the entities both return."""
        if primary.name != self.candidate.name and self._take():
            self._spawn(self._guard(self._compare_list(primary, query, page)))

    async def wait_idle(self) -> None:
        """Wait for the comparisons in flight (each ends by its deadline)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait for comparisons in flight (at most ``timeout``, default the read timeout plus a
        second), then store the counters."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout or self.timeout + 1)
            for task in pending:
                task.cancel()
        await self.flush()

    # --- comparing ---------------------------------------------------------------------------

    async def _guard(self, coro: Any) -> None:
        try:
            await asyncio.wait_for(coro, timeout=self.timeout)
        except TimeoutError:
            self.stats.timeouts += 1
            REGISTRY.inc(_SHADOW, candidate=self.candidate.name, outcome="timeout")
            self._pending["timeouts"] += 1
        except MultibackendError as exc:
            self.stats.errors += 1
            REGISTRY.inc(_SHADOW, candidate=self.candidate.name, outcome="error")
            self._pending["errors"] += 1
            log.debug("shadow read on %s failed: %s", self.candidate.name, exc)
        except Exception:
            self.stats.errors += 1
            REGISTRY.inc(_SHADOW, candidate=self.candidate.name, outcome="error")
            self._pending["errors"] += 1
            log.exception("shadow read on %s failed", self.candidate.name)
        if time.monotonic() - self._last_flush >= 1.0:
            try:
                await self.flush()
            except Exception:
                log.warning("could not store shadow read counters", exc_info=True)

    async def _compare_get(self, primary: StreamBackend, stream: Stream) -> None:
        fields = compared_fields(primary.fields, self.candidate.fields)
        keys = await self._keys(primary.name, [stream.id])
        key = keys.get(str(stream.id))
        other = (
            await self.store.native_ids_of(ENTITY, [key], self.candidate.name) if key else {}
        ).get(key or "")
        want = canonical_fields(stream, fields)
        found: Stream | None = None
        if other is not None:
            with contextlib.suppress(NotFound):
                found = await self.candidate.get_stream(other)
        if found is None:
            if not await self._still_on(primary, stream.id):
                # Deleted since the caller's read: the delete also removed the id mapping,
                # so the journal cannot tell it is in flight; it is no mismatch.
                self.stats.in_flight_skipped += 1
                return
            await self._verdict(primary.name, key, stream.id, "get", want, None, "missing")
            return
        await self._verdict(
            primary.name, key, stream.id, "get", want, canonical_fields(found, fields), None
        )

    @staticmethod
    async def _still_on(backend: StreamBackend, id: StreamId) -> bool:
        try:
            await backend.get_stream(id)
        except NotFound:
            return False
        return True

    async def _compare_list(
        self, primary: StreamBackend, query: StreamQuery, page: Page[Stream]
    ) -> None:
        fields = compared_fields(primary.fields, self.candidate.fields)
        theirs = await self.candidate.list_streams(query)
        to_primary = await self.store.translate_ids(
            ENTITY, self.candidate.name, [s.id for s in theirs.items], primary.name
        )
        their_by_primary = {
            str(to_primary[str(s.id)]): s for s in theirs.items if str(s.id) in to_primary
        }
        keys = await self._keys(primary.name, [s.id for s in page.items])
        for stream in page.items:
            found = their_by_primary.get(str(stream.id))
            if found is None:
                # Page membership depends on each backend's default order and on writes in
                # flight; only entities both pages hold are compared.
                continue
            await self._verdict(
                primary.name,
                keys.get(str(stream.id)),
                stream.id,
                "list",
                canonical_fields(stream, fields),
                canonical_fields(found, fields),
                None,
            )

    async def _keys(self, backend: str, ids: Sequence[StreamId]) -> dict[str, str]:
        from multibackend.journal.schema import id_map
        from multibackend.journal.store import encode_id

        texts = [encode_id(i)[0] for i in ids]
        if not texts:
            return {}
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(id_map.c.native_id, id_map.c.entity_key).where(
                    id_map.c.entity_type == ENTITY,
                    id_map.c.backend == backend,
                    id_map.c.native_id.in_(texts),
                )
            )
            return {r[0]: r[1] for r in rows}

    async def _verdict(
        self,
        primary: str,
        key: str | None,
        primary_id: StreamId,
        read: str,
        want: dict[str, Any],
        got: dict[str, Any] | None,
        kind: str | None,
    ) -> None:
        diffs = diff_values(want, got) if got is not None else []
        if kind is None and not diffs:
            self.stats.compared += 1
            self.stats.matched += 1
            REGISTRY.inc(_SHADOW, candidate=self.candidate.name, outcome="match")
            self._pending["compared"] += 1
            return
        if key is not None and await outstanding_keys(self.store, ENTITY, [key]):
            self.stats.in_flight_skipped += 1  # the candidate has not received the write yet
            return
        self.stats.compared += 1
        self.stats.mismatched += 1
        REGISTRY.inc(_SHADOW, candidate=self.candidate.name, outcome="mismatch")
        self._pending["compared"] += 1
        self._pending["mismatches"] += 1
        detail = kind or ", ".join(d.field for d in diffs)
        async with self.store.begin() as conn:
            await conn.execute(
                shadow_mismatches.insert().values(
                    entity_type=ENTITY,
                    entity_key=key,
                    primary_backend=primary,
                    candidate=self.candidate.name,
                    primary_id=str(primary_id),
                    read=read,
                    kind=kind or "differ",
                    primary_value=want,
                    candidate_value=got,
                    detail=detail,
                    at=self.store.clock(),
                )
            )
        log.warning(
            "shadow read mismatch on %s for %s id %s: %s",
            self.candidate.name,
            primary,
            primary_id,
            detail,
        )

    async def flush(self) -> None:
        """Add this process's counts to the stored totals."""
        self._last_flush = time.monotonic()
        if not any(self._pending.values()):
            return
        pending, self._pending = self._pending, dict.fromkeys(self._pending, 0)
        key = _counts_key(self.candidate.name)
        async with self.store.begin() as conn:
            stmt = select(meta.c.value).where(meta.c.key == key)
            if self.store.dialect == "postgresql":
                stmt = stmt.with_for_update()
            text = (await conn.execute(stmt)).scalar()
            totals = json.loads(text) if text else {}
            for name, count in pending.items():
                totals[name] = int(totals.get(name, 0)) + count
            await self.store.set_meta(conn, key, json.dumps(totals, sort_keys=True))


async def shadow_report(
    store: JournalStore, candidate: str | None = None, *, latest: int = 20
) -> list[ShadowReport]:
    """Totals and the latest mismatches, per candidate (every candidate seen when None)."""
    async with store.engine.connect() as conn:
        names: set[str] = set()
        rows = await conn.execute(select(meta.c.key).where(meta.c.key.like("shadow_counts:%")))
        names.update(r[0].split(":", 1)[1] for r in rows)
        rows = await conn.execute(select(shadow_mismatches.c.candidate).distinct())
        names.update(r[0] for r in rows)
        if candidate is not None:
            names = {candidate}
        reports = []
        for name in sorted(names):
            text = (
                await conn.execute(select(meta.c.value).where(meta.c.key == _counts_key(name)))
            ).scalar()
            totals = json.loads(text) if text else {}
            stored = (
                await conn.execute(
                    select(func.count()).where(shadow_mismatches.c.candidate == name)
                )
            ).scalar() or 0
            recent = (
                (
                    await conn.execute(
                        select(shadow_mismatches)
                        .where(shadow_mismatches.c.candidate == name)
                        .order_by(shadow_mismatches.c.id.desc())
                        .limit(latest)
                    )
                )
                .mappings()
                .all()
            )
            reports.append(
                ShadowReport(
                    candidate=name,
                    compared=int(totals.get("compared", 0)),
                    mismatches=max(int(totals.get("mismatches", 0)), int(stored)),
                    timeouts=int(totals.get("timeouts", 0)),
                    errors=int(totals.get("errors", 0)),
                    latest=tuple(
                        ShadowMismatch(
                            id=r["id"],
                            entity_key=r["entity_key"],
                            primary_backend=r["primary_backend"],
                            candidate=r["candidate"],
                            primary_id=r["primary_id"],
                            read=r["read"],
                            kind=r["kind"],
                            primary_value=_json(r["primary_value"]),
                            candidate_value=_json(r["candidate_value"]),
                            detail=r["detail"],
                            at=r["at"],
                        )
                        for r in recent
                    ),
                )
            )
    return reports
