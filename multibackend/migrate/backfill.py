"""Backfill: copy every stream of a source backend into a target, through the journal.

The backfill never writes to the target on its own authority. It uses the journal's state model
(:mod:`multibackend.journal.schema`), so it cannot leave a stale copy or a duplicate, even while
the app keeps writing through a :class:`~multibackend.manager.BackendManager` and its worker:

1. Read the source in id order, a chunk at a time.
2. In one journal transaction per chunk: skip streams the manager deleted since the run began
   (tombstones; the source is read ahead in pages, so no tighter bound is safe); give every
   unmapped source id an entity key (insert-if-absent, so the manager and the backfill agree on
   one key); insert a *create* row for the target **only if** the
   entity has no mapping on the target and no queue row for it; record the checkpoint (the last
   source id of the chunk). Rows are inserted leased by the backfill, so the sync worker leaves
   them alone while the backfill applies them.
3. Apply the inserted rows: re-read them first (a manager write may have merged newer state into
   one, or a worker may have mapped the entity meanwhile), then bulk-import the creates when the
   target has ``BULK_IMPORT`` (per-item errors park their row with the reason), else concurrent
   single creates. When the bulk result carries no ids (StreamSource), the new streams are found
   by natural key (link, source, title) among the target's newest streams, never adopting an id
   that is already mapped. Outcomes are settled like the worker's: a row written again while it
   was applied goes back to pending with the newer state.

Why this is safe: a live write either merges its newer snapshot into the backfill's row (the
row's ``seq`` moves on and the newer state is applied after), or reaches the target first (the
mapping then makes the backfill skip the entity). A killed backfill leaves only journal rows and a
checkpoint: ``resume`` takes back its own leased rows (looking for creates that happened before
the kill, as the worker does) and continues after the checkpoint.

Entities already mapped on the target are skipped: running a backfill twice copies nothing twice.

Cost: on SQLite a chunk's journal work is one transaction run in aiosqlite's thread
(:mod:`multibackend.journal.bulk_sql`), on a connection held for the run (one hand-off a
chunk), that also settles the copies made since the previous transaction (their mappings, their
rows' deletes): a dozen statements, none answering row by row. Elsewhere (PostgreSQL) it is a few
multi-row statements (:mod:`multibackend.journal.bulk`): one insert of id-map rows, one of create
rows, one checkpoint, then one id-map upsert and one delete when settling each chunk.

Pipeline: two chunks are in flight. The journal transactions run one at a time in the order of
the chunks (checkpoints only move forward), and so do the copies (finding imported streams by
natural key assumes no other import meanwhile), but a chunk's transaction runs in the driver's
thread while the chunk before it is copied and the next one is read here. SQLite's work needs
no GIL, so the two overlap on a machine with two cores, provided the driver's thread gets the GIL
back quickly after each SQLite step: the run lowers the interpreter's switch interval for its
length (:mod:`multibackend.migrate.switching`). Each stream is made into its snapshot JSON and
draft as it is read and let go at once; snapshots and queue row objects are made only for rows
that leave the common path.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any, NamedTuple

import attrs
from sqlalchemy import delete, select, update

from multibackend.backend import Capability, StreamBackend
from multibackend.errors import MultibackendError, RateLimited
from multibackend.journal import bulk_sql, drain_sql
from multibackend.journal.apply import apply_row
from multibackend.journal.bulk import (
    Created,
    FieldPlan,
    Inserted,
    adopt_chunk_keys,
    deleted_since,
    insert_creates,
    inserted_row,
    native_ids_of_keys,
    new_entity_keys,
    set_meta,
    settle,
    settle_created,
)
from multibackend.journal.retry import RetryPolicy
from multibackend.journal.schema import id_map, queue
from multibackend.journal.snapshot import draft_from_snapshot
from multibackend.journal.store import (
    Done,
    FanOut,
    JournalStore,
    Outcome,
    Park,
    QueueRow,
    Reschedule,
    _row,
    encode_id,
)
from multibackend.journal.worker import SyncWorker
from multibackend.journal.writer import HeldWriter
from multibackend.migrate.ledger import (
    get_json_meta,
    prune_tombstones,
    set_json_meta,
)
from multibackend.migrate.progress import Progress
from multibackend.migrate.scan import count_streams, id_order, scan_streams
from multibackend.migrate.switching import shorter_switch_interval
from multibackend.model import Sort, Stream, StreamDraft, StreamId, StreamQuery

__all__ = ["Backfill", "BackfillResult", "backfill_checkpoint_key"]

log = logging.getLogger("multibackend.migrate")

ENTITY = "stream"
#: The start of the reason a row is parked with when its stream cannot be drafted.
_INVALID = "ValidationFailed: "
#: Chunks being enqueued or copied at once (bounded: memory stays flat).
_IN_FLIGHT = 2


def backfill_checkpoint_key(source: str, target: str) -> str:
    """The ``mb_meta`` key of the checkpoint of a backfill from ``source`` to ``target``."""
    return f"backfill:{source}->{target}"


@attrs.frozen(kw_only=True)
class BackfillResult:
    """What a backfill run did (or, with ``dry_run``, would do)."""

    source: str
    target: str
    scanned: int
    already_present: int
    enqueued: int
    copied: int
    parked: int
    left_to_worker: int
    skipped_deleted: int
    invalid: int
    elapsed: float
    resumed: bool
    dry_run: bool
    complete: bool
    errors: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        return self.scanned / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["errors"] = list(self.errors)
        out["rate"] = round(self.rate, 1)
        return out


@attrs.define
class _Counts:
    scanned: int = 0
    already_present: int = 0
    enqueued: int = 0
    copied: int = 0
    parked: int = 0
    left: int = 0
    deleted: int = 0
    invalid: int = 0
    errors: list[str] = attrs.field(factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(text)


class Backfill:
    """Copies ``source`` into ``target`` through ``store`` (see the module docstring).

    ``batch`` source streams are handled per journal transaction; bulk imports send
    ``bulk_chunk`` items per call; single creates run ``concurrency`` at a time (the target's
    client keeps its own rate budget, so concurrency never exceeds it). ``use_bulk=False``
    forces single creates. ``switch_interval``: with the journal on SQLite, the interpreter's
    GIL switch interval during :meth:`run`, at most (:mod:`multibackend.migrate.switching`:
    SQLite's work in the driver's thread then overlaps this thread's; process-wide while the
    run lasts, put back after); None leaves the interpreter alone.
    """

    def __init__(
        self,
        store: JournalStore,
        source: StreamBackend,
        target: StreamBackend,
        *,
        batch: int = 500,
        bulk_chunk: int = 500,
        concurrency: int = 16,
        use_bulk: bool = True,
        lease_seconds: float = 300.0,
        retry: RetryPolicy | None = None,
        progress: Progress | None = None,
        switch_interval: float | None = 0.001,
    ) -> None:
        if batch <= 0:
            raise ValueError("batch must be greater than 0")
        self.store = store
        self.source = source
        self.target = target
        self.batch = batch
        self.bulk_chunk = bulk_chunk
        self.concurrency = concurrency
        self.use_bulk = use_bulk and Capability.BULK_IMPORT in target.capabilities
        self.lease_seconds = lease_seconds
        self.retry = retry or RetryPolicy()
        self.progress = progress
        self.switch_interval = switch_interval
        # One owner per (source, target): a resumed run takes back the rows a killed run held.
        self.owner = f"backfill:{source.name}->{target.name}"[:64]
        self.key = backfill_checkpoint_key(source.name, target.name)
        # Streams read from the source, nothing given by a write: one field plan for the run.
        self.plan = FieldPlan(source.fields, target.fields)
        #: On SQLite, a chunk's journal work is one transaction in aiosqlite's thread
        #: (:mod:`multibackend.journal.bulk_sql`), which also settles the previous chunk's
        #: copies; False: statement by statement (:mod:`multibackend.journal.bulk`), each
        #: chunk settled on its own (PostgreSQL, or the driver guard said no; tests set it).
        self.direct = store.dialect == "sqlite" and drain_sql.AVAILABLE and store.driver_sql
        # Copies made whose settle waits for the next chunk's transaction (plain values: they
        # live through the next chunk's read, and tuples of them the garbage collector
        # stops tracking; holding the rows would keep their drafts alive that long).
        self._unsettled: list[_Unsettled] = []
        self._in_order = asyncio.Lock()
        self._copying = asyncio.Lock()
        #: The connection whose thread runs a chunk's journal transaction (SQLite): held for
        #: a run (made and closed by :meth:`run`), so that a chunk costs one hand-off to the
        #: driver's thread.
        self._writer: HeldWriter | None = None

    # --- the run ---------------------------------------------------------------------------

    async def run(
        self, *, resume: bool = False, dry_run: bool = False, finish_timeout: float | None = 60.0
    ) -> BackfillResult:
        """Copy everything; return the counts. ``resume`` continues after the checkpoint of an
        interrupted run. ``finish_timeout``: after the walk, how long to keep applying rows that
        were rescheduled (rate limits, transient errors) before leaving them to the sync worker
        (None: leave them at once)."""
        self._writer = writer = HeldWriter(self.store.engine)
        try:
            with shorter_switch_interval(self.switch_interval if self.direct else None):
                return await self._run(resume, dry_run, finish_timeout)
        finally:
            self._writer = None
            await writer.close()

    async def _run(
        self, resume: bool, dry_run: bool, finish_timeout: float | None
    ) -> BackfillResult:
        started = time.monotonic()
        counts = _Counts()
        checkpoint = await get_json_meta(self.store, self.key) if resume else None
        after: StreamId | None = None
        if checkpoint and checkpoint.get("ordered") and checkpoint.get("last_id") is not None:
            after = _decode(checkpoint["last_id"])
        if not dry_run:
            # Rows an interrupted run of this backfill still holds are applied first, resumed
            # or not (they would otherwise wait for their lease to expire).
            await self._take_back(counts)
            await self._save_checkpoint(
                {
                    "last_id": checkpoint.get("last_id")
                    if checkpoint and after is not None
                    else None,
                    "ordered": True,
                    "done": False,
                    "started_at": self.store.clock(),
                }
            )
        if self.progress is not None and self.progress.total is None:
            self.progress.total = await count_streams(self.source)
        ordered = True
        last: StreamId | None = after
        chunk = _Chunk(self.plan, texts=not dry_run)
        working: deque[asyncio.Task[None]] = deque()
        # Deletes the chunks must honour: every one since this run began. (A tighter bound per
        # chunk missed deletes: the source is read ahead in pages, so a stream can be read well
        # before its chunk forms; a delete in between was then not seen and the stream copied.)
        since = self.store.clock()
        try:
            async for stream in scan_streams(self.source, after=after):
                if last is not None and id_order(stream.id) <= id_order(last):
                    ordered = False
                last = stream.id
                # The stream's snapshot JSON and draft now, and the stream let go: a chunk
                # holds plain values and drafts, not the streams as read.
                chunk.add(stream)
                del stream
                if len(chunk) >= self.batch:
                    # Chunks in flight while the next is read from the source: one chunk's
                    # journal transaction runs in the driver's thread while the one before
                    # is copied here (their journal work is done in order, see _chunk).
                    while len(working) >= _IN_FLIGHT:
                        await working.popleft()
                    working.append(
                        asyncio.create_task(self._chunk(chunk, counts, since, ordered, dry_run))
                    )
                    chunk = _Chunk(self.plan, texts=not dry_run)
            while working:
                await working.popleft()
        except BaseException:
            for task in working:
                task.cancel()
            raise
        if chunk:
            await self._chunk(chunk, counts, since, ordered, dry_run)
        complete = True
        if not dry_run:
            await self._settle_unsettled(counts)
            if finish_timeout is not None:
                await self._finish(finish_timeout)
            left = await self.store.outstanding([self.target.name])
            counts.left = left
            await self._save_checkpoint(
                {
                    "last_id": _encode(last) if ordered and last is not None else None,
                    "ordered": ordered,
                    "done": True,
                    "finished_at": self.store.clock(),
                    "scanned": counts.scanned,
                    "copied": counts.copied,
                    "parked": counts.parked,
                }
            )
            # This run no longer needs the tombstones of deletes made while it ran.
            await prune_tombstones(self.store)
        if self.progress is not None:
            self.progress.finish()
        return BackfillResult(
            source=self.source.name,
            target=self.target.name,
            scanned=counts.scanned,
            already_present=counts.already_present,
            enqueued=counts.enqueued,
            copied=counts.copied,
            parked=counts.parked,
            left_to_worker=counts.left,
            skipped_deleted=counts.deleted,
            invalid=counts.invalid,
            elapsed=time.monotonic() - started,
            resumed=resume and checkpoint is not None,
            dry_run=dry_run,
            complete=complete,
            errors=tuple(counts.errors),
        )

    # --- one chunk ----------------------------------------------------------------------------

    async def _chunk(
        self, chunk: _Chunk, counts: _Counts, since: float, ordered: bool, dry_run: bool
    ) -> None:
        size = len(chunk)
        counts.scanned += size
        if dry_run:
            await self._dry_chunk(chunk, counts)
        else:
            rows = await self._enqueue(chunk, counts, since, ordered)
            chunk.clear()  # the drafts are in the rows now; do not keep the rest while applying
            # The next chunk's transaction goes to the driver's thread before this one is
            # copied (it waits for this chunk's): SQLite works while this thread copies.
            await asyncio.sleep(0)
            if rows:
                # One chunk copied at a time, in order, too: finding imported streams by
                # natural key among the target's newest assumes no other import meanwhile.
                async with self._copying:
                    await self._apply(rows, counts, defer=self.direct)
        if self.progress is not None:
            self.progress.advance(size)

    async def _dry_chunk(self, chunk: _Chunk, counts: _Counts) -> None:
        present = await self.store.translate_ids(
            ENTITY, self.source.name, chunk.ids, self.target.name
        )
        for id, draft in zip(chunk.ids, chunk.drafts, strict=True):
            if str(id) in present:
                counts.already_present += 1
                continue
            counts.enqueued += 1
            if isinstance(draft, str):
                counts.invalid += 1
                counts.error(f"{self.source.name} id {id}: {draft.removeprefix(_INVALID)}")

    async def _enqueue(
        self, chunk: _Chunk, counts: _Counts, since: float, ordered: bool
    ) -> list[_Fresh]:
        checkpoint = json.dumps(
            {
                "last_id": _encode(chunk.ids[-1]) if ordered else None,
                "ordered": ordered,
                "done": False,
                "at": self.store.clock(),
                # The deletes this run asks for: tombstones since then are kept.
                "since": since,
            },
            sort_keys=True,
        )
        # One chunk's journal transaction at a time, in the order of the chunks (the lock is
        # first come, first served): checkpoints only move forward.
        async with self._in_order:
            if self.direct:
                found = await self._enqueue_direct(chunk, counts, since, checkpoint)
                if found is not None:
                    return found
            return await self._enqueue_statements(chunk, counts, since, checkpoint)

    async def _enqueue_statements(
        self, chunk: _Chunk, counts: _Counts, since: float, checkpoint: str
    ) -> list[_Fresh]:
        """:meth:`_enqueue` statement by statement, in a transaction of the store's engine."""
        src = self.source.name
        async with self.store.begin() as conn:
            dead = await deleted_since(self.store, conn, ENTITY, src, chunk.ids, since)
            live: Sequence[int] = range(len(chunk))
            if dead:
                live = [i for i, id in enumerate(chunk.ids) if encode_id(id)[0] not in dead]
                counts.deleted += len(chunk) - len(live)
            keys, fresh = await adopt_chunk_keys(
                self.store, conn, ENTITY, src, [chunk.ids[i] for i in live]
            )
            at = {keys[encode_id(chunk.ids[i])[0]]: i for i in live}
            made = await insert_creates(
                self.store,
                conn,
                entity_type=ENTITY,
                target=self.target.name,
                items=[(key, chunk.texts[i]) for key, i in at.items()],
                owner=self.owner,
                lease_seconds=self.lease_seconds,
                fresh=fresh,
            )
            written = len(made)
            made = await self._drop_deleted_meanwhile(conn, made, keys, since)
            counts.deleted += written - len(made)
            await set_meta(self.store, conn, self.key, checkpoint)
        counts.already_present += len(live) - written
        counts.enqueued += len(made)
        out: list[_Fresh] = []
        for m in made:
            i = at[m.entity_key]
            out.append(_Fresh(*m, chunk.drafts[i], chunk.texts[i], m.entity_key in fresh))
        return out

    async def _enqueue_direct(
        self, chunk: _Chunk, counts: _Counts, since: float, checkpoint: str
    ) -> list[_Fresh] | None:
        """:meth:`_enqueue` as one transaction in aiosqlite's thread, settling the previous
        chunk's copies in it too; None when that path is not available (then the caller
        enqueues statement by statement, and this path is not tried again)."""
        ids = [encode_id(id)[0] for id in chunk.ids]
        now = self.store.clock()
        until = now + self.lease_seconds
        unsettled, self._unsettled = self._unsettled, []
        settle_part = self._settle_part(unsettled, now)
        enqueue = bulk_sql.Enqueue(
            entity_type=ENTITY,
            backend=self.source.name,
            target=self.target.name,
            texts=ids,
            is_int=[type(id) is int for id in chunk.ids],  # as encode_id (ids: int or text)
            snapshots=chunk.texts,
            keys=new_entity_keys(len(chunk)),
            since=since,
            owner=self.owner,
            now=now,
            lease_until=until,
            meta_key=self.key,
            meta_value=checkpoint,
        )
        try:
            settled, answer = await self._on_thread(settle_part, enqueue)
        except drain_sql.Unsupported as exc:
            log.warning("backfill: %s; using SQLAlchemy statements", exc)
            self.direct = False
            await self._settle_made(unsettled, counts)
            return None
        await self._after_settle(unsettled, settled, counts)
        assert answer is not None
        counts.deleted += len(answer.dead)
        live = len(chunk) - len(answer.dead)
        counts.already_present += live - len(answer.inserted)
        counts.enqueued += len(answer.inserted)
        at = {answer.keys[t]: i for i, t in enumerate(ids) if t in answer.keys}
        drafts, texts = chunk.drafts, chunk.texts
        out: list[_Fresh] = []
        for row_id, key in answer.inserted:
            i = at[key]
            out.append(_Fresh(row_id, key, now, until, drafts[i], texts[i], key in answer.fresh))
        return out

    async def _on_thread(
        self, settle_part: bulk_sql.Settle | None, enqueue: bulk_sql.Enqueue | None
    ) -> tuple[bool, bulk_sql.Enqueued | None]:
        """:func:`bulk_sql.chunk` as one transaction on the held connection's thread (one
        hand-off a chunk, no pool checkout); :class:`drain_sql.Unsupported` when there is no
        such connection here."""
        if self._writer is None:
            raise drain_sql.Unsupported("no held connection outside a run")
        try:
            (result,) = await self._writer.transaction(
                [functools.partial(bulk_sql.chunk, settle=settle_part, enqueue=enqueue)]
            )
        except LookupError as exc:
            raise drain_sql.Unsupported(str(exc)) from None
        return result  # type: ignore[no-any-return]

    def _settle_part(self, made: Sequence[_Unsettled], now: float) -> bulk_sql.Settle | None:
        if not made:
            return None
        return bulk_sql.Settle(self.owner, ENTITY, self.target.name, _created(made), now)

    async def _after_settle(
        self, made: Sequence[_Unsettled], settled: bool, counts: _Counts
    ) -> None:
        if settled:
            counts.copied += len(made)
            return
        # A copy claimed by another entity meanwhile: the store sorts it out.
        outcomes: list[Outcome] = [
            Done(row=self._row(_Fresh(*u[:4], "", u[5], False)), mapped=u[4]) for u in made
        ]
        await settle(self.store, self.owner, outcomes)
        self._count(outcomes, counts)

    async def _settle_made(self, made: Sequence[_Unsettled], counts: _Counts) -> None:
        """Settle copies on their own (the fallback's way)."""
        if not made:
            return
        ok = await settle_created(self.store, self.owner, ENTITY, self.target.name, _created(made))
        await self._after_settle(made, ok, counts)

    async def _settle_unsettled(self, counts: _Counts) -> None:
        """Settle the copies still waiting for a next chunk (the walk is over)."""
        made, self._unsettled = self._unsettled, []
        if not made:
            return
        if self.direct:
            try:
                settled, _ = await self._on_thread(
                    self._settle_part(made, self.store.clock()), None
                )
            except drain_sql.Unsupported:
                self.direct = False
            else:
                await self._after_settle(made, settled, counts)
                return
        await self._settle_made(made, counts)

    async def _drop_deleted_meanwhile(
        self, conn: Any, made: list[Inserted], keys: dict[str, str], since: float
    ) -> list[Inserted]:
        """Ask the tombstones again, now that the chunk's create rows are written, and take back
        the rows of streams deleted meanwhile.

        Why: on PostgreSQL (read committed) a delete through the manager can commit between
        the first tombstone check and the insert of the create rows, and its own fan-out row
        can be applied (a delete of a copy that does not exist yet: done) before that insert:
        the create would then resurrect the stream on the target. A delete committing after
        this read cannot slip by: its fan-out row for the target conflicts with the create row
        written here, so it waits for this transaction and then merges into that row. (On
        SQLite the chunk's transaction holds the write lock from its start, also on an engine
        shared with the primary: nothing commits in between, and the second look is skipped.)
        """
        if not made or self.store.dialect == "sqlite":
            return made
        by_key = {key: text for text, key in keys.items()}
        dead = await deleted_since(
            self.store, conn, ENTITY, self.source.name, [by_key[m.entity_key] for m in made], since
        )
        if not dead:
            return made
        gone = [m for m in made if by_key[m.entity_key] in dead]
        await conn.execute(delete(queue).where(queue.c.id.in_([m.id for m in gone])))
        return [m for m in made if by_key[m.entity_key] not in dead]

    async def _save_checkpoint(self, value: dict[str, Any]) -> None:
        async with self.store.begin() as conn:
            await set_json_meta(self.store, conn, self.key, value)

    # --- applying -------------------------------------------------------------------------------

    def _row(self, row: QueueRow | _Fresh) -> QueueRow:
        """The queue row (a row this chunk inserted, with its snapshot made now)."""
        if isinstance(row, QueueRow):
            return row
        return inserted_row(
            row.made,
            entity_type=ENTITY,
            target=self.target.name,
            owner=self.owner,
            snapshot=json.loads(row.text),
        )

    async def _apply(
        self, rows: Sequence[QueueRow | _Fresh], counts: _Counts, *, defer: bool = False
    ) -> None:
        """Apply rows this backfill holds: rows this chunk inserted (as inserted) or rows taken
        back from an interrupted run. They are used as they are: a manager write merged into
        one meanwhile moved its ``seq``, so settling sends it back to pending with the newer
        state (applied after, never overwritten by this older copy).

        ``defer``: rows copied with their ids known are settled in the next chunk's journal
        transaction (they stay leased by this backfill until then; a killed run takes them
        back like any other), except those to be pinned after their import."""
        if not rows:
            return
        native = await native_ids_of_keys(
            self.store,
            ENTITY,
            [r.entity_key for r in rows if not (isinstance(r, _Fresh) and r.new)],
            self.target.name,
        )
        outcomes: list[Outcome] = []
        creates: list[QueueRow | _Fresh] = []
        singles: list[QueueRow] = []
        lost: list[QueueRow] = []
        for row in rows:
            nid = native.get(row.entity_key)
            if isinstance(row, _Fresh):
                if nid is not None:
                    # Delivered meanwhile by a newer write (PostgreSQL race): our older copy
                    # of the state must not overwrite it.
                    outcomes.append(Done(row=self._row(row)))
                    counts.already_present += 1
                elif self.use_bulk:
                    creates.append(row)
                else:
                    singles.append(self._row(row))
            elif nid is not None and row.seq == 1 and not row.deleted:
                outcomes.append(Done(row=row))
                counts.already_present += 1
            elif row.deleted and nid is None:
                outcomes.append(Done(row=row))
            elif nid is not None or row.deleted:
                singles.append(row)
            elif row.maybe_created:
                lost.append(row)
            elif self.use_bulk:
                creates.append(row)
            else:
                singles.append(row)
        if lost:
            # Creates a killed run may have made: found by natural key among the target's
            # newest streams in one search (distinct ids for rows with the same natural key);
            # the rest were never made and are created now.
            found = await self._find_created(lost, missing_ok=True)
            outcomes.extend(found)
            seen = {o.row.id for o in found}
            for row in lost:
                if row.id not in seen:
                    fresh = attrs.evolve(row, maybe_created=False)
                    (creates if self.use_bulk else singles).append(fresh)
        made: list[tuple[QueueRow | _Fresh, StreamId]] = []
        for start in range(0, len(creates), self.bulk_chunk):
            outcomes.extend(await self._bulk(creates[start : start + self.bulk_chunk], made))
        if singles:
            outcomes.extend(await self._singles(singles, native))
        copies = [(r, nid) for r, nid in made if isinstance(r, _Fresh)]
        if (
            made
            and defer
            and len(copies) == len(made)
            and not (
                Capability.PIN in self.target.capabilities and any(_pinned(r) for r, _ in made)
            )
        ):
            # Settled with the next chunk. Not when some are to be pinned after their import:
            # a pin that fails is queued as an update, which must not meet a create row still
            # there, and the chunk's journal rows are settled before the pins are made (a drain
            # waiting on them meanwhile would wait for the next chunk).
            self._unsettled.extend(
                (r.id, r.entity_key, r.at, r.lease_until, nid, r.text) for r, nid in copies
            )
            made = []
        if made:
            created: list[Created] = [(r.id, _seq(r), r.entity_key, nid) for r, nid in made]
            if await settle_created(self.store, self.owner, ENTITY, self.target.name, created):
                counts.copied += len(made)
                pinned = [(r, nid) for r, nid in made if _pinned(r)]
            else:  # a copy claimed by another entity meanwhile: the store sorts it out
                outcomes.extend(Done(row=self._row(r), mapped=nid) for r, nid in made)
                pinned = []
        else:
            pinned = []
        await settle(self.store, self.owner, outcomes)
        self._count(outcomes, counts)
        if creates:
            done = [o for o in outcomes if isinstance(o, Done)]
            done += [Done(row=self._row(r), mapped=nid) for r, nid in pinned]
            await self._pin_imported(done)

    async def _pin_imported(self, done: Sequence[Done]) -> None:
        """Bulk imports may not carry ``is_pinned`` (StreamSource's does not): pin the imported
        streams that should be pinned; what fails goes to the journal as an update."""
        pinned = [
            o
            for o in done
            if o.mapped is not None and (o.row.snapshot or {}).get("is_pinned") == [True]
        ]
        if not pinned or Capability.PIN not in self.target.capabilities:
            return
        failed: list[Done] = []
        for o in pinned:
            assert o.mapped is not None
            try:
                await self.target.set_pinned(o.mapped, True)
            except MultibackendError:
                failed.append(o)
        if failed:
            await self._retry_pins(failed)

    async def _retry_pins(self, failed: Sequence[Done]) -> None:
        """Hand the pins that failed to the journal, as updates with the imported snapshot,
        for entities still on the source and with no write of their own queued.

        The app may have deleted a stream since its import, and its delete may already have
        been applied (the copy deleted, unmapped): an update queued now would recreate the
        copy (an update of a missing row recreates it). And a queued write of the app carries
        a newer state, pins included, that this older snapshot must not overwrite. So: only
        entities the source still maps (a delete unmaps in the transaction that records it),
        and insert-if-absent. On SQLite the transaction holds the write lock; on PostgreSQL a
        delete committing after the look-up either finds this row and turns it into its
        delete, or was queued first and keeps its row (this insert then does nothing).
        """
        keys = sorted({o.row.entity_key for o in failed})
        async with self.store.begin() as conn:
            live = set(
                (
                    await conn.execute(
                        select(id_map.c.entity_key).where(
                            id_map.c.entity_type == ENTITY,
                            id_map.c.backend == self.source.name,
                            id_map.c.entity_key.in_(keys),
                        )
                    )
                ).scalars()
            )
            items = [
                FanOut(
                    entity_type=ENTITY,
                    entity_key=o.row.entity_key,
                    target=self.target.name,
                    op="update",
                    snapshot=o.row.snapshot,
                )
                for o in failed
                if o.row.entity_key in live
            ]
            if items:
                await conn.execute(
                    self.store.insert(queue).on_conflict_do_nothing(),
                    self.store.fanout_rows(items, self.store.clock()),
                )

    def _count(self, outcomes: Sequence[Outcome], counts: _Counts) -> None:
        for o in outcomes:
            if isinstance(o, Done):
                if o.mapped is not None:
                    counts.copied += 1
            elif isinstance(o, Park):
                counts.parked += 1
                counts.error(f"entity {o.row.entity_key}: {o.error}")

    async def _singles(
        self, rows: Sequence[QueueRow], native: dict[str, StreamId]
    ) -> list[Outcome]:
        semaphore = asyncio.Semaphore(self.concurrency)
        throttled: list[Reschedule] = []

        async def one(row: QueueRow) -> Outcome:
            async with semaphore:
                if throttled:
                    t = throttled[0]
                    return Reschedule(row=row, at=t.at, error=t.error, count_attempt=False)
                outcome = await apply_row(
                    row,
                    self.target,
                    native.get(row.entity_key),
                    self.store,
                    self.retry,
                    now=self.store.clock(),
                )
                if isinstance(outcome, Reschedule) and not outcome.count_attempt:
                    throttled.append(outcome)
                return outcome

        return list(await asyncio.gather(*(one(r) for r in rows)))

    async def _bulk(
        self, rows: Sequence[QueueRow | _Fresh], made: list[tuple[QueueRow | _Fresh, StreamId]]
    ) -> list[Outcome]:
        """Create ``rows`` with one bulk import. Rows created with a known id are added to
        ``made``; the outcomes of the others are returned."""
        outcomes: list[Outcome] = []
        drafts: list[StreamDraft] = []
        sent: list[QueueRow | _Fresh] = []
        for row in rows:
            if isinstance(row, _Fresh):
                if isinstance(row.draft, str):
                    outcomes.append(Park(row=self._row(row), error=row.draft))
                    continue
                drafts.append(row.draft)
                sent.append(row)
                continue
            try:
                drafts.append(draft_from_snapshot(row.snapshot or {}))
                sent.append(row)
            except (MultibackendError, TypeError) as exc:
                outcomes.append(Park(row=self._row(row), error=f"ValidationFailed: {exc}"))
        if not sent:
            return outcomes
        now = self.store.clock()
        try:
            result = await self.target.bulk_import(drafts)  # type: ignore[attr-defined]
        except RateLimited as exc:
            at = exc.retry_at.timestamp() if exc.retry_at is not None else now + 1.0
            return outcomes + [
                Reschedule(
                    row=self._row(r), at=at, error=str(exc), count_attempt=False, maybe_created=True
                )
                for r in sent
            ]
        except MultibackendError as exc:
            if not exc.retryable:
                raise
            return outcomes + [
                Reschedule(
                    row=self._row(r),
                    at=now + self.retry.delay(self._row(r).attempts + 1),
                    error=f"{type(exc).__name__}: {exc}",
                    maybe_created=True,
                )
                for r in sent
            ]
        failed = {e.index: "; ".join(e.messages) for e in result.errors}
        ok: list[QueueRow] = []
        for index, row in enumerate(sent):
            if index in failed:
                outcomes.append(Park(row=self._row(row), error=f"bulk import: {failed[index]}"))
            elif result.ids is not None and result.ids[index] is not None:
                made.append((row, result.ids[index]))
            else:
                ok.append(self._row(row))
        if ok:
            outcomes.extend(await self._find_created(ok))
        return outcomes

    async def _find_created(
        self, rows: Sequence[QueueRow], *, missing_ok: bool = False
    ) -> list[Outcome]:
        """Map rows the target imported without saying their ids, by natural key among its
        newest streams. Rows not found are left to the worker's lost-create search (or, with
        ``missing_ok``, left out of the answer)."""
        wanted: dict[tuple[Any, ...], list[QueueRow]] = defaultdict(list)
        for row in rows:
            try:
                values = draft_from_snapshot(row.snapshot or {})
            except (MultibackendError, TypeError):
                continue  # never created: it is parked when its create is tried
            wanted[_natural(values.link, values.source, values.title)].append(row)
        pages = len(rows) // 100 + 3
        candidates: list[Stream] = []
        for page in range(1, pages + 1):
            result = await self.target.list_streams(
                StreamQuery(sort=Sort.CREATED_DESC, page=page, per_page=100)
            )
            candidates.extend(result.items)
            if page >= result.total_pages:
                break
        taken = await self._mapped_ids([s.id for s in candidates])
        # Oldest first, so duplicates in one chunk map in the order they were sent.
        exact: dict[tuple[Any, ...], list[StreamId]] = defaultdict(list)
        loose: dict[tuple[Any, ...], list[StreamId]] = defaultdict(list)
        for stream in reversed(candidates):
            if encode_id(stream.id)[0] in taken:
                continue
            exact[_natural(stream.link, stream.source, stream.title)].append(stream.id)
            loose[_natural(stream.link, stream.source, None)[:2]].append(stream.id)
        assigned: set[str] = set()
        matched: dict[int, StreamId] = {}

        def claim(pool: list[StreamId]) -> StreamId | None:
            for native in pool:
                if encode_id(native)[0] not in assigned:
                    assigned.add(encode_id(native)[0])
                    return native
            return None

        # Exact natural keys first; then link and source alone, because the app may have
        # changed the title (merged into the row) since the lost import.
        for key, key_rows in wanted.items():
            for row in key_rows:
                native = claim(exact.get(key, []))
                if native is not None:
                    matched[row.id] = native
        for key, key_rows in wanted.items():
            for row in key_rows:
                if row.id not in matched:
                    native = claim(loose.get(key[:2], []))
                    if native is not None:
                        matched[row.id] = native
        outcomes: list[Outcome] = []
        now = self.store.clock()
        for key_rows in wanted.values():
            for row in key_rows:
                if row.id in matched:
                    outcomes.append(Done(row=row, mapped=matched[row.id]))
                elif not missing_ok:
                    outcomes.append(
                        Reschedule(
                            row=row,
                            at=now,
                            error="imported, but its id was not found among the newest streams",
                            maybe_created=True,
                        )
                    )
        return outcomes

    async def _mapped_ids(self, ids: Sequence[StreamId]) -> set[str]:
        texts = [encode_id(i)[0] for i in ids]
        if not texts:
            return set()
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(id_map.c.native_id).where(
                    id_map.c.entity_type == ENTITY,
                    id_map.c.backend == self.target.name,
                    id_map.c.native_id.in_(texts),
                )
            )
            return {r[0] for r in rows}

    # --- resuming and finishing ------------------------------------------------------------

    async def _take_back(self, counts: _Counts) -> None:
        """Rows a killed run of this backfill held: apply them now, looking for creates that
        happened before the kill (``maybe_created``)."""
        now = self.store.clock()
        async with self.store.begin() as conn:
            result = await conn.execute(
                update(queue)
                .where(queue.c.lease_owner == self.owner, queue.c.status == "leased")
                .values(maybe_created=True, lease_until=now + self.lease_seconds)
                .returning(*queue.c)
            )
            rows = [_row(r) for r in result.mappings()]
        if rows:
            log.info(
                "backfill %s: taking back %d row(s) of an interrupted run", self.key, len(rows)
            )
            for start in range(0, len(rows), self.batch):
                await self._apply(rows[start : start + self.batch], counts)

    async def _finish(self, timeout: float) -> None:  # noqa: ASYNC109
        """Apply the target's rows still due (rescheduled ones) for up to ``timeout`` seconds."""
        if await self.store.outstanding([self.target.name]) == 0:
            return
        worker = SyncWorker(
            self.store,
            {self.target.name: self.target},
            targets=[self.target.name],
            policy=self.retry,
            concurrency=self.concurrency,
            lease_seconds=self.lease_seconds,
            owner=f"{self.owner}-finish"[:64],
        )
        await worker.drain(timeout=timeout)


