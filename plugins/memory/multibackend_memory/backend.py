"""The memory backend: streams in a dict, with the StreamSource server's semantics.

It is the reference the conformance suite is checked against, so it follows the contract
(``streamsource-contract.md`` §1.2, §7) where the contract speaks:

* defaults: status ``unknown``, kind ``video``, not pinned; when an owner is configured
  (``owner_email``), a blank ``posted_by`` (not given, None or "") becomes the owner's email on
  every save, create and update, as the server does (contract §2);
* status side effects: a status change stamps ``last_checked_at``, becoming ``live`` stamps
  ``last_live_at``; re-sending the same status changes nothing; preserved timestamps given in a
  draft or patch win (:func:`multibackend.backend.status_side_effects`);
* an update that changes nothing leaves ``updated_at`` alone (Rails does not touch the row);
* default order pinned first, then newest (``created_at`` desc, id desc breaking ties); explicit
  sorts drop pinned-first; sources that are NULL sort last ascending, first descending (as in
  PostgreSQL);
* pagination meta as the server computes it (:meth:`multibackend.model.Page.build`).

Ids are integers from a counter and never reused. With the ``path`` option the streams are
loaded from a JSON file at ``open()`` and written back atomically at ``close()``, so separate
processes (CLI invocations) can share them.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import attrs

from multibackend.backend import (
    BaseBackend,
    BulkImportResult,
    BulkItemError,
    Capability,
    ExportResult,
    Health,
    status_side_effects,
)
from multibackend.config import PATH_OPTION
from multibackend.errors import BackendError, NotFound, Unavailable
from multibackend.model import (
    PRESERVABLE_TIMESTAMPS,
    STREAM_FIELDS,
    WRITABLE_FIELDS,
    Kind,
    Orientation,
    Page,
    Platform,
    Sort,
    Stream,
    StreamDraft,
    StreamId,
    StreamPatch,
    StreamQuery,
    StreamStatus,
    User,
    utc_now,
)

__all__ = ["MemoryBackend"]

_FILE_FORMAT: Final = 1
_TIMESTAMPS: Final = ("last_checked_at", "last_live_at", "created_at", "updated_at")


class MemoryBackend(BaseBackend):
    """Streams held in process memory (optionally persisted to a JSON file between runs)."""

    @attrs.frozen(kw_only=True)
    class Options:
        #: JSON file to load at open() and write at close(); None keeps streams in memory only.
        #: A relative path in a configuration file resolves against the file's folder.
        path: str | None = attrs.field(default=None, metadata=PATH_OPTION)
        #: The owner's email: streams then carry ``user`` and ``posted_by`` defaults to it.
        owner_email: str | None = None
        #: The owner's user id (for the ``user_id`` filter); used only with ``owner_email``.
        owner_id: int = 1

    capabilities = frozenset(
        {Capability.PIN, Capability.BULK_IMPORT, Capability.EXPORT, Capability.HEALTH}
    )
    fields = WRITABLE_FIELDS | PRESERVABLE_TIMESTAMPS

    def __init__(self, name: str, options: MemoryBackend.Options | None = None) -> None:
        super().__init__(name)
        self.options = options or MemoryBackend.Options()
        self._owner: User | None = (
            None
            if self.options.owner_email is None
            else User(id=self.options.owner_id, email=self.options.owner_email, role="editor")
        )
        self._rows: dict[int, Stream] = {}
        self._next_id = 1
        self._opened = False

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._opened:
            return
        if self.options.path is not None:
            path = Path(self.options.path)
            data = await asyncio.to_thread(self._read_file, path)
            if data is not None:
                self._load(data, path)
        self._opened = True

    async def close(self) -> None:
        if not self._opened:
            return
        if self.options.path is not None:
            await asyncio.to_thread(self._write_file, Path(self.options.path), self._dump())
        self._opened = False

    def _read_file(self, path: Path) -> Any:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise Unavailable(f"cannot read {path}: {exc.strerror}", backend=self.name) from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise BackendError(
                f"{path} is not a memory backend file (line {exc.lineno}: {exc.msg}); "
                "move it away or point the 'path' option elsewhere",
                backend=self.name,
            ) from None

    def _write_file(self, path: Path, data: dict[str, Any]) -> None:
        # Write a sibling temporary file and rename it over the target, so a crash or a
        # concurrent reader never sees half a file.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _dump(self) -> dict[str, Any]:
        return {
            "format": _FILE_FORMAT,
            "next_id": self._next_id,
            "streams": [s.to_dict() for s in self._rows.values()],
        }

    def _load(self, data: Any, path: Path) -> None:
        try:
            if data.get("format") != _FILE_FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            rows = {int(item["id"]): _decode_stream(item) for item in data["streams"]}
            next_id = int(data["next_id"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BackendError(
                f"{path} is not a memory backend file ({exc}); "
                "move it away or point the 'path' option elsewhere",
                backend=self.name,
            ) from None
        self._rows = rows
        self._next_id = max([next_id, *(i + 1 for i in rows)])

    # --- streams --------------------------------------------------------------------------

    async def create_stream(self, draft: StreamDraft) -> Stream:
        return self._create(draft)

    def _create(self, draft: StreamDraft) -> Stream:
        given = draft.given()
        now = utc_now()
        status = given.get("status", StreamStatus.UNKNOWN)
        effects = status_side_effects(None, status, given, now)
        values: dict[str, Any] = {
            name: given[name] for name in STREAM_FIELDS if name in given and name in self.fields
        }
        values.update(effects)
        if self._owner is not None and not values.get("posted_by"):
            values["posted_by"] = self._owner.email
        values["created_at"] = given.get("created_at") or now
        values["updated_at"] = now
        stream_id = self._next_id
        self._next_id += 1
        stream = Stream(id=stream_id, user=self._owner, **values)
        self._rows[stream_id] = stream
        return stream

    async def get_stream(self, id: StreamId) -> Stream:
        return self._row(id)[1]

    async def update_stream(self, id: StreamId, patch: StreamPatch) -> Stream:
        key, old = self._row(id)
        given = patch.given()
        if "created_at" in given and given["created_at"] is None:
            del given["created_at"]  # every stream has a creation time; None cannot clear it
        changes: dict[str, Any] = {k: v for k, v in given.items() if k in self.fields}
        if "status" in given:
            changes.update(status_side_effects(old.status, given["status"], given, utc_now()))
        new = attrs.evolve(old, **changes)
        if self._owner is not None and not new.posted_by:
            # The server re-applies the default on every save (contract §2).
            new = attrs.evolve(new, posted_by=self._owner.email)
        if new == old:
            return old  # nothing changed: the row, and updated_at, stay as they were
        new = attrs.evolve(new, updated_at=utc_now())
        self._rows[key] = new
        return new

    async def delete_stream(self, id: StreamId) -> None:
        key, _ = self._row(id)
        del self._rows[key]

    async def set_pinned(self, id: StreamId, pinned: bool) -> Stream:
        key, old = self._row(id)
        if old.is_pinned == pinned:
            return old
        new = attrs.evolve(old, is_pinned=pinned, updated_at=utc_now())
        self._rows[key] = new
        return new

    async def list_streams(self, query: StreamQuery) -> Page[Stream]:
        matching = self._select(query)
        start = query.offset
        return Page.build(matching[start : start + query.per_page], query, len(matching))

    def _select(self, query: StreamQuery) -> list[Stream]:
        rows = [s for s in self._rows.values() if query.matches(s)]
        return _ordered(rows, query.sort)

    # --- optional operations --------------------------------------------------------------

    async def bulk_import(
        self, drafts: Sequence[StreamDraft | Mapping[str, Any]]
    ) -> BulkImportResult:
        """Create each item independently; an item that fails is reported, the rest go in.

        Items may be drafts or plain mappings of draft fields (as read from a JSON file); a
        mapping breaking the model's rules becomes that item's error.
        """
        ids: list[StreamId | None] = []
        errors: list[BulkItemError] = []
        for index, item in enumerate(drafts):
            try:
                draft = item if isinstance(item, StreamDraft) else StreamDraft(**item)
                ids.append(self._create(draft).id)
            except BackendError as exc:
                ids.append(None)
                errors.append(BulkItemError(index=index, messages=(exc.detail,)))
            except TypeError as exc:  # unknown keys in a mapping item
                ids.append(None)
                errors.append(BulkItemError(index=index, messages=(str(exc),)))
        return BulkImportResult(
            imported=len(drafts) - len(errors),
            total=len(drafts),
            errors=tuple(errors),
            ids=tuple(ids),
        )

    async def export(self, query: StreamQuery | None = None) -> ExportResult:
        """Every stream matching the query's filters (its page and per_page are ignored)."""
        return ExportResult(
            exported_at=utc_now(), streams=tuple(self._select(query or StreamQuery()))
        )

    async def health(self) -> Health:
        return Health(ok=True, detail=f"{len(self._rows)} streams in memory")

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    def _key(id: StreamId) -> int | None:
        # Ids arrive as strings from command lines and URLs; "7" means 7. Anything that is not
        # an integer cannot be one of ours.
        if isinstance(id, bool):
            return None
        if isinstance(id, int):
            return id
        text = id.strip()
        return int(text) if text.isdecimal() else None

    def _row(self, id: StreamId) -> tuple[int, Stream]:
        key = self._key(id)
        stream = None if key is None else self._rows.get(key)
        if key is None or stream is None:
            raise NotFound(f"stream {id!r} not found", backend=self.name, id=id)
        return key, stream


