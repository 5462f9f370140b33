"""The cutover: moving the primary from the legacy backend to the new one, step by step.

``advance`` takes one step forward after checking its preconditions, and says what is missing
when they fail::

    legacy-only -> dual-write     the new backend is a secondary of the manager
    dual-write  -> backfilled     a backfill legacy -> new completed; the journal drained for
                                  the new backend (below), nothing parked for it
    backfilled  -> verified       a full verify legacy -> new, run after the backfill, was clean
    verified    -> shadow         [shadow] backend is the new backend
    shadow      -> flipped        at least min_shadow_reads shadow comparisons, mismatch rate at
                                  most max_shadow_mismatch_rate; then the flip (below)
    flipped     -> new-only       the journal drained for the legacy backend, nothing parked

"Drained" for those two steps is a watermark, not an instant with nothing outstanding (which
never comes while the app writes): every journal entry for the target that was outstanding when
the check began has been applied since (:class:`~multibackend.journal.watermark.JournalWatermark`).
``advance`` waits for that up to ``fence_timeout`` (no fence is raised; writes go on), with every
sync worker of its own process told not to linger; parked rows for the target, counted when the
check ends, block the step as before.

The flip: raise a write fence (managers everywhere hold new writes, at most ``fence_timeout``),
let writes already past their check finish (``fence_grace``), drain the journal to zero (every
target, and no write in flight on the primary), then swap primary and secondary and lift the
fence in one change of the cutover state. The legacy backend stays a secondary, so it keeps
receiving every write and ``rollback`` (the same fenced drain, then the swap back) loses nothing.
When the journal does not drain in time the fence is lifted and the flip abandoned, with the
reason. ``rollback`` from earlier phases steps one phase back; from ``new-only`` it goes back to
``flipped`` (the legacy backend receives writes again; writes made in ``new-only`` must first be
brought over: ``multibackend verify --between NEW LEGACY --repair``).

``dry_run=True`` checks and reports what would happen, changing nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from sqlalchemy import func, select

from multibackend.backend import StreamBackend
from multibackend.journal.schema import intents
from multibackend.journal.store import JournalStore
from multibackend.journal.watermark import JournalWatermark
from multibackend.journal.worker import SyncWorker, draining
from multibackend.migrate.backfill import backfill_checkpoint_key
from multibackend.migrate.ledger import get_json_meta
from multibackend.migrate.phases import PHASES, CutoverState, load_state, save_state
from multibackend.migrate.shadow import shadow_report
from multibackend.migrate.verify import verify_result_key

__all__ = ["Cutover", "CutoverOutcome", "CutoverPolicy"]


@attrs.frozen(kw_only=True)
class CutoverPolicy:
    """The limits the steps check (``[cutover]`` in the configuration)."""

    fence_timeout: float = 30.0
    fence_grace: float = 0.5
    max_shadow_mismatch_rate: float = 0.001
    min_shadow_reads: int = 100


@attrs.frozen(kw_only=True)
class CutoverOutcome:
    """What ``advance`` or ``rollback`` did (or, with ``dry_run``, would do)."""

    action: str
    from_phase: str
    to_phase: str
    done: bool
    dry_run: bool
    missing: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "from": self.from_phase,
            "to": self.to_phase,
            "done": self.done,
            "dry_run": self.dry_run,
            "missing": list(self.missing),
            "steps": list(self.steps),
        }


class Cutover:
    """Cutover steps on ``store`` for a manager configured with ``primary``/``secondaries``.

    ``backends`` (opened by the caller) are needed for the fenced drain of a flip or rollback:
    the cutover runs a sync worker of its own while writes are held, alongside any other.
    """

    def __init__(
        self,
        store: JournalStore,
        backends: Mapping[str, StreamBackend],
        *,
        primary: str,
        secondaries: Sequence[str],
        legacy: str | None = None,
        new: str | None = None,
        shadow_backend: str | None = None,
        policy: CutoverPolicy | None = None,
    ) -> None:
        self.store = store
        self.backends = backends
        self.primary = primary
        self.secondaries = list(secondaries)
        self.legacy = legacy or primary
        if new is None:
            if not self.secondaries:
                raise ValueError("no new backend: set [cutover] new or [manager] secondaries")
            new = self.secondaries[0]
        self.new = new
        self.shadow_backend = shadow_backend
        self.policy = policy or CutoverPolicy()

    # --- inspection --------------------------------------------------------------------------

    async def state(self) -> CutoverState:
        state = await load_state(self.store)
        if state.legacy is None:
            state = attrs.evolve(state, legacy=self.legacy, new=self.new)
        return state

    async def status(self) -> dict[str, Any]:
        """The phase, the roles it gives, the fence, the next step and what it still needs."""
        state = await self.state()
        primary, secondaries = state.roles(self.primary, self.secondaries)
        nxt = PHASES[state.index + 1] if state.index + 1 < len(PHASES) else None
        missing = await self._missing(state, nxt, wait=0.0) if nxt is not None else []
        now = self.store.clock()
        return {
            "phase": state.phase,
            "legacy": state.legacy,
            "new": state.new,
            "primary": primary,
            "secondaries": secondaries,
            "fenced": state.fenced(now),
            "fence_until": state.fence_until,
            "next": nxt,
            "next_missing": missing,
            "outstanding": await self.store.outstanding(None),
            "version": state.version,
            "history": list(state.history),
        }

    async def _missing(
        self, state: CutoverState, to: str | None, *, wait: float | None = None
    ) -> list[str]:
        """What step ``to`` still needs. ``wait``: how long the journal may take to apply what
        was outstanding when the check began (default ``fence_timeout``; 0: report it now)."""
        wait = self.policy.fence_timeout if wait is None else wait
        legacy, new = state.legacy or self.legacy, state.new or self.new
        missing: list[str] = []
        if to == "dual-write":
            if self.primary != legacy:
                missing.append(f"[manager] primary must be the legacy backend {legacy!r}")
            if new not in self.secondaries:
                missing.append(f"[manager] secondaries must include the new backend {new!r}")
        elif to == "backfilled":
            checkpoint = await get_json_meta(self.store, backfill_checkpoint_key(legacy, new))
            if not checkpoint or not checkpoint.get("done"):
                missing.append(
                    f"no completed backfill {legacy} -> {new} "
                    f"(run: multibackend backfill --from {legacy} --to {new})"
                )
            missing.extend(await self._drained(new, wait))
        elif to == "verified":
            result = await get_json_meta(self.store, verify_result_key(legacy, new))
            checkpoint = await get_json_meta(self.store, backfill_checkpoint_key(legacy, new))
            if result is None:
                missing.append(
                    f"no verify {legacy} -> {new} (run: multibackend verify --between {legacy} "
                    f"{new})"
                )
            elif not result.get("clean"):
                missing.append(
                    f"the last verify {legacy} -> {new} found differences (missing "
                    f"{result.get('missing')}, extra {result.get('extra')}, different "
                    f"{result.get('differing')}): repair and verify again"
                )
            elif checkpoint and float(result.get("at", 0)) < float(
                checkpoint.get("finished_at", 0)
            ):
                missing.append("the last verify ran before the last backfill: verify again")
        elif to == "shadow":
            if self.shadow_backend != new:
                missing.append(f'[shadow] backend must be the new backend ("{new}")')
        elif to == "flipped":
            reports = await shadow_report(self.store, new, latest=0)
            report = reports[0] if reports else None
            compared = report.compared if report else 0
            if compared < self.policy.min_shadow_reads:
                missing.append(
                    f"only {compared} shadow comparisons on {new} "
                    f"(need {self.policy.min_shadow_reads}): let the app read for longer"
                )
            elif report is not None and report.mismatch_rate > self.policy.max_shadow_mismatch_rate:
                missing.append(
                    f"shadow mismatch rate {report.mismatch_rate:.4%} is above "
                    f"{self.policy.max_shadow_mismatch_rate:.4%} "
                    "(see: multibackend shadow report)"
                )
        elif to == "new-only":
            missing.extend(await self._drained(legacy, wait))
        return missing

    async def _drained(self, target: str, wait: float) -> list[str]:
        """The journal drained for ``target`` up to the moment this check began (a watermark,
        see the module docstring), waiting up to ``wait`` seconds; and nothing parked for it."""
        left = 0
        if wait > 0:
            mark = await JournalWatermark.take(self.store, [target])
            with draining():
                left = await mark.wait(wait)
        status = (await self.store.status([target]))[target]
        if wait <= 0:
            # A look, not a wait (status, a dry run): what is outstanding now, without a
            # watermark or hurrying the process's workers.
            left = status.outstanding
        out = []
        if left and wait > 0:
            out.append(
                f"{left} journal row(s) for {target} enqueued before the check still not "
                f"applied after {wait:g}s (is a sync worker running? multibackend sync status)"
            )
        elif left:
            out.append(f"{left} journal row(s) still outstanding for {target}")
        if status.parked:
            out.append(
                f"{status.parked} parked journal row(s) for {target} "
                "(multibackend journal list --status parked)"
            )
        return out

    # --- steps -------------------------------------------------------------------------------

    async def advance(self, *, dry_run: bool = False) -> CutoverOutcome:
        """One step forward, when its preconditions hold."""
        state = await self.state()
        if state.index + 1 >= len(PHASES):
            return CutoverOutcome(
                action="advance",
                from_phase=state.phase,
                to_phase=state.phase,
                done=False,
                dry_run=dry_run,
                missing=("the cutover is complete (new-only)",),
            )
        to = PHASES[state.index + 1]
        missing = await self._missing(state, to)
        if missing:
            return CutoverOutcome(
                action="advance",
                from_phase=state.phase,
                to_phase=to,
                done=False,
                dry_run=dry_run,
                missing=tuple(missing),
            )
        if to == "flipped":
            return await self._fenced_swap(state, "advance", to, swapped=True, dry_run=dry_run)
        steps = [f"set the phase to {to}"]
        if to == "new-only":
            steps.append(f"stop sending writes to {state.legacy}")
        if not dry_run:
            await save_state(self.store, attrs.evolve(state, phase=to), event=f"advance to {to}")
        return CutoverOutcome(
            action="advance",
            from_phase=state.phase,
            to_phase=to,
            done=not dry_run,
            dry_run=dry_run,
            steps=tuple(steps),
        )

    async def rollback(self, *, dry_run: bool = False) -> CutoverOutcome:
        """One step back; from ``flipped``, the fenced swap back to the legacy primary."""
        state = await self.state()
        if state.index == 0:
            return CutoverOutcome(
                action="rollback",
                from_phase=state.phase,
                to_phase=state.phase,
                done=False,
                dry_run=dry_run,
                missing=("nothing to roll back (legacy-only)",),
            )
        to = PHASES[state.index - 1]
        if state.phase == "flipped":
            return await self._fenced_swap(state, "rollback", to, swapped=False, dry_run=dry_run)
        steps = [f"set the phase to {to}"]
        if state.phase == "new-only":
            steps.append(
                f"send writes to {state.legacy} again; writes made in new-only are not on it: "
                f"run 'multibackend verify --between {state.new} {state.legacy} --repair' "
                "before rolling back further"
            )
        if not dry_run:
            await save_state(self.store, attrs.evolve(state, phase=to), event=f"rollback to {to}")
        return CutoverOutcome(
            action="rollback",
            from_phase=state.phase,
            to_phase=to,
            done=not dry_run,
            dry_run=dry_run,
            steps=tuple(steps),
        )

    async def _fenced_swap(
        self, state: CutoverState, action: str, to: str, *, swapped: bool, dry_run: bool
    ) -> CutoverOutcome:
        new_primary = state.new if swapped else state.legacy
        old_primary = state.legacy if swapped else state.new
        steps = (
            f"raise the write fence (writes wait up to {self.policy.fence_timeout:g}s)",
            f"drain the journal to zero (now {await self.store.outstanding(None)} outstanding)",
            f"make {new_primary} the primary and {old_primary} a secondary; lift the fence",
        )
        if dry_run:
            return CutoverOutcome(
                action=action,
                from_phase=state.phase,
                to_phase=to,
                done=False,
                dry_run=True,
                steps=steps,
            )
        fence_until = self.store.clock() + self.policy.fence_timeout
        fenced = await save_state(
            self.store,
            attrs.evolve(state, fence_until=fence_until, fence_reason=f"{action} to {to}"),
            event=f"fence raised for {action} to {to}",
        )
        # Writes that passed their fence check just before it was raised finish now.
        await asyncio.sleep(self.policy.fence_grace)
        # Leave a margin before the fence's end, so no write proceeds before the swap lands.
        drained = await self._drain(fence_until - min(1.0, self.policy.fence_timeout / 4))
        if not drained:
            left = await self.store.outstanding(None)
            await save_state(
                self.store,
                attrs.evolve(fenced, fence_until=None, fence_reason=None),
                event=f"{action} to {to} abandoned: journal not drained",
            )
            return CutoverOutcome(
                action=action,
                from_phase=state.phase,
                to_phase=to,
                done=False,
                dry_run=False,
                missing=(
                    f"the journal did not drain within fence_timeout "
                    f"({self.policy.fence_timeout:g}s): {left} row(s) outstanding; the fence "
                    "was lifted and nothing changed (check 'multibackend sync status')",
                ),
                steps=steps,
            )
        await save_state(
            self.store,
            attrs.evolve(fenced, phase=to, swapped=swapped, fence_until=None, fence_reason=None),
            event=f"{action} to {to}: {new_primary} is primary",
        )
        return CutoverOutcome(
            action=action,
            from_phase=state.phase,
            to_phase=to,
            done=True,
            dry_run=False,
            steps=steps,
        )

    async def _drain(self, deadline: float) -> bool:
        """Apply journal rows until none is outstanding and no primary write is in flight, or
        until ``deadline`` (epoch seconds). Runs a worker of its own for every target."""
        targets = list(self.backends)
        worker = SyncWorker(
            self.store,
            self.backends,
            targets=targets,
            owner=f"cutover-{int(time.time())}",
            poll_interval=0.05,
        )
        with draining():
            return await self._drain_with(worker, deadline)

    async def _drain_with(self, worker: SyncWorker, deadline: float) -> bool:
        while self.store.clock() < deadline:
            processed = await worker.run_once()
            if processed:
                continue
            # Intents first: a write whose intent is settled between the two reads has its
            # fan-out rows committed by then (same transaction), so the second read sees them.
            # (Read the other way round, a settle landing in between was missed: no intent
            # left, and its rows not counted.) No intent can appear after the first read: the
            # fence is up, and writes check it in the transaction that records their intent.
            if await self._intents() == 0 and await self.store.outstanding(None) == 0:
                return True
            await asyncio.sleep(0.02)
        return False

    async def _intents(self) -> int:
        async with self.store.engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(intents))).scalar() or 0
            )
