"""The sync worker: claims due journal rows, applies them to their targets, settles the outcome.

One worker runs embedded in a :class:`~multibackend.manager.BackendManager` (``worker =
"embedded"``) or as processes of their own (``multibackend sync run``). On PostgreSQL any number
of workers on any number of machines drain one journal: rows are leased with ``FOR UPDATE SKIP
LOCKED``, one row per (entity, target), so no two workers ever apply one entity to one target at
the same time, and the lease of a worker that died expires and is taken over.

Per batch, in one transaction: read target pauses, claim up to ``batch_size`` due rows of
unpaused targets and look up their id mappings; then apply them concurrently (at most
``concurrency`` calls in flight per target), and settle every outcome in one transaction. Leases
are renewed while a batch runs.

A running worker (:meth:`SyncWorker.run`, :meth:`SyncWorker.drain`) claims its next batch in
the transaction that settles the last one, after recording the target pauses the last batch
caused (so the claim leaves those targets out): one transaction per batch instead of two. The
batch so claimed is applied at once; if the worker stops before (an error in between), its rows
are given back (pending again, due as they were).

Lingering (``linger`` seconds, 0 by default; the manager's embedded worker and ``multibackend
sync run`` take ``[sync] linger``): after a batch that was not full, and after an idle worker is
woken, the worker waits up to ``linger`` before its next claim, so that trickling writes are
fanned out many per claim and settle instead of one or two (each a write transaction that takes
SQLite's write lock while the app writes). A batch's rows stay leased, already applied, while it
lingers, and are settled together with the next claim. The wait ends at once when about a full
batch has been written (each :meth:`SyncWorker.wake` counts as one entry per target), when the
worker is stopped, and whenever a drain is requested in the process (:func:`draining`, used by
:meth:`SyncWorker.drain`, ``BackendManager.drain`` and the cutover): drains never linger. The
price is replication lag: up to ``linger`` more before a write reaches the secondaries.

Failure handling (DESIGN.md §5): retryable errors back off with jitter; ``RateLimited`` pauses
the target until the server's reset without spending attempts, and the rest of the batch for that
target is not attempted; a target failing ``breaker.threshold`` times in a row is paused for a
cool-down (circuit breaker); non-retryable errors and exhausted attempts park the row. Other
targets and other entities keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence

import attrs

from multibackend.backend import StreamBackend
from multibackend.journal.apply import LostCreates, apply_row
from multibackend.journal.retry import BreakerPolicy, RetryPolicy
from multibackend.journal.store import (
    Done,
    JournalStore,
    Outcome,
    Park,
    QueueRow,
    Reschedule,
    TargetState,
)
from multibackend.metrics import REGISTRY
from multibackend.model import StreamId

__all__ = ["EMBEDDED_LINGER", "SyncWorker", "WorkerStats", "draining"]

log = logging.getLogger("multibackend.sync")

#: ``[sync] linger`` when not configured (seconds): the manager's embedded worker and ``sync run``.
EMBEDDED_LINGER = 0.05

# Every live worker of the process, and how many drains wait now: while one does, no worker of
# the process lingers (see draining()).
_WORKERS: weakref.WeakSet[SyncWorker] = weakref.WeakSet()
_DRAINS = 0


@contextlib.contextmanager
def draining() -> Iterator[None]:
    """While the block runs, no :class:`SyncWorker` of this process lingers: a worker lingering
    now claims at once. Whatever waits for the journal to empty (or to reach a point) runs in
    it. A worker in another process cannot be told: it lingers at most its ``linger`` more."""
    global _DRAINS
    _DRAINS += 1
    try:
        for worker in list(_WORKERS):
            worker._hurry.set()
        yield
    finally:
        _DRAINS -= 1


@attrs.frozen
class _Batch:
    """A claimed batch: target states when it was claimed, the leased rows, their mappings."""

    states: dict[str, TargetState]
    rows: list[QueueRow]
    native: dict[tuple[str, str, str], StreamId]


@attrs.define
class WorkerStats:
    """What a worker has done since it started."""

    batches: int = 0
    applied: int = 0
    retries: int = 0
    rate_limited: int = 0
    parked: int = 0
    takeovers: int = 0
    pauses: int = 0


class SyncWorker:
    """Drains the journal into ``backends`` for ``targets`` (names of backends)."""

    def __init__(
        self,
        store: JournalStore,
        backends: Mapping[str, StreamBackend],
        *,
        targets: Sequence[str],
        policy: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        batch_size: int = 200,
        concurrency: int = 16,
        lease_seconds: float = 60.0,
        poll_interval: float = 0.5,
        linger: float = 0.0,
        owner: str | None = None,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        missing = [t for t in targets if t not in backends]
        if missing:
            raise ValueError(f"no backend for target(s) {', '.join(missing)}")
        self.store = store
        self.backends = backends
        self.targets = list(targets)
        self.policy = policy or RetryPolicy()
        self.breaker = breaker or BreakerPolicy()
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        if linger < 0:
            raise ValueError(f"linger must be at least 0, got {linger}")
        self.linger = linger
        self.owner = owner or f"worker-{uuid.uuid4().hex[:12]}"
        self.stats = WorkerStats()
        self._rand = rand
        self._sleep = sleep
        self._wake = asyncio.Event()
        # Set to end a linger early: stop, a drain, about a full batch written.
        self._hurry = asyncio.Event()
        self._lingering = False
        # wake() calls since the last linger ended (an estimate of the work written meanwhile).
        self._woken = 0
        self._stopping = False
        # The batch claimed when the last one was settled, applied by the next step.
        self._next: _Batch | None = None

    def __repr__(self) -> str:
        return f"<SyncWorker {self.owner} targets={self.targets}>"

    def wake(self) -> None:
        """Nudge an idle worker: new work was just written (one entry per target, about).

        A lingering worker keeps waiting until about a full batch was written this way."""
        self._wake.set()
        self._woken += 1
        if self._lingering and self._woken * max(1, len(self.targets)) >= self.batch_size:
            self._hurry.set()

    def stop(self) -> None:
        """Finish the batch in flight, then return from :meth:`run`."""
        self._stopping = True
        self._wake.set()
        self._hurry.set()

    async def run(self) -> None:
        """Work until :meth:`stop` is called. Errors of the journal database itself are logged
        and retried after a pause; they never end the loop."""
        self._stopping = False
        _WORKERS.add(self)
        try:
            while not self._stopping:
                try:
                    processed = await self._step(chain=True)
                except Exception:
                    log.exception("sync worker %s: batch failed; retrying shortly", self.owner)
                    processed = 0
                    await self._idle(max(self.poll_interval, 1.0))
                    continue
                if processed == 0:
                    await self._idle(await self._idle_time())
                    # Woken by a write (or the poll): let more gather before claiming.
                    await self._linger()
        finally:
            _WORKERS.discard(self)
            await self._give_back()

    async def _linger(self) -> None:
        """Wait up to ``linger`` seconds for more work before the next claim; at once when
        stopping, when a drain is requested in the process, or when about a full batch was
        written meanwhile (counting :meth:`wake` calls)."""
        try:
            if self.linger <= 0 or self._stopping or _DRAINS:
                return
            if self._woken * max(1, len(self.targets)) >= self.batch_size:
                return
            self._hurry.clear()
            self._lingering = True
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), timeout=self.linger)
            finally:
                self._lingering = False
        finally:
            self._woken = 0

    async def _idle_time(self) -> float:
        due = await self.store.next_due(self.targets)
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, due - self.store.clock()))

    async def _idle(self, seconds: float) -> None:
        self._wake.clear()
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def run_once(self) -> int:
        """Claim, apply and settle one batch; return the number of rows processed. Nothing
        stays leased to this worker when it returns."""
        return await self._step(chain=False)

    async def _step(self, *, chain: bool) -> int:
        """Apply one batch (the one claimed with the last settle, else a fresh claim) and
        settle it; with ``chain`` (unless stopping) claim the next one in the same
        transaction, for the next step, after lingering when the batch was not full."""
        batch, self._next = self._next, None
        if batch is None:
            states, rows, native = await self.store.claim_batch(
                self.owner,
                targets_=self.targets,
                limit=self.batch_size,
                lease_seconds=self.lease_seconds,
            )
            batch = _Batch(states, rows, native)
        rows = batch.rows
        if not rows:
            return 0
        self.stats.batches += 1
        self.stats.takeovers += sum(1 for r in rows if r.taken_over)
        renewer = asyncio.create_task(self._renew([r.id for r in rows]))
        try:
            outcomes = await self._apply_all(rows, batch.native)
            if chain and len(rows) < self.batch_size:
                # Applied, still leased (and renewed): let more work gather for the claim that
                # goes with this settle.
                await self._linger()
        finally:
            renewer.cancel()
        changes = self._target_changes(outcomes, batch.states)
        if chain and not self._stopping:
            self._next = await self._settle_and_claim(outcomes, changes)
        else:
            await self.store.settle(self.owner, outcomes)
            await self._set_targets(changes)
        self._count(outcomes)
        return len(rows)

    async def _settle_and_claim(
        self, outcomes: Sequence[Outcome], changes: Mapping[str, TargetState]
    ) -> _Batch | None:
        try:
            states, rows, native = await self.store.settle_and_claim(
                self.owner,
                outcomes,
                changes,
                targets_=self.targets,
                limit=self.batch_size,
                lease_seconds=self.lease_seconds,
            )
        except Exception:
            # Rolled back as a whole: settle on its own (its failure is this step's), and
            # claim afresh next step.
            log.warning(
                "sync worker %s: settling and claiming in one transaction failed; settling alone",
                self.owner,
                exc_info=True,
            )
            await self.store.settle(self.owner, outcomes)
            await self._set_targets(changes)
            return None
        return _Batch(states, rows, native)

    async def _give_back(self) -> None:
        """Release the batch claimed for the next step, if any (the worker stops)."""
        batch, self._next = self._next, None
        if batch is None or not batch.rows:
            return
        try:
            await self.store.release(self.owner, [r.id for r in batch.rows])
        except Exception:
            # Their leases expire and another worker takes them over.
            log.warning(
                "sync worker %s: could not give back %d claimed rows",
                self.owner,
                len(batch.rows),
                exc_info=True,
            )

    async def drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Work until nothing is due or outstanding for this worker's targets, or ``timeout``
        seconds pass. Returns True when the journal is empty of pending work (parked rows
        excepted)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with draining():
            return await self._drain(deadline)

    async def _drain(self, deadline: float | None) -> bool:
        try:
            while True:
                if await self._step(chain=True) == 0:
                    if await self.store.outstanding(self.targets) == 0:
                        return True
                    wait = await self._idle_time()
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return False
                        wait = min(wait, left)
                    await self._sleep(max(wait, 0.01))
                elif deadline is not None and time.monotonic() >= deadline:
                    await self._give_back()
                    return await self.store.outstanding(self.targets) == 0
        finally:
            await self._give_back()

    async def _renew(self, ids: list[int]) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.store.renew(self.owner, ids, self.lease_seconds)
            except Exception:
                log.warning("sync worker %s: could not renew leases", self.owner, exc_info=True)

    async def _apply_all(
        self, rows: list[QueueRow], native: Mapping[tuple[str, str, str], StreamId]
    ) -> list[Outcome]:
        by_target: dict[str, list[QueueRow]] = defaultdict(list)
        for row in rows:
            by_target[row.target].append(row)
        results = await asyncio.gather(
            *(self._apply_target(target, trows, native) for target, trows in by_target.items())
        )
        return [o for outcomes in results for o in outcomes]

    async def _apply_target(
        self,
        target: str,
        rows: list[QueueRow],
        native: Mapping[tuple[str, str, str], StreamId],
    ) -> list[Outcome]:
        backend = self.backends[target]
        needing = [
            r
            for r in rows
            if r.maybe_created and (r.entity_type, r.entity_key, r.target) not in native
        ]
        lost = LostCreates(backend, self.store, needing) if needing else None
        throttled: list[Reschedule] = []
        outcomes: list[Outcome | None] = [None] * len(rows)
        todo = iter(enumerate(rows))

        async def runner() -> None:
            # ``concurrency`` runners share one iterator: at most that many calls in flight,
            # started in row order, without a task (and a semaphore wait) per row.
            for index, row in todo:
                if throttled:
                    # The target said stop: don't call it again in this batch.
                    first = throttled[0]
                    outcomes[index] = Reschedule(
                        row=row, at=first.at, error=first.error, count_attempt=False
                    )
                    continue
                outcome = await apply_row(
                    row,
                    backend,
                    native.get((row.entity_type, row.entity_key, row.target)),
                    self.store,
                    self.policy,
                    now=self.store.clock(),
                    rand=self._rand,
                    lost=lost,
                )
                if isinstance(outcome, Reschedule) and not outcome.count_attempt:
                    throttled.append(outcome)
                outcomes[index] = outcome

        await asyncio.gather(*(runner() for _ in range(min(self.concurrency, len(rows)))))
        return [o for o in outcomes if o is not None]

    def _target_changes(
        self, outcomes: Sequence[Outcome], states: Mapping[str, TargetState]
    ) -> dict[str, TargetState]:
        """The target states to record after a batch: pauses (rate limit, circuit breaker) and
        consecutive failures, for each target whose state changes."""
        by_target: dict[str, list[Outcome]] = defaultdict(list)
        for o in outcomes:
            by_target[o.row.target].append(o)
        now = self.store.clock()
        changes: dict[str, TargetState] = {}
        for target, touts in by_target.items():
            paused_until, reason, failures = states.get(target, (None, None, 0))
            limited = [o for o in touts if isinstance(o, Reschedule) and not o.count_attempt]
            failed = [o for o in touts if isinstance(o, Reschedule) and o.count_attempt]
            succeeded = any(isinstance(o, Done) for o in touts)
            new_failures = 0 if succeeded else failures + len(failed)
            new_pause: float | None = None
            new_reason: str | None = None
            if limited:
                REGISTRY.inc("multibackend_rate_limit_waits_total", target=target)
                new_pause = max(o.at for o in limited)
                new_reason = f"rate limited: {limited[0].error}"
            else:
                cooldown = self.breaker.pause_for(new_failures) if failed else None
                if cooldown is not None:
                    new_pause = now + cooldown
                    new_reason = (
                        f"circuit open after {new_failures} consecutive failures: "
                        f"{failed[-1].error}"
                    )
            if new_pause is not None:
                self.stats.pauses += 1
                log.warning(
                    "target %s paused for %.1fs (%s)", target, max(0.0, new_pause - now), new_reason
                )
            if (new_pause, new_reason, new_failures) != (
                paused_until if (paused_until or 0) > now else None,
                reason if (paused_until or 0) > now else None,
                failures,
            ):
                changes[target] = (new_pause, new_reason, new_failures)
        return changes

    async def _set_targets(self, changes: Mapping[str, TargetState]) -> None:
        for target, (paused_until, reason, failures) in changes.items():
            await self.store.set_target_state(
                target,
                paused_until=paused_until,
                reason=reason,
                consecutive_failures=failures,
            )

    def _count(self, outcomes: Sequence[Outcome]) -> None:
        # Applied rows, the common case, are counted per target and batch, not per row.
        applied: dict[str, int] = {}
        debug = log.isEnabledFor(logging.DEBUG)
        for o in outcomes:
            target = o.row.target
            if isinstance(o, Done):
                applied[target] = applied.get(target, 0) + 1
                if debug:
                    log.debug(
                        "applied entry %s (%s -> %s)",
                        o.row.id,
                        o.row.entity_key,
                        target,
                        extra={"entity_key": o.row.entity_key, "entry_id": o.row.id},
                    )
            elif isinstance(o, Park):
                self.stats.parked += 1
                REGISTRY.inc("multibackend_fanout_parked_total", target=target)
                log.error(
                    "parked entry %s (%s -> %s): %s",
                    o.row.id,
                    o.row.entity_key,
                    o.row.target,
                    o.error,
                    extra={"entity_key": o.row.entity_key, "entry_id": o.row.id},
                )
            elif o.count_attempt:
                self.stats.retries += 1
                REGISTRY.inc("multibackend_fanout_retries_total", target=target)
                log.info(
                    "entry %s (%s -> %s) retried: %s",
                    o.row.id,
                    o.row.entity_key,
                    target,
                    o.error,
                    extra={"entity_key": o.row.entity_key, "entry_id": o.row.id},
                )
            else:
                self.stats.rate_limited += 1
        for target, n in applied.items():
            self.stats.applied += n
            REGISTRY.inc("multibackend_fanout_applied_total", n, target=target)
