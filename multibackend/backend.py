"""The StreamBackend protocol every backend implements, and a base class that helps.

A backend is an async repository of streams with its own id space. The protocol is small (CRUD,
list, iterate, pin) plus optional operations announced through :class:`Capability`. The
conformance suite in :mod:`multibackend.testing` is the protocol's executable definition.

Contract every backend keeps:

* it raises only :mod:`multibackend.errors` exceptions, with ``backend`` set to its ``name`` and
  ``retryable`` right, so the journal never matches on strings;
* ``fields`` lists the stream fields it stores *and accepts on writes* (verify compares over the
  fields two backends share); writing a field it does not store is not an error, the value is
  simply not kept;
* ``create_stream``/``update_stream`` apply the status side effects of the contract (§7): when
  ``status`` changes, ``last_checked_at`` becomes now; when it becomes ``live``, ``last_live_at``
  becomes now — unless the draft or patch gives those timestamps explicitly and the backend stores
  them (replication keeps the source's values);
* without ``sort``, lists order pinned first, then newest first; explicit sorts do not;
* ``iter_streams`` yields every stream matching the query's filters, in constant memory.

Optional operations (gate on ``capabilities``; the base class raises FeatureUnavailable):

* ``PIN`` — ``set_pinned`` (every built-in backend has it);
* ``BULK_IMPORT`` — ``bulk_import(drafts)``: each item independently, errors per item;
* ``EXPORT`` — ``export(query)``: every matching stream in one call;
* ``ANALYTICS`` — ``analytics(id)``;
* ``TRANSACTIONS`` — ``transaction()``: an async context manager yielding a SQLAlchemy
  ``AsyncConnection``. Backend calls made inside the ``async with`` block (in the same task) run
  on that connection, and the caller may write its own rows on it too; everything commits when
  the block exits normally and rolls back when it raises. The sync journal uses it to commit a
  primary write with its fan-out entries (transactional outbox).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, ClassVar, NoReturn, Protocol, Self, runtime_checkable

import attrs

from multibackend.errors import FeatureUnavailable
from multibackend.model import (
    Page,
    Stream,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
    StreamStatus,
)

__all__ = [
    "BaseBackend",
    "BulkImportResult",
    "BulkItemError",
    "Capability",
    "ExportResult",
    "Health",
    "StreamAnalytics",
    "StreamBackend",
    "status_side_effects",
]

log = logging.getLogger(__name__)


class Capability(StrEnum):
    """Optional behaviour a backend announces in ``capabilities``."""

    PIN = "pin"
    BULK_IMPORT = "bulk_import"
    EXPORT = "export"
    ANALYTICS = "analytics"
    TRANSACTIONS = "transactions"
    HEALTH = "health"


@attrs.frozen(kw_only=True)
class BulkItemError:
    """Why item ``index`` of a bulk import was not imported."""

    index: int
    messages: tuple[str, ...]


@attrs.frozen(kw_only=True)
class BulkImportResult:
    """Outcome of a bulk import: ``imported`` of ``total`` items, the per-item ``errors``, and the
    new ids by item index (None for a failed item) when the backend reports them, else ``ids`` is
    None (the StreamSource server does not say which ids it created)."""

    imported: int
    total: int
    errors: tuple[BulkItemError, ...] = ()
    ids: tuple[StreamId | None, ...] | None = None


@attrs.frozen(kw_only=True)
class ExportResult:
    """Every stream matching an export's filters, taken at ``exported_at``."""

    exported_at: datetime
    streams: tuple[Stream, ...]


@attrs.frozen(kw_only=True)
class StreamAnalytics:
    """View figures for one stream (the StreamSource server makes them up; see contract §6)."""

    stream_id: StreamId
    views_count: int
    unique_viewers: int
    average_watch_time: int
    peak_concurrent_viewers: int
    last_updated: datetime


@attrs.frozen(kw_only=True)
class Health:
    """Whether a backend answers, with a short human-readable detail."""

    ok: bool
    detail: str = ""


