"""A dict-backed backend: the smallest complete multibackend plugin.

It keeps streams in a dict under string ids ("ex-000001"), stores every writable field except
``notes`` (so the conformance suite's gating on ``fields`` is exercised), and supports pinning.
"""

from __future__ import annotations

import itertools

import attrs

from multibackend.backend import BaseBackend, Capability, status_side_effects
from multibackend.errors import NotFound
from multibackend.model import (
    WRITABLE_FIELDS,
    Page,
    Sort,
    Stream,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
    StreamStatus,
    utc_now,
)


class DictBackend(BaseBackend):
    @attrs.frozen(kw_only=True)
    class Options:  # every backend declares its options, even when there are few
        id_prefix: str = "ex-"

    capabilities = frozenset({Capability.PIN})
    fields = WRITABLE_FIELDS - {"notes"}  # this store has nowhere to keep notes

    def __init__(self, name: str, options: DictBackend.Options) -> None:
        super().__init__(name)
        self.options = options
        self._streams: dict[StreamId, Stream] = {}
        self._ids = itertools.count(1)

    async def create_stream(self, draft: StreamDraft) -> Stream:
        given = draft.given()
        values = {k: v for k, v in given.items() if k in self.fields}
        now = utc_now()
        status = given.get("status", StreamStatus.UNKNOWN)
        values.update(status_side_effects(None, status, {}, now))
        stream_id = f"{self.options.id_prefix}{next(self._ids):06d}"
        stream = Stream(id=stream_id, created_at=now, updated_at=now, **values)
        self._streams[stream_id] = stream
        return stream

    async def get_stream(self, id: StreamId) -> Stream:
        try:
            return self._streams[id]
        except KeyError:
            raise NotFound(f"no stream {id!r}", backend=self.name, id=id) from None

    async def update_stream(self, id: StreamId, patch: StreamPatch) -> Stream:
        old = await self.get_stream(id)
        changes = {k: v for k, v in patch.given().items() if k in self.fields}
        if "status" in changes:
            changes.update(status_side_effects(old.status, changes["status"], {}, utc_now()))
        new = attrs.evolve(old, **changes)
        if new != old:
            new = attrs.evolve(new, updated_at=utc_now())
            self._streams[id] = new
        return new

    async def delete_stream(self, id: StreamId) -> None:
        await self.get_stream(id)
        del self._streams[id]

    async def set_pinned(self, id: StreamId, pinned: bool) -> Stream:
        return await self.update_stream(id, StreamPatch(is_pinned=pinned))

    async def list_streams(self, query: StreamQuery) -> Page[Stream]:
        rows = [s for s in self._streams.values() if query.matches(s)]
        if query.sort in (Sort.NAME, Sort.NAME_DESC):
            rows.sort(key=lambda s: (s.source or "", s.id), reverse=query.sort is Sort.NAME_DESC)
        elif query.sort in (Sort.CREATED, Sort.CREATED_DESC):
            rows.sort(key=lambda s: (s.created_at, s.id), reverse=query.sort is Sort.CREATED_DESC)
        else:  # the default order: pinned first, then newest
            rows.sort(key=lambda s: (s.is_pinned, s.created_at, s.id), reverse=True)
        start = query.offset
        return Page.build(rows[start : start + query.per_page], query, total_count=len(rows))