def _ordered(rows: list[Stream], sort: Sort | None) -> list[Stream]:
    if sort is None:
        return sorted(rows, key=lambda s: (s.is_pinned, _created(s), _id_key(s)), reverse=True)
    if sort in (Sort.NAME, Sort.NAME_DESC):
        return sorted(
            rows,
            key=lambda s: (s.source is None, s.source or "", _id_key(s)),
            reverse=sort is Sort.NAME_DESC,
        )
    return sorted(rows, key=lambda s: (_created(s), _id_key(s)), reverse=sort is Sort.CREATED_DESC)


_EPOCH: Final = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def _created(stream: Stream) -> datetime:
    return stream.created_at or _EPOCH


def _id_key(stream: Stream) -> tuple[int, str]:
    # Memory ids are ints; the string form keeps sorting total for anything else.
    return (stream.id, "") if isinstance(stream.id, int) else (0, str(stream.id))


def _decode_stream(item: Mapping[str, Any]) -> Stream:
    values: dict[str, Any] = {k: item[k] for k in STREAM_FIELDS if k in item}
    for name in _TIMESTAMPS:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    for name, enum in (
        ("status", StreamStatus),
        ("platform", Platform),
        ("orientation", Orientation),
        ("kind", Kind),
    ):
        if values.get(name) is not None:
            values[name] = enum(values[name])
    user = item.get("user")
    if user is not None:
        user = User(
            id=user["id"],
            email=user["email"],
            role=user.get("role", "default"),
            created_at=_parse_time(user.get("created_at")),
            updated_at=_parse_time(user.get("updated_at")),
        )
    return Stream(id=item["id"], user=user, **values)


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