@runtime_checkable
class StreamBackend(Protocol):
    """The async protocol of a stream repository. See the module docstring for the contract."""

    name: str
    capabilities: frozenset[Capability]
    fields: frozenset[str]

    async def open(self) -> None:
        """Acquire resources (connections, sessions). Idempotent."""

    async def close(self) -> None:
        """Release resources. Idempotent; the backend may be opened again."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def create_stream(self, draft: StreamDraft) -> Stream:
        """Create a stream and return it as stored, with its new id."""

    async def get_stream(self, id: StreamId) -> Stream:
        """Return the stream; raise NotFound when there is none with this id."""

    async def update_stream(self, id: StreamId, patch: StreamPatch) -> Stream:
        """Apply the given fields of ``patch``; return the stream as stored. NotFound if missing."""

    async def delete_stream(self, id: StreamId) -> None:
        """Delete the stream. NotFound if missing."""

    async def list_streams(self, query: StreamQuery) -> Page[Stream]:
        """One page of the streams matching ``query``."""

    def iter_streams(self, query: StreamQuery | None = None) -> AsyncIterator[Stream]:
        """Every stream matching the query's filters, page after page, in constant memory."""

    async def set_pinned(self, id: StreamId, pinned: bool) -> Stream:
        """Pin or unpin the stream (idempotent); return it. NotFound if missing."""


class BaseBackend(abc.ABC):
    """A convenient base for backends: the async context manager, ``iter_streams`` over
    ``list_streams``, ``FeatureUnavailable`` for optional operations, and a safe ``repr``.

    Subclasses set ``capabilities`` and ``fields`` (class or instance attributes) and implement
    the abstract methods. ``open``/``close`` default to no-ops.
    """

    capabilities: frozenset[Capability] = frozenset()
    fields: frozenset[str] = frozenset()
    #: Page size used by the default ``iter_streams``.
    iter_page_size: ClassVar[int] = 100

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        # Never include options here: they may hold secrets.
        return f"<{type(self).__name__} {self.name!r}>"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def create_stream(self, draft: StreamDraft) -> Stream: ...

    @abc.abstractmethod
    async def get_stream(self, id: StreamId) -> Stream: ...

    @abc.abstractmethod
    async def update_stream(self, id: StreamId, patch: StreamPatch) -> Stream: ...

    @abc.abstractmethod
    async def delete_stream(self, id: StreamId) -> None: ...

    @abc.abstractmethod
    async def list_streams(self, query: StreamQuery) -> Page[Stream]: ...

    async def set_pinned(self, id: StreamId, pinned: bool) -> Stream:
        self._unsupported(Capability.PIN)

    async def iter_streams(self, query: StreamQuery | None = None) -> AsyncIterator[Stream]:
        """Walk ``list_streams`` page by page (``iter_page_size`` a page) until a short page.

        Offset paging over a set that changes meanwhile may skip or repeat a row; backends that
        can walk by key (SQL) override this.
        """
        base = query or StreamQuery()
        page = 1
        while True:
            result = await self.list_streams(
                attrs.evolve(base, page=page, per_page=self.iter_page_size)
            )
            for stream in result.items:
                yield stream
            if len(result.items) < self.iter_page_size or page >= result.total_pages:
                return
            page += 1

    async def bulk_import(self, drafts: Sequence[StreamDraft]) -> BulkImportResult:
        self._unsupported(Capability.BULK_IMPORT)

    async def export(self, query: StreamQuery | None = None) -> ExportResult:
        self._unsupported(Capability.EXPORT)

    async def analytics(self, id: StreamId) -> StreamAnalytics:
        self._unsupported(Capability.ANALYTICS)

    async def health(self) -> Health:
        """Default health: a one-item list succeeds."""
        await self.list_streams(StreamQuery(per_page=1))
        return Health(ok=True, detail="list answered")

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        self._unsupported(Capability.TRANSACTIONS)

    def _unsupported(self, capability: Capability) -> NoReturn:
        raise FeatureUnavailable(
            f"does not support {capability.value} (capabilities: "
            f"{', '.join(sorted(c.value for c in self.capabilities)) or 'none'})",
            backend=self.name,
        )


def status_side_effects(
    old_status: StreamStatus | None,
    new_status: StreamStatus,
    given: Mapping[str, Any],
    now: datetime,
) -> dict[str, datetime]:
    """The timestamp changes contract §7 implies when ``status`` goes from ``old_status``
    (None on create) to ``new_status``.

    On create, the default status (unknown) is not a change. Timestamps present in ``given``
    (preserved values from replication) win over the computed ones.
    """
    changes: dict[str, datetime] = {}
    # On create the default status (unknown) is no change; on update any different value is.
    if new_status != (old_status or StreamStatus.UNKNOWN):
        changes["last_checked_at"] = now
        if new_status == StreamStatus.LIVE:
            changes["last_live_at"] = now
    for name in ("last_checked_at", "last_live_at"):
        if name in given:
            changes.pop(name, None)
    return changes
