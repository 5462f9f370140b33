"""Request bodies and query strings out, ``Stream`` and friends in.

Out: create/update bodies are flat objects with only the keys the server permits (contract §1.2);
``is_pinned`` and the server-managed timestamps are never sent (the backend pins through the pin
endpoints; preserved timestamps of a draft are ignored because the server stamps its own).
Every enum value and page number is checked again here, right before it would be sent: the
server answers 500 for a bad enum, which a caller would take for a transient failure.

In: single streams come wrapped (``{"stream": {...}}``, today's server) or bare (the guide's
dialect); timestamps become timezone-aware datetimes, enum keys (or the server's stored
spellings) become enums, the nested ``user`` becomes :class:`~multibackend.model.User`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, TypeVar

from multibackend.backend import BulkImportResult, BulkItemError, StreamAnalytics
from multibackend.errors import Unavailable, ValidationFailed
from multibackend.model import (
    UNSET,
    Kind,
    Orientation,
    Page,
    Platform,
    Sort,
    Stream,
    StreamDraft,
    StreamPatch,
    StreamQuery,
    StreamStatus,
    User,
    check_link,
    parse_enum,
)

__all__ = [
    "PERMITTED_KEYS",
    "analytics_from_json",
    "bulk_result_from_json",
    "draft_body",
    "export_from_json",
    "page_from_json",
    "patch_body",
    "query_params",
    "stream_from_json",
    "unwrap_stream",
    "user_from_json",
]

log = logging.getLogger(__name__)

#: Keys the server reads from a create/update body (``location_id`` aside: we never send it).
PERMITTED_KEYS: Final = (
    "source",
    "link",
    "status",
    "platform",
    "orientation",
    "kind",
    "city",
    "state",
    "notes",
    "title",
    "posted_by",
)
_ENUMS: Final[dict[str, type[StrEnum]]] = {
    "status": StreamStatus,
    "platform": Platform,
    "orientation": Orientation,
    "kind": Kind,
}
# Spellings older deployments and imports use for the two enums the guide gets wrong.
_SYNONYMS: Final[dict[str, dict[str, str]]] = {
    "orientation": {
        "portrait": "vertical",
        "tall": "vertical",
        "landscape": "horizontal",
        "wide": "horizontal",
    },
}

E = TypeVar("E", bound=StrEnum)


class BadAnswer(Unavailable):
    """The server answered 2xx with a body this client cannot read."""


# --- out ---------------------------------------------------------------------------------------


def _wire_value(name: str, value: Any, backend: str) -> Any:
    if value is None:
        return None
    enum = _ENUMS.get(name)
    if enum is not None:
        try:
            return parse_enum(enum, value, name).value
        except ValidationFailed as exc:
            raise ValidationFailed(
                f"{exc.detail} (not sent: the server would answer 500)",
                field=name,
                rule="enum",
                backend=backend,
            ) from None
    if name == "link":
        try:
            return check_link(value)
        except ValidationFailed as exc:
            raise ValidationFailed(exc.detail, field=name, rule=exc.rule, backend=backend) from None
    if not isinstance(value, str):
        raise ValidationFailed(
            f"{name}: must be a string", field=name, rule="type", backend=backend
        )
    return value


def _body(given: Mapping[str, Any], backend: str) -> dict[str, Any]:
    return {
        name: _wire_value(name, given[name], backend)
        for name in PERMITTED_KEYS
        if name in given and given[name] is not UNSET
    }


def draft_body(draft: StreamDraft, backend: str) -> dict[str, Any]:
    """The flat create body: permitted keys only, enum keys checked, UNSET fields left out."""
    return _body(draft.given(), backend)


def patch_body(patch: StreamPatch, backend: str) -> dict[str, Any]:
    """The flat update body: the given permitted keys (None clears a field)."""
    return _body(patch.given(), backend)


def query_params(query: StreamQuery, backend: str) -> dict[str, str]:
    """Query string of ``GET /api/v1/streams`` for ``query``, its values checked again."""
    page, per_page = query.page, query.per_page
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise ValidationFailed(
            f"page: must be an integer >= 1 (got {page!r}; not sent)",
            field="page",
            rule="min",
            backend=backend,
        )
    if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= 100:
        raise ValidationFailed(
            f"per_page: must be an integer between 1 and 100 (got {per_page!r}; not sent)",
            field="per_page",
            rule="range",
            backend=backend,
        )
    params: dict[str, str] = {"page": str(page), "per_page": str(per_page)}
    params.update(filter_params(query, backend))
    if query.sort is not None:
        params["sort"] = parse_enum(Sort, query.sort, "sort").value
    return params


def filter_params(query: StreamQuery, backend: str) -> dict[str, str]:
    """The filter part of a query string (status, notStatus, is_pinned, user_id)."""
    params: dict[str, str] = {}
    if query.status is not None:
        params["status"] = _wire_value("status", query.status, backend)
    if query.not_status is not None:
        params["notStatus"] = _wire_value("status", query.not_status, backend)
    if query.is_pinned is not None:
        params["is_pinned"] = "true" if query.is_pinned else "false"
    if query.user_id is not None:
        params["user_id"] = str(query.user_id)
    return params


# --- in ----------------------------------------------------------------------------------------


_fromisoformat: Final = datetime.fromisoformat


def parse_time(value: Any, field: str) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (UTC when the text carries no offset)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadAnswer(f"{field}: expected an ISO 8601 timestamp, got {type(value).__name__}")
    try:
        parsed = _fromisoformat(value)  # Python 3.11 reads the server's "...789Z"
    except ValueError:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise BadAnswer(f"{field}: {value[:40]!r} is not an ISO 8601 timestamp") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# The server's stored spellings (Rails enum values), which older deployments serialize.
_STORED_SPELLINGS: Final = (
    *("TikTok", "Facebook", "Twitch", "YouTube", "Instagram", "Other"),
    *("Live", "Offline", "Unknown"),
)


def _lookup(enum: type[E]) -> dict[str, E]:
    """Every spelling the server may send for a member: key and stored spelling."""
    table = {member.value: member for member in enum}
    for spelling in _STORED_SPELLINGS:
        with contextlib.suppress(ValidationFailed):
            table[spelling] = parse_enum(enum, spelling, "")
    return table


_LOOKUPS: Final[dict[type[StrEnum], dict[str, Any]]] = {
    enum: _lookup(enum) for enum in (StreamStatus, Platform, Orientation, Kind)
}


def _read_enum(enum: type[E], value: Any, field: str, default: E | None) -> E | None:
    if value is None or value == "":
        return default
    member: E | None = _LOOKUPS[enum].get(value) if isinstance(value, str) else None
    if member is not None:
        return member
    if isinstance(value, str):
        value = _SYNONYMS.get(field, {}).get(value.lower(), value)
        try:
            return parse_enum(enum, value, field)
        except ValidationFailed:
            try:
                return parse_enum(enum, value.lower(), field)
            except ValidationFailed:
                pass
    # Reads are lenient (a legacy row must stay readable), but never silently.
    log.warning("stream field %s: unknown value %r read as %r", field, value, default)
    return default


# Streams of one owner repeat the same user object: build it once (a few owners per walk).
_USERS: dict[tuple[Any, ...], User] = {}
_USERS_MAX = 256


def user_from_json(value: Any) -> User | None:
    """The nested user object (None when absent or not one)."""
    if not isinstance(value, Mapping) or "id" not in value:
        return None
    key = (
        value["id"],
        value.get("email"),
        value.get("role"),
        value.get("created_at"),
        value.get("updated_at"),
    )
    cacheable = True
    try:
        cached = _USERS.get(key)
    except TypeError:  # an unhashable id: do not cache
        cached, cacheable = None, False
    if cached is not None:
        return cached
    user = User(
        id=value["id"],
        email=str(value.get("email") or ""),
        role=str(value.get("role") or "default"),
        created_at=parse_time(value.get("created_at"), "user.created_at"),
        updated_at=parse_time(value.get("updated_at"), "user.updated_at"),
    )
    if cacheable:
        if len(_USERS) >= _USERS_MAX:
            _USERS.clear()
        _USERS[key] = user
    return user


def _opt_text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


_STATUS: Final = _LOOKUPS[StreamStatus]
_PLATFORM: Final = _LOOKUPS[Platform]
_ORIENTATION: Final = _LOOKUPS[Orientation]
_KIND: Final = _LOOKUPS[Kind]


def stream_from_json(data: Any) -> Stream:
    """A Stream from the server's stream object (raises BadAnswer when it is not one).

    Hot in walks of many pages: known enum spellings are looked up in tables, and the
    general (lenient, logging) path runs only for unexpected values.
    """
    if not isinstance(data, Mapping) or "id" not in data or "link" not in data:
        raise BadAnswer(f"expected a stream object, got {_shape(data)}")
    get = data.get
    status, platform, orientation, kind = (
        get("status"),
        get("platform"),
        get("orientation"),
        get("kind"),
    )
    return Stream(
        id=data["id"],
        source=_opt_text(get("source")),
        link=str(data["link"]),
        status=_STATUS[status]
        if isinstance(status, str) and status in _STATUS
        else _read_enum(StreamStatus, status, "status", StreamStatus.UNKNOWN)
        or StreamStatus.UNKNOWN,
        is_pinned=get("is_pinned") is True,
        platform=_PLATFORM[platform]
        if isinstance(platform, str) and platform in _PLATFORM
        else _read_enum(Platform, platform, "platform", None),
        orientation=_ORIENTATION[orientation]
        if isinstance(orientation, str) and orientation in _ORIENTATION
        else _read_enum(Orientation, orientation, "orientation", None),
        kind=_KIND[kind]
        if isinstance(kind, str) and kind in _KIND
        else _read_enum(Kind, kind, "kind", Kind.VIDEO) or Kind.VIDEO,
        city=_opt_text(get("city")),
        state=_opt_text(get("state")),
        notes=_opt_text(get("notes")),
        title=_opt_text(get("title")),
        posted_by=_opt_text(get("posted_by")),
        last_checked_at=parse_time(get("last_checked_at"), "last_checked_at"),
        last_live_at=parse_time(get("last_live_at"), "last_live_at"),
        created_at=parse_time(get("created_at"), "created_at"),
        updated_at=parse_time(get("updated_at"), "updated_at"),
        user=user_from_json(get("user")),
    )


def unwrap_stream(body: Any) -> Stream:
    """A single stream from ``{"stream": {...}}`` (today), ``{"data": {...}}`` or a bare object
    (older deployments)."""
    if isinstance(body, Mapping):
        for key in ("stream", "data"):
            inner = body.get(key)
            if isinstance(inner, Mapping):
                return stream_from_json(inner)
    return stream_from_json(body)


def page_from_json(body: Any, query: StreamQuery) -> Page[Stream]:
    """A page from ``{"streams": [...], "meta": {...}}``; meta missing → computed from the query."""
    items: list[Any]
    meta: Mapping[str, Any]
    if isinstance(body, list):  # a bare array: older deployments with format=array
        items, meta = body, {}
    elif isinstance(body, Mapping) and isinstance(body.get("streams"), list):
        items, meta = body["streams"], body.get("meta") or {}
    else:
        raise BadAnswer(f"expected {{'streams': [...], 'meta': {{...}}}}, got {_shape(body)}")
    streams = tuple(stream_from_json(item) for item in items)
    try:
        per_page = int(meta.get("per_page") or query.per_page)
        total_count = int(meta.get("total_count", len(streams)))
        total_pages = int(meta.get("total_pages", -(-total_count // per_page) if per_page else 0))
        page = int(meta.get("current_page") or query.page)
    except (TypeError, ValueError, AttributeError):
        # A meta value that is no number (found by fuzzing the client's answers).
        raise BadAnswer(f"unreadable page meta: {_shape(meta)}") from None
    return Page(
        items=streams,
        page=page,
        per_page=per_page,
        total_count=total_count,
        total_pages=total_pages,
    )


def analytics_from_json(body: Any, id: Any) -> StreamAnalytics:
    if not isinstance(body, Mapping):
        raise BadAnswer(f"expected an analytics object, got {_shape(body)}")
    try:
        return StreamAnalytics(
            stream_id=body.get("stream_id", id),
            views_count=int(body["views_count"]),
            unique_viewers=int(body["unique_viewers"]),
            average_watch_time=int(body["average_watch_time"]),
            peak_concurrent_viewers=int(body["peak_concurrent_viewers"]),
            last_updated=parse_time(body.get("last_updated"), "last_updated") or datetime.now(UTC),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadAnswer(f"analytics answer lacks {exc}") from None


def export_from_json(body: Any) -> tuple[datetime, list[Mapping[str, Any]]]:
    """The export's time and its raw items (which carry no ``id``; see the backend)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("streams"), list):
        raise BadAnswer(f"expected an export object, got {_shape(body)}")
    exported_at = parse_time(body.get("exported_at"), "exported_at") or datetime.now(UTC)
    return exported_at, [item for item in body["streams"] if isinstance(item, Mapping)]


def bulk_result_from_json(body: Any, offset: int) -> BulkImportResult:
    """One chunk's ``{imported, total, errors: [{index, errors}]}``, indexes shifted by
    ``offset`` (the chunk's position in the whole import)."""
    if not isinstance(body, Mapping) or "imported" not in body:
        raise BadAnswer(f"expected a bulk import result, got {_shape(body)}")
    errors = []
    for item in body.get("errors") or ():
        if isinstance(item, Mapping):
            messages = item.get("errors") or ()
            if isinstance(messages, str):
                messages = (messages,)
            errors.append(
                BulkItemError(
                    index=offset + int(item.get("index", 0)),
                    messages=tuple(str(m) for m in messages),
                )
            )
    return BulkImportResult(
        imported=int(body["imported"]),
        total=int(body.get("total", 0)),
        errors=tuple(errors),
        ids=None,
    )


def _shape(value: Any) -> str:
    if isinstance(value, Mapping):
        keys = ", ".join(sorted(str(k) for k in value)[:8])
        return f"an object with keys [{keys}]"
    if value is None:
        return "no JSON body"
    return type(value).__name__
