"""The cutover state, stored in the journal database, and what it means for a manager.

Phases, in order::

    legacy-only -> dual-write -> backfilled -> verified -> shadow -> flipped -> new-only

The state lives in ``mb_meta``: ``cutover`` holds a JSON object (phase, whether primary and
secondary are swapped, the write fence, the names of the legacy and the new backend, a short
history), and ``cutover_version`` a counter bumped on every change. A manager reads the counter
before each write (one primary-key lookup) and reloads the state only when it moved, so managers
in other processes see a phase change, a fence or a swap before their next write.

Roles: until the flip the configured primary (the legacy backend) is primary. From ``flipped`` on
the new backend is primary and the legacy backend a secondary, so it keeps receiving every write
and a rollback loses nothing. In ``new-only`` the legacy backend no longer receives writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import attrs
from sqlalchemy.ext.asyncio import AsyncConnection

from multibackend.errors import Unavailable
from multibackend.journal.store import JournalStore

__all__ = [
    "CUTOVER_KEY",
    "PHASES",
    "VERSION_KEY",
    "CutoverState",
    "WriteFenced",
    "load_state",
    "read_version",
    "save_state",
]

PHASES: Final[tuple[str, ...]] = (
    "legacy-only",
    "dual-write",
    "backfilled",
    "verified",
    "shadow",
    "flipped",
    "new-only",
)
CUTOVER_KEY: Final = "cutover"
VERSION_KEY: Final = "cutover_version"


class WriteFenced(Unavailable):
    """A write waited for a cutover's write fence longer than its bound. Nothing was written;
    retry once ``multibackend cutover status`` shows the fence lifted."""


@attrs.frozen(kw_only=True)
class CutoverState:
    """The cutover's durable state. ``fence_until`` (epoch seconds) is set while a flip or a
    rollback drains the journal: writes wait until it is lifted, at most until that time."""

    phase: str = "legacy-only"
    swapped: bool = False
    legacy: str | None = None
    new: str | None = None
    fence_until: float | None = None
    fence_reason: str | None = None
    version: int = 0
    history: tuple[dict[str, Any], ...] = ()

    @property
    def index(self) -> int:
        return PHASES.index(self.phase)

    def fenced(self, now: float) -> bool:
        return self.fence_until is not None and self.fence_until > now

    def roles(self, primary: str, secondaries: Sequence[str]) -> tuple[str, list[str]]:
        """(primary, secondaries) for a manager configured with ``primary``/``secondaries``."""
        if self.legacy is None or self.new is None:
            return primary, list(secondaries)
        everyone = [primary, *[s for s in secondaries if s != primary]]
        if self.new not in everyone or self.legacy not in everyone:
            return primary, list(secondaries)
        current = self.new if self.swapped else self.legacy
        others = [n for n in everyone if n != current]
        if self.phase == "new-only":
            others = [n for n in others if n != self.legacy]
        return current, others

    def to_json(self) -> str:
        data = attrs.asdict(self)
        data["history"] = list(self.history)[-20:]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, version: int = 0) -> CutoverState:
        if not text:
            return cls(version=version)
        data = json.loads(text)
        data["history"] = tuple(data.get("history") or ())
        data["version"] = version
        fields = {a.name for a in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


async def read_version(store: JournalStore, conn: AsyncConnection | None = None) -> int:
    """The cutover version (0 when no cutover was ever started)."""
    text = await store.get_meta(VERSION_KEY, conn)
    return int(text) if text else 0


async def load_state(store: JournalStore, conn: AsyncConnection | None = None) -> CutoverState:
    """The current cutover state (defaults when none is stored)."""
    version = await read_version(store, conn)
    return CutoverState.from_json(await store.get_meta(CUTOVER_KEY, conn), version)


async def save_state(
    store: JournalStore, state: CutoverState, *, event: str | None = None
) -> CutoverState:
    """Store ``state`` and bump the version (in one transaction); returns the stored state."""
    async with store.begin() as conn:
        version = await read_version(store, conn) + 1
        history = state.history
        if event is not None:
            history = (*history, {"at": store.clock(), "event": event, "phase": state.phase})[-20:]
        stored = attrs.evolve(state, version=version, history=history)
        await store.set_meta(conn, CUTOVER_KEY, stored.to_json())
        await store.set_meta(conn, VERSION_KEY, str(version))
    return stored
