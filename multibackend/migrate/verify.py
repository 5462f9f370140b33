"""Verify (and repair): compare every entity of backend A with its copy in backend B.

How, in constant memory on any number of entities:

1. Walk A in id order, ``chunk`` streams at a time; translate the chunk's ids to B's through the
   id map in one query (with a SQLite journal file, inside the side table's database, which
   attaches the journal read-only: :mod:`multibackend.migrate.side`).
2. Walk B once, in step with A (:class:`_BWalk`): B's copies usually come in the order A asks for
   them, and are compared straight from B's walk by their canonical fields
   (:mod:`multibackend.migrate.compare`). B streams passed over are spilled to a temporary
   on-disk SQLite table, where a later chunk of A finds them. One walk of B instead of one read
   per entity, which matters when B is a rate-limited API.
3. Before reporting an entity, check it again: if the journal has work outstanding for it (a
   write on its way to B) it is reported as *in flight*, not as a difference; otherwise both
   sides are read again and compared again, so a change that raced the walk is no false alarm.
4. B streams never matched by an A stream are *extra* (unmapped, or mapped to an entity A no
   longer has), after the same re-check.

``repair=True`` enqueues journal rows that bring B to A's state for every missing or different
entity, with the manager's snapshot code (:func:`~multibackend.journal.snapshot.build_snapshot`),
so the sync worker applies them like any write (create when B has no copy, update otherwise).
Extra streams are reported, not deleted: they may have been written to B directly on purpose.

The result of the last full run is stored in ``mb_meta`` (``verify:A->B``); the cutover's
``backfilled -> verified`` step requires it clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

import attrs
from sqlalchemy import select

from multibackend.backend import StreamBackend
from multibackend.errors import NotFound
from multibackend.journal.schema import intents, queue
from multibackend.journal.snapshot import build_snapshot
from multibackend.journal.store import FanOut, JournalStore, encode_id
from multibackend.migrate.compare import (
    FieldDiff,
    canonical_fields,
    canonical_row,
    compared_fields,
    diff_streams,
    diff_values,
)
from multibackend.migrate.ledger import (
    _keys,
    adopt_keys,
    outstanding_keys,
    set_json_meta,
    translate_chunk,
)
from multibackend.migrate.progress import Progress
from multibackend.migrate.scan import count_streams, id_order, scan_streams
from multibackend.migrate.side import SideTable, journal_file, load_row
from multibackend.model import Stream, StreamId

__all__ = ["Difference", "Verifier", "VerifyResult", "verify_result_key"]

ENTITY = "stream"

# Match chunks of A through the journal's id map inside the side table's database when the
# journal is a SQLite file (one statement a chunk); tests turn it off to cover the other path.
_ATTACH = True


def verify_result_key(a: str, b: str) -> str:
    """The ``mb_meta`` key of the stored result of verifying ``a`` against ``b``."""
    return f"verify:{a}->{b}"


@attrs.frozen(kw_only=True)
class Difference:
    """One entity that differs. ``kind``: ``missing`` (A has it, B not), ``extra`` (B has it, A
    not), ``differ`` (both have it; ``fields`` lists each differing field with both values)."""

    kind: str
    entity_key: str | None
    a_id: StreamId | None
    b_id: StreamId | None
    fields: tuple[FieldDiff, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "entity_key": self.entity_key,
            "a_id": self.a_id,
            "b_id": self.b_id,
            "fields": [{"field": f.field, "a": f.a, "b": f.b} for f in self.fields],
        }


@attrs.frozen(kw_only=True)
class VerifyResult:
    """Counts and (up to ``max_report``) the differences of one verify run."""

    a: str
    b: str
    fields: tuple[str, ...]
    checked: int
    matching: int
    missing: int
    extra: int
    differing: int
    in_flight: int
    repaired: int
    elapsed: float
    sampled: bool
    differences: tuple[Difference, ...] = ()

    @property
    def clean(self) -> bool:
        return self.missing == 0 and self.extra == 0 and self.differing == 0

    @property
    def rate(self) -> float:
        return self.checked / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "fields": list(self.fields),
            "clean": self.clean,
            "checked": self.checked,
            "matching": self.matching,
            "missing": self.missing,
            "extra": self.extra,
            "differing": self.differing,
            "in_flight": self.in_flight,
            "repaired": self.repaired,
            "sampled": self.sampled,
            "elapsed": round(self.elapsed, 3),
            "differences": [d.to_dict() for d in self.differences],
        }


@attrs.define
class _Acc:
    checked: int = 0
    matching: int = 0
    missing: int = 0
    extra: int = 0
    differing: int = 0
    in_flight: int = 0
    repaired: int = 0
    report: list[Difference] = attrs.field(factory=list)


class Verifier:
    """Compares ``a`` with ``b`` through ``store``'s id map (see the module docstring).

    ``chunk``: streams of A (and of B) handled together. 500 rather than more: every stream of A
    lives until its chunk is compared (two chunks with the read-ahead), and the more of them
    outlive a young-generation garbage collection, the sooner Python runs a full collection of
    the whole heap (a whole memory backend, say): at 1,000 one ran per 100,000 streams, ~0.25 s.
    """

    def __init__(
        self,
        store: JournalStore,
        a: StreamBackend,
        b: StreamBackend,
        *,
        chunk: int = 500,
        max_report: int = 1000,
        recheck: bool = True,
        progress: Progress | None = None,
        intent_wait: float = 5.0,
    ) -> None:
        self.store = store
        self.a = a
        self.b = b
        self.chunk = chunk
        self.max_report = max_report
        self.recheck = recheck
        self.progress = progress
        self.intent_wait = intent_wait
        self.fields = compared_fields(a.fields, b.fields)
        self._row = canonical_row(self.fields)

    async def run(self, *, repair: bool = False, sample: int | None = None) -> VerifyResult:
        """Compare; with ``repair`` enqueue fixes; with ``sample`` check only that many entities
        of A chosen at random (no extra-in-B check then)."""
        started = time.monotonic()
        acc = _Acc()
        if sample is not None:
            await self._run_sample(acc, sample, repair)
        else:
            await self._run_full(acc, repair)
        if self.progress is not None:
            self.progress.finish()
        result = VerifyResult(
            a=self.a.name,
            b=self.b.name,
            fields=self.fields,
            checked=acc.checked,
            matching=acc.matching,
            missing=acc.missing,
            extra=acc.extra,
            differing=acc.differing,
            in_flight=acc.in_flight,
            repaired=acc.repaired,
            elapsed=time.monotonic() - started,
            sampled=sample is not None,
            differences=tuple(acc.report),
        )
        if sample is None:
            async with self.store.begin() as conn:
                await set_json_meta(
                    self.store,
                    conn,
                    verify_result_key(self.a.name, self.b.name),
                    {
                        "at": self.store.clock(),
                        "clean": result.clean,
                        "checked": result.checked,
                        "missing": result.missing,
                        "extra": result.extra,
                        "differing": result.differing,
                        "in_flight": result.in_flight,
                    },
                )
        return result

    # --- the full walk -----------------------------------------------------------------------

    async def _run_full(self, acc: _Acc, repair: bool) -> None:
        side = SideTable(
            journal=journal_file(self.store.engine.url) if _ATTACH else None,
            entity_type=ENTITY,
            a_name=self.a.name,
            b_name=self.b.name,
        )
        b_walk = _BWalk(
            scan_streams(self.b), side, self._row, chunk=self.chunk, trust_order=self.recheck
        )
        try:
            if self.progress is not None and self.progress.total is None:
                self.progress.total = await count_streams(self.a)
            async for chunk in _prefetched(_chunks(scan_streams(self.a), self.chunk)):
                await self._compare_chunk(chunk, b_walk, acc, repair)
            await b_walk.finish()
            await self._extras(side, acc)
        finally:
            try:
                await b_walk.aclose()
            finally:
                side.close()

    async def _compare_chunk(
        self, chunk: list[Stream], b_walk: _BWalk, acc: _Acc, repair: bool
    ) -> None:
        acc.checked += len(chunk)
        b_ids = await lookup_chunk(
            self.store, b_walk.side, [str(s.id) for s in chunk], self.a.name, self.b.name
        )
        found = await b_walk.take({b: i for i, b in enumerate(b_ids) if b is not None})
        suspects: list[tuple[Stream, StreamId | None, dict[str, Any] | None]] = []
        canonical, fields = self._row, self.fields
        matching = 0
        for i, stream in enumerate(chunk):
            theirs = found.get(i)
            if theirs is None:  # unmapped, or B's walk did not have it
                suspects.append((stream, b_ids[i], None))
                continue
            ours = canonical(stream)
            if ours == theirs:
                matching += 1
                continue
            # Unequal rows may still match (a value one side fills by default).
            walked = dict(zip(fields, theirs, strict=True))
            if not diff_values(dict(zip(fields, ours, strict=True)), walked):
                matching += 1
                continue
            suspects.append((stream, b_ids[i], walked))
        acc.matching += matching
        if suspects:
            await self._settle_suspects(suspects, acc, repair)
        if self.progress is not None:
            self.progress.advance(len(chunk))

    async def _current_b_id(self, key: str | None, b_id: StreamId | None) -> StreamId | None:
        """B's id for the entity now: a copy made while the run walked (the sync worker
        applied a fresh write) is mapped after the chunk was translated."""
        if key is None:
            return b_id
        now = await self.store.native_id_of(ENTITY, key, self.b.name)
        return b_id if now is None else now

    async def _settle_suspects(
        self,
        suspects: list[tuple[Stream, StreamId | None, dict[str, Any] | None]],
        acc: _Acc,
        repair: bool,
    ) -> None:
        texts = [encode_id(s.id)[0] for s, _, _ in suspects]
        async with self.store.engine.connect() as conn:
            keys = await _keys(conn, ENTITY, self.a.name, texts)
        # Read both sides again first, then ask the journal: a write that changed the entity
        # meanwhile is then visible as an intent or a queue row (it is in flight).
        verdicts: list[tuple[Stream, StreamId | None, str | None, list[FieldDiff] | None]] = []
        for stream, b_id, walked in suspects:
            key = keys.get(encode_id(stream.id)[0])
            a_now: Stream = stream
            diffs: list[FieldDiff] | None = None  # None: missing in B
            if self.recheck:
                fresh = await _get(self.a, stream.id)
                if fresh is None:  # deleted from A during the run: nothing to compare
                    acc.checked -= 1
                    continue
                a_now = fresh
                b_id = await self._current_b_id(key, b_id)
                b_now = None if b_id is None else await _get(self.b, b_id)
                if b_now is not None:
                    diffs = diff_streams(a_now, b_now, self.fields)
            elif walked is not None:
                diffs = diff_values(canonical_fields(stream, self.fields), walked)
            if diffs is not None and not diffs:
                acc.matching += 1
                continue
            verdicts.append((a_now, b_id, key, diffs))
        creating = False
        unkeyed = [encode_id(a_now.id)[0] for a_now, _, key, _ in verdicts if key is None]
        if unkeyed:
            late_keys, creating = await self._keys_after_creates(unkeyed)
            verdicts = [
                (a_now, b_id, key or late_keys.get(encode_id(a_now.id)[0]), diffs)
                for a_now, b_id, key, diffs in verdicts
            ]
        busy = await outstanding_keys(self.store, ENTITY, [k for _, _, k, _ in verdicts if k])
        fixes: list[tuple[Stream, str | None]] = []
        for a_now, b_id, key, diffs in verdicts:
            if (key is not None and key in busy) or (key is None and creating):
                acc.in_flight += 1
                continue
            if self.recheck:
                # Idle in the journal now; a write may still have been applied between our
                # reads and that check, so read once more before calling it a difference.
                again = await _get(self.a, a_now.id)
                if again is None:
                    acc.checked -= 1
                    continue
                a_now = again
                b_id = await self._current_b_id(key, b_id)
                b_now = None if b_id is None else await _get(self.b, b_id)
                diffs = None if b_now is None else diff_streams(a_now, b_now, self.fields)
                if diffs is not None and not diffs:
                    acc.matching += 1
                    continue
                # The app may have written the entity after that journal check and before
                # these reads (its fan-out then still on the way): a difference counts only
                # if it holds still across one more check.
                if not await self._holds_still(key, a_now, b_id, b_now):
                    acc.in_flight += 1
                    continue
            if diffs is None:
                acc.missing += 1
                self._report(
                    Difference(kind="missing", entity_key=key, a_id=a_now.id, b_id=b_id), acc
                )
            else:
                acc.differing += 1
                self._report(
                    Difference(
                        kind="differ",
                        entity_key=key,
                        a_id=a_now.id,
                        b_id=b_id,
                        fields=tuple(diffs),
                    ),
                    acc,
                )
            fixes.append((a_now, key))
        if repair and fixes:
            acc.repaired += await self._repair(fixes)

    async def _holds_still(
        self, key: str | None, a_now: Stream, b_id: StreamId | None, b_now: Stream | None
    ) -> bool:
        """Whether the difference just read between ``a_now`` and ``b_now`` is settled: the
        journal has no work outstanding for the entity now, and both sides read again are as
        they were. A write that landed on A before the last read has its journal row (or
        intent) from before that read: either still outstanding here, or applied to B since,
        which the second read of B shows."""
        if key is not None and await outstanding_keys(self.store, ENTITY, [key]):
            return False
        a_again = await _get(self.a, a_now.id)
        if a_again is None or diff_streams(a_now, a_again, self.fields):
            return False
        if await self._current_b_id(key, b_id) != b_id:
            return False
        b_again = None if b_id is None else await _get(self.b, b_id)
        if b_now is None or b_again is None:
            return b_now is None and b_again is None
        return not diff_streams(b_now, b_again, self.fields)

    async def _keys_after_creates(self, texts: list[str]) -> tuple[dict[str, str], bool]:
        """Entity keys of A streams (ids as text) that had none, looked up again once the
        creates on A in flight now have settled; and whether some are still in flight.

        A create through a manager whose journal is not in A's database maps the new id only
        after A answered (its intent, recorded first, says meanwhile that a create is in
        flight): a stream walked in that window has no key yet and is not missing. Waits at
        most ``intent_wait`` seconds.
        """
        waiting = select(intents.c.id).where(
            intents.c.entity_type == ENTITY,
            intents.c.backend == self.a.name,
            intents.c.op == "create",
        )
        deadline = time.monotonic() + self.intent_wait
        async with self.store.engine.connect() as conn:
            started = {r[0] for r in await conn.execute(waiting)}
        while started:
            async with self.store.engine.connect() as conn:
                started &= {r[0] for r in await conn.execute(waiting)}
            if not started or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        async with self.store.engine.connect() as conn:
            keys = await _keys(conn, ENTITY, self.a.name, texts)
        return keys, bool(started)

    def _report(self, difference: Difference, acc: _Acc) -> None:
        if len(acc.report) < self.max_report:
            acc.report.append(difference)

    async def _extras(self, side: SideTable, acc: _Acc) -> None:
        after = 0
        while True:
            batch = side.unseen(after, 500)
            if not batch:
                return
            after = batch[-1][0]
            ids = [native_id for _, native_id in batch]
            async with self.store.engine.connect() as conn:
                keys = await _keys(conn, ENTITY, self.b.name, [encode_id(i)[0] for i in ids])
            busy = await outstanding_keys(self.store, ENTITY, keys.values())
            applying: bool | None = None
            for native_id in ids:
                text = encode_id(native_id)[0]
                key = keys.get(text)
                if key is None and self.recheck:
                    # A copy the sync worker just made is mapped when its row settles: until
                    # then B's id is unknown. While creates or updates (an update recreates a
                    # copy missing on B) are outstanding for B, count it in flight; otherwise
                    # read the mapping again (settled since, if it was one).
                    if applying is None:
                        applying = await _copies_outstanding(self.store, self.b.name)
                    if applying:
                        acc.in_flight += 1
                        continue
                    async with self.store.engine.connect() as conn:
                        key = (await _keys(conn, ENTITY, self.b.name, [text])).get(text)
                    if key is not None and await outstanding_keys(self.store, ENTITY, [key]):
                        acc.in_flight += 1
                        continue
                if key is not None and key in busy:
                    acc.in_flight += 1
                    continue
                if self.recheck and await _get(self.b, native_id) is None:
                    continue  # deleted from B during the run
                if self.recheck and key is not None:
                    a_id = await self.store.native_id_of(ENTITY, key, self.a.name)
                    if a_id is not None and await _get(self.a, a_id) is not None:
                        continue  # created on A after the walk passed: both sides have it
                    # Both sides read; now ask the journal again (``busy`` is from before the
                    # reads): a delete from A that started since is on its way to B — in
                    # flight, not extra. If it was applied to B meanwhile, B no longer has it.
                    if await outstanding_keys(self.store, ENTITY, [key]):
                        acc.in_flight += 1
                        continue
                    if await _get(self.b, native_id) is None:
                        continue
                acc.extra += 1
                self._report(
                    Difference(kind="extra", entity_key=key, a_id=None, b_id=native_id), acc
                )

    async def _repair(self, fixes: list[tuple[Stream, str | None]]) -> int:
        async with self.store.begin() as conn:
            unkeyed = [s.id for s, key in fixes if key is None]
            adopted = await adopt_keys(self.store, conn, ENTITY, self.a.name, unkeyed)
            items = [
                FanOut(
                    entity_type=ENTITY,
                    entity_key=key or adopted[encode_id(stream.id)[0]],
                    target=self.b.name,
                    op="update",
                    snapshot=build_snapshot(
                        stream,
                        primary_fields=self.a.fields,
                        target_fields=self.b.fields,
                        given={},
                    ),
                )
                for stream, key in fixes
            ]
            await self.store.enqueue(conn, items)
        return len(fixes)

    # --- sampling ------------------------------------------------------------------------------

    async def _run_sample(self, acc: _Acc, size: int, repair: bool) -> None:
        picked: list[Stream] = []
        seen = 0
        rng = random.Random()
        async for stream in scan_streams(self.a):
            seen += 1
            if len(picked) < size:
                picked.append(stream)
            else:
                slot = rng.randrange(seen)
                if slot < size:
                    picked[slot] = stream
        acc.checked += len(picked)
        to_b = await self.store.translate_ids(
            ENTITY, self.a.name, [s.id for s in picked], self.b.name
        )
        suspects: list[tuple[Stream, StreamId | None, dict[str, Any] | None]] = []
        for stream in picked:
            b_id = to_b.get(encode_id(stream.id)[0])
            b_now = None if b_id is None else await _get(self.b, b_id)
            if b_now is not None and not diff_streams(stream, b_now, self.fields):
                acc.matching += 1
            else:
                walked = None if b_now is None else canonical_fields(b_now, self.fields)
                suspects.append((stream, b_id, walked))
        if suspects:
            await self._settle_suspects(suspects, acc, repair)


async def lookup_chunk(
    store: JournalStore, side: SideTable, texts: Sequence[str], a_name: str, b_name: str
) -> list[StreamId | None]:
    """For each A id (text) of a chunk, in order: its B id through the id map as it is now
    (None when unmapped)."""
    if side.attached:
        return side.translate(texts)
    to_b = await translate_chunk(store, ENTITY, a_name, texts, b_name)
    return [to_b.get(text) for text in texts]


class _BWalk:
    """B's walk, consumed in step with A's walk.

    Both walks go in id order, and the id map is mostly monotonic (a backfill creates B's copies
    in A's order; later writes reach both sides in the same order), so the B streams a chunk of
    A asks for are usually the next ones of B's walk: they are compared straight from it, and
    nothing is stored. B streams passed over (extras, or copies A asks for later) are spilled to
    the side table, where a later chunk finds them (they are then marked seen) and where the
    unmatched ones are B's candidate extras in the end. Memory: one chunk of B and one batch of
    spilled rows.

    When B's walk is seen in id order (``trust_order``), the walk stops once it passes the
    highest id a chunk asks for; an id not found by then is not in B (it would have come
    earlier). Should the walk later turn out not to be in order, such an entity was reported
    as missing too early: the re-check of every suspect reads it again, so only a run without
    re-checks (``recheck=False``, which disables this stop) could report it.
    """

    def __init__(
        self,
        streams: AsyncIterator[Stream],
        side: SideTable,
        canonical: Callable[[Stream], tuple[Any, ...]],
        *,
        chunk: int,
        trust_order: bool,
    ) -> None:
        self.side = side
        self._canonical = canonical
        self._chunks = _chunks(streams, chunk)
        self._buffer: list[Stream] = []
        self._pos = 0
        self._done = False
        self._ordered = trust_order
        self._last: StreamId | None = None
        self._spilled: list[tuple[StreamId, tuple[Any, ...]]] = []

    async def _refill(self) -> bool:
        """Read B's next chunk once the current one is used up (False at the end)."""
        if self._pos < len(self._buffer):
            return True
        if self._done:
            return False
        try:
            self._buffer = await anext(self._chunks)
        except StopAsyncIteration:
            self._done = True
            self._buffer = []
            return False
        finally:
            self._pos = 0
        return True

    def _spill(self, native_id: StreamId, row: tuple[Any, ...]) -> None:
        self._spilled.append((native_id, row))
        if len(self._spilled) >= 2000:
            self._flush()

    def _flush(self) -> None:
        if self._spilled:
            self.side.add(self._spilled)
            self._spilled = []

    async def take(self, wanted: dict[Any, int]) -> dict[int, tuple[Any, ...]]:
        """The canonical rows of the B ids in ``wanted`` (id -> position in A's chunk) that B
        has, by position."""
        found: dict[int, tuple[Any, ...]] = {}
        if not wanted:
            return found
        wanted = dict(wanted)
        canonical, spill = self._canonical, self._spill
        ordered, last = self._ordered, self._last
        highest = _highest(wanted) if ordered else None
        passed = False
        while wanted and not passed:
            if self._pos >= len(self._buffer) and not await self._refill():
                break
            buffer, index = self._buffer, self._pos
            for index in range(self._pos, len(buffer)):
                stream = buffer[index]
                native_id = stream.id
                position = wanted.pop(native_id, None)
                if position is not None:
                    found[position] = canonical(stream)
                else:
                    spill(native_id, canonical(stream))
                if ordered:
                    if last is not None and not _after(native_id, last):
                        ordered, highest = False, None
                    last = native_id
                    if highest is not None and not _after(highest, native_id):
                        passed = True  # passed every id still wanted: behind, or not in B
                        break
                if not wanted:
                    break
            self._pos = index + 1
        self._ordered, self._last = ordered, last
        if wanted:  # passed over by an earlier chunk (spilled), or not in B
            self._flush()
            ids = list(wanted)
            rows = self.side.match_b(ids)
            seen = []
            for native_id, (rowid, data, pdata) in zip(ids, rows, strict=True):
                if rowid is not None:
                    seen.append(rowid)
                    row = load_row(data, pdata)
                    if row is not None:
                        found[wanted[native_id]] = row
            if seen:
                self.side.mark(seen)
        return found

    async def aclose(self) -> None:
        """Close B's walk (when the run stops before reading it all)."""
        await self._chunks.aclose()

    async def finish(self) -> None:
        """Spill the rest of B's walk (no stream of A asked for it: candidate extras)."""
        while await self._refill():
            for stream in self._buffer[self._pos :]:
                self._spill(stream.id, ())
            self._pos = len(self._buffer)
        self._flush()


def _after(later: Any, earlier: Any) -> bool:
    """Whether id ``later`` orders strictly after ``earlier`` (:func:`id_order`; ints fast)."""
    if later.__class__ is int and earlier.__class__ is int:
        return bool(later > earlier)
    return id_order(later) > id_order(earlier)


def _highest(ids: dict[Any, int]) -> Any:
    """The id ordering last among ``ids`` (:func:`id_order`)."""
    try:
        return max(ids)  # all ints, or all text: their own order is id_order
    except TypeError:
        return max(ids, key=id_order)


async def _chunks(streams: AsyncIterator[Stream], size: int) -> AsyncGenerator[list[Stream], None]:
    """``streams`` in lists of ``size``; closing this closes ``streams`` (a walk stopped early
    releases what it holds)."""
    chunk: list[Stream] = []
    try:
        async for stream in streams:
            chunk.append(stream)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    finally:
        aclose = getattr(streams, "aclose", None)
        if aclose is not None:
            await aclose()


async def _prefetched(chunks: AsyncIterator[list[Stream]]) -> AsyncIterator[list[Stream]]:
    """``chunks``, reading the next one while the caller works on the current one.

    Reading A (a database or an API round trip) then overlaps the id-map look-ups and the
    comparison of the chunk before. At most two chunks are held: constant memory still.
    """
    iterator = aiter(chunks)
    pending: asyncio.Task[list[Stream]] | None = asyncio.ensure_future(anext(iterator))
    try:
        while pending is not None:
            try:
                chunk = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(iterator))
            yield chunk
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


async def _get(backend: StreamBackend, native_id: StreamId) -> Stream | None:
    try:
        return await backend.get_stream(native_id)
    except NotFound:
        return None


async def _copies_outstanding(store: JournalStore, target: str) -> bool:
    """True when a row that may make a copy on ``target`` is pending or being applied (its
    copy, if made, is not mapped until the row settles): a create, or an update, which
    recreates a copy missing on the target (self-healing)."""
    async with store.engine.connect() as conn:
        found = await conn.execute(
            select(queue.c.id)
            .where(
                queue.c.target == target,
                queue.c.op.in_(("create", "update")),
                queue.c.status.in_(("pending", "leased")),
            )
            .limit(1)
        )
        return found.first() is not None
