"""The demo's application: live writes (and, in the shadow phase, reads) through the manager.

The app keeps the streams it knows by the backend that gave it each id, and names that backend
with ``id_from`` on every call: ids handed out before the flip are the legacy database's,
after it StreamSource's, and the manager translates them (after any write fence), as an app
that keeps ids across a cutover must.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import attrs

from multibackend.errors import NotFound
from multibackend.manager import BackendManager
from multibackend.model import StreamDraft, StreamId, StreamPatch

__all__ = ["LiveTraffic", "TrafficStats"]

_TITLES = ("Crowd moving north", "Police line at the bridge", "Quiet for now", "Back on air")
_CITIES = (("Portland", "OR"), ("Seattle", "WA"), ("Chicago", "IL"), ("Denver", "CO"))


@attrs.define
class TrafficStats:
    """What the app did; ``errors`` holds the text of every write that raised."""

    creates: int = 0
    updates: int = 0
    pins: int = 0
    deletes: int = 0
    reads: int = 0
    primaries: set[str] = attrs.field(factory=set)
    errors: list[str] = attrs.field(factory=list)

    @property
    def writes(self) -> int:
        return self.creates + self.updates + self.pins + self.deletes


class LiveTraffic:
    """Random creates, updates, pins and deletes through ``app`` (see the module docstring)."""

    def __init__(
        self,
        app: BackendManager,
        known: Sequence[tuple[str, StreamId]],
        *,
        seed: int = 7,
        pause: float = 0.05,
        concurrency: int = 2,
    ) -> None:
        self.app = app
        self.known: list[tuple[str, StreamId]] = list(known)
        self.alive: list[int] = list(range(len(self.known)))
        self.rng = random.Random(seed)
        self.pause = pause
        self.concurrency = concurrency
        self.stats = TrafficStats()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[int] = set()
        self._n = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._writer(), name=f"demo-writer-{i}")
            for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []

    def _pick(self) -> int | None:
        for _ in range(8):
            if not self.alive:
                return None
            slot = self.rng.randrange(len(self.alive))
            index = self.alive[slot]
            if index not in self._busy:
                return index
        return None

    async def _writer(self) -> None:
        while not self._stop.is_set():
            try:
                await self._one()
            except Exception as exc:  # every failure is a failed check in the summary
                self.stats.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.pause)

    async def _one(self) -> None:
        self._n += 1
        n = self._n
        roll = self.rng.random()
        index = None if roll < 0.2 else self._pick()
        if index is None:
            city, state = self.rng.choice(_CITIES)
            handle = f"newstreamer{n}"
            made = await self.app.create_stream(
                StreamDraft(
                    source=handle,
                    link=f"https://www.twitch.tv/{handle}",
                    platform="twitch",
                    status="live",
                    title=self.rng.choice(_TITLES),
                    city=city,
                    state=state,
                )
            )
            self.known.append((self.app.primary_name, made.id))
            self.alive.append(len(self.known) - 1)
            self.stats.creates += 1
            self.stats.primaries.add(self.app.primary_name)
            return
        backend, native_id = self.known[index]
        self._busy.add(index)
        try:
            if roll < 0.7:
                await self.app.update_stream(
                    native_id,
                    StreamPatch(
                        status=self.rng.choice(("live", "offline")),
                        title=f"{self.rng.choice(_TITLES)} #{n}",
                    ),
                    id_from=backend,
                )
                self.stats.updates += 1
            elif roll < 0.88:
                await self.app.set_pinned(native_id, self.rng.random() < 0.5, id_from=backend)
                self.stats.pins += 1
            else:
                await self.app.delete_stream(native_id, id_from=backend)
                self.alive.remove(index)
                self.stats.deletes += 1
            self.stats.primaries.add(self.app.primary_name)
        finally:
            self._busy.discard(index)

    async def read(self, count: int, *, concurrency: int = 16) -> int:
        """``count`` reads of random live streams (the shadow phase's traffic); returns how
        many were answered."""
        semaphore = asyncio.Semaphore(concurrency)
        answered = 0

        async def one() -> None:
            nonlocal answered
            index = self._pick()
            if index is None:
                return
            backend, native_id = self.known[index]
            async with semaphore:
                try:
                    await self.app.get_stream(native_id, id_from=backend)
                    answered += 1
                except NotFound:
                    pass  # deleted by a concurrent writer since it was picked

        await asyncio.gather(*(one() for _ in range(count)))
        self.stats.reads += answered
        return answered