class _Fresh(NamedTuple):
    """A create row this backfill just inserted, with its draft (or why there is none) and its
    snapshot as the JSON text written (see :class:`~multibackend.journal.bulk.FieldPlan`): no
    snapshot object is made for the rows that take the common path (bulk import, ids
    answered). The row's fields are its own (not an :class:`Inserted` in it: one object less
    a row for the garbage collector)."""

    id: int
    entity_key: str
    at: float
    lease_until: float
    draft: StreamDraft | str
    text: str
    #: The entity key was assigned in the same transaction: the entity can have no copy on the
    #: target (making one takes applying a queue row for it, and only this backfill holds it).
    new: bool

    @property
    def made(self) -> Inserted:
        return Inserted(self.id, self.entity_key, self.at, self.lease_until)


class _Chunk:
    """Streams read from the source for one chunk, as what the backfill needs of them: ids,
    snapshot JSON texts (not for a dry run) and drafts (or why there is none: legacy data
    breaking today's rules). The streams themselves are not kept: each is made into these
    values as it is read and freed at once, as a raw read-then-write loop frees it, instead of
    living (with all it holds, for the garbage collector to walk) until its chunk is copied."""

    __slots__ = ("_plan", "_texts", "drafts", "ids", "texts")

    def __init__(self, plan: FieldPlan, *, texts: bool = True) -> None:
        self._plan = plan
        self._texts = texts
        self.ids: list[StreamId] = []
        self.texts: list[str] = []
        self.drafts: list[StreamDraft | str] = []

    def add(self, stream: Stream) -> None:
        self.ids.append(stream.id)
        if self._texts:
            self.texts.append(self._plan.stream_json(stream))
        try:
            self.drafts.append(self._plan.draft(stream))
        except (MultibackendError, TypeError) as exc:
            self.drafts.append(f"{_INVALID}{exc}")

    def __len__(self) -> int:
        return len(self.ids)

    def clear(self) -> None:
        self.ids, self.texts, self.drafts = [], [], []


