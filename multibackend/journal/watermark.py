"""A watermark in the journal: "every entry enqueued before now has been applied".

"Nothing outstanding" is an instant that never comes while an app keeps writing (and a worker
that lingers to batch writes keeps a few rows in flight at any time). What a cutover step needs
is weaker and reachable: every fan-out entry for a target that was in the journal when the check
began has been settled since. :meth:`JournalWatermark.take` reads the rows outstanding (pending
or leased) at that moment; :meth:`JournalWatermark.remaining` counts those not settled yet.

A row is one (entity, target) pair, and later writes merge into it, so "settled" cannot mean
"gone" (a row written again and again would never go). It means: applied at a state that
includes everything written before the watermark. Read from the row:

- gone, or parked: settled (parked rows are reported by the caller, as before);
- pending when the watermark was taken: any worker leases it afterwards, at its state then or
  later, so it is settled once a worker applied it — the row is gone, or it went back to pending
  because it was written again while applied, which stamps a new ``enqueued_at`` (the only
  change of ``enqueued_at`` on an existing row);
- leased when the watermark was taken: that lease may predate writes merged just before the
  watermark, so its own outcome does not count. Once seen pending again, or stamped anew once,
  the row needs one more apply as above.

When reads miss intermediate steps (a row applied twice between two reads) the count errs on
the side of waiting: it never reports a row settled that was not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import attrs

from multibackend.journal.store import JournalStore

__all__ = ["JournalWatermark"]


@attrs.define
class _Mark:
    #: Applies still to observe (a new ``enqueued_at`` stamp, or the row gone).
    need: int
    enqueued_at: float


class JournalWatermark:
    """The journal rows of ``targets`` outstanding when :meth:`take` read them, followed until
    each is settled (see the module docstring)."""

    def __init__(
        self, store: JournalStore, targets: Iterable[str], marks: dict[int, _Mark]
    ) -> None:
        self.store = store
        self.targets = list(targets)
        self._marks = marks
        # Rows enqueued later have higher ids (SQLite may reuse the highest id of a deleted row,
        # which then reads as a new stamp: one more apply waited for, never one less).
        self._up_to = max(marks, default=0)

    @classmethod
    async def take(cls, store: JournalStore, targets: Iterable[str]) -> JournalWatermark:
        """The watermark at this moment: one read of the rows outstanding for ``targets``."""
        names = list(targets)
        rows = await store.outstanding_marks(names)
        marks = {
            row_id: _Mark(need=1 if status == "pending" else 2, enqueued_at=enqueued_at)
            for row_id, (status, enqueued_at) in rows.items()
        }
        return cls(store, names, marks)

    @property
    def taken(self) -> int:
        """Rows outstanding when the watermark was taken and not yet seen settled."""
        return len(self._marks)

    async def remaining(self) -> int:
        """Read the rows again: how many of those outstanding at the watermark are not settled
        yet (0: everything enqueued before it has been applied, or parked)."""
        if not self._marks:
            return 0
        now = await self.store.outstanding_marks(self.targets, up_to=self._up_to)
        for row_id, mark in list(self._marks.items()):
            seen = now.get(row_id)
            if seen is None:
                del self._marks[row_id]  # applied and removed, parked, or dropped
                continue
            status, enqueued_at = seen
            if enqueued_at != mark.enqueued_at:
                # Applied while written again, at least once since the last read.
                mark.need -= 1
                mark.enqueued_at = enqueued_at
            elif mark.need > 1 and status == "pending":
                # The lease held at the watermark ended without an apply: the next lease is
                # taken after the watermark.
                mark.need = 1
            if mark.need <= 0:
                del self._marks[row_id]
        return len(self._marks)

    async def wait(self, timeout: float, *, poll: float = 0.02) -> int:  # noqa: ASYNC109
        """Read again every ``poll`` seconds until nothing of the watermark remains or
        ``timeout`` seconds pass; returns what remains (0: reached)."""
        deadline = time.monotonic() + timeout
        while True:
            left = await self.remaining()
            if left == 0 or time.monotonic() >= deadline:
                return left
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
