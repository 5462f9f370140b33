"""Walking every stream of a backend, in id order where the backend allows, from a position.

Backfill and verify read a whole backend. Backends that walk by key override ``iter_streams``
(the SQL backend walks by id, the StreamSource client by creation); those are used as they are.
A backend left with the base class's offset walk (re-sorting the whole set per page, and unstable
while the set changes) is read through ``export()`` when it has ``EXPORT`` — one consistent
snapshot, sorted by id — which suits in-memory backends.

Positions: ids compare by :func:`id_order` (ints before text). A walk is only resumed from a
position when the previous walk saw ids strictly increasing (``ordered``); otherwise a resumed
run walks from the start, and entities already handled are skipped by the id map instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from multibackend.backend import BaseBackend, Capability, StreamBackend
from multibackend.model import Stream, StreamId, StreamQuery

__all__ = ["count_streams", "id_order", "scan_streams"]


def id_order(native_id: StreamId | None) -> tuple[int, int, str]:
    """A total order over native ids (ints numerically, then text)."""
    if native_id is None:
        return (-1, 0, "")
    if isinstance(native_id, int):
        return (0, native_id, "")
    return (1, 0, str(native_id))


def _offset_walk(backend: StreamBackend) -> bool:
    method: Any = getattr(type(backend), "iter_streams", None)
    return method is BaseBackend.iter_streams


async def scan_streams(
    backend: StreamBackend, *, after: StreamId | None = None
) -> AsyncIterator[Stream]:
    """Every stream of ``backend``; with ``after``, only those whose id orders after it."""
    floor = id_order(after) if after is not None else None
    if _offset_walk(backend) and Capability.EXPORT in backend.capabilities:
        exported = await backend.export(None)  # type: ignore[attr-defined]
        streams = sorted(exported.streams, key=lambda s: id_order(s.id))
        for stream in streams:
            if floor is None or id_order(stream.id) > floor:
                yield stream
        return
    walk = backend.iter_streams(StreamQuery())
    try:
        async for stream in walk:
            if floor is None or id_order(stream.id) > floor:
                yield stream
    finally:  # closed early (the caller stopped): close the backend's walk too
        aclose = getattr(walk, "aclose", None)
        if aclose is not None:
            await aclose()


async def count_streams(backend: StreamBackend) -> int | None:
    """How many streams ``backend`` holds (None when it cannot say cheaply)."""
    try:
        page = await backend.list_streams(StreamQuery(per_page=1))
    except Exception:
        return None
    return page.total_count
