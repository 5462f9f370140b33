"""JSON shapes of streams and users (contract §3) and of export items (§6).

Stream keys come in the serializer's order; enum values are the lower-case keys; timestamps are
UTC ISO 8601 with milliseconds and ``Z``. ``analytics_url`` and ``tags`` appear only when the
flags ``stream_analytics`` / ``stream_tags`` are on for the requesting user. Export items have no
``id``, carry ``owner_email`` and use seconds precision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from multibackend_streamsource.emulator.records import StreamRecord, UserRecord

__all__ = ["export_item", "stream_json", "ts_ms", "ts_s", "user_json"]


def ts_ms(value: datetime | None) -> str | None:
    """``2025-06-17T12:34:56.789Z`` (None stays None)."""
    if value is None:
        return None
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond // 1000:03d}Z"
    )


def ts_s(value: datetime | None) -> str | None:
    """``2025-06-17T12:34:56Z`` (None stays None)."""
    if value is None:
        return None
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"


def user_json(user: UserRecord) -> dict[str, Any]:
    """The five user fields of login answers and of a stream's ``user``."""
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "created_at": ts_ms(user.created_at),
        "updated_at": ts_ms(user.updated_at),
    }


def stream_json(
    stream: StreamRecord, owner: UserRecord | None, *, analytics: bool, tags: bool
) -> dict[str, Any]:
    """A stream as the server's StreamSerializer renders it."""
    out: dict[str, Any] = {
        "id": stream.id,
        "source": stream.source,
        "link": stream.link,
        "status": stream.status,
        "is_pinned": stream.is_pinned,
        "created_at": ts_ms(stream.created_at),
        "updated_at": ts_ms(stream.updated_at),
        "city": stream.city,
        "state": stream.state,
        "platform": stream.platform,
        "notes": stream.notes,
        "title": stream.title,
        "last_checked_at": ts_ms(stream.last_checked_at),
        "last_live_at": ts_ms(stream.last_live_at),
        "posted_by": stream.posted_by,
        "orientation": stream.orientation,
        "kind": stream.kind,
    }
    if analytics:
        out["analytics_url"] = f"/api/v1/streams/{stream.id}/analytics"
    if tags:
        out["tags"] = []
    out["user"] = None if owner is None else user_json(owner)
    return out


def export_item(stream: StreamRecord, owner: UserRecord | None) -> dict[str, Any]:
    """A stream as ``GET /api/v1/streams/export`` lists it."""
    return {
        "source": stream.source,
        "link": stream.link,
        "status": stream.status,
        "platform": stream.platform,
        "orientation": stream.orientation,
        "kind": stream.kind,
        "city": stream.city,
        "state": stream.state,
        "notes": stream.notes,
        "title": stream.title,
        "posted_by": stream.posted_by,
        "is_pinned": stream.is_pinned,
        "created_at": ts_s(stream.created_at),
        "last_checked_at": ts_s(stream.last_checked_at),
        "last_live_at": ts_s(stream.last_live_at),
        "owner_email": None if owner is None else owner.email,
    }