#: A copy this backfill made of a row it inserted (at ``seq`` 1), waiting to be settled: the
#: row as :class:`~multibackend.journal.bulk.Inserted` (id, entity key, at, lease until), then
#: the copy's native id and the snapshot's JSON text. A plain tuple, not a NamedTuple: the
#: garbage collector stops tracking a tuple of plain values (exact tuples only), and these live
#: through the next chunk, long enough to be promoted to the oldest generation otherwise (each
#: full collection then walks them with the target's streams).
_Unsettled = tuple[int, str, float, float, StreamId, str]


def _created(made: Sequence[_Unsettled]) -> list[Created]:
    """Waiting copies as settles take them: (row id, seq 1, entity key, native id)."""
    return [(u[0], 1, u[1], u[4]) for u in made]


def _seq(row: QueueRow | _Fresh) -> int:
    return 1 if isinstance(row, _Fresh) else row.seq


def _pinned(row: QueueRow | _Fresh) -> bool:
    if isinstance(row, _Fresh):
        return not isinstance(row.draft, str) and row.draft.is_pinned is True
    return (row.snapshot or {}).get("is_pinned") == [True]


def _natural(link: Any, source: Any, title: Any) -> tuple[Any, ...]:
    return ((link or "").strip(), source, (title or None))


def _encode(native_id: StreamId) -> list[Any]:
    return [native_id, isinstance(native_id, int)]


def _decode(value: Any) -> StreamId:
    if isinstance(value, list) and len(value) == 2:
        return int(value[0]) if value[1] else str(value[0])
    return value  # type: ignore[no-any-return]
